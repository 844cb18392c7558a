"""Image folders larger than the memory budget are streamed from files, batch by batch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from PIL import Image

from thaw.objectives import (
    DataSource,
    FineTuneObjective,
    FloatRange,
    IntRange,
    PretrainedBase,
    SearchSpace,
    StreamedImages,
    TrainSettings,
    TrialParams,
    load_data,
)

CLASSES = ("a", "b", "c")


def make_folder(root: Path, per_class: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full((10, 12, 3), 60 * label + 40, dtype=np.uint8)
            pixels = np.clip(pixels + rng.integers(0, 30, pixels.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.{'png' if i % 2 else 'jpg'}")
    (root / "a" / "broken.jpg").write_bytes(b"not an image")
    return root


def source(root: Path, max_memory_mb: int) -> DataSource:
    return DataSource(
        kind="directory",
        path=str(root),
        val_fraction=0.34,
        max_skipped_fraction=0.2,
        max_memory_mb=max_memory_mb,
    )


@pytest.mark.parametrize(("budget_mb", "streamed"), [(2048, False), (0, True)])
def test_folder_is_streamed_only_above_the_memory_budget(
    tmp_path: Path, budget_mb: int, streamed: bool
) -> None:
    data = load_data(source(make_folder(tmp_path / "img"), budget_mb), (8, 8, 3))
    assert isinstance(data, StreamedImages) is streamed


def test_streamed_and_in_memory_agree(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "img")
    in_memory = load_data(source(root, 2048), (8, 8, 3))
    streamed = load_data(source(root, 0), (8, 8, 3))
    assert isinstance(streamed, StreamedImages)
    assert streamed.fingerprint() == in_memory.fingerprint()
    assert streamed.counts(streamed.y_train) == in_memory.counts(in_memory.y_train)
    assert streamed.counts(streamed.y_val) == in_memory.counts(in_memory.y_val)
    assert (
        streamed.skipped_files
        == in_memory.skipped_files
        == ("a/broken.jpg (UnidentifiedImageError)",)
    )
    np.testing.assert_array_equal(streamed.sample_train(100), in_memory.x_train)


def test_a_trial_trains_on_streamed_batches(tmp_path: Path, tiny_cnn: Callable[..., Any]) -> None:
    data = load_data(source(make_folder(tmp_path / "img"), 0), (8, 8, 3))
    assert isinstance(data, StreamedImages)
    pretrained = PretrainedBase(tiny_cnn(), "tiny")
    space = SearchSpace(
        IntRange(0, 2), FloatRange(1e-3, 1e-2), FloatRange(0.0, 0.2), FloatRange(1e-6, 1e-4)
    )
    objective = FineTuneObjective(
        pretrained, data, space, TrainSettings(epochs=3, batch_size=4), seed=0
    )
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db")
    trial = study.ask()
    value = objective.run(trial, TrialParams(2, 3e-3, 0.1, 1e-5, batchnorm="adapt"))
    study.tell(trial, value)
    done = study.trials[0]
    assert sorted(done.intermediate_values) == [1, 2, 3]
    assert len(done.user_attrs["history"]["val_loss"]) == 3
    assert value == pytest.approx(min(done.intermediate_values.values()))
