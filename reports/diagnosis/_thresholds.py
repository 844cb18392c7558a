"""Named, documented, configurable constants of the diagnosis rules."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Thresholds"]


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
            steps after unfreezing are upward swings (and at least two are). Neither a rising
            nor an oscillating train loss counts once the training set is memorised (see
            ``overfit_memorised_accuracy``): the ups and downs of a train loss near zero are
            noise, not a learning rate that wrecks the weights.
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
        chance_accuracy_margin:
            Chance band: a val accuracy within this fraction of the way from chance (1/K) to
            perfect (1) is "at chance" (also the band a BatchNorm mismatch's val accuracy must
            stay in from the late variant's onset on: one that leaves it generalised, and
            overfits) ...
        chance_loss_margin:
            ... and a val loss within this fraction below ln K. A trial whose val curves never
            leave the band learnt nothing that generalises and is never healthy.
        learned_min_accuracy:
            The training set was learnt when the final train accuracy (inference-mode probe if
            stored) is at least this fraction of the way from chance to perfect.
        underfit_max_accuracy:
            A trial that left the chance band still underfits (too little fine-tuning) when its
            final train accuracy is below this fraction of the way from chance to perfect.
        underfit_converging_accuracy:
            ... or below this fraction while the val loss still falls by at least
            ``underfit_min_recent_gain`` (relative) over the last third of the epochs: stopped
            before it converged.
        underfit_min_recent_gain:
            See ``underfit_converging_accuracy``.
        underfit_poor_accuracy:
            Still improving is not underfitting: a run whose val loss still falls at its last
            epoch, with a healthy train/val relation, is healthy and stopped early (train
            longer) unless its train accuracy ended below this fraction of the way from chance
            to perfect (the train fit itself is poor) or its BatchNorm kept the pretraining
            statistics (``batchnorm: frozen``, a named handicap).
        overfit_memorised_accuracy:
            Overfitting without a climb: the training set is memorised (train accuracy at least
            this fraction of the way from chance to perfect; the raw accuracy without K;
            inference probe when stored) ...
        overfit_accuracy_gap:
            ... val accuracy at least this far below it, and val loss ``overfit_gap_ratio``
            times the train loss.
        bn_val_chance_margin:
            BatchNorm mismatch (curve rules, K known): val accuracy at most this fraction of the
            way from chance to perfect while the train accuracy is learnt (its maximum from the
            epoch the train accuracy is learnt on, for the late variant).
        bn_probe_ratio:
            BatchNorm probe: val loss with the moving statistics at least this multiple of the
            val loss with batch statistics is a mismatch; below it, the probe clears BatchNorm.
        lr_high:
            An Adam-family learning rate at or above this wrecks pretrained weights; with val
            curves at chance it is the cause named.
        lr_low:
            A learning rate at or below this is named as a cause of not learning.
        drift_high:
            Weight-drift probe: an unfrozen block whose weights moved by at least this relative L2
            distance from the pretrained ones had its features overwritten.
        drift_low:
            ... and at most this barely moved (supports "learning rate too low").
        explosion_min_loss:
            A loss (nats) at or above this in the first ``explosion_epochs`` epochs is explosive
            whatever the reference: no K makes a uniform guess that bad.
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
    chance_accuracy_margin: float = _threshold(0.15, low=0.0, high=1.0, high_open=True)
    chance_loss_margin: float = _threshold(0.10, low=0.0, high=0.5)
    learned_min_accuracy: float = _threshold(0.5, low=0.0, high=1.0)
    underfit_max_accuracy: float = _threshold(0.6, low=0.0, high=1.0)
    underfit_converging_accuracy: float = _threshold(0.8, low=0.0, high=1.0)
    underfit_min_recent_gain: float = _threshold(0.1, low=0.0, low_open=True)
    underfit_poor_accuracy: float = _threshold(0.4, low=0.0, high=1.0)
    overfit_memorised_accuracy: float = _threshold(0.95, low=0.0, high=1.0)
    overfit_accuracy_gap: float = _threshold(0.2, low=0.0, high=1.0, low_open=True)
    bn_val_chance_margin: float = _threshold(0.3, low=0.0, high=1.0)
    bn_probe_ratio: float = _threshold(1.5, low=1.0, low_open=True)
    lr_high: float = _threshold(1e-2, low=0.0, low_open=True)
    lr_low: float = _threshold(1e-5, low=0.0)
    drift_high: float = _threshold(1.0, low=0.0, low_open=True)
    drift_low: float = _threshold(1e-3, low=0.0)
    explosion_min_loss: float = _threshold(20.0, low=0.0, low_open=True)

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


DEFAULT_THRESHOLDS = Thresholds()
"""The defaults, shared as the default argument of the diagnosis functions."""
