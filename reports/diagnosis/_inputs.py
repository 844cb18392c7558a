"""What the diagnosis reads from a study, and the one verdict function every view calls.

The report, the trial and study notes, ``summary.json``, ``thaw diagnose`` and the publisher
all get a trial's verdicts from :func:`trial_verdicts` (or :func:`study_verdicts` for all
trials at once, which gives the same result per trial), from the same stored inputs: the
trial's curves, params and probes; its finished peers (COMPLETE, PRUNED, FAIL); the study's
number of classes and base layers; and the thresholds stored with the study file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from thaw._keys import CHANCE, CONFIG, DATA, NUM_CLASSES, NUM_LAYERS, OBJECTIVE_METRIC, TASK
from thaw.reports.diagnosis._features import TrialCurves, _opt_int, _profile, _with_explosions
from thaw.reports.diagnosis._thresholds import Thresholds
from thaw.reports.diagnosis._verdicts import Verdict, _diagnose, diagnose_trial

__all__ = [
    "FINISHED_STATES",
    "StudyInputs",
    "read_study_inputs",
    "study_chance",
    "study_chance_loss",
    "study_multilabel",
    "study_num_classes",
    "study_thresholds",
    "study_verdicts",
    "trial_verdicts",
]

FINISHED_STATES = ("COMPLETE", "PRUNED", "FAIL")
"""States of the trials that serve as peers."""


def study_num_classes(attrs: Mapping[str, Any]) -> int | None:
    """K from study attr ``thaw:num_classes``, else the length of ``thaw:data.class_names``."""
    k = _opt_int(attrs.get(NUM_CLASSES))
    if k is None:
        data = attrs.get(DATA)
        names = data.get("class_names") if isinstance(data, Mapping) else None
        if isinstance(names, Sequence) and not isinstance(names, (str, bytes)):
            k = len(names)
    return k if k is not None and k >= 2 else None


def study_multilabel(attrs: Mapping[str, Any]) -> bool:
    """Whether the study's target is multi-label (``thaw:task``, else ``thaw:data.task``)."""
    task = attrs.get(TASK)
    if task is None:
        data = attrs.get(DATA)
        task = data.get("task") if isinstance(data, Mapping) else None
    return task == "multilabel"


def study_chance(attrs: Mapping[str, Any]) -> tuple[float, float] | None:
    """(loss, accuracy) chance levels stored with the study (``thaw:chance``); ``None`` when
    none valid are stored (then ln K and 1/K, see :class:`TrialCurves`)."""
    chance = attrs.get(CHANCE)
    if not isinstance(chance, Mapping):
        return None
    values = [chance.get("loss"), chance.get("accuracy")]
    numbers = [
        float(v)
        for v in values
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ]
    if len(numbers) != 2 or not (numbers[0] > 0 and 0 <= numbers[1] < 1):
        return None
    return numbers[0], numbers[1]


def study_chance_loss(attrs: Mapping[str, Any]) -> float | None:
    """The loss of a guess that has learnt nothing: the stored level, else ln K (of a
    multi-label target, ln 2); ``None`` when K is unknown."""
    chance = study_chance(attrs)
    if chance is not None:
        return chance[0]
    if study_multilabel(attrs):
        return math.log(2.0)
    k = study_num_classes(attrs)
    return math.log(k) if k is not None else None


def study_thresholds(study: optuna.Study) -> Thresholds:
    """The thresholds of the study file the study was created with (``thaw:config``'s
    ``diagnosis`` section); the defaults when none or invalid ones are stored."""
    config = study.user_attrs.get(CONFIG)
    section = config.get("diagnosis") if isinstance(config, Mapping) else None
    if isinstance(section, Mapping) and section:
        try:
            return Thresholds.from_dict(section)
        except ValueError:
            pass
    return Thresholds()


def _val_loss_objective(study: optuna.Study, metric: str | None) -> bool:
    if metric is not None:
        return metric == "val_loss"
    return study.directions == [StudyDirection.MINIMIZE]


@dataclass(frozen=True)
class StudyInputs:
    """Everything the per-trial rules read from one study.

    Attributes:
        curves: Every trial's curves, in number order.
        num_layers: Layers with weights in the base (``thaw:num_layers``).
        num_classes: K (``thaw:num_classes`` or the stored class names).
        metric: The objective metric (``thaw:objective_metric``).
        thresholds: The thresholds in effect.
        multilabel: The target is multi-label (``thaw:task``).
        chance: The stored (loss, accuracy) chance levels (``thaw:chance``), or ``None``.
    """

    curves: tuple[TrialCurves, ...]
    num_layers: int | None
    num_classes: int | None
    metric: str | None
    thresholds: Thresholds
    multilabel: bool = False
    chance: tuple[float, float] | None = None

    def peers_of(self, number: int) -> list[TrialCurves]:
        return [c for c in self.curves if c.state in FINISHED_STATES and c.number != number]


def read_study_inputs(
    study: optuna.Study,
    trials: Sequence[FrozenTrial] | None = None,
    thresholds: Thresholds | None = None,
) -> StudyInputs:
    """Read the diagnosis inputs of ``study`` (``trials`` saves a storage read)."""
    frozen = sorted(
        trials if trials is not None else study.get_trials(deepcopy=False), key=lambda t: t.number
    )
    attrs = study.user_attrs
    metric = attrs.get(OBJECTIVE_METRIC)
    metric = metric if isinstance(metric, str) else None
    k = study_num_classes(attrs)
    multilabel = study_multilabel(attrs)
    chance = study_chance(attrs)
    val_loss = _val_loss_objective(study, metric)
    curves = tuple(
        TrialCurves.from_frozen_trial(
            ft,
            intermediate_is_val_loss=val_loss,
            num_classes=k,
            multilabel=multilabel,
            chance_levels=chance,
        )
        for ft in frozen
    )
    return StudyInputs(
        curves=curves,
        num_layers=_opt_int(attrs.get(NUM_LAYERS)),
        num_classes=k,
        metric=metric,
        thresholds=thresholds if thresholds is not None else study_thresholds(study),
        multilabel=multilabel,
        chance=chance,
    )


def trial_verdicts(
    study: optuna.Study,
    trial: FrozenTrial,
    *,
    state: str | None = None,
    trials: Sequence[FrozenTrial] | None = None,
    thresholds: Thresholds | None = None,
) -> list[Verdict]:
    """The verdicts of one trial: the one function behind every view.

    The trial is judged on its own curves, params and probes and the chance level, refined by
    the study's finished trials other than itself. ``state`` overrides the trial's state name
    (for a trial that is still RUNNING but about to finish); ``trials`` (all trials of the
    study) saves a storage read.
    """
    inputs = read_study_inputs(study, trials, thresholds)
    own = next((c for c in inputs.curves if c.number == trial.number), None)
    if own is None:  # a trial passed in that ``trials`` does not hold
        k = inputs.num_classes
        own = TrialCurves.from_frozen_trial(
            trial,
            intermediate_is_val_loss=_val_loss_objective(study, inputs.metric),
            num_classes=k,
            multilabel=inputs.multilabel,
            chance_levels=inputs.chance,
        )
    if state is not None:
        own = replace(own, state=state)
    return diagnose_trial(own, inputs.peers_of(trial.number), inputs.thresholds, inputs.num_layers)


def _all_verdicts(inputs: StudyInputs) -> dict[int, list[Verdict]]:
    """Per trial number, exactly what :func:`trial_verdicts` gives, computed in one pass.

    A finished trial's peers are the other finished trials, so all finished trials share one
    judged set; an unfinished trial is judged against the finished ones on its own.
    """
    t = inputs.thresholds
    finished = [c for c in inputs.curves if c.state in FINISHED_STATES]
    judged = _with_explosions([_profile(c, t) for c in finished], t)
    by_number = {p.curves.number: p for p in judged}
    out: dict[int, list[Verdict]] = {}
    for c in inputs.curves:
        p = by_number.get(c.number)
        if p is None:
            out[c.number] = diagnose_trial(c, finished, t, inputs.num_layers)
        else:
            peers = [q for q in judged if q.curves.number != c.number]
            out[c.number] = _diagnose(p, peers, t, inputs.num_layers)
    return out


def study_verdicts(
    study: optuna.Study, thresholds: Thresholds | None = None
) -> dict[int, list[Verdict]]:
    """:func:`trial_verdicts` of every trial of ``study``, by trial number."""
    return _all_verdicts(read_study_inputs(study, thresholds=thresholds))
