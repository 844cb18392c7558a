"""summary.json schema 2: every report validates against reports/summary.schema.json, and the
values are typed data (numbers as numbers, objects as objects, stable snake_case keys)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from thaw.reports import get_report_info, get_summary_dict, summary_schema, write_report

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is a dev dependency")

AddTrial = Callable[..., optuna.trial.FrozenTrial]
Params = Callable[..., dict[str, Any]]


def _validate(summary: dict[str, Any]) -> None:
    schema = summary_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(summary)


def _written(study: optuna.Study, out: Path, **kwargs: Any) -> dict[str, Any]:
    files = write_report(study, out, **kwargs)
    summary: dict[str, Any] = json.loads(files.summary_json.read_text(encoding="utf-8"))
    return summary


def test_schema_file_ships_with_the_package() -> None:
    import importlib.resources

    text = importlib.resources.files("thaw.reports").joinpath("summary.schema.json").read_text()
    assert json.loads(text)["properties"]["schema"] == {"const": "thaw-report/2"}


def test_full_report_validates_and_is_typed(thaw_study: optuna.Study, tmp_path: Path) -> None:
    summary = _written(thaw_study, tmp_path / "r", storage_url_masked="sqlite:///x.db")
    _validate(summary)
    assert summary["schema"] == "thaw-report/2"
    assert "best_overall" not in summary and "best_searched" not in summary
    best = summary["best"]
    assert best["number"] == 3 and best["params"]["learning_rate"] == pytest.approx(3e-4)
    manifest = summary["manifest"]
    assert manifest["seed"] == 1234  # a number, not "1234"
    assert manifest["sampler"] == {"name": "TPESampler", "n_startup_trials": 5}
    assert manifest["train_counts"] == [500, 600, 520]
    assert all(key == key.lower() and " " not in key for key in manifest["versions"])
    rows = {row["number"]: row for row in summary["ranking"]}
    assert rows[4]["prune"]["reason"] == "climbing" and rows[4]["params"]["unfrozen_layers"] == 100
    assert rows[3]["prune"] is None
    # Every ranked trial carries its verdicts with evidence (stored or computed).
    with_evidence = [v for row in summary["ranking"] for v in row["verdicts"] if v["evidence"]]
    assert with_evidence
    strategies = {s["strategy"]: s for s in summary["strategies"]}
    full = strategies["full fine-tuning"]
    assert full["loss_ratio"] == pytest.approx(full["best_val_loss"] / best["best_val_loss"])
    assert full["accuracy_difference"] == pytest.approx(
        best["val_accuracy_at_best"] - full["val_accuracy_at_best"]
    )
    climb = summary["findings"]["climb"]
    assert climb["n_climbed"] == 2 and climb["climbed_trials"] == [0, 4]
    assert climb["findings"][0]["param"] == "unfrozen_layers"
    assert isinstance(summary["findings"]["levers"], list)


def test_report_without_diagnosis_validates(thaw_study: optuna.Study, tmp_path: Path) -> None:
    summary = _written(thaw_study, tmp_path / "r", diagnose=False)
    _validate(summary)
    assert summary["diagnosis"] is None
    assert summary["findings"]["climb"] is None and summary["findings"]["domain_shift"] is None


def test_empty_and_bare_studies_validate(
    make_study: Callable[..., optuna.Study], tmp_path: Path
) -> None:
    _validate(_written(make_study(), tmp_path / "empty"))
    summary = _written(make_study(attrs=False), tmp_path / "bare")
    _validate(summary)
    assert summary["best"] is None and summary["manifest"]["versions"] is None


def test_pruned_better_and_maximize_validate(
    make_study: Callable[..., optuna.Study],
    add_trial: AddTrial,
    thaw_params: Params,
    tmp_path: Path,
) -> None:
    study = make_study()
    add_trial(study, state=TrialState.COMPLETE, params=thaw_params(5, 1e-4), val_loss=[0.6, 0.5])
    add_trial(
        study,
        state=TrialState.PRUNED,
        params=thaw_params(50, 1e-3),
        val_loss=[0.5, 0.3, 0.4, 0.6],
        user_attrs={"prune_reason": "climbing", "prune_epoch": 4},
    )
    add_trial(study, state=TrialState.FAIL, params=thaw_params(1, 1e-2), user_attrs={})
    summary = _written(study, tmp_path / "r")
    _validate(summary)
    assert summary["best"]["number"] == 0 and summary["better_pruned_trial"] == 1


def test_levers_are_data(
    make_study: Callable[..., optuna.Study],
    add_trial: AddTrial,
    thaw_params: Params,
) -> None:
    """Every adapt trial beats every frozen trial: the lever is found, with its numbers."""
    study = make_study()
    for i, (mode, loss) in enumerate(
        [
            ("adapt", 0.2),
            ("adapt", 0.25),
            ("frozen", 0.6),
            ("adapt", 0.3),
            ("frozen", 0.7),
            ("frozen", 0.65),
            ("train", 0.9),
            ("adapt", 0.22),
        ]
    ):
        add_trial(
            study,
            state=TrialState.COMPLETE,
            params=thaw_params(2 + i, 1e-3 * (1 + i % 3), batchnorm=mode),
            val_loss=[loss + 0.1, loss],
        )
    summary = get_summary_dict(get_report_info(study))
    _validate(summary)
    lever = next(f for f in summary["findings"]["levers"] if f["param"] == "batchnorm")
    assert lever["level"] == "adapt" and lever["n_top"] == lever["top_k"]
    assert lever["best_outside"] == pytest.approx(0.6)
    assert lever["ratio"] == pytest.approx(0.6 / 0.2)
    assert lever["matched_pairs_won"] == lever["matched_pairs"] == 4
    levels = {lv["level"]: lv for lv in lever["levels"]}
    assert levels["frozen"]["best"] == pytest.approx(0.6) and levels["frozen"]["n_trials"] == 3
    assert "frozen BatchNorm never gets below 0.6" in lever["sentence"]
