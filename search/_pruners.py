"""Pruners: stop trials whose validation loss climbs, composed with Optuna's comparative pruners.

Like Optuna's ``PatientPruner(wrapped, ...)``, :class:`ClimbingPruner` wraps another pruner: it
prunes on its own evidence first (a non-finite value, a climb), then asks the wrapped pruner
whether the trial is below its peers. Whichever decides records why on the trial
(``prune_reason``, ``prune_epoch``, ``prune_detail`` user attrs).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import optuna
from optuna.pruners import BasePruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

_logger = logging.getLogger(__name__)

CLIMBING = "climbing"
BELOW_PEERS = "below_peers"
DIVERGED = "diverged"
PRUNE_REASONS: tuple[str, ...] = (CLIMBING, BELOW_PEERS, DIVERGED)


@dataclass(frozen=True)
class PruneDecision:
    reason: str
    epoch: int
    detail: str


def climbing_decision(
    values: list[tuple[int, float]], patience: int, min_delta: float, maximize: bool = False
) -> PruneDecision | None:
    """Decide from ``(step, value)`` pairs, oldest first, whether the curve climbs or diverged.

    Climbing: the best value lies at least ``patience`` steps back, and each of the last
    ``patience`` values is worse than it by more than ``min_delta``. A new best resets the count,
    so a noisy but improving curve is never climbing.
    """
    if not values:
        return None
    step, last = values[-1]
    if not math.isfinite(last):
        return PruneDecision(DIVERGED, step, f"the value became {last} at epoch {step}")
    sign = -1.0 if maximize else 1.0
    best_i = min(range(len(values)), key=lambda i: (sign * values[i][1], i))
    best_step, best = values[best_i]
    since = values[best_i + 1 :]
    if len(since) < patience:
        return None
    if all(sign * (v - best) > min_delta for _, v in since[-patience:]):
        return PruneDecision(
            CLIMBING,
            step,
            f"worse than its best {best:.4g} (epoch {best_step}) for {len(since)} epochs, "
            f"now {last:.4g}",
        )
    return None


class ClimbingPruner(BasePruner):
    """Prune a trial whose value has been worse than its own best for ``patience`` epochs.

    Args:
        wrapped: a comparative pruner (e.g. ``MedianPruner``) consulted when the trial does not
            climb; ``None`` for no comparison.
        patience: epochs the value must stay worse than the best before pruning.
        min_delta: how much worse than the best counts as worse.
        n_warmup_steps: no climbing decision before this epoch (divergence prunes at any epoch).
    """

    def __init__(
        self,
        wrapped: BasePruner | None = None,
        patience: int = 2,
        min_delta: float = 0.0,
        n_warmup_steps: int = 0,
    ) -> None:
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta}")
        if n_warmup_steps < 0:
            raise ValueError(f"n_warmup_steps must be >= 0, got {n_warmup_steps}")
        self._wrapped = wrapped
        self._patience = patience
        self._min_delta = min_delta
        self._n_warmup_steps = n_warmup_steps

    def decide(self, study: optuna.Study, trial: FrozenTrial) -> PruneDecision | None:
        values = sorted(trial.intermediate_values.items())
        if not values:
            return None
        maximize = study.direction == StudyDirection.MAXIMIZE
        decision = climbing_decision(values, self._patience, self._min_delta, maximize)
        if decision is not None and (
            decision.reason == DIVERGED or decision.epoch > self._n_warmup_steps
        ):
            return decision
        if self._wrapped is not None and self._wrapped.prune(study, trial):
            step, value = values[-1]
            return PruneDecision(
                BELOW_PEERS,
                step,
                f"{value:.4g} at epoch {step} is worse than its peers at that epoch "
                f"({type(self._wrapped).__name__})",
            )
        return None

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        decision = self.decide(study, trial)
        if decision is None:
            return False
        storage = study._storage
        storage.set_trial_user_attr(trial._trial_id, "prune_reason", decision.reason)
        storage.set_trial_user_attr(trial._trial_id, "prune_epoch", decision.epoch)
        storage.set_trial_user_attr(trial._trial_id, "prune_detail", decision.detail)
        _logger.info("Pruning trial %d: %s", trial.number, decision.detail)
        return True
