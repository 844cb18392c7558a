"""Surgical fine-tuning in the search: the rule that reads a block off the BatchNorm shift
profile, the informed start's surgical trial, and a real tiny study end to end (SQLite, the
CLI): the profile stored, shown by ``thaw inspect`` and the report, the block trained."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import pytest
import yaml

from thaw._keys import SHIFT_PROFILE, UNFROZEN_BLOCK
from thaw.objectives import FloatRange, IntRange, SearchSpace
from thaw.search._budget import (
    PARTIAL,
    SURGICAL,
    informed_start,
    profile_block,
    surgical_start,
)

if TYPE_CHECKING:
    from conftest import CliResult

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize(
    ("shifts", "size", "expected"),
    [
        # input-level shift: the first layers' statistics move, the deeper ones inherit it
        ([0.3, 0.4, 0.5, 0.6, 0.6], 2, 0),
        ([0.9, 0.9, 0.9, 0.9], 1, 0),
        # the shift arises high up: the top block
        ([0.05, 0.05, 0.06, 0.5, 0.55], 2, 3),
        # it arises in the middle
        ([0.1, 0.1, 0.6, 0.6, 0.6], 1, 2),
        ([0.1, 0.1, 0.6, 0.6, 0.6], 2, 1),  # ties: the lowest window holding the rise
        # a layer without BatchNorm adds nothing and passes the score below on
        ([None, 0.4, None, 0.5], 2, 0),
        ([None, None, 0.2, 0.9], 1, 3),
        # a drop is no rise
        ([0.5, 0.2, 0.6], 1, 0),
        ([0.2, 0.1, 0.6], 1, 2),
        # no shift anywhere: the bottom (ties go low)
        ([0.0, 0.0, 0.0], 1, 0),
        # non-finite scores count as unmeasured
        ([math.nan, 0.1, 0.5], 1, 2),
        # nothing to point at
        ([0.3, 0.4], 3, None),
        ([0.3, 0.4], 0, None),
        ([None, None], 1, None),
        ([], 1, None),
    ],
)
def test_the_profile_points_where_the_shift_arises(
    shifts: list[float | None], size: int, expected: int | None
) -> None:
    assert profile_block(shifts, size) == expected


def space(block: IntRange | None, layers: int = 5) -> SearchSpace:
    return SearchSpace(
        unfrozen_layers=IntRange(0, layers),
        learning_rate=FloatRange(1e-5, 1e-2, log=True),
        dropout=FloatRange(0.0, 0.5),
        weight_decay=FloatRange(1e-6, 1e-1, log=True),
        batchnorm=("frozen",),
        block_start=block,
    )


BOTTOM = [0.6, 0.7, 0.75, 0.8, 0.8]  # the shift arises in the first layer
TOP = [0.0, 0.0, 0.01, 0.02, 0.6]  # it arises in the last


@pytest.mark.parametrize(
    ("block", "profile", "expected"),
    [
        (IntRange(0, 5), BOTTOM, 0),
        (IntRange(1, 5), BOTTOM, 1),  # clamped into the searched range
        (IntRange(0, 5), TOP, None),  # the top: the partial trial already is that block
        (None, BOTTOM, None),  # block_start not searched: no surgical trial
        (IntRange(0, 5), None, None),  # no profile
    ],
)
def test_the_informed_start_adds_the_profiles_block(
    block: IntRange | None, profile: list[float] | None, expected: int | None
) -> None:
    s = space(block)
    assert surgical_start(s, profile) == expected
    start = informed_start(s, 0.5, profile=profile)
    labels = [t.strategy for t in start]
    partial = next(t for t in start if t.strategy == PARTIAL)
    if block is not None:
        # the textbook trials unfreeze from the top: block_start at its highest
        assert partial.params["block_start"] == block.high
    if expected is None:
        assert SURGICAL not in labels
        return
    surgical = next(t for t in start if t.strategy == SURGICAL)
    assert labels.index(SURGICAL) == labels.index(PARTIAL) + 1
    # the same trial as the partial one but for where its layers are: they compare
    assert surgical.params == {**partial.params, "block_start": expected}


# ------------------------------------------------------------------ a real study, end to end


def shifted_study(folder: Path, **changes: Any) -> Path:
    """A saved CNN of four conv+BatchNorm layers and a classifier, and a target whose raw
    pixels (0-255, no rescaling) are far from what its BatchNorm layers expect: an input-level
    shift. ``block_start`` searched."""
    import keras
    from keras import layers

    folder.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(8, 8, 3))
    x = inputs
    for i in range(1, 5):
        x = layers.Conv2D(4, 3, padding="same", name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.Activation("relu", name=f"relu{i}")(x)
    x = layers.GlobalAveragePooling2D(name="features")(x)
    outputs = layers.Dense(3, activation="softmax", name="old_head")(x)
    keras.Model(inputs, outputs).save(folder / "tiny.keras")
    rng = np.random.default_rng(0)
    np.savez(
        folder / "data.npz",
        x_train=rng.integers(0, 256, size=(24, 8, 8, 3), dtype=np.uint8),
        y_train=(np.arange(24) % 3).astype(np.int32),
        x_val=rng.integers(0, 256, size=(12, 8, 8, 3), dtype=np.uint8),
        y_val=(np.arange(12) % 3).astype(np.int32),
    )
    study = {
        "name": "surgical",
        "n_trials": 4,
        "model": {"source": "file", "path": "tiny.keras"},
        "data": {"source": "npz", "path": "data.npz"},
        "search_space": {
            "unfrozen_layers": {"low": 0, "high": "all"},
            "block_start": {"low": 0, "high": "all"},
            "batchnorm": ["frozen"],
        },
        "train": {"epochs": 2, "batch_size": 8, "probe_images": 0},
        "sampler": {"name": "random"},
        "pruner": {"compare": "none"},
        "loop": "off",
        "lr_range_test": "off",
        **changes,
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study), encoding="utf-8")
    return path


@pytest.mark.slow
def test_a_study_unfreezes_the_block_the_profile_points_to(
    tmp_path: Path, thaw: Callable[..., CliResult]
) -> None:
    study_file = shifted_study(tmp_path)
    # Before the study exists, inspect measures the profile and writes nothing.
    before = thaw("inspect", study_file)
    assert before.rc == 0, before.err
    assert "measured now on the training images" in before.out
    assert not (tmp_path / "surgical.db").exists()

    result = thaw("run", study_file, "--no-progress")
    assert result.rc == 0, result.err
    study = optuna.load_study(
        study_name="surgical", storage=f"sqlite:///{tmp_path / 'surgical.db'}"
    )
    profile = study.user_attrs[SHIFT_PROFILE]
    assert [g["name"] for g in profile["groups"]] == ["conv1", "conv2", "conv3", "conv4"]
    assert all(g["batchnorm"] == 1 and 0 <= g["shift"] <= 1 for g in profile["groups"])
    # raw pixels against untrained statistics: the shift arises in the first layer
    assert profile["block"] == {
        "start": 0,
        "size": 3,
        "first": "conv1",
        "last": "conv3",
        "top": False,
    }
    trials = {t.user_attrs.get("strategy"): t for t in study.get_trials()}
    surgical, partial = trials[SURGICAL], trials[PARTIAL]
    assert surgical.params["block_start"] == 0 and surgical.params["unfrozen_layers"] == 3
    assert surgical.user_attrs[UNFROZEN_BLOCK] == {
        "start": 0,
        "stop": 3,
        "first": "conv1",
        "last": "conv3",
        "top": False,
        "depth": 4,
    }
    # what trained: the weight drift lists exactly the trainable layers of the base
    assert set(surgical.user_attrs["probes"]["weight_drift"]) == {"conv1", "conv2", "conv3"}
    assert set(partial.user_attrs["probes"]["weight_drift"]) == {"conv2", "conv3", "conv4"}
    assert partial.user_attrs[UNFROZEN_BLOCK]["top"] is True

    # inspect shows the stored profile, top first, the block marked
    shown = thaw("inspect", study_file)
    assert shown.rc == 0, shown.err
    assert "BatchNorm shift profile, stored when the study was created" in shown.out
    rows = {line.split()[1]: line for line in shown.out.splitlines() if line[:8].strip().isdigit()}
    assert set(rows) == {"conv1", "conv2", "conv3", "conv4"}
    assert all(rows[n].endswith("profile's block") for n in ("conv1", "conv2", "conv3"))
    assert not rows["conv4"].endswith("profile's block")
    assert f"{profile['groups'][0]['shift']:.3f}" in rows["conv1"]
    assert "The BatchNorm shift arises most in conv1 to conv3" in shown.out

    report = thaw("report", study_file, "--out", tmp_path / "report")
    assert report.rc == 0, report.err
    for name in ("report.md", "report.html"):
        text = (tmp_path / "report" / name).read_text(encoding="utf-8")
        assert "BatchNorm shift profile" in text
        assert "The BatchNorm shift arises most in conv1 to conv3" in text
        assert (
            "Surgical fine-tuning: the best block of 3 layers below the top, conv1 to conv3" in text
        )
        block_value = surgical.value
        top_value = partial.value
        word = "better than" if block_value < top_value else "worse than"
        assert f"{word} the top 3 layers at {top_value:.4g} (trial {partial.number}" in text


@pytest.mark.parametrize(
    ("block_start", "fragment"),
    [
        ([0, 9], "search_space.block_start: [0, 9] is beyond the model's depth: it has 4 layers"),
        ([-2, 3], "search_space.block_start.low must be an integer >= 0"),
        ([0, "most"], "search_space.block_start.high must be an integer >= 0 (0 is the bottom "),
        ([3, 1], "search_space.block_start: low=3 > high=1; swap them"),
    ],
)
def test_inspect_refuses_a_bad_block_in_one_line(
    tmp_path: Path, thaw: Callable[..., CliResult], block_start: list[Any], fragment: str
) -> None:
    study_file = shifted_study(tmp_path)
    study = yaml.safe_load(study_file.read_text())
    study["search_space"]["block_start"] = block_start
    study_file.write_text(yaml.safe_dump(study), encoding="utf-8")
    result = thaw("inspect", study_file)
    assert result.rc == 2
    assert fragment in result.error_line
    assert not (tmp_path / "surgical.db").exists()
