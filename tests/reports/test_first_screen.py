"""The Answer section: what to use, how much better than each textbook strategy (a ratio of
validation loss and an accuracy difference), why, the domain shift in words, one chart, in
about a dozen lines, the same in Markdown and HTML."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from thaw.reports import get_report_info, render_html, render_markdown

AddTrial = Callable[..., optuna.trial.FrozenTrial]
Params = Callable[..., dict[str, Any]]

# (batchnorm, best val loss, val accuracy at the best epoch, strategy)
TRIALS = [
    ("frozen", 0.60, 0.75, "full fine-tuning"),
    ("frozen", 0.58, 0.78, "partial fine-tuning"),
    ("frozen", 0.70, 0.70, "feature extraction"),
    ("adapt", 0.20, 0.95, None),
    ("adapt", 0.24, 0.93, None),
    ("frozen", 0.57, 0.79, None),
    ("adapt", 0.22, 0.94, None),
    ("train", 0.80, 0.66, None),
    ("frozen", 0.65, 0.72, None),
    ("adapt", 0.30, 0.90, None),
]


@pytest.fixture
def bn_study(
    make_study: Callable[..., optuna.Study], add_trial: AddTrial, thaw_params: Params
) -> optuna.Study:
    """BatchNorm adapt decides everything; frozen BatchNorm never gets below 0.57."""
    study = make_study()
    study.set_user_attr("thaw:domain_shift", {"overall": 0.59, "layers": {"block4_bn": 0.8}})
    for i, (mode, loss, acc, strategy) in enumerate(TRIALS):
        add_trial(
            study,
            state=TrialState.COMPLETE,
            params=thaw_params(1 + i % 4, 1e-3 * (1 + i % 3), batchnorm=mode),
            val_loss=[loss + 0.2, loss + 0.05, loss],
            val_accuracy=[acc - 0.1, acc - 0.05, acc],
            user_attrs={"strategy": strategy} if strategy else {},
        )
    return study


def _answer_md(md: str) -> str:
    return md.split("## Answer", 1)[1].split("\n## ", 1)[0]


def test_first_screen_answers_what_how_much_and_why(bn_study: optuna.Study) -> None:
    md = _answer_md(render_markdown(get_report_info(bn_study)))
    lines = [ln for ln in md.splitlines() if ln.strip()]
    assert len(lines) <= 14, lines
    assert lines[0].startswith("**Use trial 3: unfrozen_layers 4 of 154,")
    assert md.count("batchnorm adapt") == 2  # the configuration once, its gloss once
    assert "batchnorm adapt: BatchNorm statistics re-estimated on your data (adapt)" in md
    # Ratio of validation loss and accuracy difference against every textbook strategy.
    assert (
        "Against full fine-tuning (every layer trains, learning rate 1e-3; trial 0): 3.0x lower "
        "validation loss (0.2 against 0.6), accuracy +0.20 (0.95 against 0.75)."
    ) in md
    assert "Against partial fine-tuning" in md and "Against feature extraction" in md
    # Why: the lever, found by comparing levels, with the plain-words gloss at first use.
    assert (
        "BatchNorm statistics re-estimated on your data (adapt) makes the difference: the 3 "
        "best trials all use it; frozen BatchNorm never gets below 0.57, trained BatchNorm "
        "never gets below 0.8 (2.8x the best)"
    ) in md
    assert "Domain shift: 0.59, high. To the pretrained model, your images differ clearly" in md


def test_html_first_screen_matches_markdown_and_has_the_chart(bn_study: optuna.Study) -> None:
    info = get_report_info(bn_study)
    html = render_html(info)
    answer = html.split('<section class="answer" id="answer">', 1)[1].split("</section>", 1)[0]
    assert '<p id="best-configuration" class="lead">Use trial 3:' in answer
    assert answer.count('<svg class="chart"') == 1
    chart = answer.split('<figure id="answer-chart">', 1)[1]
    # The best trial against the three strategy trials, validation loss only.
    assert chart.count('<g class="series"') == 4
    assert "#3" in chart and "#0 full fine-tuning" in chart
    for item in re.findall(r"<li>(.*?)</li>", answer):
        assert item.replace("&gt;", ">") in render_markdown(info).replace("\\>", ">")


def test_untrusted_values_are_escaped_on_the_first_screen(
    make_study: Callable[..., optuna.Study], add_trial: AddTrial, thaw_params: Params
) -> None:
    study = make_study()
    evil = "<img src=x onerror=alert(1)>"
    for i in range(5):
        add_trial(
            study,
            state=TrialState.COMPLETE,
            params=thaw_params(1 + i, 1e-3 * (1 + i)),
            val_loss=[0.5, 0.2 + 0.1 * i],
            user_attrs={"strategy": evil} if i == 2 else {},
        )
    study.set_user_attr("thaw:domain_shift", {"overall": 0.3, "layers": {evil: 0.9}})
    info = get_report_info(study)
    html = render_html(info)
    answer = html.split('<section class="answer" id="answer">', 1)[1].split("</section>", 1)[0]
    assert "&lt;img src=x onerror=alert(1)&gt;" in answer  # strategy name and layer name
    assert evil not in html
    assert evil not in render_markdown(info)
