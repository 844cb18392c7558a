"""``metrics: [auc, f1]`` from a real ``thaw run`` to what the user reads: the run's end summary,
the report's summary.json, HTML and Markdown ranking (each trial's metrics at the best epoch its
objective chose), and the progress bar, which names the running trial's epoch."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import yaml

from thaw.reports._format import fmt_num

pytestmark = pytest.mark.slow

EPOCHS = 3
WARMUP = 1


@dataclass(frozen=True)
class Ran:
    folder: Path
    study: optuna.Study
    out: str
    err: str
    report: Path


@pytest.fixture(scope="module")
def ran(
    tmp_path_factory: pytest.TempPathFactory,
    thaw: Callable[..., Any],
    tiny_cnn: Callable[..., Any],
    tiny_arrays: Callable[..., dict[str, np.ndarray]],
) -> Ran:
    folder = tmp_path_factory.mktemp("metrics")
    tiny_cnn().save(folder / "tiny.keras")
    np.savez(folder / "data.npz", **tiny_arrays())
    study_file = folder / "m.yaml"
    study_file.write_text(
        yaml.safe_dump(
            {
                "name": "m",
                "n_trials": 2,
                "metrics": ["auc", "f1"],
                "reference_trials": False,
                "lr_range_test": False,
                "model": {"source": "file", "path": "tiny.keras"},
                "data": {"source": "npz", "path": "data.npz"},
                "train": {"epochs": EPOCHS, "batch_size": 8, "warmup_epochs": WARMUP},
                "sampler": {"name": "random"},
                "pruner": {"compare": "median"},
            }
        )
    )
    run = thaw("run", study_file)  # with its progress bar
    assert run.rc == 0, run.err
    report = folder / "report"
    assert thaw("report", study_file, "--out", report).rc == 0
    study = optuna.load_study(study_name="m", storage=f"sqlite:///{folder / 'm.db'}")
    return Ran(folder, study, run.out, run.err, report)


def _finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return [t for t in study.trials if t.state in states]


def _at_best(trial: optuna.trial.FrozenTrial) -> dict[str, float | None]:
    """What storage holds: each metric's history at the epoch of the lowest val loss."""
    history = trial.user_attrs["history"]
    losses = history["val_loss"]
    best = min(range(len(losses)), key=lambda i: (losses[i] is None, losses[i] or 0.0))
    return {m: history[m][best] for m in ("val_auc", "val_f1")}


def test_summary_json_gives_each_metric_at_the_best_epoch(ran: Ran) -> None:
    summary = json.loads((ran.report / "summary.json").read_text(encoding="utf-8"))
    assert summary["metrics"] == ["val_auc", "val_f1"]
    rows = {row["number"]: row for row in summary["ranking"]}
    trials = _finished(ran.study)
    assert trials and set(rows) == {t.number for t in trials}
    for trial in trials:
        expected = _at_best(trial)
        assert all(v is not None and 0.0 <= v <= 1.0 for v in expected.values())
        assert rows[trial.number]["metrics_at_best"] == pytest.approx(expected)
        assert rows[trial.number]["best_epoch"] == trial.user_attrs["best_epoch"]
    assert summary["best"]["metrics_at_best"] == rows[summary["best"]["number"]]["metrics_at_best"]


def _table_rows(page: str, table_id: str) -> list[list[str]]:
    table = re.search(rf'<table[^>]*id="{table_id}".*?</table>', page, re.S)
    assert table is not None, f"no table {table_id}"
    header = re.findall(r"<th[^>]*>(.*?)</th>", table.group(0), re.S)
    body = re.findall(r"<tr[^>]*>(.*?)</tr>", table.group(0), re.S)
    cells = [
        [
            html.unescape(re.sub(r"<[^>]+>", "", c)).strip()
            for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)
        ]
        for r in body
    ]
    return [[html.unescape(h).strip() for h in header], *[c for c in cells if c]]


def test_the_html_ranking_shows_each_metric_at_the_best_epoch(ran: Ran) -> None:
    page = (ran.report / "report.html").read_text(encoding="utf-8")
    header, *rows = _table_rows(page, "ranking-table")
    auc, f1 = header.index("val AUC"), header.index("val F1")
    by_number = {int(r[1].split()[0].rstrip(",")): r for r in rows}
    for trial in _finished(ran.study):
        expected = _at_best(trial)
        assert by_number[trial.number][auc] == fmt_num(expected["val_auc"])
        assert by_number[trial.number][f1] == fmt_num(expected["val_f1"])


def test_the_markdown_ranking_and_the_answer_show_the_metrics(ran: Ran) -> None:
    text = (ran.report / "report.md").read_text(encoding="utf-8")
    header_line = next(line for line in text.splitlines() if line.startswith("| rank |"))
    header = [h.strip() for h in header_line.strip("|").split("|")]
    auc, f1 = header.index("val AUC"), header.index("val F1")
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("|") and len(cells) == len(header) and cells[1].isdigit():
            rows[int(cells[1])] = cells
    summary = json.loads((ran.report / "summary.json").read_text(encoding="utf-8"))
    best = summary["best"]
    for trial in _finished(ran.study):
        expected = _at_best(trial)
        assert rows[trial.number][auc] == fmt_num(expected["val_auc"])
        assert rows[trial.number][f1] == fmt_num(expected["val_f1"])
    at_best = best["metrics_at_best"]
    assert f"validation AUC {at_best['val_auc']:.3g}" in text
    assert f"validation F1 {at_best['val_f1']:.3g}" in text


def test_the_run_summary_gives_the_best_trials_metrics(ran: Ran) -> None:
    line = next(x for x in ran.out.splitlines() if x.startswith("Best so far: trial "))
    number = int(line.split()[4].rstrip(","))
    trial = next(t for t in ran.study.trials if t.number == number)
    expected = _at_best(trial)
    assert f"val_auc {expected['val_auc']:.4f}, val_f1 {expected['val_f1']:.4f} (" in line


def test_the_bar_names_the_running_trial_and_its_epoch(ran: Ran) -> None:
    shown = ran.err.replace("\r", "\n")
    for trial in _finished(ran.study):
        n = trial.number
        assert f"trial {n} warm-up epoch 1/{WARMUP}:" in shown
        for epoch in range(WARMUP + 1, trial.user_attrs["epochs_run"] + 1):
            assert f"trial {n} epoch {epoch}/{EPOCHS}:" in shown
    # Once the last trial has ended, the bar counts it and names no running trial.
    final = shown.strip().splitlines()[-1]
    assert final.startswith("100%") and f"{len(_finished(ran.study))}/2" in final
