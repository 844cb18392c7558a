"""The diagnosis-driven parts of the study report: two-sentence diagnosis, computed
verdicts, parameter importances, domain shift, determinism, section order, masking."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from thaw.reports import (
    ReportFiles,
    diagnose_study,
    get_determinism_info,
    get_diagnosis_info,
    get_report_info,
    render_html,
    render_markdown,
    write_report,
)
from thaw.reports._format import mask_url

AddTrial = Callable[..., optuna.trial.FrozenTrial]
Params = Callable[..., dict[str, Any]]

SHIFT = {"overall": 0.42, "layers": {"block5_conv3": 0.61, "stem": 0.05, "block4_conv1": 0.3}}
DETERMINISM = {"deterministic": False, "reason": "GPU kernels and 2 workers"}


@pytest.fixture(scope="module")
def report(thaw_study: optuna.Study, tmp_path_factory: pytest.TempPathFactory) -> ReportFiles:
    return write_report(thaw_study, tmp_path_factory.mktemp("findings") / "out")


@pytest.fixture(scope="module")
def shifted_study(
    thaw_study: optuna.Study, tmp_path_factory: pytest.TempPathFactory
) -> optuna.Study:
    """The reference study copied, with a domain-shift score and a determinism record."""
    path = tmp_path_factory.mktemp("shifted") / "s.db"
    study = optuna.create_study(storage=f"sqlite:///{path}", study_name="shifted")
    for key, value in thaw_study.user_attrs.items():
        study.set_user_attr(key, value)
    study.set_user_attr("thaw:domain_shift", SHIFT)
    study.set_user_attr("thaw:determinism", DETERMINISM)
    study.add_trials(thaw_study.get_trials())
    return study


def _section(md: str, heading: str) -> str:
    return md.split(heading, 1)[1].split("\n## ", 1)[0]


def test_answer_states_the_diagnosis_in_two_sentences(
    thaw_study: optuna.Study, report: ReportFiles
) -> None:
    diagnosis = diagnose_study(thaw_study)
    info = get_diagnosis_info(thaw_study, diagnosis)
    first, second = info.sentences
    assert first.startswith("2 of 10 trials climbed") and first.endswith(".")
    assert "unfrozen layers" in first  # the most separating climb finding
    assert second.startswith("The best 2 of 7 completed trials")
    html = report.html.read_text(encoding="utf-8")
    assert '<p id="diagnosis-summary" class="summary">Diagnosis: 2 of 10 trials' in html
    md = report.markdown.read_text(encoding="utf-8")
    answer = _section(md, "## Answer")
    # The first screen gives the climb headline as one of its "why" lines ...
    assert "- 2 of 10 trials climbed" in answer
    assert answer.index("Against full fine-tuning") < answer.index("Why:")
    # ... and the full two-sentence diagnosis opens the next section.
    why = _section(md, "## Why: diagnosis")
    assert why.lstrip().startswith("Diagnosis: 2 of 10 trials climbed")


def test_report_shows_the_one_verdict_of_every_trial(
    thaw_study: optuna.Study, report: ReportFiles
) -> None:
    by_number = {t.number: t for t in diagnose_study(thaw_study).trials}
    frame = pd.read_csv(report.csv).set_index("number")
    # Stored verdicts (trials 3 and 4) were judged when the trial finished; the report shows
    # what the one verdict function says now, like every other view.
    for number in (0, 1, 2, 3, 4, 8, 10):
        expected = ", ".join(v.verdict for v in by_number[number].verdicts)
        assert frame.loc[number, "verdicts"] == expected, number
    assert pd.isna(frame.loc[7, "verdicts"])  # failed before its first epoch: no verdict
    md = report.markdown.read_text(encoding="utf-8")
    ranking = _section(md, "## Ranking")
    assert "Verdict mix (trials per verdict): " in ranking
    assert "8 trials stored no verdicts; thaw's diagnosis computed theirs (marked \\*)" in ranking
    assert "### Verdicts of the top trials and the textbook strategies" in ranking
    summary = json.loads(report.summary_json.read_text(encoding="utf-8"))
    sources = {r["number"]: r["verdicts_source"] for r in summary["ranking"]}
    assert sources[3] == "stored" and sources[8] == "computed" and sources[7] == "none"
    verdicts = {r["number"]: r["verdicts"] for r in summary["ranking"]}
    for number, diagnosis in by_number.items():
        if diagnosis.verdicts and number in verdicts:
            stored = [v["verdict"] for v in verdicts[number]]  # schema 2: with their evidence
            assert stored == [v.verdict for v in diagnosis.verdicts], number


def test_importances_for_best_loss_and_climb(thaw_study: optuna.Study, report: ReportFiles) -> None:
    importances = diagnose_study(thaw_study).importances
    md = report.markdown.read_text(encoding="utf-8")
    params = _section(md, "## Why: diagnosis")
    block = params.split("### Parameter importances", 1)[1]
    assert "importance for best validation loss" in block
    assert "importance for climb (final minus best validation loss)" in block
    for name, share in importances.best_val_loss.items():
        assert re.search(rf"\| {name} +\| {100 * share:.0f}% ", block), name
    assert "### Where validation loss climbed" in params
    html = report.html.read_text(encoding="utf-8")
    assert 'id="importance-table"' in html
    assert html.count('<span class="bar"') == len(importances.best_val_loss)
    assert html.count('<span class="bar alt"') == len(importances.climb)


def test_section_order_follows_the_issue(report: ReportFiles) -> None:
    md = report.markdown.read_text(encoding="utf-8")
    markers = [
        "**Use trial 3:",
        "Against full fine-tuning",
        "\nWhy:\n",
        "Domain shift (how different",
        "## Why: diagnosis",
        "Diagnosis: ",
        "### Where validation loss climbed",
        "### Domain shift",
        "### Parameter importances",
        "## Ranking",
        "## Learning curves",
        "## Parameters against best validation loss",
        "## Pruning",
        "### Versions, settings and provenance",
        "| study name ",
    ]
    positions = [md.index(m) for m in markers]
    assert positions == sorted(positions)


def test_domain_shift_not_measured(report: ReportFiles) -> None:
    md = report.markdown.read_text(encoding="utf-8")
    shift = md.split("### Domain shift", 1)[1].split("###", 1)[0]
    assert "The domain shift was not measured: the study has no thaw:domain_shift attribute." in (
        shift
    )
    assert "Indirect evidence from the trials: Fine-tuning (trial #3" in shift


def test_domain_shift_and_determinism_shown(shifted_study: optuna.Study, tmp_path: Path) -> None:
    files = write_report(shifted_study, tmp_path / "out")
    md = files.markdown.read_text(encoding="utf-8")
    shift = md.split("### Domain shift", 1)[1].split("###", 1)[0]
    assert "Domain shift 0.42 (moderate)" in shift
    layers = re.findall(r"^\| (\w+) +\| (\d\.\d\d)", shift, flags=re.M)
    assert layers == [("block5_conv3", "0.61"), ("block4_conv1", "0.30"), ("stem", "0.05")]
    manifest = _section(md, "## Manifest")
    assert (
        "This run cannot be deterministic: rerunning it may give different numbers "
        "(GPU kernels and 2 workers)." in manifest
    )
    assert re.search(r"\| deterministic +\| no: GPU kernels and 2 workers +\|", manifest)
    html = files.html.read_text(encoding="utf-8")
    assert '<p id="determinism" class="note">This run cannot be deterministic' in html
    summary = json.loads(files.summary_json.read_text(encoding="utf-8"))
    assert summary["determinism"]["deterministic"] is False
    shift = summary["findings"]["domain_shift"]
    assert shift["overall"] == pytest.approx(0.42)
    assert {x["layer"]: x["score"] for x in shift["layers"]}["stem"] == pytest.approx(0.05)


@pytest.mark.parametrize(
    ("attr", "label", "start"),
    [
        (None, "not recorded", "Determinism was not recorded"),
        ({"deterministic": "yes"}, "not recorded", "Determinism was not recorded"),
        ({"deterministic": True}, "yes", "The run was deterministic"),
        ({"deterministic": False, "reason": "GPU"}, "no: GPU", "This run cannot be"),
    ],
)
def test_determinism_info(attr: Any, label: str, start: str) -> None:
    info = get_determinism_info({} if attr is None else {"thaw:determinism": attr})
    assert info.label == label
    assert info.sentence.startswith(start)


def test_determinism_not_recorded_is_said(report: ReportFiles) -> None:
    manifest = _section(report.markdown.read_text(encoding="utf-8"), "## Manifest")
    assert "Determinism was not recorded (no thaw:determinism attribute)" in manifest
    assert re.search(r"\| deterministic +\| not recorded +\|", manifest)


def test_render_twice_byte_identical_with_findings(
    shifted_study: optuna.Study, tmp_path: Path
) -> None:
    first = write_report(shifted_study, tmp_path / "a", "sqlite:///x.db")
    reloaded = optuna.load_study(study_name="shifted", storage=shifted_study._storage)
    second = write_report(reloaded, tmp_path / "b", "sqlite:///x.db")
    for a, b in [
        (first.markdown, second.markdown),
        (first.html, second.html),
        (first.csv, second.csv),
        (first.summary_json, second.summary_json),
    ]:
        assert a.read_bytes() == b.read_bytes(), a.name


def test_diagnose_false_leaves_the_findings_out(thaw_study: optuna.Study) -> None:
    info = get_report_info(thaw_study, diagnose=False)
    md = render_markdown(info)
    assert "Diagnosis:" not in md and "### Parameter importances" not in md
    assert "### Domain shift" not in md
    assert info.ranking.rows[1].verdicts == ()  # trial 8 stored none
    assert "diagnosis-summary" not in render_html(info)


def test_given_diagnosis_is_used(thaw_study: optuna.Study) -> None:
    diagnosis = diagnose_study(thaw_study)
    assert render_markdown(get_report_info(thaw_study, diagnose=diagnosis)) == render_markdown(
        get_report_info(thaw_study)
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://thaw:s3cret@db:5432/thaw", "postgresql://thaw:***@db:5432/thaw"),
        (
            "postgresql+psycopg2://u:p@h/d?sslmode=require",
            "postgresql+psycopg2://u:***@h/d?sslmode=require",
        ),
        ("postgresql://thaw:***@db/thaw", "postgresql://thaw:***@db/thaw"),
        ("sqlite:///studies/demo.db", "sqlite:///studies/demo.db"),
        ("mysql://user@host/db", "mysql://user@host/db"),
    ],
)
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_storage_password_never_written(thaw_study: optuna.Study, tmp_path: Path) -> None:
    files = write_report(thaw_study, tmp_path / "out", "postgresql://thaw:s3cret@db/thaw")
    for path in (files.markdown, files.html, files.csv, files.summary_json):
        assert "s3cret" not in path.read_text(encoding="utf-8"), path.name
    assert "postgresql://thaw:***@db/thaw" in files.markdown.read_text(encoding="utf-8")


def test_html_ids_for_readers_and_tests(report: ReportFiles) -> None:
    html = report.html.read_text(encoding="utf-8")
    for element_id in (
        "best-configuration",
        "best-result",
        "versus-strategies",
        "answer-why",
        "answer-chart",
        "domain-shift-words",
        "diagnosis-summary",
        "verdict-mix",
        "ranking-table",
        "verdict-details",
        "importance-table",
        "domain-shift",
        "determinism",
        "manifest-table",
    ):
        assert html.count(f'id="{element_id}"') == 1, element_id


def test_only_failed_trials_report_says_so(
    make_study: Callable[..., optuna.Study],
    add_trial: AddTrial,
    thaw_params: Params,
    tmp_path: Path,
) -> None:
    study = make_study()
    add_trial(
        study,
        state=TrialState.FAIL,
        params=thaw_params(6, 1e-4),
        user_attrs={"fail_reason": "OSError: disk full"},
    )
    files = write_report(study, tmp_path / "out")
    md = files.markdown.read_text(encoding="utf-8")
    assert "**No trial completed, so the study has no best configuration yet.**" in md
    assert "No completed trial with a val loss yet." in md
    assert "No importances yet" in md
    html = files.html.read_text(encoding="utf-8")
    assert "No trial completed" in html


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_diagnosis_helper_study_is_not_announced(thaw_study: optuna.Study) -> None:
    handler = _Records()
    root = logging.getLogger("optuna")
    level = optuna.logging.get_verbosity()
    root.addHandler(handler)
    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        get_report_info(thaw_study)
        optuna.create_study(study_name="visible")  # other in-memory studies still log
    finally:
        optuna.logging.set_verbosity(level)
        root.removeHandler(handler)
    assert not [m for m in handler.messages if "thaw-diagnosis" in m]
    assert "A new study created in memory with name: visible" in handler.messages
