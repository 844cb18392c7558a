"""The Answer's story: nothing learnt much (with the next move first), and the path of trials
that led to the recommended one; the report, the notes and the run summary say the same."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from thaw._keys import PROPOSED_BY, SCREEN, SCREEN_WINNER, SHIFT_PROFILE
from thaw.reports import get_answer_story, get_report_info, render_markdown
from thaw.reports._notes import render_trial_note

C, P = TrialState.COMPLETE, TrialState.PRUNED
K5 = {"thaw:num_classes": 5, "thaw:objective_metric": "val_loss"}  # chance: ln 5 = 1.61


def falling(start: float, end: float, epochs: int = 10) -> list[float]:
    return [round(start + (end - start) * i / (epochs - 1), 4) for i in range(epochs)]


def add_screen_path(
    study: optuna.Study,
    add_trial: Any,
    params: dict[str, Any],
    strategy: str,
    rungs: tuple[int, int],
    curves: list[list[float]],
    guard: bool = False,
) -> None:
    """Trials 0 to 2 of ``study``: ``strategy`` in screen rounds 0 and 1 (at ``rungs``), then
    at full length as the screen's survivor; with ``guard``, kept in round 1 for its faster
    rate (``"guard": "rate"``)."""
    screen = {"strategy": strategy, "rungs": list(rungs)}
    kept = {"guard": "rate"} if guard else {}
    add_trial(
        study,
        state=P,
        params=params,
        val_loss=curves[0],
        user_attrs={SCREEN: {**screen, "round": 0, "rung": rungs[0]}, "prune_reason": "screened"},
    )
    add_trial(
        study,
        state=P,
        params=params,
        val_loss=curves[1],
        user_attrs={
            SCREEN: {**screen, "round": 1, "rung": rungs[1], "of": 0, **kept},
            "prune_reason": "screened",
        },
    )
    add_trial(
        study,
        state=C,
        params=params,
        val_loss=curves[2],
        user_attrs={"strategy": strategy, SCREEN_WINNER: {"of": 1, "round": 1, **kept}},
    )


def near_chance_study(make_study: Callable[..., optuna.Study], add_trial: Any, params: Any):
    study = make_study(study_name="stuck", attrs=False)
    for key, value in K5.items():
        study.set_user_attr(key, value)
    add_trial(
        study, state=C, params=params(2, 1e-4, batchnorm="adapt"), val_loss=falling(1.62, 1.50)
    )
    add_trial(
        study, state=C, params=params(0, 2e-4, batchnorm="adapt"), val_loss=falling(1.63, 1.52)
    )
    return study


def test_nothing_learnt_says_so_first_and_names_the_next_move(
    make_study: Callable[..., optuna.Study], add_trial: Any, thaw_params: Any
) -> None:
    study = near_chance_study(make_study, add_trial, thaw_params)
    story = get_answer_story(study, recommended=0)
    assert story.nothing_learnt is not None and "near the chance level" in story.nothing_learnt
    assert story.next_move is not None
    assert (story.next_move.number, story.next_move.cause) == (0, "near_chance")
    assert "raise the learning rate 10x" in story.next_move.words
    headline = story.headline
    assert headline is not None and headline.startswith("Nothing learnt much: ")
    assert "Next: raise the learning rate 10x" in headline
    answer = render_markdown(get_report_info(study)).split("## Answer", 1)[1]
    first = next(line for line in answer.splitlines() if line.strip())
    assert first == f"**{headline}**"
    assert "Use trial" not in answer.split("## ", 1)[0]
    assert "The best so far is trial 0" in answer


def test_a_study_that_learnt_recommends_its_trial(
    make_study: Callable[..., optuna.Study], add_trial: Any, thaw_params: Any
) -> None:
    study = make_study(study_name="learnt", attrs=False)
    for key, value in K5.items():
        study.set_user_attr(key, value)
    add_trial(
        study, state=C, params=thaw_params(2, 1e-3, batchnorm="adapt"), val_loss=falling(1.5, 0.3)
    )
    story = get_answer_story(study, recommended=0)
    assert story.nothing_learnt is None and story.headline is None
    answer = render_markdown(get_report_info(study)).split("## Answer", 1)[1]
    assert "**Use trial 0:" in answer


def test_the_path_follows_screen_survivor_and_moves(
    make_study: Callable[..., optuna.Study], add_trial: Any, thaw_params: Any
) -> None:
    study = make_study(study_name="path", attrs=False)
    for key, value in K5.items():
        study.set_user_attr(key, value)
    p = thaw_params(2, 1e-3, batchnorm="adapt")
    add_screen_path(
        study,
        add_trial,
        p,
        "partial fine-tuning, BatchNorm adapt",
        (2, 6),
        [falling(1.6, 1.2, 2), falling(1.6, 0.9, 6), falling(1.6, 0.5)],
    )
    moved = {**p, "learning_rate": 3e-3}
    add_trial(
        study,
        state=C,
        params=moved,
        val_loss=falling(1.4, 0.2),
        user_attrs={
            PROPOSED_BY: {
                "trial": 2,
                "cause": "underfitting",
                "move": "lr*3",
                "words": "raise the learning rate 3x, to 0.003",
                "best_before": 0.5,
            }
        },
    )
    story = get_answer_story(study, recommended=3)
    assert [s.number for s in story.path] == [0, 1, 2, 3]
    assert story.path[0].how.startswith("screen round 0: partial fine-tuning, BatchNorm adapt")
    assert "the screen's survivor" in story.path[2].how
    assert story.path[3].how == "it underfit: raise the learning rate 3x, to 0.003"
    answer = render_markdown(get_report_info(study)).split("## Answer", 1)[1]
    assert "How the search got there: trial 0 (screen round 0" in answer
    assert "→ trial 3 (it underfit: raise the learning rate 3x, to 0.003)" in answer
    # The dashboard note of the move says who proposed it, in the same words.
    note = render_trial_note(study.trials[3], [])
    assert "Proposed by trial 2: it underfit: raise the learning rate 3x, to 0.003" in note


def test_the_path_names_the_screen_s_rate_guard(
    make_study: Callable[..., optuna.Study], add_trial: Any, thaw_params: Any
) -> None:
    """A configuration kept for its faster rate, not its value, says so along the path."""
    study = make_study(study_name="guard", attrs=False)
    for key, value in K5.items():
        study.set_user_attr(key, value)
    p = thaw_params(5, 1e-3, batchnorm="frozen")
    add_screen_path(
        study,
        add_trial,
        p,
        "full fine-tuning",
        (1, 3),
        [[1.7], falling(1.7, 1.3, 3), falling(1.7, 0.4)],
        guard=True,
    )
    story = get_answer_story(study, recommended=2)
    assert [s.number for s in story.path] == [0, 1, 2]
    assert story.path[1].how == (
        "screen round 1: full fine-tuning, 3 epochs (kept for its faster rate)"
    )
    assert story.path[2].how == "full fine-tuning, the screen's faster rate, at full length"


LR_WORDS = "its rate was too high"


@pytest.mark.parametrize(
    ("verdicts", "second", "sentence"),
    [
        (
            ["lr_too_high"],
            None,
            f"Its own verdict is lr_too_high ({LR_WORDS}): lower the learning rate 10x, to "
            "0.0001; not tried yet.",
        ),
        (
            ["lr_too_high", "overfitting"],
            1e-4,
            f"Its own verdict is lr_too_high ({LR_WORDS}): lower the learning rate 10x, to "
            "0.0001; trial 1 tried that, best 0.6.",
        ),
        (
            ["batchnorm_mismatch"],
            None,
            "Its own verdict is batchnorm_mismatch (its BatchNorm statistics did not match): "
            "BatchNorm frozen; not tried yet.",
        ),
        (
            ["healthy"],
            1e-4,
            "Its own verdict is healthy (it was still improving at its last epoch): train the "
            "same configuration longer, 20 epochs instead of 10; not tried yet.",
        ),
        ([], None, "Its curves were not judged (no learning curve stored)."),
    ],
)
def test_the_recommendation_states_its_own_verdicts_advice(
    make_study: Callable[..., optuna.Study],
    add_trial: Any,
    thaw_params: Any,
    verdicts: list[str],
    second: float | None,
    sentence: str,
) -> None:
    study = make_study(study_name="advice", attrs=False)
    for key, value in K5.items():
        study.set_user_attr(key, value)
    add_trial(
        study, state=C, params=thaw_params(2, 1e-3, batchnorm="adapt"), val_loss=falling(1.5, 0.3)
    )
    if second is not None:
        add_trial(
            study,
            state=C,
            params=thaw_params(2, second, batchnorm="adapt"),
            val_loss=falling(1.5, 0.6),
        )
    story = get_answer_story(study, recommended=0, verdicts=verdicts)
    assert story.advice is not None and story.advice.sentence == sentence


def test_the_answer_says_the_advice_where_it_names_the_trial(
    make_study: Callable[..., optuna.Study], add_trial: Any, thaw_params: Any
) -> None:
    """Validation loss falls, then climbs while the train loss keeps falling: the report's
    own verdict on its recommended trial is stated, with its move, in the Answer's lead."""
    study = make_study(study_name="said", attrs=False)
    for key, value in K5.items():
        study.set_user_attr(key, value)
    val = [1.4, 0.9, 0.6, 0.5, 0.55, 0.65, 0.8, 0.95, 1.1, 1.25]
    add_trial(
        study,
        state=C,
        params=thaw_params(2, 1e-3, batchnorm="adapt"),
        val_loss=val,
        train_loss=falling(1.3, 0.02),
    )
    info = get_report_info(study)
    row = info.ranking.ranked[0]
    assert row.verdicts and row.verdicts[0] != "healthy"
    answer = render_markdown(info).split("## Answer", 1)[1]
    lead = next(line for line in answer.splitlines() if line.startswith("**Use trial 0:"))
    assert f"Its own verdict is {row.verdicts[0]} (" in lead
    assert info.story is not None and info.story.advice is not None
    assert info.story.advice.move is not None and info.story.advice.move in lead


def test_a_healthy_trial_that_turned_before_its_end_calls_for_nothing(
    make_study: Callable[..., optuna.Study], add_trial: Any, thaw_params: Any
) -> None:
    study = make_study(study_name="turned", attrs=False)
    for key, value in K5.items():
        study.set_user_attr(key, value)
    add_trial(
        study,
        state=C,
        params=thaw_params(2, 1e-3, batchnorm="adapt"),
        val_loss=[*falling(1.5, 0.3, epochs=8), 0.31, 0.32],
    )
    story = get_answer_story(study, recommended=0, verdicts=["healthy"])
    assert story.advice is not None
    assert story.advice.sentence == "Its own verdict is healthy."


@pytest.mark.parametrize("stored", [True, False], ids=["profile stored", "no profile"])
def test_the_advice_names_the_block_the_shift_profile_points_to(
    make_study: Callable[..., optuna.Study], stored: bool
) -> None:
    """An overfitting trial that unfroze the top 3 of 8 layers, its plain moves spent (the rate
    at its low bound, dropout and weight decay at their high ones, no fewer layers allowed):
    the advice is the block where the stored shift profile says the shift arises."""
    study = make_study(study_name="surgical", attrs=False)
    for key, value in K5.items():
        study.set_user_attr(key, value)
    if stored:
        shifts = (0.4, 0.45, 0.5, 0.5, 0.52, 0.52, 0.53, 0.53)
        groups = [
            {"name": f"conv{i + 1}", "shift": s, "batchnorm": 1} for i, s in enumerate(shifts)
        ]
        study.set_user_attr(SHIFT_PROFILE, {"unit": "layers", "groups": groups, "block": None})
    dists = {
        "unfrozen_layers": IntDistribution(3, 8),
        "learning_rate": FloatDistribution(1e-5, 1e-2, log=True),
        "dropout": FloatDistribution(0.0, 0.6),
        "weight_decay": FloatDistribution(1e-6, 1e-1, log=True),
        "block_start": IntDistribution(0, 8),
    }
    params = {
        "unfrozen_layers": 3,
        "learning_rate": 1e-5,
        "dropout": 0.6,
        "weight_decay": 1e-1,
        "block_start": 8,
    }
    val = falling(1.5, 0.5)
    study.add_trial(
        create_trial(
            state=C,
            value=min(val),
            params=params,
            distributions=dists,
            intermediate_values=dict(enumerate(val, start=1)),
            user_attrs={"best_val_loss": min(val), "epochs_run": len(val)},
        )
    )
    story = get_answer_story(study, recommended=0, verdicts=["overfitting"])
    assert story.advice is not None and story.advice.cause == "overfitting"
    if not stored:
        assert story.advice.move is None
        return
    assert story.advice.move == (
        "unfreeze layers 1-3 of 8 (conv1 to conv3, where the BatchNorm shift arises most) "
        "instead of the top 3"
    )
    assert story.advice.sentence.endswith("instead of the top 3; not tried yet.")
