"""A learning-rate range test (Smith 2017, "Cyclical Learning Rates"; fastai's ``lr_find``).

Train the configuration the search would fine-tune with an exponentially rising learning rate
over a bounded number of steps, record the smoothed training loss per step, and suggest a rate.
Cheap by design: at most ``max_steps`` batches and ``max_epochs`` passes over the training set,
and the result says exactly how many passes it spent (``epochs``), so a search can count it in
its epoch budget.

:func:`suggest_learning_rate` is the rule alone, a pure function of the recorded curve (no
Keras); :func:`lr_range_test` runs the test on a :class:`FineTuneObjective`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from thaw.objectives._space import TrialParams
from thaw.objectives._specs import BATCHNORM_MODES

if TYPE_CHECKING:
    from thaw.objectives._objective import FineTuneObjective

_logger = logging.getLogger(__name__)

#: The loss must fall at least this fraction below its starting level for a suggestion.
MIN_FALL = 0.05
#: The test stops once the smoothed loss exceeds this multiple of its minimum (fastai's rule).
EXPLODE_FACTOR = 4.0
#: The study's batch is made smaller (down to this) so the test gets about ``TARGET_STEPS``.
MIN_BATCH = 4
TARGET_STEPS = 20
#: Digits kept by :meth:`RangeTestResult.to_dict`.
_DIGITS = 6


def smoothing_beta(steps: int) -> float:
    """The exponential moving average's decay for a test of ``steps`` steps.

    0.98 (fastai's) averages over ~50 steps and lags the raw loss by about as many: right for a
    few hundred steps, far too slow for the 20 to 100 a cheap test runs. So: 0.9 below 50 steps
    (a window of ~10), 0.95 from 50 (~20), 0.98 from 200.
    """
    if steps >= 200:
        return 0.98
    if steps >= 50:
        return 0.95
    return 0.9


def range_test_batch_size(n_train: int, study_batch: int, max_epochs: float) -> int:
    """The batch of a range test: the study's, unless that leaves fewer than ``TARGET_STEPS``
    steps within ``max_epochs`` passes; then smaller, down to ``MIN_BATCH`` (never above
    ``n_train``)."""
    enough = math.floor(max_epochs * n_train / TARGET_STEPS)
    return max(1, min(study_batch, max(MIN_BATCH, enough), n_train))


def _finite(value: float) -> bool:
    return math.isfinite(value)


def _round(value: float) -> float | None:
    """JSON-safe: ``None`` for a non-finite value, else ``value`` to ``_DIGITS`` significant
    digits."""
    if not math.isfinite(value):
        return None
    return float(f"{value:.{_DIGITS}g}")


@dataclass(frozen=True)
class RangeTestResult:
    """What a learning-rate range test recorded and suggests.

    ``learning_rates`` and ``losses`` hold one entry per step trained (so
    ``epochs == len(learning_rates) * batch / n_train``). ``losses`` are the bias-corrected
    exponential moving average of the training loss; every entry is finite except possibly the
    last, which is ``inf`` when the test stopped on a non-finite loss (NaN is stored as ``inf``).
    ``suggestion`` is ``None`` when the curve has no usable descent (``reason`` says why);
    ``diverged`` is True when the loss never fell and the test ended on an explosion.
    """

    batchnorm: str
    learning_rates: tuple[float, ...]
    losses: tuple[float, ...]
    suggestion: float | None
    diverged: bool
    epochs: float
    reason: str

    @property
    def steps(self) -> int:
        """Steps trained."""
        return len(self.learning_rates)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (floats rounded to 6 significant digits, ``inf`` as ``None``): for an
        Optuna user attr."""
        return {
            "batchnorm": self.batchnorm,
            "learning_rates": [_round(v) for v in self.learning_rates],
            "losses": [_round(v) for v in self.losses],
            "suggestion": None if self.suggestion is None else _round(self.suggestion),
            "diverged": self.diverged,
            "epochs": _round(self.epochs),
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RangeTestResult:
        """The result :meth:`to_dict` stored (a ``None`` loss reads back as ``inf``)."""
        suggestion = d.get("suggestion")
        return cls(
            batchnorm=str(d["batchnorm"]),
            learning_rates=tuple(float(v) for v in d["learning_rates"]),
            losses=tuple(math.inf if v is None else float(v) for v in d["losses"]),
            suggestion=None if suggestion is None else float(suggestion),
            diverged=bool(d["diverged"]),
            epochs=float(d["epochs"]),
            reason=str(d["reason"]),
        )


def _first_steps(n: int) -> int:
    """How many of ``n`` steps are "the first steps": a fifth of them (at least one). Over the
    default six decades of rates that is the lowest 1.2 decades, too low to train much."""
    return max(1, n // 5)


def _starting_level(losses: Sequence[float]) -> float | None:
    """The loss before training took hold: the mean of the smoothed loss over the first steps
    (their finite values), ``None`` when the first loss is not finite.

    Not the first value alone: that is one batch's loss, and with the small batches a range test
    on a small training set uses, one batch's loss can lie 10 % either side of the level."""
    if not losses or not _finite(losses[0]):
        return None
    first = [float(v) for v in losses[: _first_steps(len(losses))] if _finite(v)]
    return sum(first) / len(first)


def _fell(losses: Sequence[float]) -> bool:
    """Whether the smoothed loss fell more than ``MIN_FALL`` below its starting level."""
    start = _starting_level(losses)
    if start is None:
        return False
    return min(v for v in losses if _finite(v)) < start * (1 - MIN_FALL)


def suggest_learning_rate(
    learning_rates: Sequence[float], losses: Sequence[float]
) -> tuple[float | None, str]:
    """The suggested learning rate of a range test's curve, and one line saying how or why not.

    ``losses``: the smoothed loss at each rate (non-finite values allowed, ignored). The rule
    (fastai's classic one, with guards): take the step where the smoothed loss is lowest and
    suggest a tenth of its learning rate, where the loss still falls fast and training is
    stable. The *starting level* is the mean of the smoothed loss over the first steps (the
    first fifth of them, at least one). No suggestion (``None``) when

    * there are fewer than two steps, or the loss at the first step is not finite;
    * the minimum is not more than 5 % (``MIN_FALL``) below the starting level: the loss never
      really fell (flat, noise only, or rising from the start);
    * the minimum lies among the first steps themselves: no valley, the range starts too high.

    Nothing is clamped: the caller puts the suggestion into its own search range.
    """
    n = len(learning_rates)
    if len(losses) != n:
        raise ValueError(
            f"learning_rates has {n} entries but losses {len(losses)}; expected one per step"
        )
    if n < 2:
        return None, f"only {n} step(s) recorded; need at least 2"
    start = _starting_level(losses)
    if start is None:
        return None, f"the loss at the first rate ({learning_rates[0]:.3g}) was not finite"
    first = _first_steps(n)
    finite = [(i, float(v)) for i, v in enumerate(losses) if _finite(v)]
    i_min, lowest = min(finite, key=lambda iv: iv[1])
    lr_min = float(learning_rates[i_min])
    if lowest >= start * (1 - MIN_FALL):
        return None, (
            f"the smoothed loss never fell more than {MIN_FALL:.0%} below its starting level "
            f"({start:.4g}, the first {first} step(s); lowest {lowest:.4g}) over rates "
            f"{learning_rates[0]:.3g} to {learning_rates[-1]:.3g}"
        )
    if i_min < first:
        return None, (
            f"the smoothed loss was lowest at step {i_min + 1} of {n} (rate {lr_min:.3g}), "
            f"among the first {first}: no valley; start the range lower"
        )
    suggestion = lr_min / 10
    fall = 1 - lowest / start
    still = " (still falling at the last rate: max_lr may be too low)" if i_min == n - 1 else ""
    return suggestion, (
        f"a tenth of {lr_min:.3g}, the rate at the smoothed loss's minimum {lowest:.4g} "
        f"(step {i_min + 1} of {n}, {fall:.0%} below its starting level {start:.4g}){still}"
    )


def _batches(
    objective: FineTuneObjective,
) -> tuple[int, Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]]:
    """The training set's size and a function giving the (images, labels) at some indices:
    the objective's preprocessed arrays, or for streamed data the files decoded as needed."""
    from thaw.objectives._images import StreamedImages

    data = objective.data
    if isinstance(data, StreamedImages):
        streamed = data

        def decode(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            files = tuple(streamed.train_files[i] for i in idx)
            return objective._preprocess(streamed.decode(files)), streamed.y_train[idx]

        return len(streamed.train_files), decode
    x, y = objective._x_train, data.y_train
    if x is None or len(x) != len(y):
        raise ValueError(
            f"the objective holds {0 if x is None else len(x)} training images for "
            f"{len(y)} labels; a range test needs the whole training set in memory"
        )
    return len(y), lambda idx: (x[idx], y[idx])


def _step_indices(n: int, batch: int, steps: int, seed: int) -> list[np.ndarray]:
    """``steps`` full batches: consecutive batches of seeded shuffled passes (a pass's last,
    incomplete batch is skipped, so every step has the same shape)."""
    rng = np.random.default_rng(seed)
    per_pass = n // batch
    out: list[np.ndarray] = []
    while len(out) < steps:
        order = rng.permutation(n)
        out.extend(order[j * batch : (j + 1) * batch] for j in range(per_pass))
    return out[:steps]


def _set_learning_rate(optimizer: Any, lr: float) -> None:
    variable = optimizer.learning_rate
    if hasattr(variable, "assign"):
        variable.assign(lr)
    else:  # a float or schedule: the setter makes it a variable again
        optimizer.learning_rate = lr


def lr_range_test(
    objective: FineTuneObjective,
    batchnorm: str,
    *,
    min_lr: float = 1e-6,
    max_lr: float = 1.0,
    max_steps: int = 100,
    max_epochs: float = 2.0,
    batch_size: int | None = None,
    seed: int = 0,
) -> RangeTestResult:
    """Run a learning-rate range test of ``objective``'s widest configuration.

    What trains: a fresh model built by ``objective.build`` (pretrained weights restored) with
    every layer the space allows unfrozen (``space.unfrozen_layers.high``), BatchNorm in mode
    ``batchnorm``, dropout and weight decay at the low ends of their ranges; a warm-up in the
    settings is skipped (the layers train from the first step). The objective's later trials
    are unaffected: each starts from the pretrained weights and its own seed.

    Steps: ``min(max_steps, floor(max_epochs * n_train / batch))``, each the next batch of a
    seeded shuffled pass over the training set. ``batch``: ``batch_size``, or the study's batch
    made smaller (down to 4) when that leaves fewer than 20 steps (:func:`range_test_batch_size`).
    The rate at step ``i`` is ``min_lr * (max_lr / min_lr) ** (i / (steps - 1))``. The loss is
    smoothed by a bias-corrected exponential moving average (:func:`smoothing_beta`); the test
    stops early once the smoothed loss exceeds 4 times its minimum or the loss is not finite.
    ``epochs`` counts the steps actually trained: ``steps_trained * batch / n_train``.

    The suggestion follows :func:`suggest_learning_rate`. ``diverged``: the loss never fell more
    than 5 % below its starting level and the test stopped on an explosion. Deterministic given
    ``seed`` (on a deterministic backend and device).
    """
    import keras

    from thaw.objectives._finetune import model_base
    from thaw.objectives._model import freeze

    if batchnorm not in BATCHNORM_MODES:
        raise ValueError(f"batchnorm={batchnorm!r}; expected one of {BATCHNORM_MODES}")
    if not min_lr > 0:
        raise ValueError(f"min_lr={min_lr}; expected > 0")
    if not max_lr > min_lr:
        raise ValueError(f"max_lr={max_lr}; expected > min_lr ({min_lr})")
    if max_steps < 2:
        raise ValueError(f"max_steps={max_steps}; expected >= 2")
    if not max_epochs > 0:
        raise ValueError(f"max_epochs={max_epochs}; expected > 0")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; expected >= 1 (or None)")

    min_lr, max_lr = float(min_lr), float(max_lr)
    n_train, fetch = _batches(objective)
    if batch_size is None:
        batch = range_test_batch_size(n_train, objective.settings.batch_size, max_epochs)
    else:
        batch = min(batch_size, n_train)
    steps = min(max_steps, math.floor(max_epochs * n_train / batch + 1e-9))
    if steps < 2:
        raise ValueError(
            f"max_epochs={max_epochs} allows {steps} step(s) of {batch} images on "
            f"{n_train} training images; a range test needs at least 2"
        )
    beta = smoothing_beta(steps)
    params = TrialParams(
        unfrozen_layers=objective.space.unfrozen_layers.high,
        learning_rate=min_lr,
        dropout=objective.space.dropout.low,
        weight_decay=objective.space.weight_decay.low,
        batchnorm=batchnorm,
    )
    started = time.perf_counter()
    # As FineTuneObjective.train: clear_session resets the global dtype policy too.
    policy = keras.config.dtype_policy()
    keras.backend.clear_session(free_memory=False)
    keras.config.set_dtype_policy(policy)
    keras.utils.set_random_seed(seed)
    model = objective.build(params)
    if objective.settings.warmup_epochs > 0:  # build froze the base for a head-only warm-up
        freeze(
            model_base(model), params.unfrozen_layers, batchnorm, objective.pretrained.unfreeze_by
        )
        objective._compile(model, params)

    rates: list[float] = []
    losses: list[float] = []
    average, lowest = 0.0, math.inf
    stopped = ""
    for i, idx in enumerate(_step_indices(n_train, batch, steps, seed)):
        lr = min_lr * (max_lr / min_lr) ** (i / (steps - 1))
        _set_learning_rate(model.optimizer, lr)
        x, y = fetch(idx)
        model.reset_metrics()
        logs = model.train_on_batch(x, y, return_dict=True)
        raw = float(logs["loss"])
        rates.append(lr)
        if not _finite(raw):
            losses.append(math.inf)
            stopped = f"the loss was not finite at step {i + 1} (rate {lr:.3g})"
            break
        average = beta * average + (1 - beta) * raw
        smooth = average / (1 - beta ** (i + 1))
        losses.append(smooth)
        lowest = min(lowest, smooth)
        if smooth > EXPLODE_FACTOR * lowest:
            stopped = (
                f"the smoothed loss {smooth:.4g} exceeded {EXPLODE_FACTOR:g}x its minimum "
                f"{lowest:.4g} at step {i + 1} (rate {lr:.3g})"
            )
            break
    del model

    suggestion, reason = suggest_learning_rate(rates, losses)
    diverged = bool(stopped) and not _fell(losses)
    if diverged:
        suggestion = None
        reason = f"diverged: {stopped} and the loss never fell more than {MIN_FALL:.0%}"
    elif stopped:
        reason = f"{reason}; stopped early: {stopped}"
    epochs = len(rates) * batch / n_train
    _logger.info(
        "Range test (BatchNorm %s): %d of %d steps of %d images (%.3g epochs) in %.1f s; %s",
        batchnorm,
        len(rates),
        steps,
        batch,
        epochs,
        time.perf_counter() - started,
        reason,
    )
    return RangeTestResult(
        batchnorm=batchnorm,
        learning_rates=tuple(rates),
        losses=tuple(losses),
        suggestion=suggestion,
        diverged=diverged,
        epochs=epochs,
        reason=reason,
    )
