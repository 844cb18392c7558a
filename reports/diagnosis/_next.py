"""The next move of a study: what the closed loop queues, and what the Answer names when
nothing learnt much. One function for both, so they cannot disagree."""

from __future__ import annotations

import math
from collections.abc import Sequence

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from thaw._keys import SCREEN, SHIFT_PROFILE, TRIAL_EPOCHS
from thaw.reports.diagnosis._inputs import (
    read_study_inputs,
    study_chance_loss,
    study_num_classes,
    trial_verdicts,
)
from thaw.reports.diagnosis._moves import (
    Candidate,
    Move,
    TriedKey,
    cause_of,
    first_untried_move,
    near_chance,
    params_key,
)
from thaw.reports.diagnosis._profile import ShiftProfile
from thaw.reports.diagnosis._verdicts import diagnose_trial

__all__ = [
    "TOP_K",
    "next_move",
    "still_falling",
    "study_profile",
    "trial_cause",
    "trial_key",
    "trial_length",
    "trial_own_epochs",
    "trial_score",
]

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


def trial_own_epochs(trial: FrozenTrial) -> int | None:
    """The trial's own length (``thaw:epochs``, a "train longer" trial); None: the study's."""
    value = trial.user_attrs.get(TRIAL_EPOCHS)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return None


def trial_length(trial: FrozenTrial) -> int:
    """The epochs a trial trained (its ``epochs_run``; else its reported steps)."""
    value = trial.user_attrs.get("epochs_run")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return len(trial.intermediate_values)


def trial_key(trial: FrozenTrial) -> TriedKey:
    """The configuration and length a trial tried (its params, else the params it was queued
    with; its own epochs), as :attr:`Move.key` names a move's."""
    params = trial.params or trial.system_attrs.get("fixed_params") or {}
    return params_key(params), trial_own_epochs(trial)


#: A trial shorter than this does not call for "train longer": too few epochs to tell a
#: falling curve from noise.
MIN_LONGER_EPOCHS = 4


def still_falling(trial: FrozenTrial, maximize: bool) -> bool:
    """Whether a completed trial ran its whole length (not cut by the budget) and reached its
    best value at its last epoch: the curve had not turned when training stopped."""
    if trial.state != TrialState.COMPLETE or "epoch_cap" in trial.user_attrs:
        return False
    values = {s: v for s, v in trial.intermediate_values.items() if math.isfinite(v)}
    if len(values) < MIN_LONGER_EPOCHS:
        return False
    best = max(values.values()) if maximize else min(values.values())
    return values[max(values)] == best


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
        near_chance=near_chance(
            trial.user_attrs.get("best_val_loss"), classes, study_chance_loss(study.user_attrs)
        ),
        still_falling=still_falling(trial, study.direction == StudyDirection.MAXIMIZE),
    )


def study_profile(study: optuna.Study) -> ShiftProfile | None:
    """The study's BatchNorm shift profile (``thaw:shift_profile``, stored at creation; None
    when it was not measured)."""
    return ShiftProfile.from_attr(study.user_attrs.get(SHIFT_PROFILE))


def next_move(
    study: optuna.Study,
    trials: Sequence[FrozenTrial] | None = None,
    top_k: int = TOP_K,
    max_epochs: int | None = None,
) -> tuple[FrozenTrial, Move] | None:
    """The first move not tried yet, from the best finished trial that has one (of the
    ``top_k`` best; screen trials, cut short by design, are not expanded), with that trial.
    ``max_epochs``: the epochs left, which a "train longer" move must fit (None: no limit).
    The block move reads the study's BatchNorm shift profile (:func:`study_profile`)."""
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
    tried = {trial_key(t) for t in trials}
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
        candidates.append(
            Candidate(
                t.number,
                t.params,
                cause,
                t.distributions,
                epochs=trial_own_epochs(t),
                length=trial_own_epochs(t) or trial_length(t),
            )
        )
    found = first_untried_move(candidates, tried, max_epochs, profile=study_profile(study))
    if found is None:
        return None
    number, move = found
    return next(t for t in trials if t.number == number), move
