"""The logged metrics (``metrics: [auc, f1]``) in the report: a column each in the ranking only
when some trial logged them, each trial's value at the epoch its objective chose, and no second
column for a metric the score column already shows (``objective: val_auc``)."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from thaw.reports import write_report
from thaw.reports._format import MISSING


def _html_ranking(page: str) -> tuple[list[str], list[list[str]]]:
    table = re.search(r'<table[^>]*id="ranking-table".*?</table>', page, re.S)
    assert table is not None
    header = [html.unescape(h).strip() for h in re.findall(r"<th[^>]*>(.*?)</th>", table.group(0))]
    rows = []
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table.group(0), re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        if cells:
            rows.append([html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in cells])
    return header, rows


def _md_ranking(text: str) -> tuple[list[str], list[list[str]]]:
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("| rank |"))
    header = [h.strip() for h in lines[at].strip("|").split("|")]
    rows = []
    for line in lines[at + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return header, rows


def test_a_study_without_metrics_shows_no_metric_column(
    thaw_study: optuna.Study, tmp_path: Path
) -> None:
    files = write_report(thaw_study, tmp_path / "r")
    summary = json.loads(files.summary_json.read_text(encoding="utf-8"))
    assert summary["metrics"] == []
    assert all(row["metrics_at_best"] == {} for row in summary["ranking"])
    for header, rows in (
        _html_ranking(files.html.read_text(encoding="utf-8")),
        _md_ranking(files.markdown.read_text(encoding="utf-8")),
    ):
        assert not {"val AUC", "val F1"} & set(header)
        # No column is empty: each has a value in some row.
        for i, name in enumerate(header):
            assert any(row[i] != MISSING for row in rows), f"column {name!r} is empty"


def _trial(
    study: optuna.Study, number: int, val_loss: list[float], auc: list[float], f1: list[float]
) -> None:
    best = max(range(len(auc)), key=auc.__getitem__)
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.COMPLETE,
            params={"learning_rate": 10.0 ** -(number + 2)},
            distributions={"learning_rate": FloatDistribution(1e-5, 1e-1, log=True)},
            value=auc[best],
            intermediate_values={i + 1: v for i, v in enumerate(auc)},
            user_attrs={
                "history": {
                    "loss": val_loss,
                    "val_loss": val_loss,
                    "accuracy": f1,
                    "val_accuracy": f1,
                    "val_auc": auc,
                    "val_f1": f1,
                },
                "best_epoch": best + 1,
                "epochs_run": len(auc),
            },
        )
    )


def test_objective_val_auc_reports_f1_at_the_best_auc_epoch_in_one_column(
    make_study: Callable[..., optuna.Study], tmp_path: Path
) -> None:
    study = make_study(direction="maximize")
    study.set_user_attr("thaw:objective_metric", "val_auc")
    # Trial 0's lowest val loss is at epoch 3, its best AUC at epoch 2: F1 is read at epoch 2.
    _trial(study, 0, [0.9, 0.8, 0.7], [0.61, 0.83, 0.72], [0.31, 0.52, 0.47])
    _trial(study, 1, [0.9, 0.95, 1.0], [0.66, 0.64, 0.6], [0.41, 0.38, 0.36])
    files = write_report(study, tmp_path / "r")
    summary = json.loads(files.summary_json.read_text(encoding="utf-8"))
    assert summary["metrics"] == ["val_auc", "val_f1"]
    rows = {row["number"]: row for row in summary["ranking"]}
    assert rows[0]["metrics_at_best"] == pytest.approx({"val_auc": 0.83, "val_f1": 0.52})
    assert rows[1]["metrics_at_best"] == pytest.approx({"val_auc": 0.66, "val_f1": 0.41})
    assert [row["number"] for row in summary["ranking"]] == [0, 1]

    header, html_rows = _html_ranking(files.html.read_text(encoding="utf-8"))
    assert "val AUC" not in header
    assert [r[header.index("best val_auc")] for r in html_rows] == ["0.83", "0.66"]
    assert [r[header.index("val F1")] for r in html_rows] == ["0.52", "0.41"]
    header, md_rows = _md_ranking(files.markdown.read_text(encoding="utf-8"))
    assert "val AUC" not in header
    assert [r[header.index("val F1")] for r in md_rows] == ["0.52", "0.41"]
