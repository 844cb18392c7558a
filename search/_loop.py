"""The closed loop: each finished trial's diagnosis proposes the next trials.

Right before a trial starts (under the study's slot lock, like the gradual-unfreezing step),
:class:`ClosedLoop` decides whether that trial is a *move* or is left to the sampler:

1. The best finished trials (complete or pruned, at most ``top_k``) are diagnosed with the one
   verdict function every view uses (``thaw.reports.trial_verdicts``); each verdict becomes a
   cause and the cause becomes moves on the trial's configuration
   (``thaw.reports.diagnosis.propose_moves``: underfitting raises the rate, climbing lowers it
   and regularises, ...).
2. The first move not tried yet, from the best trial that has one, is queued, recording who
   proposed it (``thaw:proposed_by``). The sampler (multivariate TPE) sees every trial, moves
   included, so it models them like its own.
   Without an epoch budget, a completed trial whose validation loss was still falling at its
   last epoch, with nothing else wrong, is trained as long again (``thaw:epochs`` on the queued
   trial, its whole length), continuing from the weights it ended with (``thaw:continues``)
   when the worker that runs it still holds them.
3. Moves take a share of the trials that adapts to how often they beat the study's best:
   ``(successes + 1) / (moves + 2)``, kept between ``min_share`` and ``max_share``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from thaw._keys import BUDGET_EPOCHS, CONTINUES, PROPOSED_BY, TRIAL_EPOCHS
from thaw.reports.diagnosis import TOP_K, Move, next_move
from thaw.search._budget import best_trial, epochs_spent, trial_best_value
from thaw.search._pruners import is_informed

_logger = logging.getLogger(__name__)

__all__ = ["ClosedLoop", "LoopState", "epochs_left", "loop_state"]


@dataclass(frozen=True)
class LoopState:
    """How the loop has done so far: moves finished, moves that beat the best, and the share of
    the next trials it takes."""

    moves: int
    successes: int
    share: float


def _finished(trial: FrozenTrial) -> bool:
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED)


def move_succeeded(trial: FrozenTrial, maximize: bool) -> bool | None:
    """Whether a finished move beat the study's best at the time it was queued (None: not a
    finished move)."""
    origin = trial.user_attrs.get(PROPOSED_BY)
    if not isinstance(origin, dict) or not _finished(trial):
        return None
    value = trial_best_value(trial, maximize)
    before = origin.get("best_before")
    if value is None:
        return False
    if not isinstance(before, (int, float)) or not math.isfinite(before):
        return True
    return value > before if maximize else value < before


def loop_state(
    trials: Sequence[FrozenTrial], maximize: bool, min_share: float = 0.25, max_share: float = 0.75
) -> LoopState:
    """The loop's record over ``trials`` and the share of new trials it takes."""
    results = [r for t in trials if (r := move_succeeded(t, maximize)) is not None]
    successes = sum(results)
    share = (successes + 1) / (len(results) + 2)
    return LoopState(len(results), successes, min(max(share, min_share), max_share))


class ClosedLoop:
    """Queues the next move (see the module docstring) when it is the loop's turn.

    Args:
        top_k: How many of the best finished trials are expanded.
        min_share: The smallest share of post-start trials the moves take.
        max_share: The largest share.
    """

    def __init__(
        self, top_k: int = TOP_K, min_share: float = 0.25, max_share: float = 0.75
    ) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if not 0.0 <= min_share <= max_share <= 1.0:
            raise ValueError(
                f"shares must satisfy 0 <= min_share <= max_share <= 1, got {min_share}, "
                f"{max_share}"
            )
        self.top_k = top_k
        self.min_share = min_share
        self.max_share = max_share

    def __call__(self, study: optuna.Study) -> Move | None:
        trials = study.get_trials(deepcopy=False)
        if any(t.state == TrialState.WAITING for t in trials):
            return None  # the informed start (or an earlier move) goes first
        maximize = study.direction == StudyDirection.MAXIMIZE
        searched = [t for t in trials if not is_informed(t) and t.state != TrialState.FAIL]
        moves = sum(PROPOSED_BY in t.user_attrs for t in searched)
        state = loop_state(trials, maximize, self.min_share, self.max_share)
        if searched and moves / len(searched) >= state.share:
            return None  # the sampler's turn
        # Under an epoch budget the loop does not train a trial longer: on the bench's cases
        # (BENCHMARKS.md, "Train longer") the epochs it took from new configurations cost more
        # than continuing gained. Without one, a continued trial costs a trial's epochs, like any
        # other, and starts where a good one ended. The Answer still names the move.
        found = self.next_move(study, trials, 0 if epochs_left(study) is not None else None)
        if found is None:
            return None
        source, move = found
        found_best = best_trial(study)
        best = found_best.value if found_best is not None else None
        attrs: dict[str, object] = {
            PROPOSED_BY: {
                "trial": source.number,
                "cause": move.cause,
                "move": move.name,
                "words": move.words,
                "best_before": best,
            }
        }
        if move.epochs is not None:
            attrs[TRIAL_EPOCHS] = move.epochs
        if move.extends is not None:
            attrs[CONTINUES] = {"trial": source.number, "epochs": move.extends}
        study.enqueue_trial(move.params, user_attrs=attrs)
        _logger.info("Trial %d: %s, so the loop queues: %s", source.number, move.cause, move.words)
        return move

    def next_move(
        self, study: optuna.Study, trials: Sequence[FrozenTrial], max_epochs: int | None = None
    ) -> tuple[FrozenTrial, Move] | None:
        """The first untried move of the best finished trials, with the trial it comes from
        (``thaw.reports.diagnosis.next_move``: the Answer names the same one). ``max_epochs``:
        the epochs left, which a longer trial must fit."""
        return next_move(study, trials, self.top_k, max_epochs)


def epochs_left(study: optuna.Study) -> int | None:
    """The epochs the study's budget has left (None: no epoch budget)."""
    budget = study.user_attrs.get(BUDGET_EPOCHS)
    if isinstance(budget, bool) or not isinstance(budget, int):
        return None
    return max(0, budget - epochs_spent(study))
