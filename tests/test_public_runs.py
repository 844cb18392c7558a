"""The public set of labelled runs (bench/public_runs.json) is well formed: every run names its
source, a known verdict as label, a confidence, a split fixed by its URL, and a history that
thaw's history parser accepts with the params and class count the source states."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pytest

from thaw.reports import VERDICTS
from thaw.reports.diagnosis import history_curves

PUBLIC = Path(__file__).resolve().parents[1] / "bench" / "public_runs.json"
PAYLOAD: dict[str, Any] = json.loads(PUBLIC.read_text(encoding="utf-8"))
RUNS: list[dict[str, Any]] = PAYLOAD["runs"]
SERIES = ("loss", "val_loss", "accuracy", "val_accuracy")


def test_ids_are_unique_and_both_halves_hold_firm_labels() -> None:
    ids = [r["id"] for r in RUNS]
    assert len(ids) == len(set(ids))
    for split in ("dev", "held_out"):
        firm = [
            r
            for r in RUNS
            if r["split"] == split and r["confidence"] == "high" and not r["ambiguous"]
        ]
        assert firm, f"no high-confidence, non-ambiguous run in {split}"


def test_expected_map_names_known_verdicts() -> None:
    for label, verdict in PAYLOAD["expected"].items():
        assert label in VERDICTS and verdict in VERDICTS


@pytest.mark.parametrize("run", RUNS, ids=[r["id"] for r in RUNS])
def test_run_is_well_formed(run: dict[str, Any]) -> None:
    assert run["url"].startswith("https://")
    for key in ("setup", "rationale"):
        assert isinstance(run[key], str) and run[key].strip()
    assert run["label"] in VERDICTS and run["label"] in PAYLOAD["expected"]
    assert run["confidence"] in ("high", "medium", "low")
    assert isinstance(run["ambiguous"], bool)
    # The split is fixed by the URL (parity of the first byte of its SHA-256), not chosen.
    byte = hashlib.sha256(run["url"].encode()).digest()[0]
    assert run["split"] == ("dev" if byte % 2 == 0 else "held_out")
    history = run["history"]
    assert set(history) <= set(SERIES) and {"loss", "val_loss"} <= set(history)
    lengths = {len(values) for values in history.values()}
    assert len(lengths) == 1 and lengths.pop() >= 2
    for values in history.values():
        assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


@pytest.mark.parametrize("run", RUNS, ids=[r["id"] for r in RUNS])
def test_history_parses_as_thaw_diagnose_history_reads_it(run: dict[str, Any]) -> None:
    data: dict[str, Any] = {"history": run["history"]}
    if "params" in run:
        data["params"] = run["params"]
    if "num_classes" in run:
        data["num_classes"] = run["num_classes"]
    curves, _ = history_curves(data)
    assert curves.epochs == len(run["history"]["val_loss"])
    assert curves.num_classes == run.get("num_classes")
