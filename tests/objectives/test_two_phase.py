"""Warm-up: the head trains alone for ``warmup_epochs``, then the unfrozen layers join in.

Real fits of the tiny CNN from tests/conftest.py, real Optuna studies in SQLite. Epoch numbering
(Optuna steps, history) continues across the two phases.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import optuna
import pytest
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial, TrialState

from thaw.objectives import (
    ArrayData,
    FineTuneObjective,
    FloatRange,
    IntRange,
    PretrainedBase,
    SearchSpace,
    TrainSettings,
    TrialHistory,
    TrialParams,
    cut_base,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

Arrays = Callable[..., dict[str, np.ndarray]]

# Fixed so every run trains visibly: the whole tiny base (conv1, conv2) at a high learning rate.
SPACE = SearchSpace(
    unfrozen_layers=IntRange(2, 2),
    learning_rate=FloatRange(1e-2, 1e-2),
    dropout=FloatRange(0.0, 0.0),
    weight_decay=FloatRange(1e-6, 1e-6),
)


@pytest.fixture
def pretrained(tiny_cnn: Callable[..., Any]) -> PretrainedBase:
    return PretrainedBase(cut_base(tiny_cnn(), "features"), "tiny")


@pytest.fixture
def data(tiny_arrays: Arrays) -> ArrayData:
    return ArrayData(**tiny_arrays(), class_names=("a", "b", "c"))


@pytest.fixture
def storage_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'warmup.db'}"


@pytest.fixture
def study(storage_url: str) -> optuna.Study:
    return optuna.create_study(study_name="warmup", storage=storage_url)


@pytest.fixture
def reported_steps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every step passed to ``Trial.report``, in order (Optuna itself drops repeats silently)."""
    steps: list[int] = []
    real_report = optuna.trial.Trial.report

    def report(self: optuna.trial.Trial, value: float, step: int) -> None:
        steps.append(step)
        real_report(self, value, step)

    monkeypatch.setattr(optuna.trial.Trial, "report", report)
    return steps


@pytest.fixture
def freeze_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Spy on the objective's ``freeze``: what was trainable, and the weights, at each call."""
    import thaw.objectives._objective as objective_module

    calls: list[dict[str, Any]] = []
    real_freeze = objective_module.freeze

    def freeze(base: keras.Model, unfrozen_layers: int, *args: Any, **kwargs: Any) -> None:
        calls.append(
            {
                "unfrozen_layers": unfrozen_layers,
                "base_weights": [w.copy() for w in base.get_weights()],
                "conv_kernels": {
                    name: base.get_layer(name).kernel.numpy().copy() for name in ("conv1", "conv2")
                },
            }
        )
        real_freeze(base, unfrozen_layers, *args, **kwargs)

    monkeypatch.setattr(objective_module, "freeze", freeze)
    return calls


def trainable_names(model: keras.Model) -> set[str]:
    return {w.path.split("/")[-2] for w in model.trainable_weights}


def stored(storage_url: str) -> FrozenTrial:
    """The study's only trial, as any other storage client sees it."""
    (trial,) = optuna.load_study(study_name="warmup", storage=storage_url).get_trials()
    return trial


# ------------------------------------------------------------------ numbering and records


def test_steps_continue_across_phases(
    pretrained: PretrainedBase,
    data: ArrayData,
    study: optuna.Study,
    storage_url: str,
    reported_steps: list[int],
) -> None:
    objective = FineTuneObjective(
        pretrained, data, SPACE, TrainSettings(epochs=4, warmup_epochs=2, batch_size=8)
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study.optimize(objective, n_trials=1)
    assert not [w for w in caught if "already reported" in str(w.message)]

    trial = stored(storage_url)
    assert trial.state == TrialState.COMPLETE
    assert reported_steps == [1, 2, 3, 4]  # no step repeated by the second fit()
    assert sorted(trial.intermediate_values) == [1, 2, 3, 4]
    history = trial.user_attrs["history"]
    assert all(len(values) == 4 for values in history.values())
    assert [trial.intermediate_values[s] for s in (1, 2, 3, 4)] == pytest.approx(
        history["val_loss"]
    )
    assert trial.user_attrs["warmup_epochs"] == 2
    assert trial.user_attrs["epochs_run"] == 4
    assert trial.value == pytest.approx(min(history["val_loss"]))
    assert trial.user_attrs["best_epoch"] == int(np.argmin(history["val_loss"])) + 1


def test_warmup_not_below_epochs_is_clamped(
    pretrained: PretrainedBase,
    data: ArrayData,
    study: optuna.Study,
    storage_url: str,
    reported_steps: list[int],
) -> None:
    objective = FineTuneObjective(
        pretrained, data, SPACE, TrainSettings(epochs=2, warmup_epochs=5, batch_size=8)
    )
    study.optimize(objective, n_trials=1)
    trial = stored(storage_url)
    assert trial.state == TrialState.COMPLETE
    assert reported_steps == [1, 2]
    assert trial.user_attrs["warmup_epochs"] == 2
    assert len(trial.user_attrs["history"]["val_loss"]) == 2


def test_no_warmup_attr_without_warmup(
    pretrained: PretrainedBase,
    data: ArrayData,
    study: optuna.Study,
    storage_url: str,
    freeze_calls: list[Any],
) -> None:
    objective = FineTuneObjective(pretrained, data, SPACE, TrainSettings(epochs=1, batch_size=8))
    study.optimize(objective, n_trials=1)
    assert "warmup_epochs" not in stored(storage_url).user_attrs
    assert [c["unfrozen_layers"] for c in freeze_calls] == [2]  # frozen once, as configured


# ------------------------------------------------------------------- what each phase trains


@pytest.mark.parametrize("batchnorm", ["frozen", "train"])
def test_phase_one_trains_the_head_only(
    pretrained: PretrainedBase,
    data: ArrayData,
    study: optuna.Study,
    freeze_calls: list[dict[str, Any]],
    batchnorm: str,
) -> None:
    settings = TrainSettings(epochs=4, warmup_epochs=2, batch_size=8)
    objective = FineTuneObjective(pretrained, data, SPACE, settings)
    params = TrialParams(
        unfrozen_layers=1, learning_rate=1e-2, dropout=0.0, weight_decay=1e-6, batchnorm=batchnorm
    )
    model = objective.build(params)
    assert trainable_names(model) == {"head_dense"}  # warm-up: the base is frozen
    assert [c["unfrozen_layers"] for c in freeze_calls] == [0]
    base = model.layers[1]
    start = [w.copy() for w in base.get_weights()]
    head_start = [w.copy() for w in model.get_layer("head_dense").get_weights()]
    bn2_start = base.get_layer("bn2").moving_mean.numpy().copy()

    trial = study.ask()
    history = TrialHistory()
    reporter = objective.fit(trial, model, params, history)
    study.tell(trial, min(v for v in history.to_dict()["val_loss"] if v is not None))
    assert reporter.pruned_at is None and len(history) == 4

    # the second phase began with one freeze(unfrozen_layers=1), after two warm-up epochs
    assert [c["unfrozen_layers"] for c in freeze_calls] == [0, 1]
    after_warmup = freeze_calls[1]
    # ... at which point every weight of the base, BatchNorm statistics included, was untouched
    for a, b in zip(after_warmup["base_weights"], start, strict=True):
        np.testing.assert_array_equal(a, b)
    # while the head had trained
    head_now = model.get_layer("head_dense").get_weights()
    assert not np.allclose(head_now[0], head_start[0])

    # phase 2 trained the top layer (conv2) and left conv1 alone
    assert trainable_names(model) == (
        {"conv2", "head_dense"} | ({"bn2"} if batchnorm == "train" else set())
    )
    conv1_after = base.get_layer("conv1").kernel.numpy()
    conv2_after = base.get_layer("conv2").kernel.numpy()
    np.testing.assert_array_equal(conv1_after, after_warmup["conv_kernels"]["conv1"])
    assert not np.allclose(conv2_after, after_warmup["conv_kernels"]["conv2"])
    bn2_after = base.get_layer("bn2").moving_mean.numpy()
    if batchnorm == "train":
        assert not np.allclose(bn2_after, bn2_start)  # above the unfrozen conv2: training mode
    else:
        np.testing.assert_array_equal(bn2_after, bn2_start)


def test_warmup_only_fit_leaves_the_base_unchanged(
    pretrained: PretrainedBase,
    data: ArrayData,
    study: optuna.Study,
    reported_steps: list[int],
) -> None:
    settings = TrainSettings(epochs=2, warmup_epochs=2, batch_size=8)
    objective = FineTuneObjective(pretrained, data, SPACE, settings)
    params = TrialParams(unfrozen_layers=2, learning_rate=1e-2, dropout=0.0, weight_decay=1e-6)
    model = objective.build(params)
    base = model.layers[1]
    conv_start = {n: base.get_layer(n).kernel.numpy().copy() for n in ("conv1", "conv2")}
    base_start = [w.copy() for w in base.get_weights()]
    head_start = model.get_layer("head_dense").get_weights()[0].copy()

    trial = study.ask()
    history = TrialHistory()
    objective.fit(trial, model, params, history)
    assert len(history) == 2 and reported_steps == [1, 2]
    for name, kernel in conv_start.items():
        np.testing.assert_array_equal(base.get_layer(name).kernel.numpy(), kernel)
    for a, b in zip(base.get_weights(), base_start, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(model.get_layer("head_dense").get_weights()[0], head_start)
    # the pretrained base itself is never trained
    for a, b in zip(pretrained.model.get_weights(), base_start, strict=True):
        np.testing.assert_array_equal(a, b)


class PruneAtStep(BasePruner):
    def __init__(self, step: int) -> None:
        self.step = step

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return (trial.last_step or 0) >= self.step


def test_pruned_during_warmup_never_unfreezes(
    pretrained: PretrainedBase,
    data: ArrayData,
    storage_url: str,
    reported_steps: list[int],
    freeze_calls: list[dict[str, Any]],
) -> None:
    study = optuna.create_study(study_name="warmup", storage=storage_url, pruner=PruneAtStep(1))
    objective = FineTuneObjective(
        pretrained, data, SPACE, TrainSettings(epochs=4, warmup_epochs=2, batch_size=8)
    )
    study.optimize(objective, n_trials=1)
    trial = stored(storage_url)
    assert trial.state == TrialState.PRUNED
    assert reported_steps == [1]
    assert sorted(trial.intermediate_values) == [1]
    assert trial.user_attrs["epochs_run"] == 1
    assert [c["unfrozen_layers"] for c in freeze_calls] == [0]  # phase 2 never started
