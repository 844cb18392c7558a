"""The report's learning-rate range test section: what the test found, drawn and tabled."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState

from thaw._keys import RANGE_TEST
from thaw.reports import get_report_info, render_html, render_markdown
from thaw.reports._charts import get_range_test_info
from thaw.reports._svg import render_range_test_svg

RATES = [1e-6 * (10 ** (6 * i / 19)) for i in range(20)]
FALLING = [2.0 - 0.05 * i for i in range(15)] + [1.4, 1.6, 2.5, 5.0, None]


def stored(suggestion: float | None, window: list[float] | None) -> dict[str, Any]:
    return {
        "modes": {
            "frozen": {
                "batchnorm": "frozen",
                "learning_rates": RATES,
                "losses": FALLING,
                "suggestion": suggestion,
                "diverged": suggestion is None,
                "epochs": 1.5,
                "reason": "a tenth of the rate at the minimum <b>",
            }
        },
        "epochs": 1.5,
        "window": window,
    }


def test_the_range_test_is_read_drawn_and_escaped(
    make_study: Callable[..., optuna.Study], add_trial: Any, thaw_params: Any
) -> None:
    study = make_study(study_name="rt")
    study.set_user_attr(RANGE_TEST, stored(2.5e-4, [1e-5, 7.5e-3]))
    add_trial(study, state=TrialState.COMPLETE, params=thaw_params(2, 1e-3), val_loss=[0.9, 0.5])
    info = get_range_test_info(study.user_attrs)
    assert info is not None and info.window == (1e-5, 7.5e-3)
    (curve,) = info.curves
    assert curve.suggestion == 2.5e-4 and curve.losses[-1] is None  # non-finite: a gap
    svg = render_range_test_svg(info)
    ET.fromstring(svg)  # well-formed
    assert "BatchNorm frozen: suggests" in svg
    markdown = render_markdown(get_report_info(study))
    section = markdown.split("## Learning-rate range test", 1)[1].split("## ", 1)[0]
    assert "1 of 1 modes found a rate, and the sampler searched 1e-05 to 0.0075" in section
    assert "| frozen" in section and "0.00025" in section
    html = render_html(get_report_info(study))
    assert "a tenth of the rate at the minimum &lt;b&gt;" in html


def test_a_range_test_that_found_nothing_says_so(
    make_study: Callable[..., optuna.Study], add_trial: Any, thaw_params: Any
) -> None:
    study = make_study(study_name="rt-none")
    study.set_user_attr(RANGE_TEST, stored(None, None))
    add_trial(study, state=TrialState.COMPLETE, params=thaw_params(2, 1e-3), val_loss=[0.9, 0.5])
    markdown = render_markdown(get_report_info(study))
    assert "the loss diverged at every rate, and the sampler searched the configured range" in (
        markdown
    )


def test_no_range_test_no_section(
    make_study: Callable[..., optuna.Study], add_trial: Any, thaw_params: Any
) -> None:
    study = make_study(study_name="rt-off")
    add_trial(study, state=TrialState.COMPLETE, params=thaw_params(2, 1e-3), val_loss=[0.9, 0.5])
    assert "Learning-rate range test" not in render_markdown(get_report_info(study))
