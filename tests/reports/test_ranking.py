from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from thaw.reports import RankingInfo, RankingRow, get_ranking_info

EXPECTED_RANKING: list[tuple[int | None, int, str, float | None]] = [
    # (rank, trial number, state, best val loss) for the ``thaw_study`` fixture
    (1, 3, "COMPLETE", 0.38),
    (2, 8, "COMPLETE", 0.38),  # tie with trial 3: the lower trial number ranks first
    (3, 10, "COMPLETE", 0.42),  # no summary attrs: best from history
    (4, 1, "COMPLETE", 0.45),
    (5, 2, "COMPLETE", 0.50),
    (6, 4, "PRUNED", 0.55),
    (7, 0, "COMPLETE", 0.60),
    (8, 9, "COMPLETE", 0.65),  # no user attrs at all: best from intermediate values
    (9, 5, "PRUNED", 1.05),
    (10, 6, "PRUNED", 2.0),
    (None, 7, "FAIL", None),  # failed trials last, unranked; RUNNING trial 11 left out
]

AddTrial = Callable[..., optuna.trial.FrozenTrial]
Params = Callable[..., dict[str, Any]]


@pytest.fixture(scope="module")
def ranking(thaw_study: optuna.Study) -> RankingInfo:
    return get_ranking_info(thaw_study)


def _row(ranking: RankingInfo, number: int) -> RankingRow:
    return next(r for r in ranking.rows if r.number == number)


def test_order_and_ranks(ranking: RankingInfo) -> None:
    got = [(r.rank, r.number, r.state) for r in ranking.rows]
    assert got == [(rank, number, state) for rank, number, state, _ in EXPECTED_RANKING]


@pytest.mark.parametrize(
    ("rank", "number", "state", "best_val_loss"),
    EXPECTED_RANKING,
    ids=[f"trial{n}" for _, n, _, _ in EXPECTED_RANKING],
)
def test_row_score(
    ranking: RankingInfo, rank: int | None, number: int, state: str, best_val_loss: float | None
) -> None:
    row = _row(ranking, number)
    assert row.rank == rank
    assert row.state == state
    assert row.best_val_loss == pytest.approx(best_val_loss)
    assert row.score == row.best_val_loss


@pytest.mark.parametrize(
    ("number", "field", "expected"),
    [
        (3, "best_epoch", 7),
        (3, "val_accuracy_at_best", 0.86),
        (3, "final_val_loss", 0.4),
        (3, "epochs_run", 10),
        (3, "verdicts", ("healthy",)),
        (3, "duration_s", 380.0),
        (3, "strategy", None),
        (0, "strategy", "full fine-tuning"),
        (0, "warmup_epochs", 0),
        (1, "strategy", "partial fine-tuning"),
        (1, "best_epoch", 5),  # 0.45 at epochs 5 and 6: the first one
        (2, "strategy", "feature extraction"),
        (4, "prune_reason", "climbing"),
        (4, "prune_epoch", 5),
        (4, "prune_detail", "val loss rose 3 epochs in a row (0.55 -> 0.75)"),
        (4, "verdicts", ("overfitting", "lr_too_high")),
        (4, "epochs_run", 5),
        (4, "objective_value", 0.55),  # pruned: best intermediate value
        (5, "prune_reason", "below_peers"),
        (6, "prune_reason", "diverged"),
        (6, "final_val_loss", None),  # NaN in storage
        (
            7,
            "fail_reason",
            "ResourceExhaustedError: OOM when allocating tensor with shape "
            "[64,224,224,3]\nTraceback follows",
        ),
        (7, "epochs_run", None),
        (7, "prune_reason", None),
        (
            8,
            "params",
            {
                "unfrozen_layers": 10,
                "learning_rate": 5e-4,
                "dropout": 0.1,
                "weight_decay": 3e-5,
                "batchnorm": "adapt",
            },
        ),
        # trial 9: no user attrs at all -> everything from intermediate values
        (9, "best_epoch", 3),
        (9, "epochs_run", 3),
        (9, "final_val_loss", 0.65),
        (9, "val_accuracy_at_best", None),
        # trial 10: history but no summary attrs -> from history
        (10, "best_epoch", 2),
        (10, "epochs_run", 3),
        (10, "final_val_loss", 0.44),
        (10, "val_accuracy_at_best", 0.84),
    ],
)
def test_row_fields(ranking: RankingInfo, number: int, field: str, expected: object) -> None:
    value = getattr(_row(ranking, number), field)
    if isinstance(expected, float):
        assert value == pytest.approx(expected)
    else:
        assert value == expected


def test_param_columns_known_first_then_others(ranking: RankingInfo) -> None:
    columns = [(c.name, c.kind, c.log) for c in ranking.param_columns]
    assert columns == [
        ("unfrozen_layers", "int", False),
        ("learning_rate", "float", True),
        ("dropout", "float", False),
        ("weight_decay", "float", True),
        ("batchnorm", "categorical", False),
    ]


def test_counts_and_running_trial_unranked(ranking: RankingInfo) -> None:
    assert ranking.state_counts == {"COMPLETE": 7, "FAIL": 1, "PRUNED": 3, "RUNNING": 1}
    assert 11 not in {r.number for r in ranking.rows}
    assert ranking.best_complete is not None and ranking.best_complete.number == 3
    assert ranking.direction == "minimize"
    assert ranking.rank_by == "best_val_loss"


def test_maximize_ranks_by_objective_descending(
    make_study: Callable[..., optuna.Study], add_trial: AddTrial, thaw_params: Params
) -> None:
    study = make_study(direction="maximize")
    study.set_user_attr("thaw:objective_metric", "val_accuracy")
    curves = [
        ([0.9, 0.6, 0.55], [0.5, 0.7, 0.72]),
        ([0.8, 0.5, 0.52], [0.6, 0.8, 0.79]),  # highest accuracy, not the lowest loss
        ([0.7, 0.45, 0.5], [0.6, 0.75, 0.74]),  # lowest loss
    ]
    for number, (val_loss, val_acc) in enumerate(curves):
        add_trial(
            study,
            state=TrialState.COMPLETE,
            params=thaw_params(10 * number, 1e-4),
            val_loss=val_loss,
            val_accuracy=val_acc,
            summary_attrs=number != 1,  # trial 1 relies on history fallbacks
        )
    ranking = get_ranking_info(study)
    assert [r.number for r in ranking.rows] == [1, 2, 0]
    assert ranking.rank_by == "objective_value"
    top = ranking.rows[0]
    assert top.objective_value == pytest.approx(0.8)
    assert top.score == pytest.approx(0.8)
    assert top.best_val_loss == pytest.approx(0.5)  # val loss columns still filled
    assert top.best_epoch == 2  # epoch of the best objective (accuracy)
    assert top.val_accuracy_at_best == pytest.approx(0.8)


def test_unscored_trials_listed_after_ranked(
    make_study: Callable[..., optuna.Study], add_trial: AddTrial, thaw_params: Params
) -> None:
    study = make_study()
    add_trial(study, state=TrialState.PRUNED, params=thaw_params(1, 1e-4))  # no data at all
    add_trial(study, state=TrialState.FAIL, params=thaw_params(2, 1e-4))
    add_trial(study, state=TrialState.COMPLETE, params=thaw_params(3, 1e-4), val_loss=[0.5])
    ranking = get_ranking_info(study)
    assert [(r.rank, r.number) for r in ranking.rows] == [(1, 2), (None, 0), (None, 1)]


def test_empty_study(make_study: Callable[..., optuna.Study]) -> None:
    ranking = get_ranking_info(make_study(attrs=False))
    assert ranking.rows == ()
    assert ranking.best_complete is None
    assert ranking.n_trials == 0
    assert ranking.objective_metric == "val_loss"


def test_malformed_attrs_do_not_crash(make_study: Callable[..., optuna.Study]) -> None:
    study = make_study()
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.COMPLETE,
            value=0.5,
            params={"learning_rate": 1e-3},
            distributions={"learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-1)},
            intermediate_values={1: 0.7, 2: 0.5},
            user_attrs={
                "history": "not a dict",
                "best_val_loss": "0.1",  # wrong type: ignored, falls back
                "best_epoch": 99,  # out of range for any history
                "epochs_run": 2.0,
                "verdicts": ["climbing", {"no_verdict_key": 1}, {"verdict": None}],
                "strategy": "",
            },
        )
    )
    (row,) = get_ranking_info(study).rows
    assert row.best_val_loss == pytest.approx(0.5)  # min intermediate value
    assert row.best_epoch == 99
    assert row.val_accuracy_at_best is None
    assert row.epochs_run == 2
    assert row.verdicts == ("climbing",)
    assert row.strategy is None
    assert row.params == {"learning_rate": 1e-3}
