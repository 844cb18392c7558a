"""The closed loop: a finished trial's diagnosis queues the next trial (real SQLite studies)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from thaw._keys import BUDGET_EPOCHS, CONTINUES, PROPOSED_BY, SCREEN, SHIFT_PROFILE, TRIAL_EPOCHS
from thaw.search._loop import ClosedLoop, loop_state

optuna.logging.set_verbosity(optuna.logging.WARNING)

DISTS = {
    "unfrozen_layers": IntDistribution(0, 8),
    "learning_rate": FloatDistribution(1e-5, 1e-2, log=True),
    "dropout": FloatDistribution(0.0, 0.6),
    "weight_decay": FloatDistribution(1e-6, 1e-1, log=True),
    "batchnorm": CategoricalDistribution(["frozen", "adapt", "train"]),
}
PARAMS = {
    "unfrozen_layers": 2,
    "learning_rate": 1e-3,
    "dropout": 0.1,
    "weight_decay": 1e-4,
    "batchnorm": "frozen",
}


def study_in(tmp_path: Path, classes: int = 5) -> optuna.Study:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'loop.db'}", study_name="loop")
    study.set_user_attr("thaw:num_classes", classes)
    return study


def add(
    study: optuna.Study,
    curve: list[float],
    *,
    params: dict[str, Any] | None = None,
    state: TrialState = TrialState.COMPLETE,
    dists: dict[str, Any] | None = None,
    **attrs: Any,
) -> None:
    best = min(curve)
    study.add_trial(
        create_trial(
            state=state,
            value=best if state == TrialState.COMPLETE else None,
            params=params or PARAMS,
            distributions=dists or DISTS,
            intermediate_values=dict(enumerate(curve, start=1)),
            user_attrs={"best_val_loss": best, "epochs_run": len(curve), **attrs},
        )
    )


def waiting(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=(TrialState.WAITING,))


def test_a_climbing_trial_proposes_a_lower_rate_and_records_who_proposed_it(
    tmp_path: Path,
) -> None:
    study = study_in(tmp_path)
    add(study, [1.2, 0.6, 0.8, 0.9, 1.0], state=TrialState.PRUNED, prune_reason="climbing")
    move = ClosedLoop()(study)
    assert move is not None and move.name == "lr/3"
    (queued,) = waiting(study)
    origin = queued.user_attrs[PROPOSED_BY]
    assert origin["trial"] == 0 and origin["cause"] == "climbing" and origin["move"] == "lr/3"
    assert origin["best_before"] == pytest.approx(0.6)
    assert "lower the learning rate" in origin["words"]
    trial = study.ask()  # the queued move runs next, with the lowered rate
    assert trial.suggest_float("learning_rate", 1e-5, 1e-2, log=True) == pytest.approx(1e-3 / 3)


def test_nothing_more_is_queued_while_a_move_waits(tmp_path: Path) -> None:
    study = study_in(tmp_path)
    add(study, [1.2, 0.6, 0.8, 0.9, 1.0], state=TrialState.PRUNED, prune_reason="climbing")
    loop = ClosedLoop()
    loop(study)
    assert loop(study) is None
    assert len(waiting(study)) == 1


def test_a_trial_stuck_at_chance_gets_a_larger_move(tmp_path: Path) -> None:
    study = study_in(tmp_path, classes=5)  # ln 5 = 1.61
    add(study, [1.62, 1.61, 1.60, 1.60, 1.59])
    move = ClosedLoop()(study)
    assert move is not None and (move.cause, move.name) == ("near_chance", "lr*10")
    assert move.params["learning_rate"] == pytest.approx(1e-2)


def test_a_move_already_tried_is_not_proposed_again(tmp_path: Path) -> None:
    study = study_in(tmp_path)
    add(study, [1.2, 0.6, 0.8, 0.9, 1.0], state=TrialState.PRUNED, prune_reason="climbing")
    add(study, [1.2, 0.9, 0.95], params={**PARAMS, "learning_rate": 1e-3 / 3})
    move = ClosedLoop()(study)
    assert move is not None and move.name == "dropout+"


def test_a_trial_still_falling_at_its_end_is_trained_twice_as_long(tmp_path: Path) -> None:
    study = study_in(tmp_path, classes=5)
    add(study, [1.2, 0.8, 0.6, 0.5, 0.45, 0.42])
    move = ClosedLoop()(study)
    assert move is not None and (move.cause, move.name, move.epochs) == (
        "still_improving",
        "epochs*2",
        12,
    )
    (queued,) = waiting(study)
    assert queued.user_attrs[TRIAL_EPOCHS] == 12
    assert queued.user_attrs[CONTINUES] == {"trial": 0, "epochs": 6}
    assert queued.user_attrs[PROPOSED_BY]["move"] == "epochs*2"
    assert queued.system_attrs["fixed_params"] == PARAMS  # the same configuration


@pytest.mark.parametrize("budget", [100, 1000])
def test_under_an_epoch_budget_no_trial_is_trained_longer(tmp_path: Path, budget: int) -> None:
    study = study_in(tmp_path, classes=5)
    study.set_user_attr(BUDGET_EPOCHS, budget)
    add(study, [1.2, 0.8, 0.6, 0.5, 0.45, 0.42])
    assert ClosedLoop()(study) is None
    assert waiting(study) == []


@pytest.mark.parametrize(
    "attrs",
    [{"epoch_cap": 6}, {}],
    ids=["cut by the budget", "turned before its end"],
)
def test_a_trial_that_did_not_run_its_course_falling_is_not_extended(
    tmp_path: Path, attrs: dict[str, Any]
) -> None:
    study = study_in(tmp_path, classes=5)
    curve = [1.2, 0.8, 0.6, 0.5, 0.45, 0.42] if attrs else [1.2, 0.8, 0.6, 0.5, 0.42, 0.45]
    add(study, curve, **attrs)
    move = ClosedLoop()(study)
    assert move is None or move.name != "epochs*2"


def test_a_longer_trial_already_run_is_not_queued_again(tmp_path: Path) -> None:
    study = study_in(tmp_path, classes=5)
    add(study, [1.2, 0.8, 0.6, 0.5, 0.45, 0.42])
    add(
        study,
        [1.2, 0.8, 0.6, 0.5, 0.45, 0.44, 0.43, 0.42, 0.43, 0.44, 0.45, 0.46],
        **{TRIAL_EPOCHS: 12},
    )
    assert ClosedLoop()(study) is None  # and the longer one turned: nothing calls for more
    assert waiting(study) == []


def test_screen_trials_are_not_expanded(tmp_path: Path) -> None:
    study = study_in(tmp_path)
    add(
        study,
        [1.62, 1.61],
        state=TrialState.PRUNED,
        prune_reason="screened",
        **{SCREEN: {"strategy": "full fine-tuning", "round": 0, "rung": 2, "rungs": [2]}},
    )
    assert ClosedLoop()(study) is None


def test_the_best_trial_is_expanded_first(tmp_path: Path) -> None:
    study = study_in(tmp_path)
    add(study, [1.0, 0.9, 1.1, 1.2, 1.3], state=TrialState.PRUNED, prune_reason="diverged")
    add(
        study,
        [1.0, 0.3, 0.5, 0.6, 0.7],
        params={**PARAMS, "learning_rate": 1e-4},
        state=TrialState.PRUNED,
        prune_reason="climbing",
    )
    move = ClosedLoop()(study)
    assert move is not None and move.cause == "climbing"
    assert waiting(study)[0].user_attrs[PROPOSED_BY]["trial"] == 1


def moved(study: optuna.Study, value: float, best_before: float) -> None:
    add(
        study,
        [value + 0.3, value],
        params={**PARAMS, "dropout": 0.1 + 0.01 * len(study.trials)},
        **{PROPOSED_BY: {"trial": 0, "cause": "climbing", "move": "x", "best_before": best_before}},
    )


# (id, move results as (value, best before), expected moves, successes, share)
SHARES = [
    ("no move yet: an even share", [], 0, 0, 0.5),
    ("two moves that beat the best", [(0.4, 0.5), (0.3, 0.4)], 2, 2, 0.75),
    ("three that did not: the floor", [(0.6, 0.5), (0.7, 0.5), (0.8, 0.5)], 3, 0, 0.25),
    ("one of two", [(0.4, 0.5), (0.7, 0.4)], 2, 1, 0.5),
]


@pytest.mark.parametrize(
    ("results", "moves", "successes", "share"), [pytest.param(*r[1:], id=r[0]) for r in SHARES]
)
def test_the_share_of_moves_follows_how_often_they_beat_the_best(
    tmp_path: Path,
    results: list[tuple[float, float]],
    moves: int,
    successes: int,
    share: float,
) -> None:
    study = study_in(tmp_path)
    add(study, [1.0, 0.5])
    for value, before in results:
        moved(study, value, before)
    state = loop_state(study.get_trials(), maximize=False)
    assert (state.moves, state.successes) == (moves, successes)
    assert math.isclose(state.share, share)


def test_after_failed_moves_the_sampler_takes_its_turn(tmp_path: Path) -> None:
    study = study_in(tmp_path)
    add(study, [1.2, 0.5, 0.8, 0.9, 1.0], state=TrialState.PRUNED, prune_reason="climbing")
    for value in (0.7, 0.8):  # two moves that did not beat 0.5: share 0.25 of 2 searched trials
        moved(study, value, 0.5)
    assert ClosedLoop()(study) is None
    assert waiting(study) == []


@pytest.mark.parametrize(("top_k", "shares"), [(0, (0.2, 0.8)), (3, (0.6, 0.4)), (3, (-0.1, 1))])
def test_bad_loop_arguments_are_refused(top_k: int, shares: tuple[float, float]) -> None:
    with pytest.raises(ValueError):
        ClosedLoop(top_k=top_k, min_share=shares[0], max_share=shares[1])


#: A space in which the plain moves of a climb are spent: the rate at its low bound, dropout
#: and weight decay at their high ones, no fewer layers allowed, one BatchNorm mode.
SPENT_DISTS = {
    "unfrozen_layers": IntDistribution(3, 8),
    "learning_rate": FloatDistribution(1e-5, 1e-2, log=True),
    "dropout": FloatDistribution(0.0, 0.6),
    "weight_decay": FloatDistribution(1e-6, 1e-1, log=True),
}
SPENT = {"unfrozen_layers": 3, "learning_rate": 1e-5, "dropout": 0.6, "weight_decay": 1e-1}

#: ``thaw:shift_profile`` as creation stores it: an input-level shift, arising in the first
#: layers (the block it points to is for the partial trial's 3 layers).
INPUT_SHIFT_PROFILE = {
    "unit": "layers",
    "groups": [
        {"name": f"conv{i + 1}", "shift": shift, "batchnorm": 1}
        for i, shift in enumerate((0.4, 0.45, 0.5, 0.5, 0.52, 0.52, 0.53, 0.53))
    ],
    "block": {"start": 0, "size": 3, "first": "conv1", "last": "conv3", "top": False},
}

# (id, the searched method's distribution, the trial's value, whether the study stored the
# shift profile, the move queued (None: nothing), the method's value it queues, its words)
METHOD_LOOP = [
    (
        "climbing from the top: the block where the shift arises",
        ("block_start", IntDistribution(0, 8)),
        8,
        True,
        "block=profile",
        0,
        "unfreeze layers 1-3 of 8 (conv1 to conv3, where the BatchNorm shift arises most) "
        "instead of the top 3",
    ),
    (
        "no profile stored: no block move",
        ("block_start", IntDistribution(0, 8)),
        8,
        False,
        None,
        None,
        None,
    ),
    (
        "climbing: a lower layer-wise rate decay",
        ("lr_decay", FloatDistribution(0.5, 1.0)),
        0.9,
        False,
        "lr_decay-",
        0.72,
        "lower the layer-wise rate decay to 0.72: the lowest of the 3 unfrozen layers trains at "
        "0.52x the top one's rate",
    ),
    (
        "the rate decay at its bound: nothing",
        ("lr_decay", FloatDistribution(0.5, 1.0)),
        0.5,
        False,
        None,
        None,
        None,
    ),
]


@pytest.mark.parametrize(
    ("method", "value", "stored", "name", "queued", "words"),
    [pytest.param(*r[1:], id=r[0]) for r in METHOD_LOOP],
)
def test_a_climb_with_the_plain_moves_spent_queues_the_methods_move(
    tmp_path: Path,
    method: tuple[str, Any],
    value: Any,
    stored: bool,
    name: str | None,
    queued: Any,
    words: str | None,
) -> None:
    study = study_in(tmp_path)
    if stored:
        study.set_user_attr(SHIFT_PROFILE, INPUT_SHIFT_PROFILE)
    param, dist = method
    dists = {**SPENT_DISTS, param: dist}
    add(
        study,
        [1.2, 0.6, 0.8, 0.9, 1.0],
        params={**SPENT, param: value},
        dists=dists,
        state=TrialState.PRUNED,
        prune_reason="climbing",
    )
    move = ClosedLoop()(study)
    if name is None:
        assert move is None and waiting(study) == []
        return
    assert move is not None and (move.cause, move.name) == ("climbing", name)
    (trial,) = waiting(study)
    origin = trial.user_attrs[PROPOSED_BY]
    assert (origin["trial"], origin["cause"], origin["move"]) == (0, "climbing", name)
    assert origin["words"] == words
    assert trial.system_attrs["fixed_params"] == pytest.approx({**SPENT, param: queued})
    asked = study.ask(dists)  # the queued move runs next, with the method moved
    assert asked.params[param] == pytest.approx(queued)
    assert {k: v for k, v in asked.params.items() if k != param} == pytest.approx(SPENT)
