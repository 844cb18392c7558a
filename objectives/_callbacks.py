"""Keras callbacks that connect a fit to an Optuna trial. Each does one thing."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import keras
import optuna

from thaw.objectives._model import (
    adapt_images_per_pass,
    batchnorm_layers,
    batchnorm_moments_model,
    precise_batchnorm,
)
from thaw.objectives._pruning import record_prune_reason
from thaw.objectives._specs import SCHEDULES
from thaw.objectives._weights import assign_weights, snapshot_weights

_logger = logging.getLogger(__name__)

HISTORY_KEYS: tuple[str, ...] = ("loss", "val_loss", "accuracy", "val_accuracy")


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class TrialHistory:
    """Per-epoch metrics of one trial, across every training phase."""

    def __init__(self, metrics: tuple[str, ...] = ()) -> None:
        """``metrics``: extra metrics logged (``auc``: ``auc`` and ``val_auc`` recorded too)."""
        keys = HISTORY_KEYS + tuple(k for m in metrics for k in (m, f"val_{m}"))
        self.epochs: dict[str, list[float | None]] = {key: [] for key in keys}

    def append(self, logs: dict[str, Any]) -> None:
        for key, values in self.epochs.items():
            values.append(_finite_or_none(logs.get(key)))

    def __len__(self) -> int:
        return len(self.epochs["val_loss"])

    def to_dict(self) -> dict[str, list[float | None]]:
        return {key: list(values) for key, values in self.epochs.items()}


#: Seconds between two stores of a trial's history during a fit (it is stored at its end too).
HISTORY_STORE_INTERVAL = 10.0


class HistoryRecorder(keras.callbacks.Callback):
    """Appends each epoch's metrics to a :class:`TrialHistory` and stores it on the trial (user
    attrs ``history`` and ``epochs_run``).

    Stored when a fit ends, and during a fit when ``interval`` seconds have passed since the
    last store: each store is two storage writes, and the epoch's monitored value reaches the
    trial every epoch anyway (:class:`TrialReporter`; the dashboard's live curve). A fit that
    raises never reaches ``on_train_end``: the objective calls :meth:`store` then. ``interval``
    0 stores every epoch.

    The history object is owned by the objective, so a second ``fit()`` phase keeps appending.
    """

    def __init__(
        self,
        trial: optuna.Trial,
        history: TrialHistory,
        interval: float = HISTORY_STORE_INTERVAL,
    ) -> None:
        super().__init__()
        if interval < 0:
            raise ValueError(f"interval={interval}; expected seconds >= 0")
        self._trial = trial
        self._history = history
        self.interval = interval
        #: Epochs of the history stored so far (it outlives a fit: a second phase appends).
        self.stored = 0
        self._last_store = time.monotonic()

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._last_store = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._history.append(logs or {})
        if time.monotonic() - self._last_store >= self.interval:
            self.store()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.store()

    def store(self) -> None:
        """Store the epochs not stored yet (nothing when there are none)."""
        if len(self._history) == self.stored:
            return
        self._trial.set_user_attr("history", self._history.to_dict())
        self._trial.set_user_attr("epochs_run", len(self._history))
        self.stored = len(self._history)
        self._last_store = time.monotonic()


class TrialReporter(keras.callbacks.Callback):
    """Reports the monitored metric to the trial each epoch and stops the fit when it should prune.

    Steps are 1-based epoch numbers; a phase started with ``initial_epoch`` continues them, so
    Optuna never sees a repeated step. Stops too on a non-finite value. When the pruner says
    why it prunes (:class:`~thaw.objectives._pruning.ExplainingPruner`), the trial records it.
    """

    def __init__(self, trial: optuna.Trial, monitor: str = "val_loss") -> None:
        super().__init__()
        self._trial = trial
        self._monitor = monitor
        self.pruned_at: int | None = None
        self.diverged_at: int | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.pruned_at = None
        self.diverged_at = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        step = epoch + 1
        value = (logs or {}).get(self._monitor)
        if value is None:
            raise KeyError(
                f"the fit logged no '{self._monitor}' (logged: {sorted(logs or {})}); "
                "is validation data set?"
            )
        value = float(value)
        self._trial.report(value, step)
        if not math.isfinite(value):
            self.diverged_at = step
        if self._trial.should_prune():
            self.pruned_at = step
            record_prune_reason(self._trial)
        if self.pruned_at is not None or self.diverged_at is not None:
            self.model.stop_training = True


def scheduled_rate(schedule: str, rate: float, epoch: int, epochs: int) -> float:
    """The learning rate of 0-based ``epoch`` of a fit of ``epochs`` at peak ``rate``.

    ``constant``: ``rate``. ``linear``: ``rate * (1 - epoch / epochs)``, so the first epoch
    trains at ``rate`` and the last at ``rate / epochs`` (the budget-aware linear schedule of
    Li, Yumer & Ramanan, 2020). ``cosine``: ``rate * (1 + cos(pi * epoch / epochs)) / 2``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be constant, linear or cosine, got {schedule!r}")
    if epochs < 1:
        raise ValueError(f"a schedule needs at least 1 epoch, got {epochs}")
    if schedule == "constant":
        return rate
    fraction = min(max(epoch, 0), epochs) / epochs
    if schedule == "linear":
        return rate * (1.0 - fraction)
    return rate * 0.5 * (1.0 + math.cos(math.pi * fraction))


class RateSchedule(keras.callbacks.Callback):
    """Sets the optimizer's learning rate before each epoch (:func:`scheduled_rate`).

    Epochs are the fit's own numbers, so a phase started with ``initial_epoch`` continues the
    schedule where the phase before it stopped; ``epochs`` is the trial's length, not the
    phase's. A recompiled model brings a new optimizer: the rate is set on whichever the
    model has when each epoch begins.
    """

    def __init__(self, schedule: str, rate: float, epochs: int) -> None:
        super().__init__()
        scheduled_rate(schedule, rate, 0, epochs)  # rejects a bad schedule or length now
        self.schedule = schedule
        self.rate = float(rate)
        self.epochs = int(epochs)
        self.rates: list[float] = []

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.rates = []

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        rate = scheduled_rate(self.schedule, self.rate, epoch, self.epochs)
        self.model.optimizer.learning_rate = rate
        self.rates.append(rate)


class BestEpoch:
    """The best epoch of one trial so far, and the model's weights at its end (``weights``: a
    :func:`~thaw.objectives._weights.snapshot_weights`, backend tensors where the model's weights
    lie, taken each time the epoch is the best so far).

    Owned by the objective for the whole trial, so a second ``fit()`` phase (after the warm-up)
    competes with the first. Non-finite values never count; a tie keeps the earlier epoch.
    """

    def __init__(self, maximize: bool = False) -> None:
        self.maximize = maximize
        self.epoch: int | None = None
        self.value: float | None = None
        self.weights: list[Any] | None = None

    def update(self, epoch: int, value: float, model: keras.Model) -> bool:
        """Record epoch ``epoch`` (1-based) if its value is the best so far."""
        if not math.isfinite(value):
            return False
        if self.value is not None and (
            value <= self.value if self.maximize else value >= self.value
        ):
            return False
        self.epoch, self.value = epoch, value
        self.weights = snapshot_weights(model)
        return True


class RestoreBestWeights(keras.callbacks.Callback):
    """Puts the best epoch's weights back into the model when the trial's training ends.

    Unlike ``EarlyStopping(restore_best_weights=True)``, the best is tracked across fit phases
    (a :class:`BestEpoch` shared by them), and the weights are restored only when the trial
    stops: when the fit reaches ``final_epoch`` or something (the pruner) stopped it. So the
    second phase of a warm-up starts from the warm-up's last weights, as without this callback.
    """

    def __init__(
        self,
        best: BestEpoch,
        final_epoch: int,
        monitor: str = "val_loss",
        model_to_keep: keras.Model | None = None,
        keep_last: bool = False,
    ) -> None:
        super().__init__()
        #: The model whose weights are kept and restored (default: the model being fitted);
        #: the whole model when a phase fits only its top, which shares the layers.
        self.model_to_keep = model_to_keep
        #: With ``keep_last``, the weights of the last epoch trained are kept in
        #: ``last_weights`` when the best epoch's replace them (what the trial ended with).
        self.keep_last = keep_last
        self.last_weights: list[Any] | None = None
        self.best = best
        self.final_epoch = final_epoch
        self.monitor = monitor
        self.last_epoch = 0
        self.restored_epoch: int | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.last_epoch = 0
        self.restored_epoch = None
        self.last_weights = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.last_epoch = epoch + 1
        value = (logs or {}).get(self.monitor)
        if value is not None:
            self.best.update(epoch + 1, float(value), self.model_to_keep or self.model)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        stopped = bool(getattr(self.model, "stop_training", False))
        if (stopped or self.last_epoch >= self.final_epoch) and self.best.weights is not None:
            model = self.model_to_keep or self.model
            if self.keep_last and self.best.epoch != self.last_epoch:
                self.last_weights = snapshot_weights(model)
            assign_weights(model, self.best.weights)
            self.restored_epoch = self.best.epoch
            _logger.debug("Restored the weights of epoch %s", self.best.epoch)


class PreciseBatchNorm(keras.callbacks.Callback):
    """Before each validation, re-estimates the moving statistics of the BatchNorm layers that
    train on training images (:func:`thaw.objectives._model.precise_batchnorm`), so the
    validation loss is that of the epoch's weights, not of statistics trailing them.

    ``base``: the network whose BatchNorm layers train; ``x``: training images as ``base``
    takes them (preprocessed, not augmented). A no-op while no BatchNorm layer of ``base``
    trains (a warm-up that trains the head only, BatchNorm frozen or adapted).
    """

    def __init__(self, base: keras.Model, x: Any, max_images: int = 512) -> None:
        super().__init__()
        self.base = base
        self.x = x
        self.max_images = max_images
        self.layers: list[keras.layers.Layer] = []
        #: The layers that train, their moments model and the images per pass: computed once
        #: per fit (a phase), not every epoch.
        self._plan: tuple[list[keras.layers.Layer], keras.Model | None, int] | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.layers = []
        self._plan = None

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self._plan is None:
            training = [layer for layer in batchnorm_layers(self.base) if layer.trainable]
            moments = batchnorm_moments_model(self.base, training) if training else None
            images = min(len(self.x), self.max_images)
            self._plan = (training, moments, adapt_images_per_pass(self.base, images))
        training, moments, per_pass = self._plan
        if moments is None:
            return
        self.layers = precise_batchnorm(
            self.base, self.x, self.max_images, per_pass, moments=moments, layers=training
        )
