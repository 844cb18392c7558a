"""The running trial's epochs on ``thaw run``'s progress bar.

The bar counts finished trials; a long trial would leave it still for minutes. Each trial's fit
gets an :class:`EpochBar`, a Keras callback (through the objective's ``extra_callbacks`` hook)
that names the trial and its epoch in the bar's description: ``trial 4 epoch 3/10``, or
``trial 4 warm-up epoch 1/2`` while only the head trains.
"""

from __future__ import annotations

from typing import Any

import keras

#: The user attr in which the objective records a trial's warm-up epochs (head only).
WARMUP_ATTR = "warmup_epochs"


class TrialProgress:
    """Holds the bar while one exists (``optimize_exactly`` sets and clears :attr:`bar`) and
    builds each trial's :class:`EpochBar`."""

    def __init__(self) -> None:
        #: The tqdm bar the trials are counted on; None: nothing is shown.
        self.bar: Any = None

    def callbacks(self, trial: Any) -> list[keras.callbacks.Callback]:
        """The objective's ``extra_callbacks`` factory: one :class:`EpochBar` per trial."""
        return [EpochBar(self, trial)]


class EpochBar(keras.callbacks.Callback):
    """Shows the epoch each fit of one trial starts on the bar's description."""

    def __init__(self, progress: TrialProgress, trial: Any) -> None:
        super().__init__()
        self._progress = progress
        self._trial = trial
        self._label = f"trial {trial.number} epoch"
        self._end: int | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        # Each fit of the trial (a warm-up, then the unfrozen layers) ends on its own epoch.
        self._end = self.params.get("epochs") if self.params else None
        warmup = self._trial.user_attrs.get(WARMUP_ATTR)
        in_warmup = isinstance(warmup, int) and warmup > 0 and self._end == warmup
        self._label = f"trial {self._trial.number} {'warm-up epoch' if in_warmup else 'epoch'}"

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        bar = self._progress.bar
        if bar is None:
            return
        of = f"/{self._end}" if self._end is not None else ""
        bar.set_description(f"{self._label} {epoch + 1}{of}", refresh=True)
