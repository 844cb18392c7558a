"""The learning-rate schedule over a trial (``train.schedule``): the rate each epoch trains at,
in a plain fit, across fit phases, and in the objective's trials."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

keras = pytest.importorskip("keras")

from thaw.objectives import (  # noqa: E402
    ArrayData,
    FineTuneObjective,
    FloatRange,
    IntRange,
    RateSchedule,
    SearchSpace,
    TrainSettings,
    load_pretrained,
    scheduled_rate,
)


@pytest.mark.parametrize(
    ("schedule", "epoch", "epochs", "expected"),
    [
        ("constant", 0, 4, 0.1),
        ("constant", 3, 4, 0.1),
        ("linear", 0, 4, 0.1),
        ("linear", 1, 4, 0.075),
        ("linear", 3, 4, 0.025),
        ("linear", 0, 1, 0.1),
        ("linear", 7, 4, 0.0),  # past the end: no negative rate
        ("cosine", 0, 4, 0.1),
        ("cosine", 2, 4, 0.05),
        ("cosine", 1, 4, 0.1 * 0.5 * (1 + math.cos(math.pi / 4))),
    ],
)
def test_the_rate_of_each_epoch(schedule: str, epoch: int, epochs: int, expected: float) -> None:
    assert scheduled_rate(schedule, 0.1, epoch, epochs) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("schedule", "epochs", "message"),
    [
        ("step", 4, r"schedule must be constant, linear or cosine, got 'step'"),
        ("linear", 0, r"a schedule needs at least 1 epoch, got 0"),
    ],
)
def test_a_bad_schedule_is_refused_with_the_value(schedule: str, epochs: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RateSchedule(schedule, 0.1, epochs)


class _RateSeen(keras.callbacks.Callback):
    """The optimizer's rate at the end of each training batch, per epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.rates: dict[int, set[float]] = {}
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        rate = round(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)), 6)
        self.rates.setdefault(self._epoch, set()).add(rate)


def _dense(rate: float) -> Any:
    inputs = keras.Input(shape=(3,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=rate), loss="sparse_categorical_crossentropy"
    )
    return model


def test_every_batch_of_an_epoch_trains_at_that_epochs_rate_across_phases() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 3)).astype("float32"), np.arange(32) % 2
    schedule, seen = RateSchedule("linear", 0.1, 4), _RateSeen()
    model = _dense(0.1)
    model.fit(x, y, batch_size=8, epochs=2, callbacks=[schedule, seen], verbose=0)
    # a second phase recompiles (a new optimizer at the peak rate) and continues the epochs
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=0.1), loss="sparse_categorical_crossentropy"
    )
    model.fit(x, y, batch_size=8, initial_epoch=2, epochs=4, callbacks=[schedule, seen], verbose=0)
    assert seen.rates == {0: {0.1}, 1: {0.075}, 2: {0.05}, 3: {0.025}}
    assert schedule.rates == pytest.approx([0.05, 0.025])  # this phase's, reset at its start


def _trial(
    tmp_path: Path,
    demo_model_path: Path,
    tiny_arrays: Callable[..., dict[str, np.ndarray]],
    schedule: str,
) -> tuple[Any, list[float]]:
    from thaw.objectives import ModelSource

    pretrained = load_pretrained(ModelSource(kind="file", path=demo_model_path))
    arrays = tiny_arrays(shape=pretrained.input_shape, num_classes=3)
    data = ArrayData(**arrays, class_names=("a", "b", "c"))
    space = SearchSpace(
        unfrozen_layers=IntRange(2, 2),
        learning_rate=FloatRange(3e-3, 3e-3),
        dropout=FloatRange(0.0, 0.0),
        weight_decay=FloatRange(1e-6, 1e-6),
        batchnorm=("frozen",),
    )
    settings = TrainSettings(epochs=3, batch_size=8, warmup_epochs=1, schedule=schedule)
    objective = FineTuneObjective(pretrained, data, space, settings)
    seen = _RateSeen()
    objective.extra_callbacks = lambda trial: [seen]
    storage = f"sqlite:///{tmp_path / f'{schedule}.db'}"
    study = optuna.create_study(study_name=schedule, storage=storage)
    study.optimize(objective, n_trials=1)
    (trial,) = study.get_trials()
    assert trial.state.name == "COMPLETE", trial.user_attrs.get("fail_reason")
    rates = [seen.rates[e].pop() for e in sorted(seen.rates)]
    return trial, rates


def test_a_trial_with_the_linear_schedule_slows_over_its_epochs(
    tmp_path: Path, demo_model_path: Path, tiny_arrays: Callable[..., dict[str, np.ndarray]]
) -> None:
    linear, linear_rates = _trial(tmp_path, demo_model_path, tiny_arrays, "linear")
    constant, constant_rates = _trial(tmp_path, demo_model_path, tiny_arrays, "constant")
    # warm-up (head only) then the unfrozen layers: one schedule over the trial's 3 epochs
    assert linear_rates == pytest.approx([3e-3, 2e-3, 1e-3])
    assert constant_rates == pytest.approx([3e-3, 3e-3, 3e-3])
    # the same seeded first epoch; later epochs trained at other rates
    linear_loss = linear.user_attrs["history"]["loss"]
    constant_loss = constant.user_attrs["history"]["loss"]
    assert linear_loss[0] == pytest.approx(constant_loss[0])
    assert linear_loss[2] != pytest.approx(constant_loss[2])
