"""The informed start, the sampler seed on resume, the epoch budget and the best trial."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from thaw.objectives import FloatRange, IntRange, SearchSpace
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

# (id, shift, modes, expected (strategy label, unfrozen layers, lr, batchnorm) in order)
START = [
    (
        "large shift: adapt and train variants first, the cheapest (feature extraction) on top",
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
        "small shift: the textbook strategies first",
        0.1,
        ALL_MODES,
        None,
        [
            ("full fine-tuning", 5, 1e-3, "frozen"),
            ("partial fine-tuning", 3, 1e-4, "frozen"),
            ("feature extraction", 0, 1e-3, "frozen"),
            ("feature extraction, BatchNorm adapt", 0, 1e-2, "adapt"),
            ("partial fine-tuning, BatchNorm train", 3, 3e-4, "train"),
        ],
    ),
    (
        "unknown shift (no BatchNorm layers) is a small one",
        None,
        ALL_MODES,
        None,
        [
            ("full fine-tuning", 5, 1e-3, "frozen"),
            ("partial fine-tuning", 3, 1e-4, "frozen"),
            ("feature extraction", 0, 1e-3, "frozen"),
            ("feature extraction, BatchNorm adapt", 0, 1e-2, "adapt"),
            ("partial fine-tuning, BatchNorm train", 3, 3e-4, "train"),
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
        "two modes: the missing one falls back to the first",
        0.6,
        ("train", "frozen"),
        None,
        [
            ("feature extraction, BatchNorm train", 0, 1e-2, "train"),
            ("full fine-tuning, BatchNorm train", 5, 3e-4, "train"),
            ("partial fine-tuning, BatchNorm train", 3, 3e-4, "train"),
            ("feature extraction", 0, 1e-3, "frozen"),
            ("partial fine-tuning", 3, 1e-4, "frozen"),
            ("full fine-tuning", 5, 1e-3, "frozen"),
        ],
    ),
    (
        "a budget of 150 epochs at 20 per trial: the best 2 bets only",
        0.6,
        ALL_MODES,
        (150, 20),
        [
            ("feature extraction, BatchNorm adapt", 0, 1e-2, "adapt"),
            ("full fine-tuning, BatchNorm adapt", 5, 3e-4, "adapt"),
        ],
    ),
    (
        "a budget of 400 epochs at 20 per trial: a quarter of it, 5 trials",
        0.1,
        ALL_MODES,
        (400, 20),
        [
            ("full fine-tuning", 5, 1e-3, "frozen"),
            ("partial fine-tuning", 3, 1e-4, "frozen"),
            ("feature extraction", 0, 1e-3, "frozen"),
            ("feature extraction, BatchNorm adapt", 0, 1e-2, "adapt"),
            ("partial fine-tuning, BatchNorm train", 3, 3e-4, "train"),
        ],
    ),
]


@pytest.mark.parametrize(
    ("shift", "modes", "budget", "expected"), [pytest.param(*row[1:], id=row[0]) for row in START]
)
def test_informed_start(
    shift: float | None,
    modes: tuple[str, ...],
    budget: tuple[int, int] | None,
    expected: list[tuple[Any, ...]],
) -> None:
    budget_epochs, epochs = budget if budget else (None, None)
    start = informed_start(
        space(modes), shift, budget_epochs=budget_epochs, epochs_per_trial=epochs
    )
    got = [
        (
            t.strategy,
            t.params["unfrozen_layers"],
            t.params["learning_rate"],
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


@pytest.mark.parametrize(("budget", "queued"), [(None, 8), (150, 2), (300, 3), (800, 8)])
def test_the_informed_start_queued_at_creation_fits_the_budget(
    tmp_path: Path, budget: int | None, queued: int
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
    assert len(waiting) == queued
    assert waiting[0].user_attrs["strategy"] == "feature extraction, BatchNorm adapt"


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
    assert study.sampler._n_startup_trials == 2  # type: ignore[attr-defined]
    again, resumed = create_or_resume(config, open_storage(config.storage), 5, data)
    assert resumed and again.sampler._n_startup_trials == 2  # type: ignore[attr-defined]


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
