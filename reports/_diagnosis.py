"""Diagnosis rules: why did the validation loss of a fine-tuning trial rise?

Everything here is pure Python over what Optuna storage holds (see ``docs/storage.md``): trial
params, the ``history`` user attribute and a few other user attributes. This module never
imports Keras, TensorFlow or thaw's ``objectives``/``search`` packages, so it works on any
machine that can open the storage.

Per trial, :func:`diagnose_trial` returns one or more :class:`Verdict` objects named by the
constants below. Per study, :func:`diagnose_study` bundles the per-trial verdicts with
:func:`climb_summary`, :func:`parameter_importances`, :func:`robust_region` and
:func:`feature_extraction_vs_finetuning`.

All rules are governed by :class:`Thresholds`; a study file can override any of them through
:meth:`Thresholds.from_dict`.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "BATCHNORM_MISMATCH",
    "HEALTHY",
    "LR_TOO_HIGH",
    "OVERFITTING",
    "UNDERFITTING",
    "VERDICTS",
    "WEAK_REGULARISATION",
    "ClimbFinding",
    "ClimbSummary",
    "DomainShift",
    "FeatureExtractionComparison",
    "ParamRange",
    "ParameterImportances",
    "RobustRegion",
    "StudyDiagnosis",
    "Thresholds",
    "TrialCurves",
    "TrialDiagnosis",
    "Verdict",
    "climb_summary",
    "diagnose_study",
    "diagnose_trial",
    "feature_extraction_vs_finetuning",
    "parameter_importances",
    "robust_region",
]

HEALTHY = "healthy"
"""Nothing else applies: val loss fell and did not climb beyond the thresholds."""
OVERFITTING = "overfitting"
"""Val loss climbed (or stalled) after its best epoch while train loss kept falling."""
LR_TOO_HIGH = "lr_too_high"
"""Pretrained features destroyed: divergence (including an explosive loss in the first epochs),
an unrecovered jump after unfreezing, or a persistently rising / oscillating train loss."""
UNDERFITTING = "underfitting"
"""Insufficient fine-tuning: train and val loss stay high with a small gap (a plateau, or
progress too slow to catch up) while peers with more unfrozen layers or a higher learning rate
do clearly better."""
BATCHNORM_MISMATCH = "batchnorm_mismatch"
"""Val loss far above train loss from the first epochs while train accuracy is already high,
or val accuracy far below train accuracy (near chance) once train accuracy gets high."""
WEAK_REGULARISATION = "weak_regularisation"
"""Overfitting that peers with more dropout / weight decay at a similar learning rate and
depth avoid."""

VERDICTS: tuple[str, ...] = (
    LR_TOO_HIGH,
    BATCHNORM_MISMATCH,
    OVERFITTING,
    WEAK_REGULARISATION,
    UNDERFITTING,
    HEALTHY,
)
"""All verdict names, in the order verdicts of one trial are listed."""

_PARAM_LABELS = {
    "unfrozen_layers": "unfrozen layers",
    "learning_rate": "learning rate",
    "dropout": "dropout",
    "weight_decay": "weight decay",
    "batchnorm": "batchnorm",
}
# Candidate split points for climb_summary, as quantiles of a parameter's observed values.
_SPLIT_QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
_EPS = 1e-12


# --------------------------------------------------------------------------------------------
# Thresholds
# --------------------------------------------------------------------------------------------


def _threshold(
    default: float,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
) -> Any:
    return field(
        default=default,
        metadata={
            "low": low,
            "high": high,
            "low_open": low_open,
            "high_open": high_open,
            "integer": integer,
        },
    )


@dataclass(frozen=True)
class Thresholds:
    """Named constants of the diagnosis rules.

    Relative quantities are fractions of the reference value (``0.10`` = 10 %). Losses are
    compared as measured (cross-entropy in nats for the default objectives).

    Attributes:
        climb_min_relative_rise:
            A trial *climbed* when its final val loss, and the mean of its last
            ``climb_tail_epochs`` val losses after the best epoch, are at least this fraction
            above the best val loss.
        climb_min_epochs_after_best:
            Epochs that must follow the best epoch before a rise counts as a climb (and before
            a train-loss rise counts as rising).
        climb_tail_epochs:
            Epochs at the end of the curve averaged to smooth the end level.
        climb_noise_multiple:
            The smoothed rise must also exceed this multiple of the curve's epoch-to-epoch noise
            (a robust estimate from second differences over the second half of the curve), so
            noisy-but-improving curves are not called climbing.
        overfit_gap_ratio:
            Val loss that stalls (no climb) still counts as overfitting when val/train loss at
            the end is at least this ratio ...
        overfit_gap_growth:
            ... and that ratio grew at least this factor since the best epoch.
        plateau_epochs:
            Window (epochs) over which a plateau is judged.
        plateau_tolerance:
            A loss plateaus when it improved by at most this fraction over the last
            ``plateau_epochs`` epochs. Also the slack for "train loss kept falling".
        underfit_max_gap_ratio:
            Underfitting needs a small generalisation gap: final val/train loss at most this.
        underfit_min_peer_gain:
            Underfitting needs a peer with more unfrozen layers or a higher learning rate whose
            best val loss is at least this fraction lower.
        underfit_progress_fraction:
            Without a plateau, underfitting still counts when progress is slow: over the last
            this fraction of the epochs (at least ``plateau_epochs``) val loss improved by less
            than the remaining gap to that better peer's best val loss, so at that pace the
            trial would need more than as many epochs again to catch up.
        divergence_jump_factor:
            A train loss that grows by this factor from one epoch to the next (and ends above
            its first-epoch level) counts as divergence, like a non-finite loss. (Val-only
            jumps are judged by the unfreezing-shock and BatchNorm rules.)
        explosion_factor:
            Explosive start: within the first ``explosion_epochs`` epochs the train or val loss
            reached at least this multiple of the peers' median epoch-1 level of the same series
            (for a cross-entropy that is far above the chance level ln(num_classes)). It counts
            as divergence: the weights were wrecked in the first epochs, and the rest of the
            curve is recovery from that.
        explosion_epochs:
            Epochs at the start of a curve examined for an explosive loss.
        shock_window:
            Epochs after unfreezing searched for a val-loss jump.
        shock_min_relative_rise:
            Minimum val-loss rise within ``shock_window`` epochs after unfreezing (relative to
            the last frozen epoch, or to epoch 1 without warm-up) that counts as a jump.
        recovery_tolerance:
            After such a jump, the trial "recovers" if its val loss gets back to within this
            fraction of the feature-extraction level (the end of its own warm-up, else the best
            peer with ``unfrozen_layers == 0``, else its epoch-1 value).
        shock_transient_epochs:
            A val-loss jump that is back at or below its pre-jump level within this many epochs
            after its peak, and later improves on that level by at least
            ``shock_min_relative_rise``, is a transient early-training bump rather than
            destroyed features, even if the trial never reaches the feature-extraction level
            (e.g. because it overfits). 0 disables the exemption.
        train_rise_min_relative:
            Train loss after unfreezing that ends this fraction above its minimum is rising.
        oscillation_min_relative:
            An epoch-to-epoch train-loss increase larger than this fraction counts as an
            upward swing ...
        oscillation_min_fraction:
            ... and train loss oscillates when at least this fraction of the epoch-to-epoch
            steps after unfreezing are upward swings (and at least two are).
        bn_gap_ratio:
            BatchNorm mismatch: median val/train loss over the first ``bn_early_epochs``
            epochs after unfreezing at least this ratio ...
        bn_min_gap:
            ... and median val minus train loss at least this (so tiny losses do not trigger)
            ...
        bn_min_train_accuracy:
            ... while the median train accuracy over those epochs is at least this.
        bn_early_epochs:
            Epochs after unfreezing examined for a BatchNorm mismatch; also the length of the
            late variant's window, which starts at the first epoch after unfreezing with train
            accuracy >= ``bn_min_train_accuracy``.
        bn_max_val_to_train_accuracy:
            BatchNorm mismatch (late variant, for when train accuracy becomes high only after
            some epochs): over that window the median val accuracy is at most this fraction of
            the median train accuracy (and val loss is at least ``bn_min_gap`` above train
            loss). Genuine overfitting keeps val accuracy close to train accuracy when train
            accuracy first gets high; with BatchNorm statistics that do not match inference,
            val accuracy stays near chance while the model fits the training batches. A val
            loss that bottoms out before that window is then not called overfitting.
        peer_lr_ratio:
            Two learning rates are similar when within this factor of each other.
        peer_depth_tolerance:
            Two depths are similar when their unfrozen-layer counts differ by at most this
            fraction of the larger one ...
        peer_depth_min_layers:
            ... or by at most this many layers.
        reg_min_dropout_step:
            A peer is "more regularised" with a dropout at least this much higher ...
        reg_min_weight_decay_factor:
            ... or a weight decay at least this factor higher.
        robust_top_fraction:
            Fraction of the best completed trials that defines the robust region.
        climb_split_min_z:
            A parameter split is reported by :func:`climb_summary` when its two-proportion
            z-score of climb rates reaches this.
        domain_gap_small:
            Fine-tuning vs feature extraction: relative best-val-loss differences below this
            read as "about equal".
        domain_gap_large:
            Fine-tuning better by at least this fraction reads as a large domain discrepancy.
        domain_shift_low:
            A ``thaw:domain_shift`` score (assumed 0 = same distribution, about 1 = disjoint)
            below this reads as low ...
        domain_shift_high:
            ... and at or above this as high.
        importance_min_trials:
            Fewest trials with a finite target before parameter importances are computed.
    """

    climb_min_relative_rise: float = _threshold(0.10, low=0.0, low_open=True)
    climb_min_epochs_after_best: int = _threshold(2, low=1, integer=True)
    climb_tail_epochs: int = _threshold(3, low=1, integer=True)
    climb_noise_multiple: float = _threshold(3.0, low=0.0)
    overfit_gap_ratio: float = _threshold(2.0, low=1.0, low_open=True)
    overfit_gap_growth: float = _threshold(1.5, low=1.0, low_open=True)
    plateau_epochs: int = _threshold(3, low=1, integer=True)
    plateau_tolerance: float = _threshold(0.02, low=0.0, high=1.0, high_open=True)
    underfit_max_gap_ratio: float = _threshold(1.25, low=1.0)
    underfit_min_peer_gain: float = _threshold(0.10, low=0.0, high=1.0, high_open=True)
    underfit_progress_fraction: float = _threshold(1.0 / 3.0, low=0.0, high=1.0, low_open=True)
    divergence_jump_factor: float = _threshold(3.0, low=1.0, low_open=True)
    explosion_factor: float = _threshold(5.0, low=1.0, low_open=True)
    explosion_epochs: int = _threshold(2, low=1, integer=True)
    shock_window: int = _threshold(2, low=1, integer=True)
    shock_min_relative_rise: float = _threshold(0.20, low=0.0, low_open=True)
    recovery_tolerance: float = _threshold(0.02, low=0.0)
    shock_transient_epochs: int = _threshold(2, low=0, integer=True)
    train_rise_min_relative: float = _threshold(0.10, low=0.0, low_open=True)
    oscillation_min_relative: float = _threshold(0.05, low=0.0, low_open=True)
    oscillation_min_fraction: float = _threshold(0.30, low=0.0, high=1.0, low_open=True)
    bn_gap_ratio: float = _threshold(3.0, low=1.0, low_open=True)
    bn_min_gap: float = _threshold(0.3, low=0.0)
    bn_min_train_accuracy: float = _threshold(0.85, low=0.0, high=1.0, low_open=True)
    bn_early_epochs: int = _threshold(3, low=1, integer=True)
    bn_max_val_to_train_accuracy: float = _threshold(0.5, low=0.0, high=1.0, low_open=True)
    peer_lr_ratio: float = _threshold(3.0, low=1.0)
    peer_depth_tolerance: float = _threshold(0.25, low=0.0, high=1.0)
    peer_depth_min_layers: int = _threshold(2, low=0, integer=True)
    reg_min_dropout_step: float = _threshold(0.1, low=0.0, high=1.0, low_open=True)
    reg_min_weight_decay_factor: float = _threshold(3.0, low=1.0, low_open=True)
    robust_top_fraction: float = _threshold(0.25, low=0.0, high=1.0, low_open=True)
    climb_split_min_z: float = _threshold(2.0, low=0.0)
    domain_gap_small: float = _threshold(0.05, low=0.0, high=1.0, high_open=True)
    domain_gap_large: float = _threshold(0.20, low=0.0, high=1.0, low_open=True)
    domain_shift_low: float = _threshold(0.2, low=0.0)
    domain_shift_high: float = _threshold(0.5, low=0.0)
    importance_min_trials: int = _threshold(5, low=2, integer=True)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_threshold(f, getattr(self, f.name))
        if self.domain_gap_small >= self.domain_gap_large:
            raise ValueError(
                "threshold 'domain_gap_small' must be below 'domain_gap_large', got "
                f"{self.domain_gap_small!r} >= {self.domain_gap_large!r}"
            )
        if self.domain_shift_low >= self.domain_shift_high:
            raise ValueError(
                "threshold 'domain_shift_low' must be below 'domain_shift_high', got "
                f"{self.domain_shift_low!r} >= {self.domain_shift_high!r}"
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Thresholds:
        """Build thresholds from a (study file) mapping; missing keys keep their defaults.

        Raises:
            ValueError: If ``d`` is not a mapping, names an unknown threshold, or a value has
                the wrong type or lies outside the threshold's range.
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"diagnosis thresholds must be a mapping, got {type(d).__name__}")
        fields_by_name = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key in sorted(d, key=str):
            if key not in fields_by_name:
                known = ", ".join(sorted(fields_by_name))
                raise ValueError(f"unknown diagnosis threshold {key!r}; known: {known}")
            value = d[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"threshold {key!r} must be a number, got {value!r}")
            if fields_by_name[key].metadata["integer"]:
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
            else:
                value = float(value)
            kwargs[key] = value
        return cls(**kwargs)

    def to_dict(self) -> dict[str, float]:
        """All thresholds by name (sorted), JSON-able."""
        return {k: v for k, v in sorted(dataclasses.asdict(self).items())}


def _check_threshold(f: dataclasses.Field[Any], value: Any) -> None:
    meta = f.metadata
    name = f.name
    if meta["integer"]:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"threshold {name!r} must be an integer, got {value!r}")
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"threshold {name!r} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"threshold {name!r} must be finite, got {value!r}")
    low, high = meta["low"], meta["high"]
    too_low = value <= low if meta["low_open"] else value < low
    too_high = value >= high if meta["high_open"] else value > high
    if too_low or too_high:
        left = "(" if meta["low_open"] else "["
        right = ")" if meta["high_open"] or math.isinf(high) else "]"
        raise ValueError(
            f"threshold {name!r} must be in {left}{low:g}, {high:g}{right}, got {value!r}"
        )


# --------------------------------------------------------------------------------------------
# Input: learning curves of one trial
# --------------------------------------------------------------------------------------------


def _clean_series(values: Any) -> tuple[float | None, ...]:
    if not isinstance(values, (list, tuple)):
        return ()
    out: list[float | None] = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            out.append(None)
        else:
            out.append(float(v))
    return tuple(out)


def _opt_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


@dataclass(frozen=True)
class TrialCurves:
    """Learning curves and settings of one trial, as stored by thaw.

    Index ``i`` of each history series is epoch ``i + 1`` (epochs continue across the warm-up
    and fine-tuning phases); ``None`` marks a non-finite value. Lists are converted to tuples
    and non-finite numbers to ``None``.

    Attributes:
        number: Trial number.
        params: Trial params (``unfrozen_layers``, ``learning_rate``, ``dropout``,
            ``weight_decay``, maybe ``batchnorm``).
        loss: Train loss per epoch.
        val_loss: Validation loss per epoch.
        accuracy: Train accuracy per epoch.
        val_accuracy: Validation accuracy per epoch.
        state: Optuna trial state name (``COMPLETE``, ``PRUNED``, ``FAIL``, ...).
        prune_reason: ``climbing``, ``below_peers`` or ``diverged`` for pruned trials.
        warmup_epochs: Head-only epochs before unfreezing (0 = unfrozen from epoch 1).
        prune_epoch: Epoch the trial was pruned at, if any.
        strategy: Textbook reference strategy name, if the trial is one.
    """

    number: int
    params: Mapping[str, Any] = field(default_factory=dict)
    loss: Sequence[float | None] = ()
    val_loss: Sequence[float | None] = ()
    accuracy: Sequence[float | None] = ()
    val_accuracy: Sequence[float | None] = ()
    state: str = "COMPLETE"
    prune_reason: str | None = None
    warmup_epochs: int = 0
    prune_epoch: int | None = None
    strategy: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", dict(self.params))
        for name in ("loss", "val_loss", "accuracy", "val_accuracy"):
            object.__setattr__(self, name, _clean_series(getattr(self, name)))
        object.__setattr__(self, "warmup_epochs", max(0, _opt_int(self.warmup_epochs) or 0))

    @classmethod
    def from_frozen_trial(
        cls, ft: FrozenTrial, *, intermediate_is_val_loss: bool = False
    ) -> TrialCurves:
        """Read curves from a trial as stored by thaw (see ``docs/storage.md``).

        Missing or malformed user attributes give empty curves rather than errors. With
        ``intermediate_is_val_loss`` (the study's objective is ``val_loss``), a trial without a
        ``history`` attribute (written before it existed) gets its val loss curve from its
        intermediate values (step = epoch).
        """
        attrs = ft.user_attrs
        history = attrs.get("history")
        if not isinstance(history, Mapping):
            history = {}
            if intermediate_is_val_loss and ft.intermediate_values:
                steps = ft.intermediate_values
                history = {"val_loss": [steps.get(e) for e in range(1, max(steps) + 1)]}
        prune_reason = attrs.get("prune_reason")
        strategy = attrs.get("strategy")
        return cls(
            number=ft.number,
            params=dict(ft.params),
            loss=_clean_series(history.get("loss")),
            val_loss=_clean_series(history.get("val_loss")),
            accuracy=_clean_series(history.get("accuracy")),
            val_accuracy=_clean_series(history.get("val_accuracy")),
            state=ft.state.name,
            prune_reason=prune_reason if isinstance(prune_reason, str) else None,
            warmup_epochs=_opt_int(attrs.get("warmup_epochs")) or 0,
            prune_epoch=_opt_int(attrs.get("prune_epoch")),
            strategy=strategy if isinstance(strategy, str) else None,
        )

    def _num(self, key: str) -> float | None:
        v = self.params.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return None
        return float(v)

    @property
    def unfrozen_layers(self) -> int | None:
        v = self._num("unfrozen_layers")
        return None if v is None else int(v)

    @property
    def learning_rate(self) -> float | None:
        return self._num("learning_rate")

    @property
    def dropout(self) -> float | None:
        return self._num("dropout")

    @property
    def weight_decay(self) -> float | None:
        return self._num("weight_decay")

    @property
    def epochs(self) -> int:
        """Number of epochs recorded."""
        return max(len(self.loss), len(self.val_loss))

    @property
    def best_epoch(self) -> int | None:
        """1-based epoch of the lowest finite val loss (first one on ties)."""
        best: tuple[float, int] | None = None
        for i, v in enumerate(self.val_loss):
            if v is not None and (best is None or v < best[0]):
                best = (v, i + 1)
        return None if best is None else best[1]

    @property
    def best_val_loss(self) -> float | None:
        finite = [v for v in self.val_loss if v is not None]
        return min(finite) if finite else None

    @property
    def final_val_loss(self) -> float | None:
        """Last finite val loss."""
        for v in reversed(self.val_loss):
            if v is not None:
                return v
        return None


# --------------------------------------------------------------------------------------------
# Output: verdicts
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """One diagnosis of one trial.

    Attributes:
        verdict: One of :data:`VERDICTS`.
        confidence: 0..1 (rounded to two decimals).
        evidence: What in the curves supports it, with numbers and epochs.
        recommendation: A concrete change to try.
    """

    verdict: str
    confidence: float
    evidence: str
    recommendation: str

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {self.verdict!r}; known: {', '.join(VERDICTS)}")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must be in [0, 1], got {self.confidence!r}")
        object.__setattr__(self, "confidence", round(float(self.confidence), 2))

    def to_dict(self) -> dict[str, Any]:
        return {
            "confidence": self.confidence,
            "evidence": self.evidence,
            "recommendation": self.recommendation,
            "verdict": self.verdict,
        }


# --------------------------------------------------------------------------------------------
# Formatting helpers
# --------------------------------------------------------------------------------------------


def _fmt_sig(x: float, sig: int = 2) -> str:
    """Compact number: ``2e-3``, ``3.5e-4``, ``0.25``, ``12``."""
    if x == 0:
        return "0"
    if abs(x) < 0.01 or abs(x) >= 1e5:
        mantissa, exponent = f"{x:.{sig - 1}e}".split("e")
        if "." in mantissa:
            mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{int(exponent)}"
    return f"{x:.{sig + 1}g}" if abs(x) < 1 else f"{x:.{max(sig, 3)}g}"


def _fmt_loss(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _fmt_pct(x: float) -> str:
    return f"{100.0 * x:+.0f}%"


def _fmt_value(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return _fmt_sig(value)


def _label(param: str) -> str:
    return _PARAM_LABELS.get(param, param.replace("_", " "))


def _scale(x: float, lo: float, hi: float, c_lo: float, c_hi: float) -> float:
    if hi <= lo:
        return c_hi
    frac = min(1.0, max(0.0, (x - lo) / (hi - lo)))
    return c_lo + frac * (c_hi - c_lo)


def _rel(delta: float, base: float) -> float:
    return delta / max(abs(base), _EPS)


# --------------------------------------------------------------------------------------------
# Curve analysis (per trial, independent of peers)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Jump:
    series: str
    epoch: int
    before: float
    after: float


@dataclass(frozen=True)
class _Explosion:
    """Loss far above the peers' epoch-1 level in the first epochs."""

    series: str
    epoch: int
    value: float
    reference: float
    n_peers: int


@dataclass(frozen=True)
class _TrainRise:
    min_epoch: int
    min_value: float
    final_epoch: int
    final_value: float


@dataclass(frozen=True)
class _Profile:
    curves: TrialCurves
    val: dict[int, float]
    train: dict[int, float]
    train_acc: dict[int, float]
    val_acc: dict[int, float]
    best_epoch: int | None
    best_val: float | None
    final_epoch: int | None
    final_val: float | None
    climbed: bool
    noise: float
    nonfinite: tuple[str, int] | None
    jump: _Jump | None
    train_rise: _TrainRise | None
    oscillation: tuple[int, int] | None
    explosion: _Explosion | None = None

    @property
    def diverged(self) -> bool:
        """Non-finite, jumping or explosive loss, or pruned as diverged."""
        return (
            self.nonfinite is not None
            or self.jump is not None
            or self.explosion is not None
            or self.curves.prune_reason == "diverged"
        )

    @property
    def lr_problem(self) -> bool:
        return (
            self.nonfinite is not None
            or self.jump is not None
            or self.explosion is not None
            or self.train_rise is not None
            or self.oscillation is not None
            or self.curves.prune_reason == "diverged"
        )

    @property
    def final_train(self) -> float | None:
        return self.train[max(self.train)] if self.train else None


def _finite(series: Sequence[float | None]) -> dict[int, float]:
    return {i + 1: v for i, v in enumerate(series) if v is not None}


def _noise(values: Sequence[float]) -> float:
    """Robust epoch-to-epoch noise (std) estimate from second differences.

    Curves of eight or more epochs use only their second half, so the curvature of the
    initial descent does not count as noise.
    """
    if len(values) >= 8:
        values = values[len(values) // 2 :]
    if len(values) < 4:
        return 0.0
    second = [abs(values[i + 1] - 2 * values[i] + values[i - 1]) for i in range(1, len(values) - 1)]
    # For white noise of std s, a second difference has std s * sqrt(6); MAD -> std: 1.4826.
    return 1.4826 * statistics.median(second) / math.sqrt(6.0)


def _first_nonfinite(curves: TrialCurves) -> tuple[str, int] | None:
    hits = []
    for name, series in (("train loss", curves.loss), ("val loss", curves.val_loss)):
        for i, v in enumerate(series):
            if v is None:
                hits.append((i + 1, name))
                break
    if not hits:
        return None
    epoch, name = min(hits)
    return name, epoch


def _first_jump(name: str, series: dict[int, float], t: Thresholds) -> _Jump | None:
    if not series:
        return None
    first = series[min(series)]
    for epoch, value in series.items():
        prev = series.get(epoch - 1)
        if prev is not None and value >= t.divergence_jump_factor * prev and value >= first:
            return _Jump(name, epoch, prev, value)
    return None


def _post_unfreeze(series: dict[int, float], warmup: int) -> list[tuple[int, float]]:
    post = [(e, v) for e, v in series.items() if e > warmup]
    return post if post else list(series.items())


def _train_rise(train: dict[int, float], warmup: int, t: Thresholds) -> _TrainRise | None:
    post = _post_unfreeze(train, warmup)
    if len(post) < 3:
        return None
    m_epoch, m_value = min(post, key=lambda ev: (ev[1], ev[0]))
    after = [v for e, v in post if e > m_epoch]
    if len(after) < t.climb_min_epochs_after_best:
        return None
    tail = statistics.fmean(after[-t.climb_tail_epochs :])
    need = t.train_rise_min_relative * max(abs(m_value), _EPS)
    if tail - m_value >= need and after[-1] - m_value >= need:
        return _TrainRise(m_epoch, m_value, post[-1][0], post[-1][1])
    return None


def _oscillation(train: dict[int, float], warmup: int, t: Thresholds) -> tuple[int, int] | None:
    post = [v for _, v in _post_unfreeze(train, warmup)]
    steps = len(post) - 1
    if steps < 4:
        return None
    ups = sum(
        1
        for a, b in zip(post[:-1], post[1:], strict=True)
        if b - a > t.oscillation_min_relative * max(abs(a), _EPS)
    )
    if ups >= 2 and ups / steps >= t.oscillation_min_fraction:
        return ups, steps
    return None


def _climbed(
    curves: TrialCurves, val: dict[int, float], best_epoch: int | None, noise: float, t: Thresholds
) -> bool:
    if curves.prune_reason == "climbing":
        return True
    if best_epoch is None:
        return False
    best = val[best_epoch]
    after = [v for e, v in val.items() if e > best_epoch]
    if len(after) < t.climb_min_epochs_after_best:
        return False
    tail_rise = statistics.fmean(after[-t.climb_tail_epochs :]) - best
    final_rise = after[-1] - best
    need = t.climb_min_relative_rise * max(abs(best), _EPS)
    return tail_rise >= need and final_rise >= need and tail_rise >= t.climb_noise_multiple * noise


def _profile(curves: TrialCurves, t: Thresholds) -> _Profile:
    val = _finite(curves.val_loss)
    train = _finite(curves.loss)
    best_epoch = curves.best_epoch
    final_epoch = max(val) if val else None
    noise = _noise(list(val.values()))
    # A rising or oscillating train loss points at the learning rate only when validation
    # suffers too (its best is not in the last third, or it oscillates as well): on a tiny
    # training set the train loss is noisy while val keeps improving.
    val_suffers = (
        best_epoch is not None
        and final_epoch is not None
        and best_epoch < final_epoch - max(1, (final_epoch - min(val)) // 3)
    )
    return _Profile(
        curves=curves,
        val=val,
        train=train,
        train_acc=_finite(curves.accuracy),
        val_acc=_finite(curves.val_accuracy),
        best_epoch=best_epoch,
        best_val=None if best_epoch is None else val[best_epoch],
        final_epoch=final_epoch,
        final_val=None if final_epoch is None else val[final_epoch],
        climbed=_climbed(curves, val, best_epoch, noise, t),
        noise=noise,
        nonfinite=_first_nonfinite(curves),
        jump=_first_jump("train loss", train, t),
        train_rise=_train_rise(train, curves.warmup_epochs, t) if val_suffers else None,
        oscillation=(
            _oscillation(train, curves.warmup_epochs, t)
            if val_suffers or _oscillation(val, curves.warmup_epochs, t) is not None
            else None
        ),
    )


def _explosion(p: _Profile, others: Sequence[_Profile], t: Thresholds) -> _Explosion | None:
    """Largest explosive early loss of ``p`` relative to the others' median epoch-1 level."""
    found: list[tuple[float, _Explosion]] = []
    for name, attr in (("train loss", "train"), ("val loss", "val")):
        series: dict[int, float] = getattr(p, attr)
        refs = [lvl for q in others if (lvl := getattr(q, attr).get(1)) is not None]
        early = [(e, v) for e, v in series.items() if e <= t.explosion_epochs]
        if not refs or not early:
            continue
        reference = statistics.median(refs)
        if reference <= 0:
            continue
        epoch, value = max(early, key=lambda ev: (ev[1], -ev[0]))
        if value >= t.explosion_factor * reference:
            found.append((value / reference, _Explosion(name, epoch, value, reference, len(refs))))
    return max(found, key=lambda fx: fx[0])[1] if found else None


def _with_explosions(profiles: Sequence[_Profile], t: Thresholds) -> list[_Profile]:
    """``profiles`` with :attr:`_Profile.explosion` judged against all the other profiles."""
    return [
        dataclasses.replace(
            p,
            explosion=_explosion(p, [q for q in profiles if q.curves.number != p.curves.number], t),
        )
        for p in profiles
    ]


# --------------------------------------------------------------------------------------------
# Peer-aware rules
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Shock:
    unfreeze_epoch: int
    base: float
    peak: float
    peak_epoch: int
    level: float
    level_source: str
    best_after: float
    train_jumped: bool


def _fe_level(peers: Sequence[_Profile]) -> tuple[float, str] | None:
    fe = [
        p
        for p in peers
        if p.curves.unfrozen_layers == 0 and p.best_val is not None and not p.lr_problem
    ]
    if not fe:
        return None
    best = min(fe, key=lambda p: (p.best_val, p.curves.number))
    assert best.best_val is not None
    return best.best_val, f"best feature-extraction trial {best.curves.number}"


def _shock(p: _Profile, fe_level: tuple[float, str] | None, t: Thresholds) -> _Shock | None:
    c = p.curves
    u = c.unfrozen_layers
    if u is None or u <= 0 or not p.val:
        return None
    w = c.warmup_epochs
    if w > 0:
        base = p.val.get(w)
        if base is None:
            return None
        level, source = base, f"end of warm-up, epoch {w}"
        window = range(w + 1, w + 1 + t.shock_window)
    else:
        base = p.val.get(1)
        if base is None:
            return None
        level, source = fe_level if fe_level is not None else (base, "its epoch-1 value")
        window = range(2, 2 + t.shock_window)
    in_window = [(e, p.val[e]) for e in window if e in p.val]
    if not in_window:
        return None
    peak_epoch, peak = max(in_window, key=lambda ev: (ev[1], -ev[0]))
    if _rel(peak - base, base) < t.shock_min_relative_rise:
        return None
    after = [v for e, v in p.val.items() if e >= window[0]]
    best_after = min(after)
    if best_after <= level * (1.0 + t.recovery_tolerance):
        return None
    if t.shock_transient_epochs > 0:
        # A bump that is quickly undone and then clearly improved on did not destroy the
        # pretrained features; failing to reach the feature-extraction level has another cause.
        horizon = peak_epoch + t.shock_transient_epochs
        back = any(v <= base for e, v in p.val.items() if peak_epoch < e <= horizon)
        if back and best_after <= base * (1.0 - t.shock_min_relative_rise):
            return None
    train_base = p.train.get(w if w > 0 else 1)
    train_window = [p.train[e] for e in window if e in p.train]
    train_jumped = (
        train_base is not None
        and bool(train_window)
        and _rel(max(train_window) - train_base, train_base) >= t.shock_min_relative_rise
    )
    return _Shock(w, base, peak, peak_epoch, level, source, best_after, train_jumped)


@dataclass(frozen=True)
class _BatchNorm:
    """A BatchNorm mismatch; ``onset`` is the epoch from which it explains the val loss."""

    evidence: str
    confidence: float
    onset: int


def _bn_mismatch(p: _Profile, t: Thresholds) -> _BatchNorm | None:
    return _bn_early(p, t) or _bn_late(p, t)


def _span(epochs: Sequence[int]) -> str:
    return f"epoch {epochs[0]}" if len(epochs) == 1 else f"epochs {epochs[0]}-{epochs[-1]}"


def _bn_early(p: _Profile, t: Thresholds) -> _BatchNorm | None:
    """Val loss far above train loss right after unfreezing, train accuracy already high."""
    w = p.curves.warmup_epochs
    epochs = [e for e in range(w + 1, w + 1 + t.bn_early_epochs) if e in p.val and e in p.train]
    if len(epochs) < min(2, t.bn_early_epochs):
        return None
    accs = [p.train_acc[e] for e in epochs if e in p.train_acc]
    if not accs:
        return None
    ratio = statistics.median(p.val[e] / max(p.train[e], _EPS) for e in epochs)
    gap = statistics.median(p.val[e] - p.train[e] for e in epochs)
    acc = statistics.median(accs)
    if ratio < t.bn_gap_ratio or gap < t.bn_min_gap or acc < t.bn_min_train_accuracy:
        return None
    val_med = statistics.median(p.val[e] for e in epochs)
    train_med = statistics.median(p.train[e] for e in epochs)
    evidence = (
        f"over {_span(epochs)} (first epochs after unfreezing) val loss was {ratio:.1f}x train "
        f"loss (median {val_med:.3f} vs {train_med:.3f}) while train accuracy was already "
        f"{acc:.2f}"
    )
    confidence = _scale(ratio / t.bn_gap_ratio, 1.0, 2.0, 0.6, 0.9)
    return _BatchNorm(evidence, confidence, max(w, 1))


def _bn_late(p: _Profile, t: Thresholds) -> _BatchNorm | None:
    """Val accuracy far below (near chance) once train accuracy gets high.

    Judged over ``bn_early_epochs`` epochs from the first epoch after unfreezing with train
    accuracy >= ``bn_min_train_accuracy``. Genuine overfitting keeps val accuracy close to the
    train accuracy at that point; a model whose BatchNorm statistics do not match inference
    fits its training batches while its val predictions stay near chance.
    """
    w = p.curves.warmup_epochs
    onset = next(
        (e for e, a in sorted(p.train_acc.items()) if e > w and a >= t.bn_min_train_accuracy),
        None,
    )
    if onset is None:
        return None
    epochs = [
        e
        for e in range(onset, onset + t.bn_early_epochs)
        if e in p.train_acc and e in p.val_acc and e in p.val and e in p.train
    ]
    if len(epochs) < min(2, t.bn_early_epochs):
        return None
    train_acc = statistics.median(p.train_acc[e] for e in epochs)
    val_acc = statistics.median(p.val_acc[e] for e in epochs)
    acc_ratio = val_acc / max(train_acc, _EPS)
    gap = statistics.median(p.val[e] - p.train[e] for e in epochs)
    if acc_ratio > t.bn_max_val_to_train_accuracy or gap < t.bn_min_gap:
        return None
    loss_ratio = statistics.median(p.val[e] / max(p.train[e], _EPS) for e in epochs)
    val_med = statistics.median(p.val[e] for e in epochs)
    train_med = statistics.median(p.train[e] for e in epochs)
    evidence = (
        f"train accuracy first reached {t.bn_min_train_accuracy:g} at epoch {onset}; over "
        f"{_span(epochs)} val accuracy was only {val_acc:.2f} vs train accuracy {train_acc:.2f} "
        f"({acc_ratio:.2f}x) and val loss {loss_ratio:.1f}x train loss (median {val_med:.3f} vs "
        f"{train_med:.3f})"
    )
    later_val = [a for e, a in p.val_acc.items() if e > epochs[-1]]
    later_train = [a for e, a in p.train_acc.items() if e > epochs[-1]]
    if later_val and later_train:
        evidence += (
            f"; afterwards val accuracy stayed at {min(later_val):.2f}-{max(later_val):.2f} "
            f"while train accuracy reached {max(later_train):.2f}"
        )
    end, final = p.final_epoch, p.final_val
    if end is not None and final is not None and end > epochs[-1] and final > val_med:
        evidence += f" and val loss rose to {final:.3f} (epoch {end})"
    limit = t.bn_max_val_to_train_accuracy
    confidence = _scale(limit - acc_ratio, 0.0, limit / 2.0, 0.6, 0.9)
    return _BatchNorm(evidence, confidence, onset)


def _similar_depth(u1: int | None, u2: int | None, t: Thresholds) -> bool:
    if u1 is None or u2 is None:
        return False
    return abs(u1 - u2) <= max(t.peer_depth_min_layers, t.peer_depth_tolerance * max(u1, u2))


def _similar_lr(l1: float | None, l2: float | None, t: Thresholds) -> bool:
    if l1 is None or l2 is None or l1 <= 0 or l2 <= 0:
        return False
    return max(l1, l2) / min(l1, l2) <= t.peer_lr_ratio


def _depth_phrase(u: int | None, num_layers: int | None) -> str:
    if not u:
        return ""
    if num_layers and u >= num_layers:
        return f" for full fine-tuning (all {num_layers} layers unfrozen)"
    return f" for {u}+ unfrozen layers"


def _fmt_big(x: float) -> str:
    """``3.7e6`` for large numbers, else three significant digits."""
    if abs(x) >= 1000:
        mantissa, exponent = f"{x:.1e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{x:.3g}"


def _explosion_evidence(
    p: _Profile, x: _Explosion, peers: Sequence[_Profile], t: Thresholds
) -> tuple[str, float]:
    factor = x.value / max(x.reference, _EPS)
    low = math.log10(t.explosion_factor)
    confidence = _scale(math.log10(factor), low, low + 3.0, 0.7, 0.9)
    part = (
        f"{x.series} was {_fmt_big(x.value)} at epoch {x.epoch}, {_fmt_big(factor)}x the "
        f"median epoch-1 {x.series} of {x.n_peers} peer{'s' if x.n_peers != 1 else ''} "
        f"({x.reference:.3f})"
    )
    reference = _fe_level(peers)
    if reference is None:
        bests = [q.best_val for q in peers if q.best_val is not None and not q.lr_problem]
        if bests:
            reference = (statistics.median(bests), "median best val loss of the peers")
    if p.best_val is not None and p.final_val is not None and reference is not None:
        level, source = reference
        if p.best_val > level * (1.0 + t.recovery_tolerance):
            accuracy = ""
            if p.val_acc:
                accs = list(p.val_acc.values())
                if max(accs) - min(accs) <= 0.01:
                    accuracy = f"; val accuracy stayed at {accs[-1]:.3f} in every epoch"
                else:
                    accuracy = f"; val accuracy ended at {accs[-1]:.3f}"
            part += (
                f"; val loss never got below {p.best_val:.3f} (ended at {p.final_val:.3f}), "
                f"above the level {level:.3f} ({source}){accuracy}"
            )
            confidence = min(0.95, confidence + 0.05)
    return part, confidence


def _lr_verdict(
    p: _Profile,
    shock: _Shock | None,
    peers: Sequence[_Profile],
    t: Thresholds,
    num_layers: int | None,
) -> Verdict | None:
    c = p.curves
    parts: list[str] = []
    confidence = 0.0
    if p.nonfinite is not None:
        name, epoch = p.nonfinite
        last = p.train if name == "train loss" else p.val
        before = [v for e, v in last.items() if e < epoch]
        tail = f" (last finite value {before[-1]:.3f})" if before else ""
        parts.append(f"{name} became non-finite at epoch {epoch}{tail}")
        confidence = max(confidence, 0.95)
    elif c.prune_reason == "diverged":
        at = f" at epoch {c.prune_epoch}" if c.prune_epoch else ""
        parts.append(f"pruned as diverged{at}")
        confidence = max(confidence, 0.9)
    if p.jump is not None:
        j = p.jump
        parts.append(
            f"{j.series} jumped x{j.after / max(j.before, _EPS):.1f} from {j.before:.3f} "
            f"(epoch {j.epoch - 1}) to {j.after:.3f} (epoch {j.epoch})"
        )
        confidence = max(confidence, 0.85)
    if p.explosion is not None:
        part, explosion_confidence = _explosion_evidence(p, p.explosion, peers, t)
        parts.append(part)
        confidence = max(confidence, explosion_confidence)
    if shock is not None:
        where = (
            f"after unfreezing at epoch {shock.unfreeze_epoch + 1}"
            if shock.unfreeze_epoch > 0
            else "right after unfreezing (no warm-up)"
        )
        rise = _rel(shock.peak - shock.base, shock.base)
        parts.append(
            f"{where} val loss jumped from {shock.base:.3f} to {shock.peak:.3f} "
            f"({_fmt_pct(rise)}, epoch {shock.peak_epoch}) and its best afterwards, "
            f"{shock.best_after:.3f}, never got back to the feature-extraction level "
            f"{shock.level:.3f} ({shock.level_source})"
        )
        confidence = max(confidence, _scale(rise, 0.2, 1.0, 0.6, 0.9))
    if p.train_rise is not None:
        r = p.train_rise
        parts.append(
            f"train loss rose from its minimum {r.min_value:.3f} at epoch {r.min_epoch} to "
            f"{r.final_value:.3f} at epoch {r.final_epoch} "
            f"({_fmt_pct(_rel(r.final_value - r.min_value, r.min_value))})"
        )
        confidence = max(
            confidence,
            _scale(_rel(r.final_value - r.min_value, r.min_value), 0.1, 0.5, 0.6, 0.85),
        )
    if p.oscillation is not None:
        ups, steps = p.oscillation
        parts.append(f"train loss went up in {ups} of {steps} epoch-to-epoch steps")
        confidence = max(confidence, _scale(ups / steps, 0.3, 0.5, 0.55, 0.8))
    if not parts:
        return None

    lr = c.learning_rate
    u = c.unfrozen_layers
    depth = _depth_phrase(u, num_layers)
    safer = [
        q
        for q in peers
        if q.curves.learning_rate is not None
        and lr is not None
        and q.curves.learning_rate < lr
        and q.best_val is not None
        and not q.lr_problem
        and (p.best_val is None or q.best_val < p.best_val)
        and (
            _similar_depth(u, q.curves.unfrozen_layers, t)
            or (u is not None and (q.curves.unfrozen_layers or 0) >= u)
        )
    ]
    if safer:
        best = min(safer, key=lambda q: (q.best_val, q.curves.number))
        qlr = best.curves.learning_rate
        assert qlr is not None
        rec = (
            f"lower the learning rate to <= {_fmt_sig(qlr, 1)}{depth} (trial "
            f"{best.curves.number}: lr {_fmt_sig(qlr)}, {best.curves.unfrozen_layers} unfrozen "
            f"layers, best val loss {best.best_val:.3f})"
        )
    elif lr is not None:
        rec = f"lower the learning rate below {_fmt_sig(lr / 3.0, 1)}{depth}"
    else:
        rec = f"lower the learning rate 3-10x{depth}"
    if c.warmup_epochs == 0 and u and (shock is not None or p.jump or p.nonfinite or p.explosion):
        rec += "; train the head alone for 2-3 warm-up epochs before unfreezing"
    if p.diverged:
        rec += "; clip gradients (clipnorm=1.0)"
    return Verdict(LR_TOO_HIGH, confidence, "; ".join(parts), rec)


def _overfit_recommendation(p: _Profile) -> str:
    c = p.curves
    stop = (
        f"stop at epoch {p.best_epoch} (EarlyStopping with restore_best_weights=True)"
        if p.best_epoch
        else "stop earlier"
    )
    dropout = c.dropout
    if dropout is None or dropout < 0.5:
        target = max(0.3, min(0.6, round((dropout or 0.0) + 0.2, 1)))
        reg = f"raise dropout to >= {target:g}"
    else:
        wd = c.weight_decay
        reg = f"raise weight decay to >= {_fmt_sig(max((wd or 0.0) * 10.0, 1e-4), 1)}"
    return f"{stop} or {reg}"


def _overfit_verdict(
    p: _Profile, shock: _Shock | None, bn: _BatchNorm | None, t: Thresholds
) -> Verdict | None:
    c = p.curves
    if p.best_epoch is None or p.best_val is None or p.final_val is None:
        return None
    if p.train_rise is not None or p.nonfinite is not None:
        return None  # rising train loss or divergence is lr_too_high, not overfitting
    if shock is not None and p.best_epoch <= max(c.warmup_epochs, 1):
        return None  # the rise is the unfreezing shock
    if bn is not None and p.best_epoch <= bn.onset:
        return None  # val loss rose from when the BatchNorm mismatch shows: that explains it
    n = c.epochs
    best, final = p.best_val, p.final_val
    train_best = p.train.get(p.best_epoch)
    train_end = p.final_train
    gaps = ""
    if train_best is not None and train_end is not None:
        gaps = (
            f"; val-train gap {best - train_best:.3f} at best -> {final - train_end:.3f} at the end"
        )
    if p.climbed:
        if train_best is not None and train_end is not None:
            if train_end > train_best * (1.0 + t.plateau_tolerance):
                return None
            train = f" while train loss fell from {train_best:.3f} to {train_end:.3f}"
        else:
            train = ""
        rise = _rel(final - best, best)
        if final > best:
            evidence = (
                f"val loss bottomed at {best:.3f} at epoch {p.best_epoch} of {n}, then rose to "
                f"{final:.3f} ({final - best:+.3f}, {_fmt_pct(rise)}){train}{gaps}"
            )
        else:
            evidence = f"val loss bottomed at {best:.3f} at epoch {p.best_epoch} of {n}"
        confidence = _scale(
            rise, t.climb_min_relative_rise, 3 * t.climb_min_relative_rise, 0.6, 0.95
        )
        if c.prune_reason == "climbing":
            at = f" at epoch {c.prune_epoch}" if c.prune_epoch else ""
            evidence += f"; pruned as climbing{at}"
            confidence = max(confidence, 0.7)
        if not train:
            confidence -= 0.1
        return Verdict(OVERFITTING, confidence, evidence, _overfit_recommendation(p))
    # Stalled variant: val stopped improving while train loss keeps dropping and the gap widens.
    if bn is not None or train_best is None or train_end is None or p.final_epoch is None:
        return None
    if p.final_epoch - p.best_epoch < t.plateau_epochs:
        return None
    ratio_best = best / max(train_best, _EPS)
    ratio_end = final / max(train_end, _EPS)
    if (
        ratio_end >= t.overfit_gap_ratio
        and ratio_end >= ratio_best * t.overfit_gap_growth
        and train_end < train_best * (1.0 - t.plateau_tolerance)
    ):
        evidence = (
            f"val loss stalled at {best:.3f} after epoch {p.best_epoch} of {n} while train loss "
            f"fell from {train_best:.3f} to {train_end:.3f}; val/train ratio grew from "
            f"{ratio_best:.1f} to {ratio_end:.1f}{gaps}"
        )
        confidence = _scale(ratio_end / ratio_best, t.overfit_gap_growth, 3.0, 0.5, 0.7)
        return Verdict(OVERFITTING, confidence, evidence, _overfit_recommendation(p))
    return None


def _weak_reg_verdict(p: _Profile, peers: Sequence[_Profile], t: Thresholds) -> Verdict | None:
    c = p.curves
    if p.final_val is None:
        return None
    candidates: list[tuple[_Profile, bool, bool]] = []
    for q in peers:
        qc = q.curves
        if q.climbed or q.lr_problem or q.final_val is None or q.final_val >= p.final_val:
            continue
        if not _similar_lr(c.learning_rate, qc.learning_rate, t):
            continue
        if not _similar_depth(c.unfrozen_layers, qc.unfrozen_layers, t):
            continue
        more_dropout = (
            c.dropout is not None
            and qc.dropout is not None
            and qc.dropout >= c.dropout + t.reg_min_dropout_step - 1e-9
        )
        more_wd = (
            c.weight_decay is not None
            and qc.weight_decay is not None
            and qc.weight_decay >= max(c.weight_decay, _EPS) * t.reg_min_weight_decay_factor
        )
        if more_dropout or more_wd:
            candidates.append((q, more_dropout, more_wd))
    if not candidates:
        return None
    q, more_dropout, more_wd = min(candidates, key=lambda x: (x[0].final_val, x[0].curves.number))
    qc = q.curves
    assert q.final_val is not None and qc.learning_rate is not None and c.learning_rate is not None
    settings = []
    if c.dropout is not None and qc.dropout is not None and qc.dropout != c.dropout:
        settings.append(f"dropout {qc.dropout:g} (vs {c.dropout:g})")
    if (
        c.weight_decay is not None
        and qc.weight_decay is not None
        and qc.weight_decay != c.weight_decay
    ):
        settings.append(f"weight decay {_fmt_sig(qc.weight_decay)} (vs {_fmt_sig(c.weight_decay)})")
    settings.append(f"lr {_fmt_sig(qc.learning_rate)} (x{qc.learning_rate / c.learning_rate:.1f})")
    settings.append(f"{qc.unfrozen_layers} unfrozen layers (vs {c.unfrozen_layers})")
    others = f" ({len(candidates)} such peers)" if len(candidates) > 1 else ""
    evidence = (
        f"trial {qc.number} with {', '.join(settings)} did not climb and ended at val loss "
        f"{q.final_val:.3f} vs {p.final_val:.3f} here{others}"
    )
    changes = []
    if more_dropout and qc.dropout is not None:
        changes.append(f"raise dropout to >= {qc.dropout:g}")
    if more_wd and qc.weight_decay is not None:
        changes.append(f"raise weight decay to >= {_fmt_sig(qc.weight_decay, 1)}")
    rec = f"{' and '.join(changes)} at this learning rate and depth (as trial {qc.number})"
    confidence = min(0.9, 0.55 + 0.1 * len(candidates))
    return Verdict(WEAK_REGULARISATION, confidence, evidence, rec)


def _plateaued(series: dict[int, float], t: Thresholds) -> bool:
    values = list(series.values())
    k = t.plateau_epochs
    if len(values) < k + 1:
        return False
    ref = values[-k - 1]
    return _rel(ref - min(values[-k:]), ref) <= t.plateau_tolerance


@dataclass(frozen=True)
class _Progress:
    """Val-loss improvement over the last epochs of a curve."""

    from_epoch: int
    to_epoch: int
    improvement: float


def _recent_progress(series: dict[int, float], t: Thresholds) -> _Progress | None:
    """Improvement over the last ``underfit_progress_fraction`` of the epochs (at least
    ``plateau_epochs``), from the value before that window to the window's minimum."""
    items = sorted(series.items())
    k = max(t.plateau_epochs, math.ceil(len(items) * t.underfit_progress_fraction - 1e-9))
    if len(items) < k + 1:
        return None
    from_epoch, ref = items[-k - 1]
    return _Progress(from_epoch, items[-1][0], ref - min(v for _, v in items[-k:]))


def _underfit_verdict(
    p: _Profile, peers: Sequence[_Profile], t: Thresholds, num_layers: int | None
) -> Verdict | None:
    c = p.curves
    if p.best_val is None or p.final_val is None or p.final_train is None:
        return None
    plateau = _plateaued(p.val, t) and _plateaued(p.train, t)
    below_peers = c.prune_reason == "below_peers"
    progress = None if plateau or below_peers else _recent_progress(p.val, t)
    if not (plateau or below_peers or progress is not None):
        return None
    ratio = p.final_val / max(p.final_train, _EPS)
    if ratio > t.underfit_max_gap_ratio:
        return None
    u, lr = c.unfrozen_layers, c.learning_rate
    better = []
    for q in peers:
        qc = q.curves
        if q.best_val is None or q.best_val > p.best_val * (1.0 - t.underfit_min_peer_gain):
            continue
        deeper = u is not None and qc.unfrozen_layers is not None and qc.unfrozen_layers > u
        faster = lr is not None and qc.learning_rate is not None and qc.learning_rate > lr
        if deeper or faster:
            better.append((q, deeper, faster))
    if not better:
        return None
    q, deeper, faster = min(better, key=lambda x: (x[0].best_val, x[0].curves.number))
    qc = q.curves
    assert q.best_val is not None
    gain = _rel(p.best_val - q.best_val, p.best_val)
    remaining = p.best_val - q.best_val
    if progress is not None and progress.improvement >= remaining:
        return None  # still improving fast enough to catch up: not (yet) underfitting
    if plateau:
        state = (
            f"train {p.final_train:.3f} and val {p.final_val:.3f} loss both changed "
            f"< {100 * t.plateau_tolerance:g}% over the last {t.plateau_epochs} epochs "
            f"(val/train {ratio:.2f})"
        )
    elif progress is not None:
        state = (
            f"train {p.final_train:.3f} and val {p.final_val:.3f} loss stayed high "
            f"(val/train {ratio:.2f}) and improved slowly: val loss fell only "
            f"{progress.improvement:.3f} over epochs {progress.from_epoch}-{progress.to_epoch}, "
            f"less than the remaining gap of {remaining:.3f} to trial {qc.number}"
        )
    else:
        at = f" at epoch {c.prune_epoch}" if c.prune_epoch else ""
        state = (
            f"pruned as below peers{at} with train {p.final_train:.3f} and val "
            f"{p.final_val:.3f} loss (val/train {ratio:.2f})"
        )
    peer_settings = []
    if qc.unfrozen_layers is not None:
        peer_settings.append(f"{qc.unfrozen_layers} unfrozen layers (vs {u})")
    if qc.learning_rate is not None and lr is not None:
        peer_settings.append(f"lr {_fmt_sig(qc.learning_rate)} (vs {_fmt_sig(lr)})")
    evidence = (
        f"{state}; trial {qc.number} with {', '.join(peer_settings)} reached best val loss "
        f"{q.best_val:.3f} vs {p.best_val:.3f} here ({_fmt_pct(-gain)})"
    )
    changes = []
    if deeper and qc.unfrozen_layers is not None:
        of = f" of {num_layers}" if num_layers else ""
        if u == 0:
            changes.append(
                f"switch from feature extraction to fine-tuning: unfreeze the top "
                f"~{qc.unfrozen_layers}{of} layers"
            )
        else:
            changes.append(f"unfreeze more layers (~{qc.unfrozen_layers}{of})")
    if faster and qc.learning_rate is not None:
        changes.append(f"raise the learning rate towards {_fmt_sig(qc.learning_rate, 1)}")
    rec = " and ".join(changes) + f" (as trial {qc.number})"
    confidence = _scale(gain, t.underfit_min_peer_gain, 0.5, 0.55, 0.85)
    if below_peers and not plateau:
        confidence -= 0.1
    elif progress is not None:
        confidence -= 0.05
    return Verdict(UNDERFITTING, confidence, evidence, rec)


def _healthy_verdict(p: _Profile, t: Thresholds) -> Verdict:
    c = p.curves
    assert p.best_val is not None and p.final_val is not None and p.best_epoch is not None
    first_epoch = min(p.val)
    first = p.val[first_epoch]
    end_gap = ""
    if p.final_train is not None:
        end_gap = f"; val-train gap {p.final_val - p.final_train:.3f} at the end"
    evidence = (
        f"val loss went from {first:.3f} (epoch {first_epoch}) to its best {p.best_val:.3f} at "
        f"epoch {p.best_epoch} of {c.epochs} and ended at {p.final_val:.3f} "
        f"({_fmt_pct(_rel(p.final_val - p.best_val, p.best_val))} vs best){end_gap}"
    )
    confidence = 0.8 if len(p.val) >= 4 else 0.5
    if p.final_val - p.best_val >= t.climb_min_relative_rise * max(abs(p.best_val), _EPS):
        evidence += (
            f"; the rise after epoch {p.best_epoch} is within the curve's epoch-to-epoch noise "
            f"(~{p.noise:.3f}) or too short to be a sustained climb"
        )
        confidence = 0.6
    if p.best_epoch == p.final_epoch:
        rec = "keep this configuration; val loss was still falling at the last epoch, so more "
        rec += "epochs may help"
    else:
        rec = f"keep this configuration; stop around epoch {p.best_epoch}"
    return Verdict(HEALTHY, confidence, evidence, rec)


def _diagnose(
    p: _Profile,
    peers: Sequence[_Profile],
    t: Thresholds,
    num_layers: int | None,
) -> list[Verdict]:
    if not p.val and p.nonfinite is None and p.curves.prune_reason != "diverged":
        return []
    peers = [q for q in peers if q.curves.number != p.curves.number]
    shock = _shock(p, _fe_level(peers), t)
    bn = _bn_mismatch(p, t)
    if bn is not None and shock is not None and not shock.train_jumped:
        shock = None  # train loss kept falling: the val jump is the BatchNorm statistics
    verdicts: list[Verdict] = []
    lr_verdict = _lr_verdict(p, shock, peers, t, num_layers)
    if lr_verdict is not None:
        verdicts.append(lr_verdict)
    if p.diverged:
        return verdicts  # divergence explains everything after it
    if bn is not None:
        evidence, confidence = bn.evidence, bn.confidence
        bn_param = p.curves.params.get("batchnorm")
        rec = (
            "keep BatchNormalization layers in inference mode while fine-tuning "
            "(call the base with training=False; batchnorm: frozen)"
        )
        if bn_param is not None and bn_param != "frozen":
            rec += f"; this trial used batchnorm={bn_param}"
        verdicts.append(Verdict(BATCHNORM_MISMATCH, confidence, evidence, rec))
    overfit = _overfit_verdict(p, shock, bn, t)
    if overfit is not None:
        verdicts.append(overfit)
        weak = _weak_reg_verdict(p, peers, t)
        if weak is not None:
            verdicts.append(weak)
    if not verdicts and not p.climbed:
        under = _underfit_verdict(p, peers, t, num_layers)
        if under is not None:
            verdicts.append(under)
    if not verdicts and p.val:
        verdicts.append(_healthy_verdict(p, t))
    return sorted(verdicts, key=lambda v: VERDICTS.index(v.verdict))


def diagnose_trial(
    curves: TrialCurves,
    peers: Sequence[TrialCurves] = (),
    thresholds: Thresholds = Thresholds(),
    num_layers: int | None = None,
) -> list[Verdict]:
    """Diagnose one trial from its learning curves.

    Args:
        curves: The trial's curves.
        peers: Other trials of the study (the trial itself is ignored if present); used for the
            feature-extraction level, underfitting and weak-regularisation comparisons and for
            concrete learning-rate recommendations.
        thresholds: Rule constants.
        num_layers: Layers with weights in the base (study attr ``thaw:num_layers``), used in
            recommendations.

    Returns:
        Verdicts ordered as :data:`VERDICTS`; ``[healthy]`` when nothing else applies, and an
        empty list when the trial has no usable history (e.g. a failed trial).
    """
    own = _profile(curves, thresholds)
    others = [_profile(q, thresholds) for q in peers if q.number != curves.number]
    judged = _with_explosions([own, *others], thresholds)
    return _diagnose(judged[0], judged[1:], thresholds, num_layers)


# --------------------------------------------------------------------------------------------
# Study level: where does climbing concentrate?
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClimbFinding:
    """The most separating split of one parameter by climb rate.

    ``group`` is the side with the higher climb rate (e.g. ``>= 2e-3``), ``other`` the rest.
    """

    param: str
    group: str
    climbed: int
    total: int
    other: str
    other_climbed: int
    other_total: int
    z: float
    sentence: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "climbed": self.climbed,
            "group": self.group,
            "other": self.other,
            "other_climbed": self.other_climbed,
            "other_total": self.other_total,
            "param": self.param,
            "sentence": self.sentence,
            "total": self.total,
            "z": round(self.z, 3),
        }


@dataclass(frozen=True)
class ClimbSummary:
    """How many trials climbed and in which parameter ranges climbing concentrates.

    Attributes:
        n_trials: Trials with at least two finite val losses (or pruned as climbing).
        n_climbed: Of those, trials that climbed.
        climbed_trials: Their numbers.
        findings: Per parameter, the most separating split whose z-score reaches
            ``Thresholds.climb_split_min_z``, most separating first.
        headline: One sentence with the counts.
    """

    n_trials: int
    n_climbed: int
    climbed_trials: tuple[int, ...]
    findings: tuple[ClimbFinding, ...]
    headline: str

    @property
    def sentences(self) -> list[str]:
        return [f.sentence for f in self.findings]

    def to_dict(self) -> dict[str, Any]:
        return {
            "climbed_trials": list(self.climbed_trials),
            "findings": [f.to_dict() for f in self.findings],
            "headline": self.headline,
            "n_climbed": self.n_climbed,
            "n_trials": self.n_trials,
        }


def _z_score(c1: int, n1: int, c2: int, n2: int) -> float:
    pooled = (c1 + c2) / (n1 + n2)
    if pooled <= 0.0 or pooled >= 1.0:
        return 0.0
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    return (c1 / n1 - c2 / n2) / se


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _best_split(param: str, data: list[tuple[Any, bool]]) -> ClimbFinding | None:
    label = _label(param)
    # (|z|, tie-break, finding)
    options: list[tuple[float, int, ClimbFinding]] = []
    if all(_is_number(v) for v, _ in data):
        values = sorted(float(v) for v, _ in data)
        n = len(values)
        cuts = sorted({values[int(math.floor(q * (n - 1)))] for q in _SPLIT_QUANTILES})
        is_int = all(isinstance(v, int) for v, _ in data)
        for i, cut in enumerate(cuts):
            below = [(float(v), c) for v, c in data if float(v) <= cut]
            above = [(float(v), c) for v, c in data if float(v) > cut]
            if not below or not above:
                continue
            cb, nb = sum(c for _, c in below), len(below)
            ca, na = sum(c for _, c in above), len(above)
            z = _z_score(ca, na, cb, nb)

            def fmt(x: float, is_int: bool = is_int) -> str:
                return str(int(x)) if is_int else _fmt_sig(x)

            above_text = f"{label} >= {fmt(min(v for v, _ in above))}"
            below_text = f"{label} <= {fmt(max(v for v, _ in below))}"
            if z >= 0:
                hi = (above_text, ca, na, below_text, cb, nb)
            else:
                hi = (below_text, cb, nb, above_text, ca, na)
            options.append((abs(z), i, _finding(param, *hi, abs(z))))
    else:
        categories = sorted({str(v) for v, _ in data})
        if len(categories) < 2:
            return None
        for i, cat in enumerate(categories):
            inside = [c for v, c in data if str(v) == cat]
            outside = [c for v, c in data if str(v) != cat]
            ci, ni = sum(inside), len(inside)
            co, no = sum(outside), len(outside)
            z = _z_score(ci, ni, co, no)
            in_text = f"{label} = {cat}"
            out_text = f"other {label} values"
            if z >= 0:
                hi = (in_text, ci, ni, out_text, co, no)
            else:
                hi = (out_text, co, no, in_text, ci, ni)
            options.append((abs(z), i, _finding(param, *hi, abs(z))))
    if not options:
        return None
    # Most separating first; on ties prefer a concrete category / range as the climbing group.
    return min(options, key=lambda o: (-o[0], o[2].group.startswith("other "), o[1]))[2]


def _finding(
    param: str, group: str, c: int, n: int, other: str, oc: int, on: int, z: float
) -> ClimbFinding:
    sentence = f"{c} of {n} trials with {group} climbed; {oc} of {on} with {other}"
    return ClimbFinding(param, group, c, n, other, oc, on, z, sentence)


def _climb_summary(profiles: Sequence[_Profile], t: Thresholds) -> ClimbSummary:
    considered = [p for p in profiles if len(p.val) >= 2 or p.curves.prune_reason == "climbing"]
    climbed = tuple(sorted(p.curves.number for p in considered if p.climbed))
    params = sorted({k for p in considered for k in p.curves.params})
    findings = []
    for param in params:
        data = [
            (p.curves.params[param], p.climbed)
            for p in considered
            if param in p.curves.params and p.curves.params[param] is not None
        ]
        if len(data) < 2:
            continue
        finding = _best_split(param, data)
        if finding is not None and finding.z >= t.climb_split_min_z and finding.z > 0:
            findings.append(finding)
    findings.sort(key=lambda f: (-f.z, f.param))
    headline = (
        f"{len(climbed)} of {len(considered)} trials climbed (val loss ended >= "
        f"{100 * t.climb_min_relative_rise:g}% above its best, or pruned as climbing)"
    )
    return ClimbSummary(len(considered), len(climbed), climbed, tuple(findings), headline)


def climb_summary(
    trials: Sequence[TrialCurves], thresholds: Thresholds = Thresholds()
) -> ClimbSummary:
    """Count climbing trials and find the parameter ranges where climbing concentrates.

    A trial climbed when it was pruned as ``climbing`` or when its final val loss (and the
    smoothed end of its curve) lies at least ``climb_min_relative_rise`` above its best, beyond
    the curve's noise (the same rule :func:`diagnose_trial` uses).

    Each numeric parameter is split at candidate thresholds (deciles of its observed values);
    categorical parameters are split one category against the rest. The split with the largest
    two-proportion z-score is kept per parameter and reported when it reaches
    ``climb_split_min_z``, as a sentence such as ``"9 of 11 trials with learning rate >= 2e-3
    climbed; 1 of 19 with learning rate <= 5e-4"`` (the bounds are the observed extremes of the
    two groups).
    """
    return _climb_summary([_profile(c, thresholds) for c in trials], thresholds)


# --------------------------------------------------------------------------------------------
# Study level: parameter importances
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParameterImportances:
    """Normalised parameter importances for two targets.

    Attributes:
        best_val_loss: Importance for the best val loss of COMPLETE trials.
        climb: Importance for the climb size (final minus best val loss) of COMPLETE and
            PRUNED trials (pruned trials carry the climb measured until pruning).
        evaluators: Evaluator used per target (``PED-ANOVA``, ``fANOVA``) or ``""`` when no
            importance could be computed (too few trials, no variation, evaluator errors).
    """

    best_val_loss: Mapping[str, float]
    climb: Mapping[str, float]
    evaluators: Mapping[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "best_val_loss": dict(self.best_val_loss),
            "climb": dict(self.climb),
            "evaluators": dict(sorted(self.evaluators.items())),
        }


def _read_curves(
    study: optuna.Study, frozen: Sequence[FrozenTrial], metric: str | None
) -> list[TrialCurves]:
    val_loss_objective = metric == "val_loss" or (
        metric is None and study.directions == [StudyDirection.MINIMIZE]
    )
    return [
        TrialCurves.from_frozen_trial(ft, intermediate_is_val_loss=val_loss_objective)
        for ft in frozen
    ]


def _target_study(trials: Sequence[FrozenTrial]) -> optuna.Study:
    # A throw-away in-memory study (no log line, unlike optuna.create_study) whose trials are
    # all COMPLETE so pruned trials count for the climb target.
    storage = optuna.storages.InMemoryStorage()
    storage.create_new_study([StudyDirection.MINIMIZE], "thaw-diagnosis-importance")
    study = optuna.Study(study_name="thaw-diagnosis-importance", storage=storage)
    study.add_trials(
        optuna.trial.create_trial(
            params=dict(ft.params),
            distributions=dict(ft.distributions),
            value=0.0,
            user_attrs={"thaw:number": ft.number},
        )
        for ft in trials
    )
    return study


def _evaluate_importance(
    study: optuna.Study, values: Mapping[int, float], params: list[str]
) -> tuple[dict[str, float], str]:
    def target(ft: FrozenTrial) -> float:
        return values.get(ft.user_attrs["thaw:number"], math.nan)

    # PED-ANOVA is deterministic; aim for >= 5 trials in its top quantile.
    quantile = min(0.5, max(0.1, 5.0 / max(len(values), 1)))
    makers: list[tuple[str, Callable[[], optuna.importance.BaseImportanceEvaluator]]] = [
        (
            "PED-ANOVA",
            lambda: optuna.importance.PedAnovaImportanceEvaluator(target_quantile=quantile),
        ),
        ("fANOVA", lambda: optuna.importance.FanovaImportanceEvaluator(seed=0)),
    ]
    for name, make in makers:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                raw = optuna.importance.get_param_importances(
                    study, evaluator=make(), params=params, target=target, normalize=False
                )
        except Exception:  # fANOVA needs scikit-learn; degenerate data may raise
            continue
        total = sum(raw.values())
        if not math.isfinite(total) or total <= 0.0:
            return {}, name
        normalised = [(k, round(v / total, 6)) for k, v in raw.items()]
        return dict(sorted(normalised, key=lambda kv: (-kv[1], kv[0]))), name
    return {}, ""


def _importances(
    trials: Sequence[FrozenTrial], curves: Mapping[int, TrialCurves], t: Thresholds
) -> ParameterImportances:
    usable: list[FrozenTrial] = []
    best_values: dict[int, float] = {}
    climbs: dict[int, float] = {}
    for ft in trials:
        if ft.state not in (TrialState.COMPLETE, TrialState.PRUNED) or not ft.params:
            continue
        c = curves[ft.number]
        best, final = c.best_val_loss, c.final_val_loss
        if best is None or final is None:
            continue
        usable.append(ft)
        climbs[ft.number] = final - best
        if ft.state == TrialState.COMPLETE:
            best_values[ft.number] = best
    results: dict[str, dict[str, float]] = {"best_val_loss": {}, "climb": {}}
    evaluators = {"best_val_loss": "", "climb": ""}
    if len(climbs) >= t.importance_min_trials:
        study = _target_study(usable)
        for key, values in (("best_val_loss", best_values), ("climb", climbs)):
            if len(values) < t.importance_min_trials:
                continue
            params = sorted({p for ft in usable if ft.number in values for p in ft.params})
            results[key], evaluators[key] = _evaluate_importance(study, values, params)
    return ParameterImportances(results["best_val_loss"], results["climb"], evaluators)


def parameter_importances(
    study: optuna.Study, thresholds: Thresholds = Thresholds()
) -> ParameterImportances:
    """Parameter importances for the best val loss and for the climb size.

    Uses Optuna's :class:`~optuna.importance.PedAnovaImportanceEvaluator` (deterministic, no
    scikit-learn needed) with a top quantile holding about five trials, falling back to
    ``FanovaImportanceEvaluator(seed=0)``; returns empty mappings when fewer than
    ``importance_min_trials`` trials have the target or no evaluator works.
    """
    trials = study.get_trials(deepcopy=False)
    metric = study.user_attrs.get("thaw:objective_metric")
    curves = _read_curves(study, trials, metric if isinstance(metric, str) else None)
    return _importances(trials, {c.number: c for c in curves}, thresholds)


# --------------------------------------------------------------------------------------------
# Study level: robust region and feature extraction vs fine-tuning
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamRange:
    """Observed range of one parameter: ``low..high`` for numbers, ``choices`` otherwise."""

    param: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()

    def describe(self) -> str:
        label = _label(self.param)
        if self.low is None or self.high is None:
            return f"{label} in {{{', '.join(str(c) for c in self.choices)}}}"
        if self.low == self.high:
            return f"{label} = {_fmt_value(self.low)}"
        return f"{label} {_fmt_value(self.low)}..{_fmt_value(self.high)}"

    def to_dict(self) -> dict[str, Any]:
        if self.low is None or self.high is None:
            return {"choices": list(self.choices), "param": self.param}
        return {"high": self.high, "low": self.low, "param": self.param}


@dataclass(frozen=True)
class RobustRegion:
    """Parameter ranges of the top ``robust_top_fraction`` of completed trials.

    Attributes:
        n_completed: Completed trials with a finite best val loss.
        top_trials: Numbers of the top trials (best first).
        ranges: Parameter ranges over the top trials.
        expected_best_val_loss: Mean best val loss of the top trials.
        mean_best_val_loss: Mean best val loss of all completed trials, for contrast.
        sentence: Human summary.
    """

    n_completed: int
    top_trials: tuple[int, ...]
    ranges: tuple[ParamRange, ...]
    expected_best_val_loss: float | None
    mean_best_val_loss: float | None
    sentence: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "expected_best_val_loss": _round(self.expected_best_val_loss),
            "mean_best_val_loss": _round(self.mean_best_val_loss),
            "n_completed": self.n_completed,
            "ranges": [r.to_dict() for r in self.ranges],
            "sentence": self.sentence,
            "top_trials": list(self.top_trials),
        }


def _round(x: float | None, digits: int = 6) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, digits)


def _ranked(trials: Sequence[TrialCurves], states: tuple[str, ...]) -> list[TrialCurves]:
    with_loss = [c for c in trials if c.state in states and c.best_val_loss is not None]
    return sorted(with_loss, key=lambda c: (c.best_val_loss, c.number))


def robust_region(
    trials: Sequence[TrialCurves], thresholds: Thresholds = Thresholds()
) -> RobustRegion:
    """Parameter ranges where the top quarter (``robust_top_fraction``) of completed trials
    fall, with their expected (mean) best val loss."""
    ranked = _ranked(trials, ("COMPLETE",))
    if not ranked:
        return RobustRegion(0, (), (), None, None, "no completed trial with a val loss yet")
    k = max(1, math.ceil(len(ranked) * thresholds.robust_top_fraction))
    top = ranked[:k]
    ranges = []
    for param in sorted({p for c in top for p in c.params}):
        values = [c.params[param] for c in top if c.params.get(param) is not None]
        if not values:
            continue
        if all(_is_number(v) for v in values):
            ranges.append(ParamRange(param, min(values), max(values)))
        else:
            ranges.append(ParamRange(param, choices=tuple(sorted({str(v) for v in values}))))
    expected = statistics.fmean(c.best_val_loss or 0.0 for c in top)
    overall = statistics.fmean(c.best_val_loss or 0.0 for c in ranked)
    where = "; ".join(r.describe() for r in ranges) or "no params"
    sentence = (
        f"the best {k} of {len(ranked)} completed trials ({100 * thresholds.robust_top_fraction:g}%"
        f") have {where}; expected best val loss there {expected:.3f} (all completed: "
        f"{overall:.3f})"
    )
    return RobustRegion(
        len(ranked), tuple(c.number for c in top), tuple(ranges), expected, overall, sentence
    )


@dataclass(frozen=True)
class FeatureExtractionComparison:
    """Best feature-extraction trial (``unfrozen_layers == 0``) vs best fine-tuning trial.

    Attributes:
        fe_trial / fe_best_val_loss: Best trial with no unfrozen layers.
        ft_trial / ft_best_val_loss / ft_unfrozen_layers: Best trial with unfrozen layers.
        difference: ``ft_best_val_loss - fe_best_val_loss`` (negative: fine-tuning better).
        relative_gain: ``(fe - ft) / fe`` (positive: fine-tuning better).
        interpretation: ``large_gap``, ``moderate_gap``, ``equal``,
            ``feature_extraction_better`` or ``n/a``.
        sentence: What it means for the domain discrepancy.
    """

    fe_trial: int | None
    fe_best_val_loss: float | None
    ft_trial: int | None
    ft_best_val_loss: float | None
    ft_unfrozen_layers: int | None
    difference: float | None
    relative_gain: float | None
    interpretation: str
    sentence: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "difference": _round(self.difference),
            "fe_best_val_loss": _round(self.fe_best_val_loss),
            "fe_trial": self.fe_trial,
            "ft_best_val_loss": _round(self.ft_best_val_loss),
            "ft_trial": self.ft_trial,
            "ft_unfrozen_layers": self.ft_unfrozen_layers,
            "interpretation": self.interpretation,
            "relative_gain": _round(self.relative_gain),
            "sentence": self.sentence,
        }


def feature_extraction_vs_finetuning(
    trials: Sequence[TrialCurves], thresholds: Thresholds = Thresholds()
) -> FeatureExtractionComparison:
    """Compare the best feature-extraction trial with the best fine-tuning trial.

    COMPLETE and PRUNED trials count: a pruned trial's best val loss was really reached.
    """
    ranked = _ranked(trials, ("COMPLETE", "PRUNED"))
    fe = next((c for c in ranked if c.unfrozen_layers == 0), None)
    ft = next((c for c in ranked if (c.unfrozen_layers or 0) > 0), None)
    fe_loss = None if fe is None else fe.best_val_loss
    ft_loss = None if ft is None else ft.best_val_loss
    fe_n = None if fe is None else fe.number
    ft_n = None if ft is None else ft.number
    ft_u = None if ft is None else ft.unfrozen_layers
    if fe_loss is None or ft_loss is None:
        if fe_loss is None and ft_loss is None:
            sentence = "no trials with a val loss to compare feature extraction and fine-tuning"
        elif fe_loss is None:
            sentence = (
                f"no feature-extraction trial (unfrozen_layers = 0) to compare with; the best "
                f"fine-tuning trial #{ft_n} reached {ft_loss:.3f} with {ft_u} unfrozen layers"
            )
        else:
            sentence = (
                f"no fine-tuning trial (unfrozen_layers > 0) to compare with; the best "
                f"feature-extraction trial #{fe_n} reached {fe_loss:.3f}"
            )
        return FeatureExtractionComparison(
            fe_n, fe_loss, ft_n, ft_loss, ft_u, None, None, "n/a", sentence
        )
    diff = ft_loss - fe_loss
    gain = _rel(fe_loss - ft_loss, fe_loss)
    pair = f"{ft_loss:.3f} vs {fe_loss:.3f}"
    fine = f"fine-tuning (trial #{ft_n}, {ft_u} unfrozen layers)"
    extraction = f"feature extraction (trial #{fe_n})"
    if gain >= thresholds.domain_gap_large:
        interpretation = "large_gap"
        sentence = (
            f"{fine} beats {extraction} by {100 * gain:.0f}% ({pair}): the frozen pretrained "
            "features fit the target data poorly, so the target domain likely differs from the "
            "pretraining data and adapting deeper layers pays off"
        )
    elif gain >= thresholds.domain_gap_small:
        interpretation = "moderate_gap"
        sentence = (
            f"{fine} beats {extraction} by {100 * gain:.0f}% ({pair}): a moderate domain "
            "discrepancy; unfreezing top layers helps, but the pretrained features already "
            "carry most of the signal"
        )
    elif gain > -thresholds.domain_gap_small:
        interpretation = "equal"
        sentence = (
            f"{fine} and {extraction} are within {100 * thresholds.domain_gap_small:g}% "
            f"({pair}): the pretrained features transfer well (target close to the "
            "pretraining domain); feature extraction is cheaper and less prone to overfitting"
        )
    else:
        interpretation = "feature_extraction_better"
        sentence = (
            f"{extraction} beats the best {fine} by {100 * -gain:.0f}% ({pair}): fine-tuning "
            "damaged or overfit useful pretrained features (target close to the pretraining "
            "domain, or too little data / too high a learning rate for fine-tuning)"
        )
    return FeatureExtractionComparison(
        fe_n, fe_loss, ft_n, ft_loss, ft_u, diff, gain, interpretation, sentence
    )


# --------------------------------------------------------------------------------------------
# Study level: domain shift score carried from the training side
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DomainShift:
    """Domain-shift score stored by the training side in study attr ``thaw:domain_shift``.

    Attributes:
        overall: Overall score (0 = same distribution as pretraining), if stored.
        layers: ``(layer, score)`` pairs, most shifted first.
        level: ``low``, ``moderate``, ``high`` or ``unknown``.
        sentence: Interpretation.
    """

    overall: float | None
    layers: tuple[tuple[str, float], ...]
    level: str
    sentence: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": {name: score for name, score in sorted(self.layers)},
            "level": self.level,
            "overall": self.overall,
            "sentence": self.sentence,
        }


def _domain_shift(
    attr: Any, t: Thresholds, comparison: FeatureExtractionComparison
) -> DomainShift | None:
    if not isinstance(attr, Mapping):
        return None
    overall_raw = attr.get("overall")
    overall = float(overall_raw) if _is_number(overall_raw) and overall_raw is not None else None
    layers_raw = attr.get("layers")
    layers: list[tuple[str, float]] = []
    if isinstance(layers_raw, Mapping):
        layers = [(str(k), float(v)) for k, v in layers_raw.items() if _is_number(v)]
    layers.sort(key=lambda kv: (-kv[1], kv[0]))
    if overall is None and not layers:
        return None
    if overall is None:
        level = "unknown"
        sentence = "domain shift stored per layer only"
    else:
        if overall < t.domain_shift_low:
            level, meaning = "low", "the target data look like the pretraining data"
        elif overall < t.domain_shift_high:
            level, meaning = "moderate", "the target data partly differ from the pretraining data"
        else:
            level, meaning = "high", "the target data differ clearly from the pretraining data"
        sentence = f"domain shift {overall:.2f} ({level}): {meaning}"
    shifted = [(name, score) for name, score in layers if score >= t.domain_shift_low][:3]
    if shifted:
        top = ", ".join(f"{name} ({score:.2f})" for name, score in shifted)
        sentence += f"; most shifted layers: {top} - unfreezing those adapts the most"
    if level == "high" and comparison.interpretation in ("equal", "feature_extraction_better"):
        sentence += "; yet fine-tuning did not beat feature extraction, so check data size and "
        sentence += "learning rate"
    elif level == "low" and comparison.interpretation == "large_gap":
        sentence += "; yet fine-tuning clearly beat feature extraction, so the gain may come "
        sentence += "from the task (labels) rather than the input domain"
    elif comparison.interpretation != "n/a" and level != "unknown":
        sentence += "; consistent with the feature-extraction vs fine-tuning comparison"
    return DomainShift(overall, tuple(layers), level, sentence)


# --------------------------------------------------------------------------------------------
# Study diagnosis
# --------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


@dataclass(frozen=True)
class TrialDiagnosis:
    """Verdicts of one trial of a study."""

    number: int
    state: str
    params: Mapping[str, Any]
    verdicts: tuple[Verdict, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "params": _jsonable(self.params),
            "state": self.state,
            "verdicts": [v.to_dict() for v in self.verdicts],
        }


@dataclass(frozen=True)
class StudyDiagnosis:
    """Everything :func:`diagnose_study` found about one study."""

    study_name: str
    objective_metric: str | None
    num_layers: int | None
    state_counts: Mapping[str, int]
    trials: tuple[TrialDiagnosis, ...]
    verdict_counts: Mapping[str, int]
    climb: ClimbSummary
    importances: ParameterImportances
    robust_region: RobustRegion
    fe_vs_ft: FeatureExtractionComparison
    domain_shift: DomainShift | None
    thresholds: Thresholds

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (no NaN), with sorted keys and trials in number order."""
        result = {
            "climb": self.climb.to_dict(),
            "domain_shift": None if self.domain_shift is None else self.domain_shift.to_dict(),
            "feature_extraction_vs_finetuning": self.fe_vs_ft.to_dict(),
            "importances": self.importances.to_dict(),
            "num_layers": self.num_layers,
            "objective_metric": self.objective_metric,
            "robust_region": self.robust_region.to_dict(),
            "state_counts": dict(sorted(self.state_counts.items())),
            "study_name": self.study_name,
            "thresholds": self.thresholds.to_dict(),
            "trials": [t.to_dict() for t in self.trials],
            "verdict_counts": dict(sorted(self.verdict_counts.items())),
        }
        return {k: _jsonable(v) if k != "trials" else v for k, v in result.items()}

    def render_text(self) -> str:
        """Plain-text report for a terminal."""
        states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(self.state_counts.items()))
        total = sum(self.state_counts.values())
        metric = f"; objective {self.objective_metric}" if self.objective_metric else ""
        lines = [f"Study {self.study_name!r}: {total} trials ({states}){metric}"]
        counts = [f"{v} {self.verdict_counts[v]}" for v in VERDICTS if self.verdict_counts.get(v)]
        lines.append("Verdicts: " + (", ".join(counts) if counts else "none"))
        lines.append("")
        lines.append(f"Climbing: {self.climb.headline}")
        lines.extend(f"  - {s}" for s in self.climb.sentences)
        for key, title in (("best_val_loss", "best val loss"), ("climb", "climb size")):
            values: Mapping[str, float] = getattr(self.importances, key)
            evaluator = self.importances.evaluators.get(key) or "n/a"
            shown = ", ".join(f"{_label(k)} {v:.2f}" for k, v in values.items()) or "n/a"
            lines.append(f"Importance for {title} ({evaluator}): {shown}")
        lines.append(f"Robust region: {self.robust_region.sentence}")
        lines.append(f"Feature extraction vs fine-tuning: {self.fe_vs_ft.sentence}")
        if self.domain_shift is not None:
            lines.append(f"Domain shift: {self.domain_shift.sentence}")
        lines.append("")
        healthy = []
        for trial in self.trials:
            names = [v.verdict for v in trial.verdicts]
            if names == [HEALTHY]:
                healthy.append(trial.number)
                continue
            if not names:
                continue
            params = ", ".join(
                f"{_label(k)} {_fmt_value(v)}" for k, v in sorted(trial.params.items())
            )
            lines.append(f"Trial {trial.number} ({trial.state.lower()}; {params})")
            for v in trial.verdicts:
                lines.append(f"  {v.verdict} ({v.confidence:.2f}): {v.evidence}")
                lines.append(f"    -> {v.recommendation}")
        if healthy:
            lines.append("Healthy trials: " + ", ".join(str(n) for n in healthy))
        return "\n".join(lines) + "\n"


def diagnose_study(study: optuna.Study, thresholds: Thresholds = Thresholds()) -> StudyDiagnosis:
    """Diagnose every trial of ``study`` and summarise the study.

    Reads only Optuna storage: trial params, user attrs and (for trials without ``history``
    in a ``val_loss`` study) intermediate values, and study attrs ``thaw:num_layers``,
    ``thaw:objective_metric`` and ``thaw:domain_shift``. Deterministic for a given storage
    content.
    """
    frozen = sorted(study.get_trials(deepcopy=False), key=lambda ft: ft.number)
    attrs = study.user_attrs
    num_layers = _opt_int(attrs.get("thaw:num_layers"))
    metric = attrs.get("thaw:objective_metric")
    if not isinstance(metric, str):
        metric = None
    curves = _read_curves(study, frozen, metric)
    profiles = _with_explosions([_profile(c, thresholds) for c in curves], thresholds)
    peers = [p for p in profiles if p.val]
    trial_diagnoses = tuple(
        TrialDiagnosis(
            p.curves.number,
            p.curves.state,
            p.curves.params,
            tuple(_diagnose(p, peers, thresholds, num_layers)),
        )
        for p in profiles
    )
    state_counts: dict[str, int] = {}
    for c in curves:
        state_counts[c.state] = state_counts.get(c.state, 0) + 1
    verdict_counts: dict[str, int] = {}
    for td in trial_diagnoses:
        for v in td.verdicts:
            verdict_counts[v.verdict] = verdict_counts.get(v.verdict, 0) + 1
    comparison = feature_extraction_vs_finetuning(curves, thresholds)
    return StudyDiagnosis(
        study_name=study.study_name,
        objective_metric=metric,
        num_layers=num_layers,
        state_counts=state_counts,
        trials=trial_diagnoses,
        verdict_counts=verdict_counts,
        climb=_climb_summary(profiles, thresholds),
        importances=_importances(frozen, {c.number: c for c in curves}, thresholds),
        robust_region=robust_region(curves, thresholds),
        fe_vs_ft=comparison,
        domain_shift=_domain_shift(attrs.get("thaw:domain_shift"), thresholds, comparison),
        thresholds=thresholds,
    )
