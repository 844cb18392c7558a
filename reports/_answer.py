"""The Answer's story as data: nothing learnt much (and the next move), what the recommended
trial's own verdict calls for (and whether a trial tried it), and the path of trials that led to
the recommended one. Rendered by ``reports._render``; ``thaw run``'s end summary
and the dashboard notes say the same."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from thaw._keys import GRADUAL_UNFREEZING, PROPOSED_BY, SCREEN, SCREEN_WINNER
from thaw.reports.diagnosis import (
    CAUSE_WORDS,
    next_move,
    propose_moves,
    study_chance,
    study_chance_loss,
    study_multilabel,
    study_num_classes,
    study_profile,
    study_verdicts,
    trial_cause,
    trial_key,
    trial_length,
    trial_own_epochs,
    trial_score,
    trial_verdicts,
)

__all__ = [
    "AnswerStory",
    "NextMove",
    "PathStep",
    "VerdictAdvice",
    "get_answer_story",
    "trial_origin",
]

#: Causes that, on every trial of a study, mean nothing learnt much.
NOTHING_LEARNT_CAUSES = ("near_chance", "underfitting", "climbing")


@dataclass(frozen=True)
class PathStep:
    """One trial on the way to the recommended one, and how it came to be run."""

    number: int
    how: str


@dataclass(frozen=True)
class NextMove:
    """The move the closed loop would take next, and the trial whose curve calls for it."""

    number: int
    cause: str
    words: str

    @property
    def sentence(self) -> str:
        return f"{self.words} (trial {self.number}: {CAUSE_WORDS.get(self.cause, self.cause)})"


@dataclass(frozen=True)
class VerdictAdvice:
    """What the recommended trial's own verdict calls for, and whether a trial tried it.

    Attributes:
        number: The recommended trial.
        verdict: Its first verdict (as every view shows it), e.g. ``lr_too_high``.
        cause: What the verdict (and how the trial ended) says went wrong, or ``None`` when
            nothing calls for a change.
        move: The first move for that cause, in words, or ``None`` when the search space
            allows none.
        tried_by: The trial that ran that move's configuration, if any.
        tried_score: That trial's best value.
    """

    number: int
    verdict: str | None
    cause: str | None
    move: str | None = None
    tried_by: int | None = None
    tried_score: float | None = None

    @property
    def sentence(self) -> str:
        """``Its own verdict is lr_too_high (its rate was too high): lower ...; not tried yet.``"""
        if self.verdict is None:
            return "Its curves were not judged (no learning curve stored)."
        if self.cause is None:
            return f"Its own verdict is {self.verdict}."
        text = f"Its own verdict is {self.verdict} ({CAUSE_WORDS.get(self.cause, self.cause)})"
        if self.move is None:
            return text + ", and the search space allows no move for it."
        text += f": {self.move}"
        if self.tried_by is None:
            return text + "; not tried yet."
        score = "" if self.tried_score is None else f", best {self.tried_score:.3g}"
        return text + f"; trial {self.tried_by} tried that{score}."


@dataclass(frozen=True)
class AnswerStory:
    """Attributes:
    nothing_learnt: Why nothing learnt much, or None when something did.
    next_move: The next move (None when every move was tried, or nothing calls for one).
    path: Trials from the first one to the recommended one (empty without a recommendation;
        one step for a trial with no predecessor).
    """

    nothing_learnt: str | None
    next_move: NextMove | None
    path: tuple[PathStep, ...]
    advice: VerdictAdvice | None = None
    """What the recommended trial's own verdict calls for (``None`` without a recommendation)."""

    @property
    def headline(self) -> str | None:
        """The first line when nothing learnt much: what happened, then what to do."""
        if self.nothing_learnt is None:
            return None
        if self.next_move is None:
            return f"Nothing learnt much: {self.nothing_learnt}."
        return f"Nothing learnt much: {self.nothing_learnt}. Next: {self.next_move.sentence}."


def trial_origin(attrs: Mapping[str, Any]) -> tuple[int | None, str]:
    """(the trial this one continues or came from, how) from a trial's user attrs."""
    origin = attrs.get(PROPOSED_BY)
    if isinstance(origin, Mapping):
        cause = str(origin.get("cause", ""))
        words = str(origin.get("words") or origin.get("move") or "")
        return _int(origin.get("trial")), f"{CAUSE_WORDS.get(cause, cause)}: {words}"
    winner = attrs.get(SCREEN_WINNER)
    if isinstance(winner, Mapping):
        label = attrs.get("strategy")
        if winner.get("guard") == "rate":
            return _int(winner.get("of")), f"{label}, the screen's faster rate, at full length"
        return _int(winner.get("of")), f"{label}, the screen's survivor, at full length"
    screen = attrs.get(SCREEN)
    if isinstance(screen, Mapping):
        what = f"screen round {screen.get('round', 0)}: {screen.get('strategy')}"
        faster = " (kept for its faster rate)" if screen.get("guard") == "rate" else ""
        return _int(screen.get("of")), f"{what}, {screen.get('rung')} epochs{faster}"
    gradual = attrs.get(GRADUAL_UNFREEZING)
    if isinstance(gradual, Mapping):
        return _int(gradual.get("of")), "gradual unfreezing: one more layer"
    label = attrs.get("strategy")
    if isinstance(label, str):
        return None, label
    return None, "sampled (TPE)"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _path(trials: Mapping[int, FrozenTrial], number: int) -> tuple[PathStep, ...]:
    steps: list[PathStep] = []
    seen: set[int] = set()
    current: int | None = number
    while current is not None and current in trials and current not in seen:
        seen.add(current)
        before, how = trial_origin(trials[current].user_attrs)
        steps.append(PathStep(current, how))
        current = before
    return tuple(reversed(steps))


def _nothing_learnt(study: optuna.Study, trials: Sequence[FrozenTrial]) -> str | None:
    judged = [
        t
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and SCREEN not in t.user_attrs
    ]
    if not judged:
        return None
    classes = study_num_classes(study.user_attrs)
    losses = [
        float(v)
        for t in judged
        if isinstance(v := t.user_attrs.get("best_val_loss"), (int, float)) and math.isfinite(v)
    ]
    chance = study_chance_loss(study.user_attrs)
    if chance is not None and losses:
        best = min(losses)
        if best >= 0.9 * chance:
            named = f"ln {classes}"
            if study_multilabel(study.user_attrs):
                stored = study_chance(study.user_attrs) is not None
                named = "the labels' entropy" if stored else "ln 2"
            return (
                f"the best validation loss, {best:.3g}, is near the chance level "
                f"({named} = {chance:.3g})"
            )
    verdicts = study_verdicts(study)  # every trial's verdicts in one pass
    causes = [
        trial_cause(
            study, t, num_classes=classes, verdicts=[v.verdict for v in verdicts.get(t.number, [])]
        )
        for t in judged
    ]
    if all(c in NOTHING_LEARNT_CAUSES for c in causes):
        return f"every one of the {len(judged)} trials underfit, climbed or stayed near chance"
    return None


def verdict_advice(
    study: optuna.Study,
    trial: FrozenTrial,
    trials: Sequence[FrozenTrial],
    verdicts: Sequence[str] | None = None,
) -> VerdictAdvice:
    """What ``trial``'s own verdicts call for: the cause the closed loop reads from them, its
    first move inside the trial's space, and the trial (if any) that ran that configuration.
    ``verdicts`` are the names every view shows for the trial (computed when not given)."""
    if verdicts is None:
        verdicts = [v.verdict for v in trial_verdicts(study, trial, trials=trials)]
    cause = trial_cause(study, trial, trials, verdicts=verdicts)
    first = verdicts[0] if verdicts else None
    moves = propose_moves(
        trial.params,
        cause,
        trial.distributions,
        epochs=trial_own_epochs(trial),
        length=trial_own_epochs(trial) or trial_length(trial),
        profile=study_profile(study),
    )
    if not moves:
        return VerdictAdvice(trial.number, first, cause)
    move = moves[0]
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    tried = next(
        (
            t
            for t in sorted(trials, key=lambda t: t.number)
            if t.number != trial.number and t.params and trial_key(t) == move.key
        ),
        None,
    )
    if tried is None:
        return VerdictAdvice(trial.number, first, cause, move.words)
    return VerdictAdvice(
        trial.number, first, cause, move.words, tried.number, trial_score(tried, maximize)
    )


def get_answer_story(
    study: optuna.Study,
    recommended: int | None,
    trials: Sequence[FrozenTrial] | None = None,
    verdicts: Sequence[str] | None = None,
) -> AnswerStory:
    """The story of ``study``'s Answer, for the ``recommended`` trial (its number), whose
    verdicts (as the report shows them) are ``verdicts`` (computed when not given)."""
    trials = list(trials if trials is not None else study.get_trials(deepcopy=False))
    by_number = {t.number: t for t in trials}
    nothing = _nothing_learnt(study, trials)
    found = next_move(study, trials)
    move = None if found is None else NextMove(found[0].number, found[1].cause, found[1].words)
    path = _path(by_number, recommended) if recommended is not None else ()
    advice = None
    if recommended is not None and recommended in by_number:
        advice = verdict_advice(study, by_number[recommended], trials, verdicts)
    return AnswerStory(nothing, move, path, advice)
