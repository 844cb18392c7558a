"""Labelled synthetic learning curves for the diagnosis rules.

Each :class:`LabelledCase` is one trial (plus the peers it is judged against) and the exact set
of verdicts a fine-tuning practitioner would give it. Noisy curves use fixed seeds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from thaw.reports._diagnosis import (
    BATCHNORM_MISMATCH,
    HEALTHY,
    LR_TOO_HIGH,
    OVERFITTING,
    UNDERFITTING,
    WEAK_REGULARISATION,
    TrialCurves,
)


@dataclass(frozen=True)
class LabelledCase:
    id: str
    trial: TrialCurves
    expected: frozenset[str]
    peers: tuple[TrialCurves, ...] = ()
    note: str = ""


def params(
    unfrozen_layers: int = 20,
    learning_rate: float = 3e-4,
    dropout: float = 0.2,
    weight_decay: float = 1e-5,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "unfrozen_layers": unfrozen_layers,
        "learning_rate": learning_rate,
        "dropout": dropout,
        "weight_decay": weight_decay,
        **extra,
    }


def acc_from_loss(loss: Sequence[float | None]) -> list[float | None]:
    """A plausible accuracy for a loss (never above 0.84 for losses >= 0.3)."""
    return [None if v is None else round(max(0.05, min(0.99, 1.0 - 0.55 * v)), 4) for v in loss]


def trial(
    number: int,
    p: Mapping[str, Any],
    loss: Sequence[float | None],
    val_loss: Sequence[float | None],
    accuracy: Sequence[float | None] | None = None,
    val_accuracy: Sequence[float | None] | None = None,
    **kwargs: Any,
) -> TrialCurves:
    return TrialCurves(
        number=number,
        params=p,
        loss=list(loss),
        val_loss=list(val_loss),
        accuracy=list(accuracy) if accuracy is not None else acc_from_loss(loss),
        val_accuracy=list(val_accuracy) if val_accuracy is not None else acc_from_loss(val_loss),
        **kwargs,
    )


def decay(start: float, end: float, epochs: int, tau: float = 2.5) -> list[float]:
    """``end + (start - end) * exp(-(t - 1) / tau)`` for t = 1..epochs, rounded."""
    return [round(end + (start - end) * math.exp(-(t - 1) / tau), 4) for t in range(1, epochs + 1)]


def healthy_peer(number: int, p: dict[str, Any], best: float, epochs: int = 12) -> TrialCurves:
    """A converging trial whose val loss ends close to ``best``."""
    val = decay(best + 0.6, best, epochs)
    return trial(number, p, [round(v * 0.9, 4) for v in val], val)


def noisy(values: Sequence[float], sigma: float, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    return [round(float(v + rng.normal(0.0, sigma)), 4) for v in values]


# --- building blocks --------------------------------------------------------------------------

SMOOTH_TRAIN = [round(0.3 + 0.9 * math.exp(-t / 3.0), 4) for t in range(1, 13)]
SMOOTH_VAL = [round(0.35 + 0.8 * math.exp(-t / 3.5), 4) for t in range(1, 13)]

OVERFIT_VAL = [1.0, 0.7, 0.55, 0.47, 0.44, 0.45, 0.49, 0.54, 0.6, 0.66, 0.72, 0.78]
OVERFIT_TRAIN = [1.1, 0.75, 0.55, 0.42, 0.33, 0.26, 0.2, 0.15, 0.11, 0.08, 0.06, 0.05]

PLATEAU_TRAIN = [1.2, 1.0, 0.92, 0.88, 0.86, 0.85, 0.845, 0.84, 0.84, 0.838]
PLATEAU_VAL = [1.1, 0.95, 0.9, 0.87, 0.86, 0.855, 0.85, 0.85, 0.848, 0.848]

WEAK = params(20, 3e-4, dropout=0.1, weight_decay=1e-6)

# Train accuracy gets high only after some epochs while val accuracy stays near chance (6
# classes) and val loss climbs: BatchNorm statistics that do not match inference.
LATE_BN_TRAIN = [1.7, 1.3, 1.0, 0.8, 0.62, 0.5, 0.4, 0.3, 0.22, 0.17, 0.13, 0.1]
LATE_BN_ACC = [0.3, 0.5, 0.62, 0.72, 0.8, 0.84, 0.88, 0.92, 0.95, 0.97, 0.98, 0.99]
LATE_BN_VAL = [1.75, 1.68, 1.62, 1.6, 1.62, 1.7, 1.82, 1.95, 2.1, 2.2, 2.3, 2.4]
LATE_BN_VAL_ACC = [0.2, 0.26, 0.3, 0.32, 0.31, 0.3, 0.3, 0.29, 0.29, 0.28, 0.28, 0.28]

# No warm-up: a val bump at epoch 2 that is undone by epoch 4, then ordinary overfitting.
BUMP_TRAIN = [1.25, 1.3, 1.1, 0.9, 0.7, 0.55, 0.42, 0.32, 0.25, 0.2, 0.16, 0.13]
BUMP_VAL = [1.2, 1.6, 1.3, 1.0, 0.85, 0.75, 0.7, 0.68, 0.69, 0.72, 0.76, 0.8]

# Head only, still falling steadily but slowly (0.05 per epoch), small gap.
SLOW_VAL = [round(2.0 - 0.05 * i, 4) for i in range(12)]
SLOW_TRAIN = [round(v + 0.1, 4) for v in SLOW_VAL]


def _overfit(number: int = 0, p: dict[str, Any] | None = None) -> TrialCurves:
    return trial(number, p or WEAK, OVERFIT_TRAIN, OVERFIT_VAL)


CASES: list[LabelledCase] = [
    # ---- healthy ------------------------------------------------------------------------------
    LabelledCase(
        "healthy_smooth",
        trial(0, params(), SMOOTH_TRAIN, SMOOTH_VAL),
        frozenset({HEALTHY}),
    ),
    LabelledCase(
        "healthy_noisy_improving",
        trial(0, params(), noisy(SMOOTH_TRAIN, 0.005, 1), noisy(SMOOTH_VAL, 0.025, 2)),
        frozenset({HEALTHY}),
        note="noise makes the last epochs sit above the minimum; not a climb",
    ),
    LabelledCase(
        "healthy_noisy_improving_seed2",
        trial(0, params(), noisy(SMOOTH_TRAIN, 0.005, 3), noisy(SMOOTH_VAL, 0.03, 4)),
        frozenset({HEALTHY}),
    ),
    LabelledCase(
        "healthy_tiny_climb_below_threshold",
        trial(
            0,
            params(),
            [1.0, 0.8, 0.65, 0.55, 0.48, 0.43, 0.4, 0.38, 0.37, 0.36, 0.355, 0.35],
            [0.9, 0.7, 0.58, 0.5, 0.45, 0.42, 0.41, 0.4, 0.405, 0.41, 0.415, 0.42],
        ),
        frozenset({HEALTHY}),
        note="+5% after the best epoch is below the 10% climb threshold",
    ),
    LabelledCase(
        "healthy_short",
        trial(0, params(), [1.0, 0.8, 0.7], [0.9, 0.75, 0.68]),
        frozenset({HEALTHY}),
    ),
    LabelledCase(
        "healthy_shock_recovers_after_warmup",
        trial(
            0,
            params(40, 5e-4),
            [1.3, 0.85, 0.66, 0.75, 0.6, 0.5, 0.45, 0.41, 0.38, 0.36],
            [1.2, 0.8, 0.62, 0.8, 0.66, 0.58, 0.52, 0.48, 0.46, 0.45],
            warmup_epochs=3,
        ),
        frozenset({HEALTHY}),
        note="val jumps after unfreezing but gets well below the end-of-warm-up level",
    ),
    LabelledCase(
        "healthy_gap_ratio_below_bn_threshold",
        trial(
            0,
            params(),
            [0.3, 0.22, 0.17, 0.14, 0.12, 0.1, 0.09, 0.08],
            [0.75, 0.55, 0.45, 0.4, 0.37, 0.35, 0.34, 0.33],
            accuracy=[0.9, 0.93, 0.95, 0.96, 0.97, 0.97, 0.98, 0.98],
        ),
        frozenset({HEALTHY}),
        note="val/train 2.5x from the start (< 3x) and still improving",
    ),
    LabelledCase(
        "healthy_plateau_without_better_peers",
        trial(0, params(0, 1e-3), PLATEAU_TRAIN, PLATEAU_VAL),
        frozenset({HEALTHY}),
        note="plateau alone is no underfitting: no peer shows that more is possible",
    ),
    LabelledCase(
        "healthy_still_improving_fast_vs_deeper_peer",
        trial(
            0,
            params(0, 1e-3),
            [round(1.4 - 0.07 * i, 4) for i in range(12)],
            [round(1.3 - 0.07 * i, 4) for i in range(12)],
        ),
        frozenset({HEALTHY}),
        peers=(healthy_peer(1, params(30, 3e-4), 0.45),),
        note="15% behind a deeper peer but its last 4 epochs gained 0.28, more than the gap",
    ),
    LabelledCase(
        "healthy_plateau_only_shallower_slower_peer_better",
        trial(0, params(20, 3e-4), PLATEAU_TRAIN, PLATEAU_VAL),
        frozenset({HEALTHY}),
        peers=(healthy_peer(1, params(10, 1e-4), 0.45),),
    ),
    # ---- overfitting --------------------------------------------------------------------------
    LabelledCase("overfitting_classic", _overfit(), frozenset({OVERFITTING})),
    LabelledCase(
        "overfitting_noisy",
        trial(0, WEAK, noisy(OVERFIT_TRAIN, 0.004, 5), noisy(OVERFIT_VAL, 0.015, 6)),
        frozenset({OVERFITTING}),
    ),
    LabelledCase(
        "overfitting_borderline_climb",
        trial(
            0,
            params(),
            [1.0, 0.8, 0.65, 0.55, 0.5, 0.46, 0.43, 0.41, 0.39, 0.375, 0.36, 0.35],
            [0.9, 0.72, 0.61, 0.55, 0.52, 0.5, 0.51, 0.53, 0.545, 0.555, 0.565, 0.57],
        ),
        frozenset({OVERFITTING}),
        note="smooth +12% over the best, just above the 10% threshold",
    ),
    LabelledCase(
        "overfitting_pruned_climbing",
        trial(
            0,
            params(100, 2e-3),
            [0.9, 0.6, 0.45, 0.38, 0.33],
            [0.8, 0.6, 0.55, 0.6, 0.66],
            state="PRUNED",
            prune_reason="climbing",
            prune_epoch=5,
        ),
        frozenset({OVERFITTING}),
    ),
    LabelledCase(
        "overfitting_stalled_val_gap_widens",
        trial(
            0,
            params(),
            [1.0, 0.7, 0.5, 0.4, 0.32, 0.26, 0.21, 0.17, 0.14, 0.12, 0.1, 0.09],
            [1.0, 0.7, 0.55, 0.5, 0.49, 0.49, 0.5, 0.495, 0.5, 0.5, 0.505, 0.5],
        ),
        frozenset({OVERFITTING}),
        note="no climb, but val stalls while train keeps dropping (val/train 1.5 -> 5.6)",
    ),
    LabelledCase(
        "overfitting_transient_bump_without_warmup",
        trial(0, params(20, 3e-4), BUMP_TRAIN, BUMP_VAL),
        frozenset({OVERFITTING}),
        peers=(healthy_peer(1, params(0, 1e-3), 0.5),),
        note="the epoch-2 val bump is back below its epoch-1 level two epochs later and then "
        "improved on by 43%: not destroyed features, though it never reaches the "
        "feature-extraction level 0.50 (it overfits instead)",
    ),
    # ---- weak regularisation ------------------------------------------------------------------
    LabelledCase(
        "weak_regularisation_peer_with_more_dropout",
        _overfit(),
        frozenset({OVERFITTING, WEAK_REGULARISATION}),
        peers=(healthy_peer(1, params(24, 5e-4, dropout=0.5, weight_decay=1e-4), 0.42),),
    ),
    LabelledCase(
        "weak_regularisation_peer_with_more_weight_decay_only",
        _overfit(p=params(20, 3e-4, dropout=0.3, weight_decay=1e-6)),
        frozenset({OVERFITTING, WEAK_REGULARISATION}),
        peers=(healthy_peer(1, params(20, 2e-4, dropout=0.3, weight_decay=1e-4), 0.42),),
    ),
    LabelledCase(
        "overfitting_regularised_peer_at_10x_lr",
        _overfit(),
        frozenset({OVERFITTING}),
        peers=(healthy_peer(1, params(20, 3e-3, dropout=0.5, weight_decay=1e-4), 0.42),),
        note="the peer's learning rate differs by more than 3x: not comparable",
    ),
    LabelledCase(
        "overfitting_regularised_peer_much_deeper",
        _overfit(),
        frozenset({OVERFITTING}),
        peers=(healthy_peer(1, params(100, 3e-4, dropout=0.5, weight_decay=1e-4), 0.42),),
    ),
    LabelledCase(
        "overfitting_regularised_peer_also_climbs",
        _overfit(),
        frozenset({OVERFITTING}),
        peers=(
            trial(
                1,
                params(20, 3e-4, dropout=0.5, weight_decay=1e-4),
                OVERFIT_TRAIN,
                [round(v * 0.95, 4) for v in OVERFIT_VAL],
            ),
        ),
    ),
    # ---- learning rate too high ---------------------------------------------------------------
    LabelledCase(
        "lr_nan_pruned_diverged",
        trial(
            0,
            params(154, 9e-3),
            [1.1, 0.9, 1.5, None, None],
            [1.0, 0.8, 0.9, None, None],
            state="PRUNED",
            prune_reason="diverged",
            prune_epoch=5,
        ),
        frozenset({LR_TOO_HIGH}),
    ),
    LabelledCase(
        "lr_nan_in_val_only",
        trial(0, params(80, 5e-3), [1.1, 0.9, 0.8, 0.75], [1.0, 0.8, 0.75, None]),
        frozenset({LR_TOO_HIGH}),
    ),
    LabelledCase(
        "lr_pruned_diverged_before_nan_recorded",
        trial(
            0,
            params(80, 5e-3),
            [1.1, 0.85],
            [1.0, 0.8],
            state="PRUNED",
            prune_reason="diverged",
            prune_epoch=2,
        ),
        frozenset({LR_TOO_HIGH}),
    ),
    LabelledCase(
        "lr_train_loss_jump",
        trial(
            0,
            params(80, 5e-3),
            [1.0, 0.7, 0.55, 2.4, 1.9, 1.6, 1.4, 1.3],
            [0.9, 0.65, 0.55, 2.2, 1.8, 1.5, 1.3, 1.2],
        ),
        frozenset({LR_TOO_HIGH}),
    ),
    LabelledCase(
        "lr_shock_after_warmup",
        trial(
            0,
            params(80, 5e-3),
            [1.3, 0.85, 0.66, 1.2, 0.9, 0.7, 0.55, 0.45, 0.38, 0.32, 0.28, 0.25],
            [1.2, 0.8, 0.62, 1.1, 0.95, 0.85, 0.8, 0.78, 0.77, 0.78, 0.8, 0.82],
            warmup_epochs=3,
        ),
        frozenset({LR_TOO_HIGH}),
        peers=(healthy_peer(1, params(80, 1e-4), 0.45),),
        note="val jumps at unfreezing and never returns to the end-of-warm-up level 0.62",
    ),
    LabelledCase(
        "lr_shock_vs_feature_extraction_peer",
        trial(
            0,
            params(60, 3e-3),
            [1.0, 0.95, 0.85, 0.75, 0.68, 0.62, 0.58, 0.55, 0.53, 0.51],
            [0.9, 1.2, 1.05, 0.95, 0.9, 0.88, 0.87, 0.87, 0.88, 0.9],
        ),
        frozenset({LR_TOO_HIGH}),
        peers=(healthy_peer(1, params(0, 1e-3), 0.6),),
        note="no warm-up: compared with the best feature-extraction peer (0.60)",
    ),
    LabelledCase(
        "lr_train_loss_rising",
        trial(
            0,
            params(60, 2e-3),
            [1.0, 0.7, 0.55, 0.5, 0.52, 0.58, 0.62, 0.68, 0.72, 0.75],
            [0.9, 0.65, 0.55, 0.52, 0.55, 0.6, 0.64, 0.7, 0.74, 0.78],
        ),
        frozenset({LR_TOO_HIGH}),
        note="val climbs too, but with train loss rising it is not overfitting",
    ),
    LabelledCase(
        "lr_train_loss_oscillating",
        trial(
            0,
            params(60, 2e-3),
            [1.0, 0.7, 0.8, 0.6, 0.72, 0.55, 0.66, 0.52, 0.62, 0.5, 0.6, 0.48],
            [0.9, 0.7, 0.75, 0.62, 0.7, 0.58, 0.66, 0.55, 0.63, 0.53, 0.6, 0.52],
        ),
        frozenset({LR_TOO_HIGH}),
    ),
    LabelledCase(
        "lr_explosive_start",
        trial(
            0,
            params(20, 1e-1),
            [5.2e4, 310.0, 42.0, 8.1, 2.5, 1.95, 1.9, 1.86, 1.83, 1.81, 1.8, 1.8],
            [880.0, 61.0, 12.5, 3.1, 1.9, 1.85, 1.83, 1.81, 1.8, 1.8, 1.79, 1.79],
            accuracy=[0.17] * 12,
            val_accuracy=[0.167] * 12,
        ),
        frozenset({LR_TOO_HIGH}),
        peers=(
            healthy_peer(1, params(0, 1e-3), 0.6),
            healthy_peer(2, params(20, 3e-4), 0.45),
        ),
        note="loss thousands of times the peers' epoch-1 level, then stuck at chance (ln 6)",
    ),
    # ---- batchnorm mismatch -------------------------------------------------------------------
    LabelledCase(
        "batchnorm_mismatch_from_epoch_1",
        trial(
            0,
            params(154, 1e-4, batchnorm="train"),
            [0.45, 0.3, 0.22, 0.17, 0.14, 0.12, 0.1, 0.09],
            [2.4, 2.2, 2.3, 2.25, 2.3, 2.2, 2.28, 2.25],
            accuracy=[0.88, 0.92, 0.95, 0.96, 0.97, 0.98, 0.98, 0.99],
        ),
        frozenset({BATCHNORM_MISMATCH}),
    ),
    LabelledCase(
        "batchnorm_mismatch_after_warmup",
        trial(
            0,
            params(154, 1e-4, batchnorm="train"),
            [0.9, 0.6, 0.45, 0.32, 0.25, 0.2, 0.16, 0.13],
            [0.85, 0.62, 2.1, 2.0, 2.05, 1.95, 2.0, 1.98],
            accuracy=[0.7, 0.82, 0.88, 0.93, 0.95, 0.96, 0.97, 0.98],
            warmup_epochs=2,
        ),
        frozenset({BATCHNORM_MISMATCH}),
        note="val jumps at unfreezing while train loss keeps falling: BN statistics, not lr",
    ),
    LabelledCase(
        "batchnorm_mismatch_late",
        trial(
            0,
            params(20, 3e-4),
            LATE_BN_TRAIN,
            LATE_BN_VAL,
            accuracy=LATE_BN_ACC,
            val_accuracy=LATE_BN_VAL_ACC,
        ),
        frozenset({BATCHNORM_MISMATCH}),
        note="when train accuracy first reaches 0.85 (epoch 7) val accuracy is 0.3 (0.32x): "
        "judged by the curves, the batchnorm param is not set",
    ),
    # ---- underfitting -------------------------------------------------------------------------
    LabelledCase(
        "underfitting_feature_extraction_vs_deeper_peer",
        trial(0, params(0, 1e-3), PLATEAU_TRAIN, PLATEAU_VAL),
        frozenset({UNDERFITTING}),
        peers=(healthy_peer(1, params(30, 3e-4), 0.45),),
    ),
    LabelledCase(
        "underfitting_learning_rate_too_low",
        trial(0, params(20, 1e-6), PLATEAU_TRAIN, PLATEAU_VAL),
        frozenset({UNDERFITTING}),
        peers=(healthy_peer(1, params(20, 1e-4), 0.45),),
    ),
    LabelledCase(
        "underfitting_pruned_below_peers",
        trial(
            0,
            params(2, 1e-5),
            [1.15, 1.02, 0.98],
            [1.1, 1.0, 0.97],
            state="PRUNED",
            prune_reason="below_peers",
            prune_epoch=3,
        ),
        frozenset({UNDERFITTING}),
        peers=(healthy_peer(1, params(30, 3e-4), 0.45),),
    ),
    LabelledCase(
        "underfitting_slow_progress_vs_deeper_peer",
        trial(0, params(0, 1e-3), SLOW_TRAIN, SLOW_VAL),
        frozenset({UNDERFITTING}),
        peers=(healthy_peer(1, params(30, 3e-4), 0.45),),
        note="no plateau, but the last 4 epochs gained 0.20 against a gap of 1.0 to the peer",
    ),
]
