"""The anytime curve: best so far against cumulative epochs, in the report data and render."""

from __future__ import annotations

from collections.abc import Callable

import optuna
from optuna.trial import TrialState

from thaw.reports import get_report_info
from thaw.reports._render import render_html, render_markdown


def test_anytime_curve_counts_pruned_epochs_and_the_budget(
    make_study: Callable[..., optuna.Study],
    add_trial: Callable[..., optuna.trial.FrozenTrial],
    thaw_params: Callable[..., dict],
) -> None:
    study = make_study("anytime")
    study.set_user_attr("thaw:budget_epochs", 12)
    add_trial(
        study,
        state=TrialState.COMPLETE,
        params=thaw_params(1, 1e-3),
        val_loss=[0.9, 0.7, 0.8, 0.75],
    )
    add_trial(study, state=TrialState.PRUNED, params=thaw_params(2, 1e-3), val_loss=[1.2, 1.1])
    add_trial(
        study,
        state=TrialState.COMPLETE,
        params=thaw_params(0, 1e-3),
        val_loss=[0.6, 0.5, 0.4, 0.45],
    )
    info = get_report_info(study, diagnose=False)
    anytime = info.anytime
    assert anytime is not None and anytime.budget_epochs == 12
    curve = anytime.efficiency.curves[0]
    assert curve.points == ((4, 0.7), (6, 0.7), (10, 0.4))
    assert anytime.epochs_spent == 10 and anytime.best_at_half == 0.7
    md = render_markdown(info)
    assert "## Best so far against epochs spent" in md
    assert "10 training epochs spent of a budget of 12" in md
    assert "| 10 |" in md.replace("  ", " ") or "10 |" in md
    html = render_html(info)
    assert "Best so far against epochs spent" in html and "<polyline" in html
