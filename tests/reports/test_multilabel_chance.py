"""The chance level of a multi-label target: the stored ``thaw:chance`` (binary entropy of the
label frequencies), not ln K, grounds the verdicts, the "near chance" cause and the Answer."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from thaw._keys import CHANCE, TASK
from thaw.reports._answer import get_answer_story
from thaw.reports.diagnosis import (
    UNDERFITTING,
    TrialCurves,
    diagnose_trial,
    near_chance,
    study_chance,
    study_chance_loss,
    trial_verdicts,
)

LABELS = 5
#: Five rare labels (frequencies 0.1): guessing them scores H(0.1) = 0.325, accuracy 0.9.
RARE = (-(0.1 * math.log(0.1) + 0.9 * math.log(0.9)), 0.9)
#: A run that learnt only the label frequencies: flat at the rare labels' chance level.
AT_FREQUENCIES = dict(
    loss=[0.34, 0.335, 0.33, 0.33, 0.328, 0.327, 0.327, 0.326],
    val_loss=[0.335, 0.33, 0.329, 0.328, 0.327, 0.327, 0.326, 0.326],
    accuracy=[0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9],
    val_accuracy=[0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9],
)


def _curves(multilabel: bool, chance: tuple[float, float] | None) -> TrialCurves:
    return TrialCurves(
        number=0,
        params={"unfrozen_layers": 3, "learning_rate": 1e-3, "dropout": 0.2, "weight_decay": 1e-4},
        num_classes=LABELS,
        multilabel=multilabel,
        chance_levels=chance,
        **AT_FREQUENCIES,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("multilabel", "chance", "at_chance", "named"),
    [
        # the labels' own chance level: the run learnt nothing
        (True, RARE, True, "the labels' entropy = 0.325"),
        # read as K classes (ln 5 = 1.61) the same curves look far below chance
        (False, None, False, None),
        # a coin flip per label (ln 2 = 0.69): far below it too; why the frequencies are stored
        (True, None, False, None),
    ],
)
def test_the_chance_level_decides_whether_a_run_learnt_nothing(
    multilabel: bool, chance: tuple[float, float] | None, at_chance: bool, named: str | None
) -> None:
    verdicts = diagnose_trial(_curves(multilabel, chance), (), num_layers=5)
    stuck = [v for v in verdicts if "never got clearly below the chance level" in v.evidence]
    assert bool(stuck) is at_chance, verdicts
    if named is not None:
        assert stuck[0].verdict == UNDERFITTING
        assert named in stuck[0].evidence
        assert f"ln {LABELS}" not in stuck[0].evidence


@pytest.mark.parametrize(
    ("attrs", "expected", "loss"),
    [
        ({TASK: "multilabel", CHANCE: {"loss": 0.3, "accuracy": 0.8}}, (0.3, 0.8), 0.3),
        ({TASK: "multilabel"}, None, math.log(2)),
        ({"thaw:data": {"task": "multilabel", "class_names": ["a", "b"]}}, None, math.log(2)),
        ({CHANCE: {"loss": math.log(3), "accuracy": 1 / 3}}, (math.log(3), 1 / 3), math.log(3)),
        ({"thaw:data": {"class_names": ["a", "b", "c"]}}, None, math.log(3)),
        ({CHANCE: {"loss": True, "accuracy": 0.5}}, None, None),
        ({CHANCE: {"loss": float("nan"), "accuracy": 0.5}}, None, None),
        ({CHANCE: {"loss": 0.5, "accuracy": 1.0}}, None, None),
        ({CHANCE: {"loss": 0.0, "accuracy": 0.5}}, None, None),
        ({CHANCE: [0.5, 0.5]}, None, None),
    ],
)
def test_the_stored_chance_level_is_read_or_ignored(
    attrs: dict[str, Any], expected: tuple[float, float] | None, loss: float | None
) -> None:
    assert study_chance(attrs) == expected
    assert study_chance_loss(attrs) == (pytest.approx(loss) if loss is not None else None)


@pytest.mark.parametrize(
    ("best", "k", "chance_loss", "near"),
    [
        (0.32, LABELS, RARE[0], True),
        (0.32, LABELS, None, False),  # ln 5
        (0.2, LABELS, RARE[0], False),
        (1.5, LABELS, None, True),
        (float("nan"), LABELS, RARE[0], False),
        (0.32, None, None, False),
    ],
)
def test_near_chance_reads_the_chance_loss_it_is_given(
    best: float, k: int | None, chance_loss: float | None, near: bool
) -> None:
    assert near_chance(best, k, chance_loss) is near


def test_a_stored_multilabel_study_is_judged_against_its_label_frequencies(
    make_study: Callable[..., optuna.Study], add_trial: Callable[..., Any]
) -> None:
    study = make_study("ml")
    study.set_user_attr(TASK, "multilabel")
    study.set_user_attr(CHANCE, {"loss": RARE[0], "accuracy": RARE[1]})
    study.set_user_attr(
        "thaw:data", {"task": "multilabel", "class_names": [f"l{i}" for i in range(LABELS)]}
    )
    params = {"unfrozen_layers": 3, "learning_rate": 1e-3, "dropout": 0.2, "weight_decay": 1e-4}
    for lr in (1e-3, 2e-3):
        add_trial(
            study,
            state=TrialState.COMPLETE,
            params={**params, "learning_rate": lr},
            val_loss=AT_FREQUENCIES["val_loss"],
            train_loss=AT_FREQUENCIES["loss"],
            val_accuracy=AT_FREQUENCIES["val_accuracy"],
        )
    trial = study.get_trials(deepcopy=False)[0]
    evidence = " ".join(v.evidence for v in trial_verdicts(study, trial))
    assert "never got clearly below the chance level the labels' entropy = 0.325" in evidence
    story = get_answer_story(study, trial.number)
    assert story.nothing_learnt is not None
    assert "near the chance level (the labels' entropy = 0.325)" in story.nothing_learnt

    # The same trials in a study of 5 classes: ln 5 is far above them, something was learnt.
    single = make_study("single")
    single.set_user_attr("thaw:data", {"class_names": [f"l{i}" for i in range(LABELS)]})
    for t in study.get_trials(deepcopy=False):
        single.add_trial(t)
    again = single.get_trials(deepcopy=False)[0]
    assert "never got clearly below" not in " ".join(
        v.evidence for v in trial_verdicts(single, again)
    )
    assert get_answer_story(single, again.number).nothing_learnt is None
