from __future__ import annotations

import math
import re
from collections.abc import Callable

import optuna
import pytest
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.trial import TrialState

from thaw.reports import (
    CurvesInfo,
    ParamScatterInfo,
    get_curves_info,
    get_param_scatter_info,
    get_ranking_info,
    render_curves_svg,
    render_scatter_svg,
)
from thaw.reports._svg import OKABE_ITO, linear_ticks, log_ticks


@pytest.fixture(scope="module")
def curves(thaw_study: optuna.Study) -> CurvesInfo:
    return get_curves_info(thaw_study)


@pytest.fixture(scope="module")
def scatter(thaw_study: optuna.Study) -> ParamScatterInfo:
    return get_param_scatter_info(thaw_study)


def test_curves_top5_then_strategy_then_climbing_trials(curves: CurvesInfo) -> None:
    # Top 5 are trials 3, 8, 10, 1, 2 (1 and 2 are strategy trials); strategy trial 0 is
    # ranked 7th but is always shown, and so is trial 4, pruned because it climbed.
    assert [(s.number, s.role) for s in curves.series] == [
        (3, "top"),
        (8, "top"),
        (10, "top"),
        (1, "strategy"),
        (2, "strategy"),
        (0, "strategy"),
        (4, "climbing"),
    ]
    first = curves.series[0]
    assert first.epochs == tuple(range(1, 11))
    assert first.val_loss[6] == pytest.approx(0.38)
    assert first.best_epoch == 7
    assert first.train_loss[0] == pytest.approx(0.75 * 0.8)
    assert first.stopped_epoch is None
    assert curves.series[5].label == "#0 full fine-tuning"
    assert curves.x_label == "epoch"
    assert not curves.y_log
    assert curves.max_epoch == 10


def test_curves_mark_pruned_and_keep_nan_gaps(thaw_study: optuna.Study) -> None:
    info = get_curves_info(thaw_study, top_n=20)
    by_number = {s.number: s for s in info.series}
    assert set(by_number) == {0, 1, 2, 3, 4, 5, 6, 8, 9, 10}  # failed trial 7 has no curve
    assert (by_number[4].stopped_epoch, by_number[4].prune_reason) == (5, "climbing")
    assert (by_number[6].stopped_epoch, by_number[6].prune_reason) == (2, "diverged")
    assert by_number[6].val_loss == (2.0, None)
    assert by_number[9].val_loss == (0.9, 0.7, 0.65)  # from intermediate values
    assert by_number[9].train_loss == (None, None, None)
    assert not info.y_log  # 0.14 (train) .. 2.0 (diverged): linear is fine


def test_curves_switch_to_log_scale_for_exploding_loss(
    make_study: Callable[..., optuna.Study],
    add_trial: Callable[..., object],
    thaw_params: Callable[..., dict[str, object]],
) -> None:
    study = make_study()
    add_trial(study, state=TrialState.COMPLETE, params=thaw_params(1, 1e-4), val_loss=[0.5, 0.3])
    add_trial(
        study,
        state=TrialState.PRUNED,
        params=thaw_params(2, 1e-2),
        val_loss=[0.6, 40.0],
        user_attrs={"prune_reason": "diverged", "prune_epoch": 2},
    )
    info = get_curves_info(study)
    assert info.y_log
    assert info.y_label == "loss (lower is better, log scale)"
    svg = render_curves_svg(info)
    assert "log scale" in svg


def test_scatter_axes(scatter: ParamScatterInfo) -> None:
    by_param = {s.param: s for s in scatter.scatters}
    assert list(by_param) == [
        "unfrozen_layers",
        "learning_rate",
        "dropout",
        "weight_decay",
        "batchnorm",
    ]
    assert by_param["learning_rate"].log_x and by_param["weight_decay"].log_x
    assert not by_param["dropout"].log_x and not by_param["unfrozen_layers"].log_x
    assert by_param["learning_rate"].x_label == "learning_rate (log scale)"
    assert by_param["unfrozen_layers"].x_label == "unfrozen_layers (layers)"
    assert by_param["batchnorm"].categories == ("adapt", "frozen")  # "train" only on FAIL
    assert scatter.y_label.startswith("best val loss")


def test_scatter_points(scatter: ParamScatterInfo) -> None:
    lr = next(s for s in scatter.scatters if s.param == "learning_rate")
    # Every COMPLETE and PRUNED trial with a val loss; failed trial 7 is left out.
    assert sorted(p.number for p in lr.points) == [0, 1, 2, 3, 4, 5, 6, 8, 9, 10]
    best = next(p for p in lr.points if p.rank == 1)
    assert (best.number, best.x, best.y, best.state) == (3, 3e-4, 0.38, "COMPLETE")
    assert {p.state for p in lr.points} == {"COMPLETE", "PRUNED"}
    bn = next(s for s in scatter.scatters if s.param == "batchnorm")
    assert sorted((p.number, p.x_text, p.x) for p in bn.points) == [
        (8, "adapt", 0.0),
        (9, "frozen", 1.0),
        (10, "adapt", 0.0),
    ]
    assert bn.n_skipped == 7
    assert bn.spearman is None
    assert lr.spearman is not None and -1.0 <= lr.spearman <= 1.0


def test_scatter_skips_non_positive_on_log_axis(make_study: Callable[..., optuna.Study]) -> None:
    # weight_decay is always drawn on a log axis, even when searched on a linear range
    # that includes 0: such trials cannot be placed and are counted as skipped.
    study = make_study()
    dists: dict[str, BaseDistribution] = {
        "weight_decay": FloatDistribution(0.0, 1e-2),
        "dropout": FloatDistribution(0.0, 0.5),
    }
    for number in range(3):
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.COMPLETE,
                value=0.5 + 0.1 * number,
                params={"weight_decay": 1e-4 * number, "dropout": 0.1 * number},
                distributions=dists,
                user_attrs={"best_val_loss": 0.5 + 0.1 * number},
            )
        )
    scatter = get_param_scatter_info(study)
    wd = next(s for s in scatter.scatters if s.param == "weight_decay")
    assert wd.log_x
    assert [p.number for p in wd.points] == [1, 2]
    assert wd.n_skipped == 1
    dropout = next(s for s in scatter.scatters if s.param == "dropout")
    assert not dropout.log_x
    assert dropout.spearman == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("lo", "hi", "integer", "expected"),
    [
        (0.38, 2.0, False, (0.0, 2.0, (0.0, 0.5, 1.0, 1.5, 2.0))),
        (0.0, 154.0, True, (0.0, 200.0, (0.0, 50.0, 100.0, 150.0, 200.0))),
        (1.0, 10.0, True, (0.0, 10.0, (0.0, 2.0, 4.0, 6.0, 8.0, 10.0))),
        (3.0, 3.0, True, (2.0, 4.0, (2.0, 3.0, 4.0))),
    ],
)
def test_linear_ticks(
    lo: float, hi: float, integer: bool, expected: tuple[float, float, tuple[float, ...]]
) -> None:
    assert linear_ticks(lo, hi, integer) == expected


def test_log_ticks_cover_data_in_decades() -> None:
    d_lo, d_hi, ticks = log_ticks(1.5e-5, 9e-3)
    assert d_lo < 1.5e-5 and d_hi > 9e-3
    assert ticks == (1e-4, 1e-3, 1e-2)
    assert all(d_lo <= t <= d_hi for t in ticks)
    # Within one decade: 1-2-5 (or 1..9) mantissas give at least 3 ticks.
    n_lo, n_hi, narrow = log_ticks(2e-4, 8e-4)
    assert len(narrow) >= 3
    assert all(n_lo <= t <= n_hi for t in narrow)
    assert narrow == tuple(sorted(narrow))
    assert all(math.isclose(float(f"{t:.1g}"), t) for t in narrow)  # round mantissas


def test_curves_svg(curves: CurvesInfo) -> None:
    svg = render_curves_svg(curves)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "<script" not in svg and "xmlns" not in svg
    assert svg.count("<polyline") == 2 * len(curves.series)  # val + train per trial
    assert ">epoch</text>" in svg and "loss (lower is better)" in svg
    for colour in OKABE_ITO[: len(curves.series)]:
        assert colour in svg
    assert "#1 partial fine-tuning" in svg
    # Coordinates rounded to 0.1 px: no long floats in the markup.
    assert not re.search(r"\d\.\d{2,}", svg)


def test_curves_svg_marks_pruned_stop(thaw_study: optuna.Study) -> None:
    info = get_curves_info(thaw_study, top_n=20)
    svg = render_curves_svg(info)
    assert "(pruned e5: climbing)" in svg
    assert "pruned at epoch 2 (diverged)" in svg


def test_scatter_svg_log_axis(scatter: ParamScatterInfo) -> None:
    lr = next(s for s in scatter.scatters if s.param == "learning_rate")
    svg = render_scatter_svg(lr, scatter.y_label, scatter.y_log)
    assert "learning_rate (log scale)" in svg
    assert ">0.0001</text>" in svg and ">0.001</text>" in svg
    assert svg.count("<circle") >= 7  # complete points (+ legend + rank-1 ring)
    assert svg.count("<path") >= 3  # pruned triangles


def test_empty_charts_render_nothing(make_study: Callable[..., optuna.Study]) -> None:
    study = make_study()
    ranking = get_ranking_info(study)
    assert render_curves_svg(get_curves_info(study, ranking)) == ""
    assert get_param_scatter_info(study, ranking).scatters == ()
