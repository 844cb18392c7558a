"""RestoreBestWeights: the trial ends at its best epoch, across fit phases and when pruned;
the last epoch's weights are kept on request (the end-of-trial probes measure them)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from thaw.objectives import BestEpoch, RestoreBestWeights  # noqa: E402


def _model() -> Any:
    inputs = keras.Input(shape=(2,))
    return keras.Model(inputs, keras.layers.Dense(1)(inputs))


def _phase(
    callback: Any, model: Any, values: list[float], first_epoch: int = 0, stop: bool = False
) -> None:
    """Epochs ``first_epoch..``: every weight is filled with the epoch number, then the value."""
    model.stop_training = False
    callback.on_train_begin()
    for i, value in enumerate(values):
        epoch = first_epoch + i
        model.set_weights([np.full_like(w, epoch) for w in model.get_weights()])
        callback.on_epoch_end(epoch, {"val_loss": value})
    model.stop_training = stop
    callback.on_train_end()


def _filled_with(model: Any) -> float:
    values = {float(v) for w in model.get_weights() for v in np.ravel(w)}
    assert len(values) == 1
    return values.pop()


# values per epoch, final epoch, expected best epoch (1-based)
CASES = [
    ([1.0, 0.5, 0.7, 0.9], 4, 2),
    ([1.0, 0.5, 0.5, 0.9], 4, 2),  # a tie keeps the earlier epoch
    ([float("nan"), 2.0, float("inf"), 1.5], 4, 4),  # non-finite never counts
    ([0.9, 0.8, 0.7, 0.6], 4, 4),
]


@pytest.mark.parametrize(("values", "final", "best"), CASES)
def test_weights_of_the_best_epoch_are_restored(values: list[float], final: int, best: int) -> None:
    model = _model()
    callback = RestoreBestWeights(BestEpoch(), final_epoch=final)
    callback.set_model(model)
    _phase(callback, model, values)
    assert callback.restored_epoch == best
    assert _filled_with(model) == best - 1


@pytest.mark.parametrize(("values", "final", "best"), CASES)
@pytest.mark.parametrize("keep_last", [True, False])
def test_the_last_epochs_weights_are_kept_on_request(
    values: list[float], final: int, best: int, keep_last: bool
) -> None:
    model = _model()
    callback = RestoreBestWeights(BestEpoch(), final_epoch=final, keep_last=keep_last)
    callback.set_model(model)
    _phase(callback, model, values)
    assert _filled_with(model) == best - 1
    if keep_last and best != len(values):
        assert callback.last_weights is not None
        assert {float(v) for w in callback.last_weights for v in np.ravel(w)} == {len(values) - 1}
    else:  # not asked, or the model holds the last epoch's weights anyway
        assert callback.last_weights is None


def test_maximized_metric_keeps_the_highest() -> None:
    model = _model()
    callback = RestoreBestWeights(BestEpoch(maximize=True), 3, monitor="val_accuracy")
    callback.set_model(model)
    callback.on_train_begin()
    for epoch, value in enumerate([0.5, 0.9, 0.7]):
        model.set_weights([np.full_like(w, epoch) for w in model.get_weights()])
        callback.on_epoch_end(epoch, {"val_accuracy": value})
    callback.on_train_end()
    assert callback.restored_epoch == 2 and _filled_with(model) == 1


def test_second_phase_starts_from_the_last_weights_and_competes_with_the_first() -> None:
    model = _model()
    callback = RestoreBestWeights(BestEpoch(), final_epoch=5)
    callback.set_model(model)
    _phase(callback, model, [1.0, 0.4], first_epoch=0)  # warm-up: epochs 1-2
    assert callback.restored_epoch is None  # not the end of the trial: nothing restored
    assert _filled_with(model) == 1
    _phase(callback, model, [0.6, 0.5, 0.45], first_epoch=2)  # fine-tuning: epochs 3-5
    assert callback.restored_epoch == 2  # the warm-up's epoch 2 stays the best
    assert _filled_with(model) == 1


def test_a_pruned_fit_is_restored_before_the_final_epoch() -> None:
    model = _model()
    callback = RestoreBestWeights(BestEpoch(), final_epoch=10)
    callback.set_model(model)
    _phase(callback, model, [1.0, 0.3, 0.8], stop=True)
    assert callback.restored_epoch == 2 and _filled_with(model) == 1


def test_a_real_fit_ends_with_the_best_epoch_weights(tiny_cnn: Any, tiny_arrays: Any) -> None:
    data = tiny_arrays()
    model = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(3, "softmax")]
    )
    model.compile(keras.optimizers.SGD(0.5), "sparse_categorical_crossentropy")
    best = BestEpoch()
    kwargs = {"x": data["x_train"] / 255.0, "y": data["y_train"], "batch_size": 8, "verbose": 0}
    val = (data["x_val"] / 255.0, data["y_val"])
    history = model.fit(
        **kwargs, validation_data=val, epochs=6, callbacks=[RestoreBestWeights(best, 6)]
    )
    losses = history.history["val_loss"]
    assert best.epoch == int(np.argmin(losses)) + 1
    measured = model.evaluate(*val, batch_size=8, verbose=0)
    assert measured == pytest.approx(min(losses), abs=1e-5)


# --------------------------------------------------------------------------- HistoryRecorder


class _Clock:
    """Stands in for ``time.monotonic`` in ``thaw.objectives._callbacks``."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _stored_epochs(study: Any, trial: Any) -> int | None:
    attrs = study._storage.get_trial(trial._trial_id).user_attrs
    if "history" not in attrs:
        assert "epochs_run" not in attrs
        return None
    assert attrs["epochs_run"] == len(attrs["history"]["val_loss"])
    return int(attrs["epochs_run"])


# interval (s), seconds each epoch takes, stored epochs after each epoch, then after the fit
RECORDER_CASES = [
    (0.0, [1, 1, 1], [1, 2, 3], 3),  # every epoch
    (10.0, [1, 1, 1], [None, None, None], 3),  # short epochs: once, at the end
    (10.0, [4, 4, 4, 4], [None, None, 3, 3], 4),  # 12 s after the start, then at the end
    (10.0, [12, 1, 12], [1, 1, 3], 3),  # long epochs stored as they end
    (10.0, [], [], None),  # no epoch: nothing stored
]


@pytest.mark.parametrize(("interval", "durations", "after_epoch", "after_fit"), RECORDER_CASES)
def test_history_is_stored_at_most_every_interval_and_when_the_fit_ends(
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    interval: float,
    durations: list[float],
    after_epoch: list[int | None],
    after_fit: int | None,
) -> None:
    import optuna

    from thaw.objectives import HistoryRecorder, TrialHistory, _callbacks

    clock = _Clock()
    monkeypatch.setattr(_callbacks.time, "monotonic", clock)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'h.db'}")
    trial = study.ask()
    history = TrialHistory()
    recorder = HistoryRecorder(trial, history, interval=interval)
    recorder.on_train_begin()
    seen = []
    for epoch, seconds in enumerate(durations):
        clock.now += seconds
        recorder.on_epoch_end(epoch, {"loss": 1.0, "val_loss": 1.0 / (epoch + 1)})
        seen.append(_stored_epochs(study, trial))
    assert seen == after_epoch
    recorder.on_train_end()
    assert _stored_epochs(study, trial) == after_fit
    stored = study._storage.get_trial(trial._trial_id).user_attrs.get("history")
    if after_fit:
        assert stored == history.to_dict()


def test_a_negative_interval_is_refused(tmp_path: Any) -> None:
    import optuna

    from thaw.objectives import HistoryRecorder, TrialHistory

    trial = optuna.create_study().ask()
    with pytest.raises(ValueError, match="interval=-1"):
        HistoryRecorder(trial, TrialHistory(), interval=-1)
