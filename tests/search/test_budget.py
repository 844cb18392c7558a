"""The informed start, the sampler seed on resume, the epoch budget and the best trial."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from thaw._keys import SCREEN, SCREEN_WINNER
from thaw.objectives import FloatRange, IntRange, SearchSpace, record_prune_reason
from thaw.search import (
    FOLLOW_UP_ATTR,
    EpochBudget,
    GradualUnfreezing,
    best_trial,
    create_or_resume,
    epochs_spent,
    gradual_unfreezing,
    informed_start,
    open_storage,
    parse_study,
    sampler_seed,
)
from thaw.search._budget import (
    ScreenedStart,
    fit_start_to_budget,
    rate_guard,
    screen_epochs,
    screen_rungs,
    start_label,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

ALL_MODES = ("frozen", "adapt", "train")


def space(modes: tuple[str, ...] = ALL_MODES, high: int = 5) -> SearchSpace:
    return SearchSpace(
        unfrozen_layers=IntRange(0, high),
        learning_rate=FloatRange(1e-5, 1e-2, log=True),
        dropout=FloatRange(0.0, 0.5),
        weight_decay=FloatRange(1e-6, 1e-1, log=True),
        batchnorm=modes,
    )


# ------------------------------------------------------------------------ informed start

# (id, shift, modes, rates, expected (strategy label, unfrozen layers, lr, batchnorm) in order)
START = [
    (
        "large shift: every strategy in every mode, adapt and train first, frozen kept",
        0.6,
        ALL_MODES,
        None,
        [
            ("feature extraction, BatchNorm adapt", 0, 1e-2, "adapt"),
            ("full fine-tuning, BatchNorm adapt", 5, 3e-4, "adapt"),
            ("partial fine-tuning, BatchNorm train", 3, 3e-4, "train"),
            ("partial fine-tuning, BatchNorm adapt", 3, 3e-4, "adapt"),
            ("full fine-tuning, BatchNorm train", 5, 3e-4, "train"),
            ("feature extraction", 0, 1e-3, "frozen"),
            ("partial fine-tuning", 3, 1e-4, "frozen"),
            ("full fine-tuning", 5, 1e-3, "frozen"),
        ],
    ),
    (
        "small shift: the textbook strategies first, then every variant",
        0.1,
        ALL_MODES,
        None,
        [
            ("full fine-tuning", 5, 1e-3, "frozen"),
            ("partial fine-tuning", 3, 1e-4, "frozen"),
            ("feature extraction", 0, 1e-3, "frozen"),
            ("feature extraction, BatchNorm adapt", 0, 1e-2, "adapt"),
            ("partial fine-tuning, BatchNorm train", 3, 3e-4, "train"),
            ("full fine-tuning, BatchNorm adapt", 5, 3e-4, "adapt"),
            ("full fine-tuning, BatchNorm train", 5, 3e-4, "train"),
            ("partial fine-tuning, BatchNorm adapt", 3, 3e-4, "adapt"),
        ],
    ),
    (
        "range-test rates: the variants train at them, the head alone at 10x",
        0.6,
        ("frozen", "adapt"),
        {"adapt": 5e-4, "frozen": 1e-5},
        [
            ("feature extraction, BatchNorm adapt", 0, 5e-3, "adapt"),
            ("full fine-tuning, BatchNorm adapt", 5, 5e-4, "adapt"),
            ("partial fine-tuning", 3, 1e-4, "frozen"),
            ("partial fine-tuning, BatchNorm adapt", 3, 5e-4, "adapt"),
            ("full fine-tuning", 5, 1e-3, "frozen"),
            ("feature extraction", 0, 1e-3, "frozen"),
        ],
    ),
    (
        "pinned mode: only the three strategies, ordered by the shift",
        0.6,
        ("train",),
        None,
        [
            ("feature extraction", 0, 1e-3, None),
            ("full fine-tuning", 5, 1e-3, None),
            ("partial fine-tuning", 3, 1e-4, None),
        ],
    ),
    (
        "two modes: feature extraction with BatchNorm train is the frozen one, left out",
        0.6,
        ("train", "frozen"),
        None,
        [
            ("full fine-tuning, BatchNorm train", 5, 3e-4, "train"),
            ("partial fine-tuning, BatchNorm train", 3, 3e-4, "train"),
            ("feature extraction", 0, 1e-3, "frozen"),
            ("partial fine-tuning", 3, 1e-4, "frozen"),
            ("full fine-tuning", 5, 1e-3, "frozen"),
        ],
    ),
]


@pytest.mark.parametrize(
    ("shift", "modes", "rates", "expected"), [pytest.param(*row[1:], id=row[0]) for row in START]
)
def test_informed_start(
    shift: float | None,
    modes: tuple[str, ...],
    rates: dict[str, float] | None,
    expected: list[tuple[Any, ...]],
) -> None:
    start = informed_start(space(modes), shift, rates=rates)
    got = [
        (
            t.strategy,
            t.params["unfrozen_layers"],
            pytest.approx(t.params["learning_rate"]),
            t.params.get("batchnorm"),
        )
        for t in start
    ]
    assert got == expected
    for t in start:
        plain = "BatchNorm" not in t.strategy
        # Plain textbook trials replay the textbook; variants regularise the small target.
        assert (t.params["dropout"], t.params["weight_decay"]) == (
            (0.0, 1e-6) if plain else (0.2, 1e-4)
        )


def test_informed_start_keeps_every_textbook_label_even_when_clamped_together() -> None:
    tiny = space(("frozen", "adapt", "train"), high=1)
    labels = [t.strategy for t in informed_start(tiny, 0.6)]
    for strategy in ("full fine-tuning", "partial fine-tuning", "feature extraction"):
        assert strategy in labels


# (id, epochs, configurations, reduction factor, budget, expected rungs, expected epochs)
RUNGS = [
    ("20 epochs, 8 configurations: 2, then 6, then the survivor", 20, 8, 3, None, (2, 6), 54),
    ("a budget under 10 full trials starts at 1 epoch", 20, 8, 3, 113, (1, 3), 37),
    ("one mode: 3 configurations, one round", 20, 3, 3, None, (2,), 26),
    ("halving: more rounds", 20, 8, 2, None, (2, 4, 8), 68),
    ("4 epochs: a 1-epoch round", 4, 8, 3, None, (1,), 12),
    ("3 epochs: too short to screen", 3, 8, 3, None, (), 24),
    ("1 epoch: no round, every configuration at full length", 1, 8, 3, None, (), 8),
    ("one configuration: nothing to screen", 20, 1, 3, None, (), 20),
]


@pytest.mark.parametrize(
    ("epochs", "n", "factor", "budget", "rungs", "spent"),
    [pytest.param(*r[1:], id=r[0]) for r in RUNGS],
)
def test_screen_rungs_and_their_cost(
    epochs: int, n: int, factor: int, budget: int | None, rungs: tuple[int, ...], spent: int
) -> None:
    assert screen_rungs(epochs, n, factor, budget_epochs=budget) == rungs
    assert screen_epochs(rungs, n, factor, epochs) == spent


@pytest.mark.parametrize(
    ("budget", "kept", "rungs", "spent"),
    [
        pytest.param(None, 8, (2, 6), 54, id="no budget: the whole portfolio"),
        pytest.param(150, 8, (1, 3), 37, id="150 epochs: the screen takes 37, within half"),
        pytest.param(60, 4, (1, 3), 30, id="60 epochs: the last bets are cut to fit half"),
        pytest.param(20, 2, (1,), 22, id="a budget below one trial: at least 2 stay"),
    ],
)
def test_the_start_is_cut_to_half_the_budget(
    budget: int | None, kept: int, rungs: tuple[int, ...], spent: int
) -> None:
    start = informed_start(space(), 0.6)
    cut, got = fit_start_to_budget(start, 20, 3, budget)
    assert (len(cut), got) == (kept, rungs)
    assert cut == start[:kept]  # the best bets first
    assert screen_epochs(got, len(cut), 3, 20) == spent


@pytest.mark.parametrize(
    ("args", "match"),
    [((0, 8, 3), "epochs, n_configs >= 1"), ((20, 0, 3), "n_configs"), ((20, 8, 1), "factor")],
)
def test_screen_rungs_refuses_bad_arguments(args: tuple[int, int, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        screen_rungs(*args)


#: The screen's three best strategy labels in :func:`screen_study` (lower is better).
SCREEN_QUALITY = {
    "full fine-tuning, BatchNorm train": 0.1,
    "partial fine-tuning, BatchNorm train": 0.2,
    "feature extraction": 0.3,
}


def screen_study(
    tmp_path: Path,
    epochs: int,
    quality: dict[str, float],
    late: dict[str, float] | None = None,
    target: int = 1,
    rate_guard: bool = False,
) -> optuna.Study:
    """A real study whose informed start is screened: trial values fall as ``quality`` of the
    trial's strategy label says (lower is better), one value per epoch. A label in ``late``
    falls in a straight line from 0.9 at epoch 1 to its ``late`` value at epoch 11, then stays:
    behind at the screen's short rungs, ahead or behind later as its ``late`` value says."""
    from thaw.search._faults import quiet_experimental
    from thaw.search._run import optimize_exactly

    raw = {"name": "s", "storage": "sqlite:///s.db", "train": {"epochs": epochs}}
    config = parse_study(raw, tmp_path / "s.yaml")
    data = {"fingerprint": "f" * 64, "class_names": ["a", "b"]}
    study, _ = create_or_resume(
        config, open_storage(config.storage), 5, data, domain_shift={"overall": 0.6}
    )
    resolved = config.space.resolve(5)

    def objective(trial: optuna.Trial) -> float:
        resolved.suggest(trial)
        label = start_label(trial) or "searched"  # type: ignore[arg-type]
        q = quality.get(label, 0.9)
        for step in range(1, epochs + 1):
            if late and label in late:
                trial.report(0.9 + (late[label] - 0.9) * min(1.0, (step - 1) / 10), step)
            else:
                trial.report(q + 0.5 / step, step)
            trial.set_user_attr("epochs_run", step)
            if trial.should_prune():
                record_prune_reason(trial)
                raise optuna.TrialPruned()
        return late[label] if late and label in late else q + 0.5 / epochs

    with quiet_experimental():
        optimize_exactly(
            study,
            open_storage(config.storage),
            config.storage,
            objective,
            target=target,  # the screen's rounds do not count, the finals do
            before_trial=ScreenedStart(3, rate_guard=rate_guard),
        )
    return study


@pytest.mark.parametrize("guarded", [False, True], ids=["rate_guard off", "rate_guard on"])
def test_the_screen_halves_the_portfolio_and_the_survivor_trains_at_full_length(
    tmp_path: Path, guarded: bool
) -> None:
    quality = {**SCREEN_QUALITY, "full fine-tuning": 0.35}
    study = screen_study(tmp_path, 20, quality, rate_guard=guarded)
    trials = study.get_trials()
    screen = [t for t in trials if SCREEN in t.user_attrs]
    rounds = [t.user_attrs[SCREEN]["round"] for t in screen]
    # 3 of 8 go on by value; with the guard, plain full fine-tuning too (1e-3, over 3x the
    # survivors' 3e-4 on the layers they train)
    assert rounds.count(0) == 8 and rounds.count(1) == 3 + guarded
    for t in screen:  # each round trains exactly its rung, then it is screened out
        assert t.state == TrialState.PRUNED
        assert t.user_attrs["prune_reason"] == "screened"
        assert t.last_step == t.user_attrs[SCREEN]["rung"] == (2, 6)[t.user_attrs[SCREEN]["round"]]
    second = {t.user_attrs[SCREEN]["strategy"]: t for t in screen if t.user_attrs[SCREEN]["round"]}
    kept = [s for s, t in second.items() if t.user_attrs[SCREEN].get("guard") == "rate"]
    assert set(second) == set(quality) - ({"full fine-tuning"} - set(kept))
    assert kept == (["full fine-tuning"] if guarded else [])
    winner = trials[11 + guarded]
    assert winner.user_attrs["strategy"] == "full fine-tuning, BatchNorm train"
    origin = winner.user_attrs[SCREEN_WINNER]
    assert "guard" not in origin
    assert trials[origin["of"]].user_attrs[SCREEN]["round"] == 1
    assert winner.state == TrialState.COMPLETE and winner.last_step == 20
    assert winner.params == trials[origin["of"]].params
    queued = trials[winner.number + 1 :]  # target=1: nothing after the winner has run
    assert [t.state for t in queued] == ([TrialState.WAITING] if guarded else [])
    if guarded:  # queued beside the winner, waiting for its turn
        assert queued[0].user_attrs["strategy"] == "full fine-tuning"
        assert queued[0].user_attrs[SCREEN_WINNER]["guard"] == "rate"


def test_the_rate_guard_trains_a_slow_starter_at_full_length(tmp_path: Path) -> None:
    """Full fine-tuning at 1e-3 is last at both rungs and best at full length: the guard takes
    it to full length and it becomes the study's best; without the guard the screen's winner
    would have been the best."""
    quality = SCREEN_QUALITY
    study = screen_study(
        tmp_path, 20, quality, late={"full fine-tuning": 0.01}, target=2, rate_guard=True
    )
    trials = study.get_trials()
    second = [t for t in trials if SCREEN in t.user_attrs and t.user_attrs[SCREEN]["round"]]
    guarded = [t for t in second if t.user_attrs[SCREEN].get("guard") == "rate"]
    assert [t.user_attrs[SCREEN]["strategy"] for t in guarded] == ["full fine-tuning"]
    at_rung = {t.number: t.intermediate_values[t.last_step] for t in second}
    assert max(at_rung, key=at_rung.__getitem__) == guarded[0].number  # last, yet kept
    finals = [t for t in trials if SCREEN_WINNER in t.user_attrs]
    assert [t.state for t in finals] == [TrialState.COMPLETE, TrialState.COMPLETE]
    found = best_trial(study)
    assert found is not None and found.trial.number == finals[1].number
    assert finals[1].user_attrs["strategy"] == "full fine-tuning"
    assert found.value == pytest.approx(0.01)
    assert finals[1].user_attrs[SCREEN_WINNER]["judged_from"] == 12  # twice the last rung, 6


def test_without_the_rate_guard_the_slow_starter_is_cut(tmp_path: Path) -> None:
    """The default (``rate_guard: off``): the same slow starter stays cut at the screen."""
    quality = SCREEN_QUALITY
    study = screen_study(tmp_path, 20, quality, late={"full fine-tuning": 0.01}, target=2)
    trials = study.get_trials()
    assert not any(t.user_attrs.get(SCREEN, {}).get("guard") for t in trials)
    finals = [t for t in trials if SCREEN_WINNER in t.user_attrs]
    assert [t.user_attrs["strategy"] for t in finals] == ["full fine-tuning, BatchNorm train"]
    found = best_trial(study)
    assert found is not None and found.value > 0.1


def test_a_rate_guard_behind_the_survivor_is_stopped_once_judged(tmp_path: Path) -> None:
    """A guard still behind the survivor at twice the screen's longest rung stops there."""
    quality = SCREEN_QUALITY
    study = screen_study(
        tmp_path, 20, quality, late={"full fine-tuning": 0.5}, target=2, rate_guard=True
    )
    guard = next(t for t in study.get_trials() if t.user_attrs.get(SCREEN_WINNER, {}).get("guard"))
    assert guard.state == TrialState.PRUNED and guard.last_step == 12
    assert guard.user_attrs["prune_reason"] == "below_peers"
    assert "behind the screen's survivor" in guard.user_attrs["prune_detail"]


def _screened(number: int, value: float, lr: float, unfrozen: int) -> tuple[float, Any]:
    trial = optuna.trial.create_trial(
        params={"unfrozen_layers": unfrozen, "learning_rate": lr},
        distributions={
            "unfrozen_layers": optuna.distributions.IntDistribution(0, 10),
            "learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True),
        },
        intermediate_values={1: value},
        state=TrialState.PRUNED,
    )
    trial.number = number
    return value, trial


# (id, scored as (value, lr, unfrozen layers) best first, survivors (indices), expected index)
GUARDS = [
    (
        "the best configuration faster than every layer-training survivor",
        [(1.0, 1e-4, 3), (1.1, 3e-4, 10), (1.2, 1e-3, 0), (1.3, 1e-3, 10), (1.4, 3e-3, 5)],
        [0, 1],
        3,
    ),
    ("a head alone is never the guard", [(1.0, 1e-4, 3), (1.2, 1e-2, 0)], [0], None),
    ("nothing faster: no guard", [(1.0, 1e-3, 3), (1.1, 1e-4, 10), (1.2, 1e-3, 5)], [0], None),
    (
        "1.4x is not faster; 3x is",
        [(1.0, 1e-4, 3), (1.1, 1.4e-4, 10), (1.2, 3e-4, 10)],
        [0],
        2,
    ),
    (
        "a survivor's rate is the bar, not the best's",
        [(1.0, 1e-4, 3), (1.1, 2e-3, 5), (1.2, 1e-3, 10)],
        [0, 1],
        None,
    ),
    (
        "survivors that train no layer: any layer-training rate is faster",
        [(1.0, 1e-2, 0), (1.1, 1e-4, 3), (1.2, 1e-3, 10)],
        [0],
        1,
    ),
    ("a survivor is never its own guard", [(1.0, 1e-4, 3)], [0], None),
]


@pytest.mark.parametrize(
    ("scored", "survivors", "expected"), [pytest.param(*r[1:], id=r[0]) for r in GUARDS]
)
def test_rate_guard(
    scored: list[tuple[float, float, int]], survivors: list[int], expected: int | None
) -> None:
    built = [_screened(i, value, lr, unfrozen) for i, (value, lr, unfrozen) in enumerate(scored)]
    guard = rate_guard(built, [built[i][1] for i in survivors])
    assert (guard.number if guard is not None else None) == expected


def test_the_screen_waits_for_its_round_to_finish(tmp_path: Path) -> None:
    raw = {"name": "w", "storage": "sqlite:///w.db", "train": {"epochs": 20}}
    config = parse_study(raw, tmp_path / "w.yaml")
    data = {"fingerprint": "f" * 64, "class_names": ["a", "b"]}
    study, _ = create_or_resume(config, open_storage(config.storage), 5, data)
    ScreenedStart(3)(study)  # round 0 is still queued: nothing more
    assert len(study.get_trials()) == 8


# ------------------------------------------------------------------------- sampler seeds

SEEDS = [
    ("fresh study keeps the seed", 7, 0, 0, 7),
    ("resumed after 5 trials", 7, 5, 0, (7 * 1_000_003 + 5 * 7919) % (2**31 - 1)),
    ("another worker", 7, 0, 3, (7 * 1_000_003 + 3 * 104_729) % (2**31 - 1)),
]


@pytest.mark.parametrize(
    ("seed", "existing", "salt", "expected"), [pytest.param(*r[1:], id=r[0]) for r in SEEDS]
)
def test_sampler_seed(seed: int, existing: int, salt: int, expected: int) -> None:
    assert sampler_seed(seed, existing, salt) == expected


def test_resume_continues_the_search_without_repeating(tmp_path: Path) -> None:
    raw = {
        "name": "r",
        "storage": "sqlite:///r.db",
        "reference_trials": False,
        "sampler": {"name": "tpe", "n_startup_trials": 50},  # all random: repeats would show
        "train": {"epochs": 3},
    }
    config = parse_study(raw, tmp_path / "r.yaml")
    data = {"fingerprint": "f" * 64, "class_names": ["a", "b"]}
    resolved = config.space.resolve(5)

    def objective(trial: optuna.Trial) -> float:
        return resolved.suggest(trial).learning_rate

    first, resumed = create_or_resume(config, open_storage(config.storage), 5, data)
    assert resumed is False
    first.optimize(objective, n_trials=4)
    # the same process starting again (a resume) on the real SQLite study
    again, resumed = create_or_resume(config, open_storage(config.storage), 5, data)
    assert resumed is True
    again.optimize(objective, n_trials=4)
    params = [
        tuple(sorted(t.params.items()))
        for t in optuna.load_study(study_name="r", storage=config.storage).get_trials()
    ]
    assert len(params) == 8
    assert len(set(params)) == 8, "a resumed study repeated a configuration"


# ---------------------------------------------------------------------------- the budget


def fake_objective(epochs: int, cap: EpochBudget, study_ref: list[optuna.Study]) -> Any:
    """Trains nothing: 'spends' up to ``epochs`` epochs, capped by what the budget has left."""

    def objective(trial: optuna.Trial) -> float:
        allowed = min(epochs, cap.remaining(study_ref[0]))
        trial.set_user_attr("epochs_run", 0)
        for step in range(1, allowed + 1):
            trial.report(1.0 / step, step)
            trial.set_user_attr("epochs_run", step)
        return 1.0 / allowed

    return objective


@pytest.mark.parametrize(
    ("budget", "epochs", "expected_trials", "expected_spent"),
    [(10, 4, 3, 10), (8, 4, 2, 8), (3, 4, 1, 3), (1, 4, 1, 1)],
)
def test_epoch_budget_stops_the_study_without_overshoot(
    tmp_path: Path, budget: int, epochs: int, expected_trials: int, expected_spent: int
) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/b.db")
    spend = EpochBudget(budget)
    study.optimize(fake_objective(epochs, spend, [study]), n_trials=100, callbacks=[spend])
    assert len(study.trials) == expected_trials
    assert epochs_spent(study) == expected_spent
    assert study.user_attrs["thaw:epochs_spent"] == expected_spent
    assert study.user_attrs["thaw:budget_epochs"] == budget


def test_pruned_and_failed_trials_count_against_the_budget(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/b.db")
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.PRUNED, user_attrs={"epochs_run": 3}, intermediate_values={1: 1.0}
        )
    )
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={"epochs_run": 2}))
    study.add_trial(optuna.trial.create_trial(value=0.5, intermediate_values={1: 0.9, 2: 0.5}))
    assert epochs_spent(study) == 3 + 2 + 2
    assert EpochBudget(10).remaining(study) == 3
    assert EpochBudget(5).exhausted(study)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_epoch_budget_refuses_a_bad_value(bad: Any) -> None:
    with pytest.raises(ValueError, match="budget must be a whole number of epochs >= 1"):
        EpochBudget(bad)


# -------------------------------------------------------------------------- best trial

# (id, direction, trials as (state, value, best_value attr, intermediate), expected (n, value,
# pruned))
BEST = [
    (
        "a pruned trial's best epoch beats the completed ones",
        "minimize",
        [("COMPLETE", 0.6, None, {1: 0.6}), ("PRUNED", None, 0.3, {1: 0.3, 2: 0.5})],
        (1, 0.3, True),
    ),
    (
        "pruned without best_value: its best intermediate value",
        "minimize",
        [("COMPLETE", 0.6, None, {1: 0.6}), ("PRUNED", None, None, {1: 0.4, 2: 0.9})],
        (1, 0.4, True),
    ),
    (
        "ties go to the completed trial",
        "minimize",
        [("PRUNED", None, 0.5, {1: 0.5}), ("COMPLETE", 0.5, None, {1: 0.5})],
        (1, 0.5, False),
    ),
    (
        "maximize",
        "maximize",
        [("COMPLETE", 0.6, None, {1: 0.6}), ("PRUNED", None, 0.8, {1: 0.8})],
        (1, 0.8, True),
    ),
    (
        "failed trials never count",
        "minimize",
        [("FAIL", None, 0.01, {1: 0.01}), ("COMPLETE", 0.7, None, {1: 0.7})],
        (1, 0.7, False),
    ),
]


@pytest.mark.parametrize(
    ("direction", "trials", "expected"), [pytest.param(*r[1:], id=r[0]) for r in BEST]
)
def test_best_trial_over_complete_and_pruned(
    tmp_path: Path, direction: str, trials: list[tuple[Any, ...]], expected: tuple[Any, ...]
) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/x.db", direction=direction)
    for state, value, best_value, inter in trials:
        attrs = {} if best_value is None else {"best_value": best_value}
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState[state],
                value=value,
                user_attrs=attrs,
                intermediate_values=inter,
            )
        )
    best = best_trial(study)
    assert best is not None
    assert (best.trial.number, best.value, best.pruned) == expected


def test_no_best_without_finished_values(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/x.db")
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))
    assert best_trial(study) is None


@pytest.mark.parametrize(("budget", "rung"), [(None, 2), (150, 1), (800, 2)])
def test_the_screen_queued_at_creation_starts_at_a_short_rung(
    tmp_path: Path, budget: int | None, rung: int
) -> None:
    raw = {"name": "b", "storage": "sqlite:///b.db", "train": {"epochs": 20}}
    if budget is not None:
        raw["budget_epochs"] = budget
    config = parse_study(raw, tmp_path / "b.yaml")
    data = {"fingerprint": "f" * 64, "class_names": ["a", "b"]}
    study, _ = create_or_resume(
        config, open_storage(config.storage), 5, data, domain_shift={"overall": 0.6}
    )
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert len(waiting) == 8
    assert waiting[0].user_attrs[SCREEN]["strategy"] == "feature extraction, BatchNorm adapt"
    assert {t.user_attrs[SCREEN]["rung"] for t in waiting} == {rung}


@pytest.mark.parametrize(
    ("configured", "n_start", "expected"),
    [
        pytest.param(5, 0, 5, id="no informed start: TPE's own start-up trials"),
        pytest.param(5, 2, 2, id="the informed start stands in for the random trials"),
        pytest.param(5, 8, 5, id="a longer informed start does not delay TPE"),
        pytest.param(1, 2, 1, id="fewer start-up trials asked for"),
    ],
)
def test_tpe_models_right_after_the_informed_start(
    configured: int, n_start: int, expected: int
) -> None:
    from thaw.search import SamplerConfig, make_sampler

    sampler = make_sampler(SamplerConfig("tpe", configured), seed=0, n_start=n_start)
    assert sampler._n_startup_trials == expected  # type: ignore[attr-defined]


def test_a_study_with_an_informed_start_samples_with_tpe_right_after_it(tmp_path: Path) -> None:
    raw = {"name": "t", "storage": "sqlite:///t.db", "budget_epochs": 150, "train": {"epochs": 20}}
    config = parse_study(raw, tmp_path / "t.yaml")
    data = {"fingerprint": "f" * 64, "class_names": ["a", "b"]}
    study, _ = create_or_resume(
        config, open_storage(config.storage), 5, data, domain_shift={"overall": 0.6}
    )
    assert study.sampler._n_startup_trials == 5  # type: ignore[attr-defined]
    again, resumed = create_or_resume(config, open_storage(config.storage), 5, data)
    assert resumed and again.sampler._n_startup_trials == 5  # type: ignore[attr-defined]


# ------------------------------------------------------------ gradual unfreezing after the start

FE = {"unfrozen_layers": 0, "learning_rate": 1e-2, "dropout": 0.2, "weight_decay": 1e-4}
FULL = {"unfrozen_layers": 5, "learning_rate": 3e-4, "dropout": 0.2, "weight_decay": 1e-4}
TOP2 = {"unfrozen_layers": 2, "learning_rate": 3e-4, "dropout": 0.2, "weight_decay": 1e-4}

# (id, start trials as (params, value or None: left waiting), expected unfrozen layers or None)
GRADUAL = [
    ("feature extraction best: one layer more", [(FE, 0.05), (FULL, 0.3)], 1),
    ("two layers best: a third", [(FE, 0.5), (TOP2, 0.1)], 3),
    ("every layer already trains: nothing", [(FE, 0.5), (FULL, 0.1)], None),
    ("a start trial still queued: nothing yet", [(FE, 0.05), (FULL, None)], None),
]


def run_start(tmp_path: Path, start: list[tuple[dict[str, Any], float | None]]) -> optuna.Study:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'g.db'}", study_name="g")
    for i, (params, _) in enumerate(start):
        study.enqueue_trial(params, user_attrs={"strategy": f"strategy {i}"})
    values = [v for _, v in start if v is not None]

    def objective(trial: optuna.Trial) -> float:
        space().suggest(trial)
        return values[trial.number]

    study.optimize(objective, n_trials=len(values))
    return study


@pytest.mark.parametrize(("start", "expected"), [pytest.param(*r[1:], id=r[0]) for r in GRADUAL])
def test_gradual_unfreezing_step(
    tmp_path: Path, start: list[tuple[dict[str, Any], float | None]], expected: int | None
) -> None:
    study = run_start(tmp_path, start)
    step = gradual_unfreezing(study, space())
    if expected is None:
        assert step is None
        return
    assert step is not None
    params, of = step
    best = min((v, i) for i, (_, v) in enumerate(start) if v is not None)[1]
    assert of == best
    assert params == {**study.trials[best].params, "unfrozen_layers": expected}


def test_gradual_unfreezing_is_queued_once_and_runs_next(tmp_path: Path) -> None:
    study = run_start(tmp_path, [(FE, 0.05), (FULL, 0.3)])
    step = GradualUnfreezing(space())
    step(study)
    step(study)  # called again before the next trial: nothing more is queued
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1
    assert waiting[0].user_attrs[FOLLOW_UP_ATTR] == {"of": 0, "unfrozen_layers": 1}
    trial = study.ask()  # the queued step is the next trial, with the best start's parameters
    assert space().suggest(trial).unfrozen_layers == 1
    assert trial.params["learning_rate"] == FE["learning_rate"]


@pytest.mark.parametrize(
    ("method", "bounds", "weakest"),
    [
        ("l2sp", FloatRange(1e-4, 1e-1, log=True), 1e-4),
        ("lr_decay", FloatRange(0.5, 1.0), 1.0),
        ("augment", FloatRange(0.0, 0.8), 0.0),
    ],
)
def test_informed_start_takes_a_searched_method_at_its_weakest(
    method: str, bounds: FloatRange, weakest: float
) -> None:
    from dataclasses import replace

    start = informed_start(replace(space(), **{method: bounds}), None)
    assert start and all(t.params[method] == weakest for t in start)
    assert all(method not in t.params for t in informed_start(space(), None))


@pytest.mark.parametrize(
    ("ranks", "start_rank"),
    [((0, 4, 16), 0), ((4, 16), 16)],
    ids=["off where allowed", "else the largest rank"],
)
def test_informed_start_takes_lora_off_or_at_its_largest_rank(
    ranks: tuple[int, ...], start_rank: int
) -> None:
    from dataclasses import replace

    start = informed_start(replace(space(), lora_rank=ranks), None)
    assert start and all(t.params["lora_rank"] == start_rank for t in start)
    assert all("lora_rank" not in t.params for t in informed_start(space(), None))
