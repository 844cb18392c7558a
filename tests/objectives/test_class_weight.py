"""train.class_weight: the weights computed from the setting, read from a study file, and a
real fit whose training loss they weigh."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from thaw.objectives._data import class_weights

NAMES = ("a", "b", "c")
IMBALANCED = np.array([0] * 16 + [1] * 4 + [2] * 4, dtype="int32")


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (None, None),
        ("balanced", {0: 0.5, 1: 2.0, 2: 2.0}),
        ((("b", 3.0),), {0: 1.0, 1: 3.0, 2: 1.0}),
        (((2, 0.25),), {0: 1.0, 1: 1.0, 2: 0.25}),
        ((("0", 4.0), ("c", 2.0)), {0: 4.0, 1: 1.0, 2: 2.0}),
    ],
)
def test_class_weights_from_the_setting(setting: Any, expected: Any) -> None:
    assert class_weights(setting, IMBALANCED, NAMES) == expected


@pytest.mark.parametrize("key", ["d", 3, "7"])
def test_a_class_weight_for_no_class_is_refused_naming_it(key: Any) -> None:
    with pytest.raises(ValueError, match=f"class_weight names class {key!r}, which is not one"):
        class_weights(((key, 2.0),), IMBALANCED, NAMES)


def _study_file(tmp_path: Path, class_weight: Any) -> Path:
    path = tmp_path / "cw.yaml"
    path.write_text(yaml.safe_dump({"name": "cw", "train": {"class_weight": class_weight}}))
    return path


@pytest.mark.parametrize(
    ("value", "stored"),
    [("balanced", "balanced"), ({"b": 2, 0: 0.5}, (("b", 2.0), (0, 0.5))), (None, None)],
)
def test_the_study_file_reads_class_weight(tmp_path: Path, value: Any, stored: Any) -> None:
    from thaw.search import load_study_file

    config = load_study_file(_study_file(tmp_path, value))
    assert config.train.class_weight == stored


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("heavy", "train.class_weight must be balanced or a mapping {class name or index: weight}"),
        ({"a": -1}, "train.class_weight: the weight of class 'a' must be a number > 0, got -1"),
        ({"a": "x"}, "the weight of class 'a' must be a number > 0, got 'x'"),
        ({}, "train.class_weight must be balanced or a mapping"),
    ],
)
def test_a_bad_class_weight_is_refused_with_one_line(
    tmp_path: Path, value: Any, message: str
) -> None:
    from thaw.search import StudyFileError, load_study_file

    with pytest.raises(StudyFileError) as info:
        load_study_file(_study_file(tmp_path, value))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_class_weight_changes_the_training_loss_of_a_real_fit(
    tiny_cnn: Callable[..., Any], tiny_arrays: Callable[..., dict[str, np.ndarray]]
) -> None:
    from optuna.trial import FixedTrial

    from thaw.objectives import (
        ArrayData,
        FineTuneObjective,
        FloatRange,
        IntRange,
        PretrainedBase,
        SearchSpace,
        TrainSettings,
        TrialParams,
        cut_base,
    )

    arrays = tiny_arrays(n_train=24)
    data = ArrayData(
        arrays["x_train"], IMBALANCED, arrays["x_val"], arrays["y_val"], class_names=NAMES
    )
    space = SearchSpace(
        IntRange(0, 2), FloatRange(1e-3, 1e-2), FloatRange(0.0, 0.3), FloatRange(1e-6, 1e-4)
    )
    params = TrialParams(0, 3e-3, 0.0, 1e-5, "frozen")
    losses = {}
    for setting in (None, "balanced"):
        pretrained = PretrainedBase(cut_base(tiny_cnn(), "features"), "tiny")
        settings = TrainSettings(epochs=2, batch_size=8, class_weight=setting)
        objective = FineTuneObjective(pretrained, data, space, settings)
        assert objective.class_weight == (None if setting is None else {0: 0.5, 1: 2.0, 2: 2.0})
        _, history, _ = objective.train(FixedTrial({}, number=0), params, seed=1)
        epochs = history.to_dict()
        assert all(np.isfinite(v) for v in epochs["val_loss"])
        losses[setting] = epochs["loss"]
    assert losses[None] != losses["balanced"]
