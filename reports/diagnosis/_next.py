"""The next move of a study: what the closed loop queues, and what the Answer names when
nothing learnt much. One function for both, so they cannot disagree."""

from __future__ import annotations

import math
from collections.abc import Sequence

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from thaw._keys import SCREEN
from thaw.reports.diagnosis._inputs import read_study_inputs, study_num_classes, trial_verdicts
from thaw.reports.diagnosis._moves import (
    Move,
    cause_of,
    first_untried_move,
    near_chance,
    params_key,
)
from thaw.reports.diagnosis._verdicts import diagnose_trial

__all__ = ["TOP_K", "next_move", "trial_cause", "trial_score"]

#: How many of the best finished trials the loop expands.
TOP_K = 3


def trial_score(trial: FrozenTrial, maximize: bool) -> float | None:
    """A trial's best value: its value when complete; its best epoch's value when pruned."""
    if trial.state == TrialState.COMPLETE and trial.value is not None:
        return float(trial.value)
    if trial.state != TrialState.PRUNED:
        return None
    stored = trial.user_attrs.get("best_value")
    if isinstance(stored, (int, float)) and math.isfinite(stored):
        return float(stored)
    finite = [v for v in trial.intermediate_values.values() if math.isfinite(v)]
    if not finite:
        return None
    return max(finite) if maximize else min(finite)


def trial_cause(
    study: optuna.Study,
    trial: FrozenTrial,
    trials: Sequence[FrozenTrial] | None = None,
    num_classes: int | None = None,
    verdicts: Sequence[str] | None = None,
) -> str | None:
    """What the closed loop acts on for ``trial``: its verdicts (the one verdict function, or
    the names a view already shows), how it was pruned, and whether its best validation loss
    stayed near chance."""
    if verdicts is None:
        verdicts = [v.verdict for v in trial_verdicts(study, trial, trials=trials)]
    classes = num_classes if num_classes is not None else study_num_classes(study.user_attrs)
    reason = trial.user_attrs.get("prune_reason") if trial.state == TrialState.PRUNED else None
    return cause_of(
        verdicts,
        prune_reason=reason if isinstance(reason, str) else None,
        near_chance=near_chance(trial.user_attrs.get("best_val_loss"), classes),
    )


def next_move(
    study: optuna.Study, trials: Sequence[FrozenTrial] | None = None, top_k: int = TOP_K
) -> tuple[FrozenTrial, Move] | None:
    """The first move not tried yet, from the best finished trial that has one (of the
    ``top_k`` best; screen trials, cut short by design, are not expanded), with that trial."""
    trials = list(trials if trials is not None else study.get_trials(deepcopy=False))
    maximize = study.direction == StudyDirection.MAXIMIZE
    scored = [
        (v, t)
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        and SCREEN not in t.user_attrs
        and (v := trial_score(t, maximize)) is not None
    ]
    scored.sort(key=lambda pair: (-pair[0] if maximize else pair[0], pair[1].number))
    tried = {params_key(t.params) for t in trials if t.params}
    tried |= {params_key(t.system_attrs.get("fixed_params", {})) for t in trials}
    # One read of the study's curves for every candidate (what ``trial_verdicts`` reads each).
    inputs = read_study_inputs(study, trials)
    curves = {c.number: c for c in inputs.curves}
    candidates = []
    for _, t in scored[:top_k]:
        verdicts = diagnose_trial(
            curves[t.number], inputs.peers_of(t.number), inputs.thresholds, inputs.num_layers
        )
        cause = trial_cause(
            study, t, num_classes=inputs.num_classes, verdicts=[v.verdict for v in verdicts]
        )
        candidates.append((t.number, t.params, cause, t.distributions))
    found = first_untried_move(candidates, tried)
    if found is None:
        return None
    number, move = found
    return next(t for t in trials if t.number == number), move
