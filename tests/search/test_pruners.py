"""The climbing pruner: its decision table, and its records on real Optuna studies."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import optuna
import pytest
from optuna.pruners import BasePruner, MedianPruner
from optuna.trial import TrialState

from thaw._keys import SCREEN_WINNER, TRIAL_EPOCHS
from thaw.objectives import record_prune_reason
from thaw.search import (
    BELOW_PEERS,
    CLIMBING,
    DIVERGED,
    REFERENCE_ATTR,
    ClimbingPruner,
    PrunerConfig,
    RungPruner,
    bracket_pattern,
    bracket_weights,
    climbing_decision,
    curve_noise,
    make_pruner,
    plateau_exit,
    rung_decision,
    stale_decision,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

NAN = float("nan")
INF = float("inf")


def steps(*values: float) -> list[tuple[int, float]]:
    """1-based (epoch, value) pairs."""
    return list(enumerate(values, start=1))


# ------------------------------------------------------------------------ climbing_decision

# (id, values, patience, min_delta, maximize, expected reason or None, expected epoch)
DECISIONS = [
    ("empty", [], 2, 0.0, False, None, None),
    ("single value", steps(0.5), 1, 0.0, False, None, None),
    ("improving", steps(1.0, 0.9, 0.8, 0.7), 2, 0.0, False, None, None),
    ("climbing", steps(0.5, 0.6, 0.7, 0.8), 3, 0.03, False, CLIMBING, 4),
    ("climbing patience 1", steps(0.5, 0.9), 1, 0.0, False, CLIMBING, 2),
    ("not yet patient", steps(0.5, 0.6, 0.7), 3, 0.0, False, None, None),
    ("plateau at best", steps(0.5, 0.5, 0.5, 0.5), 2, 0.0, False, None, None),
    ("one value back near best", steps(0.5, 0.8, 0.51, 0.9), 3, 0.03, False, None, None),
    (
        "slow start of a climb: first value after best within min_delta",
        steps(0.92, 0.94, 1.07, 1.27, 1.40),
        3,
        0.03,
        False,
        CLIMBING,
        5,
    ),
    (
        "noisy but improving",
        steps(1.0, 1.1, 0.9, 1.0, 0.8, 0.85, 0.7, 0.75),
        2,
        0.0,
        False,
        None,
        None,
    ),
    ("new best resets the count", steps(1.0, 1.2, 1.3, 0.9, 1.0, 1.1), 3, 0.0, False, None, None),
    (
        "climbs again after new best",
        steps(1.0, 1.2, 0.9, 1.0, 1.1, 1.2),
        3,
        0.0,
        False,
        CLIMBING,
        6,
    ),
    ("nan last", steps(0.5, 0.4, NAN), 5, 0.0, False, DIVERGED, 3),
    ("nan first epoch", steps(NAN), 5, 0.0, False, DIVERGED, 1),
    ("inf last", steps(0.5, INF), 5, 0.0, False, DIVERGED, 2),
    ("minus inf last", steps(0.5, -INF), 5, 0.0, False, DIVERGED, 2),
    ("nan maximize", steps(0.5, NAN), 5, 0.0, True, DIVERGED, 2),
    # min_delta boundary (binary-exact numbers): worse by exactly min_delta is not worse
    ("min_delta equal", steps(0.5, 0.75, 0.75), 2, 0.25, False, None, None),
    ("min_delta just above", steps(0.5, 0.75, 0.7500001), 2, 0.25, False, None, None),
    ("min_delta both above", steps(0.5, 0.7500001, 0.7500001), 2, 0.25, False, CLIMBING, 3),
    ("min_delta zero plateau", steps(0.5, 0.5, 0.5), 2, 0.0, False, None, None),
    ("min_delta zero tiny climb", steps(0.5, 0.5000001, 0.5000001), 2, 0.0, False, CLIMBING, 3),
    # maximize: falling accuracy climbs, rising accuracy does not
    ("maximize falling", steps(0.9, 0.8, 0.7, 0.6), 3, 0.0, True, CLIMBING, 4),
    ("maximize rising", steps(0.6, 0.7, 0.8, 0.9), 3, 0.0, True, None, None),
    ("minimize same rising curve", steps(0.6, 0.7, 0.8, 0.9), 3, 0.0, False, CLIMBING, 4),
    ("maximize min_delta", steps(0.9, 0.88, 0.88), 2, 0.05, True, None, None),
]


@pytest.mark.parametrize(
    ("values", "patience", "min_delta", "maximize", "reason", "epoch"),
    [pytest.param(*row[1:], id=row[0]) for row in DECISIONS],
)
def test_climbing_decision(
    values: list[tuple[int, float]],
    patience: int,
    min_delta: float,
    maximize: bool,
    reason: str | None,
    epoch: int | None,
) -> None:
    decision = climbing_decision(values, patience, min_delta, maximize)
    if reason is None:
        assert decision is None
    else:
        assert decision is not None
        assert (decision.reason, decision.epoch) == (reason, epoch)
        if reason == DIVERGED:
            assert decision.detail.endswith(f"at epoch {epoch}")


def test_climbing_detail_names_best_epoch_and_span() -> None:
    decision = climbing_decision(steps(0.9, 0.5, 0.6, 0.7, 0.8), 3, 0.0)
    assert decision is not None
    assert decision.detail == "worse than its best 0.5 (epoch 2) for 3 epochs, now 0.8"


def test_divergence_detail_names_the_value() -> None:
    decision = climbing_decision(steps(0.5, NAN), 1, 0.0)
    assert decision is not None and decision.detail == "the value became nan at epoch 2"


def test_ties_count_from_the_first_best() -> None:
    # best 0.5 first reached at epoch 1; the equal 0.5 at epoch 2 is not "worse"
    assert climbing_decision(steps(0.5, 0.5, 0.9, 0.9), 3, 0.0) is None
    assert climbing_decision(steps(0.5, 0.9, 0.5, 0.9), 2, 0.0) is None


# ---------------------------------------------------------------------- ClimbingPruner args


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"patience": 0}, r"patience must be >= 1, got 0"),
        ({"min_delta": -0.1}, r"min_delta must be >= 0, got -0\.1"),
        ({"n_warmup_steps": -1}, r"n_warmup_steps must be >= 0, got -1"),
    ],
)
def test_invalid_pruner_arguments(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ClimbingPruner(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------- on a real study


@pytest.fixture
def storage_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'pruners.db'}"


def curve_objective(curves: Sequence[Sequence[float]]):  # type: ignore[no-untyped-def]
    """Trial n reports curves[n] epoch by epoch (step = epoch, 1-based), pruning when told and
    recording why, as thaw's objective does."""

    def objective(trial: optuna.Trial) -> float:
        curve = curves[trial.number]
        for step, value in enumerate(curve, start=1):
            trial.report(value, step)
            if trial.should_prune():
                record_prune_reason(trial)
                raise optuna.TrialPruned()
        finite = [v for v in curve if math.isfinite(v)]
        return min(finite)

    return objective


def run_curves(
    storage_url: str,
    pruner: BasePruner,
    curves: Sequence[Sequence[float]],
    direction: str = "minimize",
) -> list[optuna.trial.FrozenTrial]:
    study = optuna.create_study(
        storage=storage_url, pruner=pruner, direction=direction, study_name="p"
    )
    study.optimize(curve_objective(curves), n_trials=len(curves))
    # read back through a fresh handle: the attrs must be in storage
    return optuna.load_study(study_name="p", storage=storage_url).get_trials()


def test_climbing_trial_is_pruned_with_reason_epoch_and_detail(storage_url: str) -> None:
    (trial,) = run_curves(
        storage_url, ClimbingPruner(patience=2, min_delta=0.05), [[0.9, 0.5, 0.6, 0.7, 0.8, 0.9]]
    )
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs["prune_reason"] == CLIMBING
    assert trial.user_attrs["prune_epoch"] == 4
    assert max(trial.intermediate_values) == 4  # stopped at the decision
    assert trial.user_attrs["prune_detail"] == (
        "worse than its best 0.5 (epoch 2) for 2 epochs, now 0.7"
    )


def test_healthy_trial_completes_without_prune_attrs(storage_url: str) -> None:
    (trial,) = run_curves(
        storage_url, ClimbingPruner(patience=2), [[0.9, 0.8, 0.85, 0.7, 0.72, 0.6]]
    )
    assert trial.state == TrialState.COMPLETE
    assert not {"prune_reason", "prune_epoch", "prune_detail"} & set(trial.user_attrs)


def test_diverged_trial_is_pruned_even_during_warmup(storage_url: str) -> None:
    (trial,) = run_curves(
        storage_url, ClimbingPruner(patience=2, n_warmup_steps=10), [[0.9, NAN, 0.5]]
    )
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs["prune_reason"] == DIVERGED
    assert trial.user_attrs["prune_epoch"] == 2
    assert "nan" in trial.user_attrs["prune_detail"]


@pytest.mark.parametrize(("warmup", "pruned_at"), [(0, 3), (2, 3), (3, 4), (5, 6), (8, None)])
def test_no_climbing_decision_during_warmup(
    storage_url: str, warmup: int, pruned_at: int | None
) -> None:
    # climbing from epoch 3 on (best at epoch 1, patience 2)
    curve = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2]
    (trial,) = run_curves(storage_url, ClimbingPruner(patience=2, n_warmup_steps=warmup), [curve])
    if pruned_at is None:
        assert trial.state == TrialState.COMPLETE
    else:
        assert trial.state == TrialState.PRUNED
        assert trial.user_attrs["prune_reason"] == CLIMBING
        assert trial.user_attrs["prune_epoch"] == pruned_at


def test_maximize_study_prunes_falling_accuracy(storage_url: str) -> None:
    pruner = ClimbingPruner(patience=2)
    rising, falling = [0.3, 0.5, 0.7, 0.9], [0.9, 0.7, 0.5, 0.3]
    trials = run_curves(storage_url, pruner, [rising, falling], direction="maximize")
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert trials[1].user_attrs["prune_reason"] == CLIMBING
    assert trials[1].user_attrs["prune_epoch"] == 3


def test_wrapped_median_pruner_prunes_below_peers(storage_url: str) -> None:
    good = [0.5, 0.4, 0.3, 0.2]
    bad_but_improving = [2.0, 1.9, 1.8, 1.7]  # never climbs, but far worse than its peer
    pruner = ClimbingPruner(MedianPruner(n_startup_trials=1, n_warmup_steps=0), patience=2)
    trials = run_curves(storage_url, pruner, [good, bad_but_improving])
    assert trials[0].state == TrialState.COMPLETE
    assert trials[1].state == TrialState.PRUNED
    attrs = trials[1].user_attrs
    assert attrs["prune_reason"] == BELOW_PEERS
    assert attrs["prune_epoch"] == 1
    assert "MedianPruner" in attrs["prune_detail"] and "epoch 1" in attrs["prune_detail"]


def test_without_wrapped_pruner_peers_do_not_matter(storage_url: str) -> None:
    trials = run_curves(
        storage_url, ClimbingPruner(None, patience=2), [[0.5, 0.4, 0.3], [2.0, 1.9, 1.8]]
    )
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]


def test_climbing_is_decided_before_the_wrapped_pruner(storage_url: str) -> None:
    # The second trial is both worse than its peer and climbing: the climb is the reason.
    pruner = ClimbingPruner(MedianPruner(n_startup_trials=1, n_warmup_steps=2), patience=1)
    trials = run_curves(storage_url, pruner, [[0.5, 0.4, 0.3], [1.0, 1.5, 2.0]])
    assert trials[1].user_attrs["prune_reason"] == CLIMBING
    assert trials[1].user_attrs["prune_epoch"] == 2


@pytest.mark.parametrize(
    ("compare", "prunes_peers"),
    [("median", True), ("hyperband", True), ("successive_halving", True), ("none", False)],
)
def test_make_pruner_wraps_the_configured_comparative_pruner(
    storage_url: str, compare: str, prunes_peers: bool
) -> None:
    config = PrunerConfig(compare=compare, patience=50, n_startup_trials=1, n_warmup_steps=1)
    # trial n: a smooth, never-climbing curve offset by n -> later trials lie below their peers
    curves = [[n + 1.0 / s for s in range(1, 11)] for n in range(8)]
    trials = run_curves(storage_url, make_pruner(config, max_epochs=10), curves)
    reasons = {t.user_attrs.get("prune_reason") for t in trials if t.state == TrialState.PRUNED}
    if prunes_peers:
        assert reasons == {BELOW_PEERS}
    else:
        assert all(t.state == TrialState.COMPLETE for t in trials)


# ------------------------------------------------- chance plateau, noise, rungs (issue 9)

LN5 = math.log(5)

# (id, values, expected noise (approx))
NOISE = [
    ("too short", [1.0, 0.9, 0.8], 0.0),
    ("steady descent has no noise", [1.0, 0.9, 0.8, 0.7, 0.6], 0.0),
    ("steady climb has no noise", [0.5, 0.6, 0.7, 0.8, 0.9], 0.0),
    ("zig-zag of 0.2", [1.0, 1.2, 1.0, 1.2, 1.0, 1.2], 0.2),
    ("zig-zag on a descent", [1.0, 1.1, 0.8, 0.9, 0.6, 0.7], 0.2),
    ("non-finite values are skipped", [1.0, INF, 0.9, 0.8, 0.7, 0.6], 0.0),
]


@pytest.mark.parametrize(("values", "expected"), [pytest.param(*r[1:], id=r[0]) for r in NOISE])
def test_curve_noise(values: list[float], expected: float) -> None:
    assert curve_noise(values) == pytest.approx(expected, abs=1e-9)


# (id, values, chance, maximize, expected index of the first value off the plateau)
PLATEAU = [
    ("no chance given: judged from the start", steps(1.7, 1.6), None, False, 0),
    ("still at ln 5", steps(1.61, 1.62, 1.60, 1.58), LN5, False, None),
    ("leaves at the third epoch", steps(1.61, 1.6, 1.3, 1.2), LN5, False, 2),
    ("accuracy at 1/5 then learning", steps(0.2, 0.22, 0.5), 0.2, True, 2),
    ("empty", [], LN5, False, None),
]


@pytest.mark.parametrize(
    ("values", "chance", "maximize", "expected"),
    [pytest.param(*r[1:], id=r[0]) for r in PLATEAU],
)
def test_plateau_exit(
    values: list[tuple[int, float]], chance: float | None, maximize: bool, expected: int | None
) -> None:
    assert plateau_exit(values, chance, maximize) == expected


# (id, own, peers, reduction factor, margin, maximize, pruned)
RUNGS = [
    ("no peer decides nothing", 9.0, [], 3, 0.0, False, False),
    (
        "fewer peers than the factor: worse than the best is pruned",
        0.3,
        [0.1, 0.2],
        3,
        0.0,
        False,
        True,
    ),
    ("fewer peers than the factor: the best continues", 0.05, [0.1, 0.2], 3, 0.0, False, False),
    ("fewer peers: within the noise of the best continues", 0.15, [0.1], 3, 0.1, False, False),
    ("best of four continues", 0.1, [0.5, 0.6, 0.7], 3, 0.0, False, False),
    ("worst of four is pruned", 0.9, [0.5, 0.6, 0.7], 3, 0.0, False, True),
    ("within the noise of the cutoff continues", 0.55, [0.5, 0.6, 0.7], 3, 0.1, False, False),
    ("beyond the noise is pruned", 0.65, [0.5, 0.6, 0.7], 3, 0.1, False, True),
    ("maximize: highest continues", 0.9, [0.5, 0.6, 0.7], 3, 0.0, True, False),
    ("maximize: lowest pruned", 0.4, [0.5, 0.6, 0.7], 3, 0.0, True, True),
    ("factor 2 keeps the top half", 0.55, [0.5, 0.6, 0.7], 2, 0.0, False, False),
]


@pytest.mark.parametrize(
    ("own", "peers", "factor", "margin", "maximize", "pruned"),
    [pytest.param(*r[1:], id=r[0]) for r in RUNGS],
)
def test_rung_decision(
    own: float, peers: list[float], factor: int, margin: float, maximize: bool, pruned: bool
) -> None:
    assert rung_decision(own, peers, factor, margin, maximize) is pruned


@pytest.mark.parametrize(
    ("min_resource", "max_resource", "factor", "bracket", "rungs"),
    [
        (2, 20, 3, 0, [2, 6, 18]),
        (2, 20, 3, 1, [6, 18]),
        (2, 20, 3, 2, [18]),
        (1, 10, 3, 0, [1, 3, 9]),
    ],
)
def test_rungs_of_each_bracket(
    min_resource: int, max_resource: int, factor: int, bracket: int, rungs: list[int]
) -> None:
    pruner = RungPruner(min_resource, factor, max_resource, n_brackets=3)
    assert pruner.rungs(bracket) == rungs


BRACKETS = [
    # (id, n_brackets, factor, trials per bracket in a round, first round of brackets)
    ("one bracket is successive halving", 1, 3, [1], [0]),
    ("two brackets, factor 3", 2, 3, [3, 2], [0, 1, 0, 1, 0]),
    (
        "three brackets, factor 3: Hyperband's 9, 5, 3",
        3,
        3,
        [9, 5, 3],
        [0, 1, 0, 2, 0, 1, 0, 2, 0, 1, 0, 1, 0, 2, 0, 1, 0],
    ),
    ("three brackets, factor 2", 3, 2, [4, 3, 3], [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]),
]


@pytest.mark.parametrize(
    ("n_brackets", "factor", "weights", "pattern"),
    [pytest.param(*r[1:], id=r[0]) for r in BRACKETS],
)
def test_trials_are_dealt_to_brackets_in_hyperband_proportions(
    n_brackets: int, factor: int, weights: list[int], pattern: list[int]
) -> None:
    assert bracket_weights(n_brackets, factor) == weights
    assert bracket_pattern(weights) == pattern
    pruner = RungPruner(2, factor, 20, n_brackets=n_brackets)
    dealt = [pruner.bracket_of(n) for n in range(2 * len(pattern))]
    assert dealt == pattern + pattern
    assert all(dealt.count(b) == 2 * w for b, w in enumerate(weights))


#: Sits at chance for 4 epochs, wobbling up (3 epochs above its best, within the plateau's
#: wobble), then learns.
SLOW_STARTER = [1.58, 1.62, 1.63, 1.64, 1.2, 0.9, 0.7]


def test_a_trial_on_the_chance_plateau_is_not_climbing(storage_url: str) -> None:
    # The plateau's wobble is not a climb.
    with_chance = ClimbingPruner(None, patience=2, min_delta=0.0, chance=LN5, noise_aware=True)
    (trial,) = run_curves(storage_url, with_chance, [SLOW_STARTER])
    assert trial.state == TrialState.COMPLETE


def test_a_stale_curve_on_the_chance_plateau_stops_at_patience_plus_two(
    storage_url: str,
) -> None:
    # Wobbles within the plateau's tolerance (never a climb), but with no new best for
    # patience + 2 = 4 epochs and worse than its best, it stops there: epoch 5, 4 past its best.
    stale = [1.58, 1.62, 1.60, 1.61, 1.62, 1.60, 1.2, 0.9]
    pruner = ClimbingPruner(None, patience=2, min_delta=0.0, chance=LN5, noise_aware=True)
    (trial,) = run_curves(storage_url, pruner, [stale])
    assert trial.state == TrialState.PRUNED and trial.user_attrs["prune_reason"] == CLIMBING
    assert trial.user_attrs["prune_epoch"] == 5
    assert "for 4 epochs" in trial.user_attrs["prune_detail"]


def test_without_the_chance_rule_the_plateau_looks_like_a_climb(tmp_path: Path) -> None:
    slow_starter = SLOW_STARTER
    (trial,) = run_curves(
        f"sqlite:///{tmp_path / 'x.db'}", ClimbingPruner(None, patience=2), [slow_starter]
    )
    assert trial.state == TrialState.PRUNED and trial.user_attrs["prune_reason"] == CLIMBING


def test_noise_aware_climbing_waits_out_the_noise_then_stops_a_stale_curve(
    storage_url: str,
) -> None:
    # Zig-zags by 0.3 around 0.6 after its best: worse than the best by less than its noise, so
    # the patience rule waits; but with no new best for patience + 2 = 4 epochs, and worse than
    # its best, it is stopped there (epoch 6), never later.
    noisy = [1.0, 0.5, 0.8, 0.55, 0.85, 0.55, 0.8, 0.6, 0.85]
    pruner = ClimbingPruner(None, patience=2, min_delta=0.03, chance=LN5, noise_aware=True)
    (trial,) = run_curves(storage_url, pruner, [noisy])
    assert trial.state == TrialState.PRUNED and trial.user_attrs["prune_reason"] == CLIMBING
    assert trial.user_attrs["prune_epoch"] == 6
    assert "for 4 epochs" in trial.user_attrs["prune_detail"]


# (id, values, patience, min_delta, expected prune epoch or None)
STALE = [
    (
        "no new best for patience + 2 and worse: stopped",
        [1.0, 0.5, 0.6, 0.55, 0.58, 0.56],
        2,
        0.03,
        6,
    ),
    (
        "back at the best (within min_delta): not stale",
        [1.0, 0.5, 0.6, 0.55, 0.58, 0.52],
        2,
        0.03,
        None,
    ),
    ("a new best resets it", [1.0, 0.5, 0.6, 0.55, 0.49, 0.6], 2, 0.03, None),
    ("too soon", [1.0, 0.5, 0.6, 0.55, 0.58], 2, 0.03, None),
]


def test_off_the_plateau_a_stale_curve_stops_like_early_stopping(storage_url: str) -> None:
    # Learnt (well below ln 5), best at epoch 3, then hovers a hair above it (within min_delta):
    # no new best for patience + 2 = 5 epochs, so it stops at epoch 8.
    flat = [1.0, 0.2, 0.05, 0.051, 0.052, 0.0505, 0.052, 0.051, 0.052, 0.051]
    pruner = ClimbingPruner(None, patience=3, min_delta=0.03, chance=LN5, noise_aware=True)
    (trial,) = run_curves(storage_url, pruner, [flat])
    assert trial.state == TrialState.PRUNED and trial.user_attrs["prune_reason"] == CLIMBING
    assert trial.user_attrs["prune_epoch"] == 8


@pytest.mark.parametrize(
    ("values", "patience", "min_delta", "expected"), [pytest.param(*r[1:], id=r[0]) for r in STALE]
)
def test_stale_decision(
    values: list[float], patience: int, min_delta: float, expected: int | None
) -> None:
    decision = stale_decision(steps(*values), patience + 2, min_delta)
    assert (decision.epoch if decision else None) == expected
    if decision is not None:
        assert decision.reason == CLIMBING


def test_noise_aware_climbing_still_prunes_a_real_climb(storage_url: str) -> None:
    climb = [1.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    pruner = ClimbingPruner(None, patience=2, min_delta=0.03, chance=LN5, noise_aware=True)
    (trial,) = run_curves(storage_url, pruner, [climb])
    assert trial.state == TrialState.PRUNED and trial.user_attrs["prune_reason"] == CLIMBING


def test_hyperband_rungs_prune_a_poor_trial_at_its_first_rung(storage_url: str) -> None:
    good = [[0.5 - 0.01 * s for s in range(10)] for _ in range(3)]
    poor = [1.5 - 0.01 * s for s in range(10)]
    pruner = ClimbingPruner(RungPruner(2, 3, 10, n_brackets=1), patience=5)
    trials = run_curves(storage_url, pruner, [*good, poor])
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3 + [TrialState.PRUNED]
    assert trials[3].user_attrs["prune_reason"] == BELOW_PEERS
    assert trials[3].user_attrs["prune_epoch"] == 2


@pytest.mark.parametrize(
    ("longer", "state"), [(False, TrialState.PRUNED), (True, TrialState.COMPLETE)]
)
def test_a_trial_queued_to_train_longer_is_not_judged_at_the_rungs(
    storage_url: str, longer: bool, state: TrialState
) -> None:
    # The same poor start as above; queued with its own length (the closed loop's "train
    # longer"), it repeats a configuration that passed the rungs, so they leave it alone.
    good = [[0.5 - 0.01 * s for s in range(10)] for _ in range(3)]
    poor = [1.5 - 0.01 * s for s in range(10)]
    study = optuna.create_study(
        storage=storage_url,
        pruner=ClimbingPruner(RungPruner(2, 3, 10, n_brackets=1), patience=5),
        study_name="p",
    )
    for i in range(4):
        study.enqueue_trial(
            {"x": float(i)}, user_attrs={TRIAL_EPOCHS: 10} if longer and i == 3 else {}
        )
    curves = [*good, poor]

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float("x", 0.0, 100.0)
        return curve_objective(curves)(trial)

    study.optimize(objective, n_trials=4)
    trials = optuna.load_study(study_name="p", storage=storage_url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3 + [state]


def run_curves_after_start(
    storage_url: str,
    pruner: BasePruner,
    start: Sequence[Sequence[float]],
    rest: Sequence[Sequence[float]],
) -> list[optuna.trial.FrozenTrial]:
    """Like run_curves, the first ``len(start)`` trials queued as the informed start is."""
    study = optuna.create_study(storage=storage_url, pruner=pruner, study_name="p")
    for i in range(len(start)):
        study.enqueue_trial({"x": float(i)}, user_attrs={REFERENCE_ATTR: f"strategy {i}"})
    curves = [*start, *rest]

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float("x", 0.0, 100.0)
        return curve_objective(curves)(trial)

    study.optimize(objective, n_trials=len(curves))
    return optuna.load_study(study_name="p", storage=storage_url).get_trials()


def test_the_informed_start_is_judged_only_at_the_last_rung(storage_url: str) -> None:
    # A fast reference, then a slow one that a rung at epoch 2 or 6 would cut: it is only
    # compared at epoch 18 (the last rung), where it has caught up.
    fast = [[0.5 - 0.01 * s for s in range(20)] for _ in range(3)]
    slow = [max(1.5 - 0.07 * s, 0.5 - 0.01 * s) for s in range(20)]
    pruner = RungPruner(2, 3, 20, n_brackets=3)
    trials = run_curves_after_start(storage_url, pruner, [fast[0], slow, *fast[1:]], [])
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4


def test_brackets_are_dealt_from_the_first_trial_after_the_informed_start(
    storage_url: str,
) -> None:
    # Two references; the next trial is the first of a round (bracket 0: judged at epoch 2) and
    # worse than both references there, so it stops at epoch 2.
    refs = [[0.5 - 0.01 * s for s in range(20)] for _ in range(2)]
    poor = [1.0 - 0.01 * s for s in range(20)]
    pruner = ClimbingPruner(RungPruner(2, 3, 20, n_brackets=3), patience=5)
    trials = run_curves_after_start(storage_url, pruner, refs, [poor])
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.PRUNED]
    assert trials[2].user_attrs["prune_epoch"] == 2


@pytest.mark.parametrize(
    ("poor", "pruned"),
    [
        pytest.param([1.62, 1.60], False, id="all on the chance plateau: no decision"),
        pytest.param([1.2, 1.1], True, id="a peer has learnt: the worse one stops"),
    ],
)
def test_no_rung_decision_while_every_trial_sits_at_chance(
    storage_url: str, poor: list[float], pruned: bool
) -> None:
    # The references sit at chance (ln 5) at epoch 2, or one has learnt; later all reach 0.5.
    refs = [[1.60, 1.58] + [0.5] * 18, [1.61, 1.59 if not pruned else 0.9] + [0.5] * 18]
    pruner = ClimbingPruner(RungPruner(2, 3, 20, n_brackets=3, chance=LN5), patience=5)
    trials = run_curves_after_start(storage_url, pruner, refs, [poor + [0.5] * 18])
    assert (trials[2].state == TrialState.PRUNED) is pruned


def test_the_pruner_keeps_its_reason_for_the_live_trial_to_record(storage_url: str) -> None:
    pruner = ClimbingPruner(patience=2)
    study = optuna.create_study(storage=storage_url, pruner=pruner, study_name="p")
    trial = study.ask()
    for step, value in steps(0.5, 0.6, 0.7):
        trial.report(value, step)
    assert trial.should_prune()
    # the pruner wrote nothing: the live trial records the reason, once
    assert "prune_reason" not in study.trials[0].user_attrs
    record_prune_reason(trial)
    record_prune_reason(trial)
    study.tell(trial, state=TrialState.PRUNED)
    attrs = optuna.load_study(study_name="p", storage=storage_url).trials[0].user_attrs
    assert (attrs["prune_reason"], attrs["prune_epoch"]) == (CLIMBING, 3)
    assert pruner.take_reason(trial.number) is None


# ------------------------------------------------------------------------- the rate guard

# (id, guard's values, survivor's values, survivor state, judged_from, expected: pruned)
GUARD_DECISIONS = [
    ("behind the survivor once judged", [1.6, 1.4, 1.3, 1.2], [1.5, 1.0, 0.8, 0.7], "R", 4, True),
    ("ahead once judged", [1.6, 1.4, 0.9, 0.6], [1.5, 1.0, 0.8, 0.7], "R", 4, False),
    ("behind, but before judged_from", [1.6, 1.4, 1.3, 1.2], [1.5, 1.0, 0.8, 0.7], "R", 5, False),
    (
        "behind by less than its own noise",
        [1.6, 0.9, 1.3, 0.75],
        [1.5, 1.0, 0.8, 0.7],
        "R",
        4,
        False,
    ),
    ("the survivor has not got that far", [1.6, 1.4, 1.3, 1.2], [1.5, 1.0], "R", 4, False),
    ("a survivor that finished sooner counts", [1.6, 1.4, 1.3, 1.2], [1.5, 1.0], "C", 4, True),
]


@pytest.mark.parametrize(
    ("guard", "survivor", "state", "judged_from", "pruned"),
    [pytest.param(*r[1:], id=r[0]) for r in GUARD_DECISIONS],
)
def test_guard_decision(
    guard: list[float], survivor: list[float], state: str, judged_from: int, pruned: bool
) -> None:
    from thaw.search._pruners import guard_decision

    study = optuna.create_study()
    states = {"R": TrialState.RUNNING, "C": TrialState.COMPLETE}
    study.add_trial(
        optuna.trial.create_trial(
            state=states[state],
            value=min(survivor) if state == "C" else None,
            intermediate_values=dict(enumerate(survivor, start=1)),
            user_attrs={SCREEN_WINNER: {"of": 0, "round": 1}},
        )
    )
    origin = {"of": 0, "round": 1, "guard": "rate", "judged_from": judged_from}
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.RUNNING,
            intermediate_values=dict(enumerate(guard, start=1)),
            user_attrs={SCREEN_WINNER: origin},
        )
    )
    trial = study.get_trials()[1]
    decision = guard_decision(study, trial, origin)
    assert (decision is not None) == pruned
    if decision is not None:
        assert decision.reason == "below_peers" and decision.epoch == len(guard)
        assert "trial 0" in decision.detail
