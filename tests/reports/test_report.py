from __future__ import annotations

import json
import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from thaw.reports import ReportFiles, get_report_info, render_html, render_markdown, write_report

AddTrial = Callable[..., optuna.trial.FrozenTrial]
Params = Callable[..., dict[str, Any]]
STORAGE_SHOWN = "postgresql://thaw:***@db/thaw"
RANKED_ORDER = [3, 8, 10, 1, 2, 4, 0, 9, 5, 6, 7]


class _Collector(HTMLParser):
    """Collects tags, attributes, and the cells of every table row, per section."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.section: str | None = None
        self.rows: dict[str, list[list[str]]] = {}
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))
        if tag == "section":
            self.section = dict(attrs).get("class")
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.setdefault(self.section or "", []).append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _parse(html: str) -> _Collector:
    collector = _Collector()
    collector.feed(html)
    collector.close()
    return collector


@pytest.fixture(scope="module")
def report(thaw_study: optuna.Study, tmp_path_factory: pytest.TempPathFactory) -> ReportFiles:
    return write_report(thaw_study, tmp_path_factory.mktemp("report") / "out", STORAGE_SHOWN)


def test_writes_four_files(report: ReportFiles) -> None:
    names = sorted(p.name for p in report.out_dir.iterdir())
    assert names == ["report.html", "report.md", "summary.json", "trials.csv"]
    assert report.markdown.name == "report.md" and report.summary_json.name == "summary.json"


def test_csv_columns_and_rows(report: ReportFiles) -> None:
    frame = pd.read_csv(report.csv)
    assert list(frame.columns) == [
        "rank",
        "number",
        "state",
        "params_unfrozen_layers",
        "params_learning_rate",
        "params_dropout",
        "params_weight_decay",
        "params_batchnorm",
        "objective_value",
        "best_val_loss",
        "val_accuracy_at_best",
        "best_epoch",
        "final_val_loss",
        "epochs_run",
        "prune_reason",
        "prune_epoch",
        "prune_detail",
        "fail_reason",
        "duration_s",
        "strategy",
        "warmup_epochs",
        "verdicts",
        "datetime_start",
        "datetime_complete",
    ]
    assert frame["number"].tolist() == RANKED_ORDER
    assert frame["rank"].iloc[:10].tolist() == list(range(1, 11))
    assert pd.isna(frame["rank"].iloc[10])
    best = frame.iloc[0]
    assert best["params_learning_rate"] == pytest.approx(3e-4)
    assert best["best_val_loss"] == pytest.approx(0.38)
    assert best["verdicts"] == "healthy"
    assert best["duration_s"] == pytest.approx(380.0)
    failed = frame.iloc[10]
    assert failed["state"] == "FAIL"
    assert failed["fail_reason"].startswith("ResourceExhaustedError: OOM")
    assert "\nTraceback follows" in failed["fail_reason"]  # full text, quoted
    pruned = frame.set_index("number").loc[4]
    assert (pruned["prune_reason"], pruned["prune_epoch"]) == ("climbing", 5)
    assert frame.set_index("number").loc[1, "strategy"] == "partial fine-tuning"


def test_html_ranking_rows_in_order(report: ReportFiles) -> None:
    parsed = _parse(report.html.read_text(encoding="utf-8"))
    header, *rows = parsed.rows["ranking"]
    # Few columns (fits 1280 px); parameters, epochs and evidence fold into "details".
    assert header == ["rank", "trial", "best val loss", "val acc", "verdict", "details"]
    numbers = [int(re.match(r"\d+", row[1]).group()) for row in rows]  # type: ignore[union-attr]
    assert numbers == RANKED_ORDER
    by_trial = {
        n: dict(zip(header, row, strict=True)) for n, row in zip(numbers, rows, strict=True)
    }
    assert by_trial[3]["rank"] == "1" and by_trial[3]["best val loss"] == "0.38"
    assert by_trial[4]["trial"] == "4, pruned at epoch 5 (climbing)"
    assert "pruned because" in by_trial[4]["details"] and "val loss rose" in by_trial[4]["details"]
    assert "learning_rate" in by_trial[3]["details"]
    assert by_trial[7]["rank"] == "-" and by_trial[7]["trial"] == "7, failed"
    assert by_trial[1]["trial"] == "1 partial fine-tuning"


def test_html_has_an_svg_per_chart(report: ReportFiles) -> None:
    html = report.html.read_text(encoding="utf-8")
    # the answer's chart + 1 learning-curves chart + 1 scatter per parameter (5 parameters)
    # + the anytime curve
    assert html.count("<svg") == html.count("</svg>") == 8
    assert html.count("<figure>") == 7 and html.count('<figure id="answer-chart">') == 1


def test_html_is_self_contained(report: ReportFiles) -> None:
    html = report.html.read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html
    assert "url(" not in html and "@import" not in html
    parsed = _parse(html)
    tags = {tag for tag, _ in parsed.tags}
    assert not tags & {"script", "img", "link", "iframe", "object", "embed", "image", "use"}
    for tag, attrs in parsed.tags:
        names = {name for name, _ in attrs}
        assert not names & {"src", "xlink:href"}, tag
        # Links only inside the page (the table of contents).
        assert all(value.startswith("#") for name, value in attrs if name == "href"), tag
        assert not any(name.startswith("on") for name in names), tag


def test_section_order(report: ReportFiles) -> None:
    md = report.markdown.read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", md, flags=re.M)
    assert headings == [
        "Answer",
        "Why: diagnosis",
        "Ranking",
        "Learning curves",
        "Parameters against best validation loss",
        "Pruning",
        "Best so far against epochs spent",
        "Manifest",
    ]
    html = report.html.read_text(encoding="utf-8")
    sections = re.findall(r'<section class="([a-z]+)" id="[a-z]+">', html)
    assert sections == [
        "answer",
        "why",
        "ranking",
        "curves",
        "params",
        "pruning",
        "anytime",
        "manifest",
    ]
    toc = re.findall(r'<a href="#([a-z]+)">', html)
    assert toc == sections
    assert (
        "Contents: [Answer](#answer) · [Why: diagnosis](#why-diagnosis)"
        in report.markdown.read_text(encoding="utf-8")
    )


def test_markdown_answer_and_numbers(report: ReportFiles) -> None:
    md = report.markdown.read_text(encoding="utf-8")
    answer = md.split("## Ranking")[0]
    assert (
        "**Use trial 3: unfrozen_layers 20 of 154, learning_rate 0.0003, dropout 0.3, "
        "weight_decay 0.0001. Its own verdict is healthy.**"
    ) in answer
    assert answer.count("learning_rate 0.0003") == 1  # the configuration is shown once
    assert "unfrozen_layers: layers with weights, counted from the top, that train" in answer
    # How much better, as a ratio of validation loss and as an accuracy difference.
    assert (
        "Against full fine-tuning (every layer trains, learning rate 1e-3; trial 0): 1.6x lower "
        "validation loss (0.38 against 0.6), accuracy +0.11 (0.86 against 0.75)."
    ) in answer
    assert "Against partial fine-tuning" in answer and "Against feature extraction" in answer
    assert "3 pruned (climbing 1, below_peers 1, diverged 1)" in answer
    assert "66 epochs" in md and "34 saved (34%)" in md
    assert f"`{STORAGE_SHOWN}`" in md
    assert not re.search(r"\d\.\d{5,}", md)  # short numbers only


def test_markdown_tables_are_aligned(report: ReportFiles) -> None:
    md = report.markdown.read_text(encoding="utf-8")
    tables: list[list[str]] = [[]]
    for line in md.splitlines():
        if line.startswith("|"):
            tables[-1].append(line)
        elif tables[-1]:
            tables.append([])
    tables = [t for t in tables if t]
    assert len(tables) >= 6
    for table in tables:
        assert len({len(line) for line in table}) == 1, table[0]
        cells = {len(re.split(r"(?<!\\)\|", line)) for line in table}
        assert len(cells) == 1, table[0]


def test_summary_json(report: ReportFiles) -> None:
    text = report.summary_json.read_text(encoding="utf-8")
    summary = json.loads(text)
    assert text == json.dumps(summary, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    assert summary["best"]["number"] == 3
    assert summary["best"]["params"]["learning_rate"] == pytest.approx(3e-4)
    assert summary["counts"] == {"COMPLETE": 7, "FAIL": 1, "PRUNED": 3, "RUNNING": 1}
    by_reason = summary["pruning"]["by_reason"]
    assert {k: v["n_trials"] for k, v in by_reason.items()} == {
        "below_peers": 1,
        "climbing": 1,
        "diverged": 1,
    }
    assert summary["pruning"]["epochs_saved"] == 34
    assert summary["manifest"]["storage_url"] == STORAGE_SHOWN
    assert [r["number"] for r in summary["ranking"]] == RANKED_ORDER
    # No NaN/Infinity values (a prune detail may say "loss is NaN" in words).
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-finite value {c} in JSON"))


def test_rerender_is_byte_identical(
    thaw_study: optuna.Study, report: ReportFiles, tmp_path: Path
) -> None:
    # A fresh handle on the same storage, rendered into another directory.
    storage = thaw_study._storage
    reloaded = optuna.load_study(study_name=thaw_study.study_name, storage=storage)
    again = write_report(reloaded, tmp_path / "again", STORAGE_SHOWN)
    for first, second in [
        (report.markdown, again.markdown),
        (report.html, again.html),
        (report.csv, again.csv),
        (report.summary_json, again.summary_json),
    ]:
        assert first.read_bytes() == second.read_bytes(), first.name
    # Writing over an existing report is fine and gives the same bytes.
    third = write_report(reloaded, tmp_path / "again", STORAGE_SHOWN)
    assert third.html.read_bytes() == report.html.read_bytes()


def test_untrusted_text_is_escaped(
    make_study: Callable[..., optuna.Study],
    add_trial: AddTrial,
    thaw_params: Params,
    tmp_path: Path,
) -> None:
    study = make_study(study_name="<script>alert(1)</script>")
    study.set_user_attr(
        "thaw:data",
        {"fingerprint": "f|p", "class_names": ["cat", "</td><script>alert(3)</script>"]},
    )
    add_trial(
        study,
        state=TrialState.COMPLETE,
        params=thaw_params(3, 1e-4),
        val_loss=[0.6, 0.5],
        user_attrs={
            "strategy": "<b onmouseover=alert(4)>full</b>",
            "verdicts": [{"verdict": "<svg onload=alert(5)>"}],
        },
    )
    add_trial(
        study,
        state=TrialState.FAIL,
        params=thaw_params(4, 1e-4),
        user_attrs={"fail_reason": "ValueError: <img src=x onerror=alert(2)> | bad\nline two"},
    )
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.COMPLETE,
            value=0.7,
            params={"head": "<i>x</i>|y", "learning_rate": 1e-3},
            distributions={
                "head": CategoricalDistribution(["<i>x</i>|y", "plain"]),
                "learning_rate": FloatDistribution(1e-5, 1e-2, log=True),
            },
            user_attrs={"best_val_loss": 0.7},
        )
    )
    files = write_report(study, tmp_path / "out", "sqlite:///<evil>.db")
    html = files.html.read_text(encoding="utf-8")

    for raw in (
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(2)>",
        "</td><script>alert(3)</script>",
        "<b onmouseover=alert(4)>",
        "<svg onload=alert(5)>",
        "<i>x</i>",
        "<evil>",
    ):
        assert raw not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html
    # The stored verdict name is replaced by the diagnosis' verdict (one verdict everywhere).
    assert "&lt;i&gt;x&lt;/i&gt;|y" in html
    parsed = _parse(html)
    assert "script" not in {tag for tag, _ in parsed.tags}
    assert "img" not in {tag for tag, _ in parsed.tags}
    for _, attrs in parsed.tags:
        assert not any(name.startswith("on") for name, _ in attrs)

    md = files.markdown.read_text(encoding="utf-8")
    assert md.startswith("# thaw report: \\<script\\>alert(1)\\</script\\>\n")
    assert "ValueError: \\<img src=x onerror=alert(2)\\> \\| ba..." in md  # cut to 48
    assert "\\<i\\>x\\</i\\>\\|y" in md
    assert "<img" not in md.replace("\\<img", "")
    # Every row of the ranking table still has the same number of cells.
    ranking_lines = [ln for ln in md.split("## Ranking")[1].split("##")[0].splitlines()]
    table = [ln for ln in ranking_lines if ln.startswith("|")]
    assert len({len(re.split(r"(?<!\\)\|", ln)) for ln in table}) == 1


def test_empty_study_still_renders(make_study: Callable[..., optuna.Study], tmp_path: Path) -> None:
    files = write_report(make_study(attrs=False), tmp_path / "empty")
    md = files.markdown.read_text(encoding="utf-8")
    html = files.html.read_text(encoding="utf-8")
    assert "The study has no trials yet" in md
    assert "The study has no trials yet" in html
    assert "No finished trials to rank." in md
    assert "No learning curves were recorded." in html
    assert "<svg" not in html
    summary = json.loads(files.summary_json.read_text(encoding="utf-8"))
    assert summary["best"] is None and summary["n_trials"] == 0
    assert pd.read_csv(files.csv).empty


def test_no_completed_trials_says_so(
    make_study: Callable[..., optuna.Study],
    add_trial: AddTrial,
    thaw_params: Params,
    tmp_path: Path,
) -> None:
    study = make_study()
    add_trial(
        study,
        state=TrialState.PRUNED,
        params=thaw_params(5, 1e-2),
        val_loss=[0.9, 1.4],
        user_attrs={"prune_reason": "climbing", "prune_epoch": 2},
    )
    add_trial(
        study,
        state=TrialState.FAIL,
        params=thaw_params(6, 1e-4),
        user_attrs={"fail_reason": "OSError: disk full"},
    )
    files = write_report(study, tmp_path / "out")
    md = files.markdown.read_text(encoding="utf-8")
    assert "**No trial completed, so the study has no best configuration yet.**" in md
    assert "The best so far is pruned trial 0: best val loss 0.9, stopped at epoch 2" in md
    assert "OSError: disk full" in md
    summary = json.loads(files.summary_json.read_text(encoding="utf-8"))
    assert summary["best"] is None
    assert summary["better_pruned_trial"] == 0


def test_out_dir_is_a_file(thaw_study: optuna.Study, tmp_path: Path) -> None:
    target = tmp_path / "report"
    target.write_text("not a directory")
    with pytest.raises(ValueError, match=r"exists and is not a directory"):
        write_report(thaw_study, target)
    with pytest.raises(ValueError, match=r"a parent is not a directory"):
        write_report(thaw_study, target / "sub")
    assert target.read_text() == "not a directory"


def test_diagnosis_hook_goes_after_the_answer(thaw_study: optuna.Study, tmp_path: Path) -> None:
    files = write_report(
        thaw_study,
        tmp_path / "out",
        diagnosis_markdown="- **overfitting** in trial 4",
        diagnosis_html='<ul class="verdicts"><li>overfitting in trial 4</li></ul>',
    )
    md = files.markdown.read_text(encoding="utf-8")
    assert md.index("## Answer") < md.index("## Diagnosis") < md.index("## Ranking")
    assert "## Diagnosis\n\n- **overfitting** in trial 4\n" in md
    html = files.html.read_text(encoding="utf-8")
    assert html.index('class="answer"') < html.index('class="diagnosis"')
    assert html.index('class="diagnosis"') < html.index('class="ranking"')
    assert '<ul class="verdicts"><li>overfitting in trial 4</li></ul>' in html


def test_diagnosis_markdown_only_is_escaped_in_html(thaw_study: optuna.Study) -> None:
    info = get_report_info(thaw_study)
    html = render_html(info, diagnosis_markdown="x < y")
    assert "<pre>x &lt; y</pre>" in html
    assert "## Diagnosis" not in render_markdown(info)
    assert 'class="diagnosis"' not in render_html(info)


def test_maximize_study_report(
    make_study: Callable[..., optuna.Study],
    add_trial: AddTrial,
    thaw_params: Params,
    tmp_path: Path,
) -> None:
    study = make_study(direction="maximize")
    study.set_user_attr("thaw:objective_metric", "val_accuracy")
    add_trial(
        study,
        state=TrialState.COMPLETE,
        params=thaw_params(5, 1e-4),
        val_loss=[0.6, 0.5],
        val_accuracy=[0.7, 0.81],
    )
    add_trial(
        study,
        state=TrialState.COMPLETE,
        params=thaw_params(6, 1e-4),
        val_loss=[0.55, 0.45],
        val_accuracy=[0.7, 0.8],
        user_attrs={"strategy": "feature extraction"},
    )
    md = write_report(study, tmp_path / "out").markdown.read_text(encoding="utf-8")
    assert "**Use trial 0: unfrozen_layers 5" in md
    assert "best val_accuracy" in md.split("## Ranking")[1]
    assert "best val loss" in md.split("## Ranking")[1]
    # The objective first; the loss ratio says honestly that the strategy's loss was lower.
    assert (
        "Against feature extraction (the pretrained model stays frozen, only the new head "
        "trains; trial 1): best val_accuracy +0.01 (0.81 against 0.8), 1.1x higher validation "
        "loss (0.5 against 0.45), accuracy +0.01 (0.81 against 0.8)."
    ) in md
