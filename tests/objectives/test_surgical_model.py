"""Surgical fine-tuning in the model: which layers a block unfreezes, which BatchNorm layers
train with it, and the per-layer BatchNorm shift profile. Real Keras models (the tiny CNN of
``tests/conftest.py``: conv1 -> bn1 -> conv2 -> bn2 -> old_head)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from thaw.objectives import domain_shift_scores, freeze, shift_profile, unfrozen_span
from thaw.objectives._model import batchnorm_layers, weighted_layers


@pytest.mark.parametrize(
    ("depth", "unfrozen", "start", "expected"),
    [
        (5, 3, None, [2, 3, 4]),  # from the top, as before
        (5, 3, 0, [0, 1, 2]),  # the bottom block
        (5, 3, 1, [1, 2, 3]),
        (5, 3, 2, [2, 3, 4]),  # reaches the top
        (5, 3, 4, [2, 3, 4]),  # too high to fit: lowered to the top block
        (5, 3, 5, [2, 3, 4]),  # 'all'
        (5, 0, 0, []),  # nothing unfrozen
        (5, 5, 3, [0, 1, 2, 3, 4]),  # everything
    ],
)
def test_the_unfrozen_span(
    depth: int, unfrozen: int, start: int | None, expected: list[int]
) -> None:
    assert list(unfrozen_span(depth, unfrozen, start)) == expected


@pytest.mark.parametrize(("unfrozen", "start"), [(2, -1), (2, 6), (6, None), (-1, 0)])
def test_a_span_outside_the_model_is_refused(unfrozen: int, start: int | None) -> None:
    with pytest.raises(ValueError, match=r"outside 0\.\.5"):
        unfrozen_span(5, unfrozen, start)


@pytest.mark.parametrize(
    ("unfrozen", "start", "batchnorm", "trainable"),
    [
        # from the top: unchanged (BatchNorm above the lowest unfrozen layer trains in 'train')
        (2, None, "frozen", {"conv2", "old_head"}),
        (2, None, "train", {"conv2", "bn2", "old_head"}),
        (3, None, "train", {"conv1", "bn1", "conv2", "bn2", "old_head"}),
        # a block below the top: only its layers, and in 'train' the BatchNorm inside it
        (1, 0, "frozen", {"conv1"}),
        (1, 0, "train", {"conv1", "bn1"}),
        (1, 0, "adapt", {"conv1"}),
        (2, 0, "train", {"conv1", "bn1", "conv2", "bn2"}),
        (1, 1, "train", {"conv2", "bn2"}),
        (1, 2, "frozen", {"old_head"}),  # the top block
    ],
)
def test_freeze_unfreezes_the_block(
    tiny_cnn: Callable[..., Any],
    unfrozen: int,
    start: int | None,
    batchnorm: str,
    trainable: set[str],
) -> None:
    model = tiny_cnn()
    freeze(model, unfrozen, batchnorm, block_start=start)
    names = {layer.name for layer in weighted_layers(model) + batchnorm_layers(model)}
    assert {n for n in names if model.get_layer(n).trainable} == trainable


def test_freeze_refuses_a_block_beyond_the_depth(tiny_cnn: Callable[..., Any]) -> None:
    with pytest.raises(ValueError, match="block_start=4 is outside 0..3"):
        freeze(tiny_cnn(), 1, block_start=4)


def test_the_shift_profile_gives_each_layer_its_batchnorm_scores(
    tiny_cnn: Callable[..., Any], tiny_arrays: Callable[..., dict[str, np.ndarray]]
) -> None:
    model = tiny_cnn()
    x = tiny_arrays()["x_train"].astype("float32")
    scores = domain_shift_scores(model, x)
    assert set(scores) == {"bn1", "bn2"}
    profile = shift_profile(model, scores)
    assert [g["name"] for g in profile] == ["conv1", "conv2", "old_head"]
    assert [g["batchnorm"] for g in profile] == [1, 1, 0]
    assert profile[0]["shift"] == pytest.approx(scores["bn1"])
    assert profile[1]["shift"] == pytest.approx(scores["bn2"])
    assert profile[2]["shift"] is None
    # untrained BatchNorm (mean 0, variance 1) against raw images: a real shift
    assert 0 < scores["bn1"] <= 1
