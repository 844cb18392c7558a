"""objective: val_auc / val_f1 with metrics: [auc, f1] — the study file, the chance levels the
pruners use, and a real study that logs both, is maximised on val_auc and reports both at the
best epoch."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml


def test_an_unknown_metric_is_refused_by_the_study_file(tmp_path: Path) -> None:
    from thaw.search import StudyFileError, load_study_file

    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"metrics": ["auc", "recall"]}))
    with pytest.raises(StudyFileError, match=r"metrics must be a list drawn from \['auc', 'f1'\]"):
        load_study_file(path)
    path.write_text(yaml.safe_dump({"objective": "val_recall"}))
    with pytest.raises(StudyFileError, match="objective is 'val_recall'; expected one of: "):
        load_study_file(path)


@pytest.mark.parametrize(("metric", "chance"), [("val_auc", 0.5), ("val_f1", 0.25)])
def test_the_chance_level_of_the_new_objectives(metric: str, chance: float) -> None:
    from thaw.search import chance_value

    assert chance_value(4, metric) == chance


@pytest.mark.slow
def test_a_study_maximises_val_auc_and_reports_auc_and_f1(
    tmp_path: Path,
    tiny_cnn: Callable[..., Any],
    tiny_arrays: Callable[..., dict[str, np.ndarray]],
    thaw: Callable[..., Any],
) -> None:
    import optuna

    tiny_cnn().save(tmp_path / "tiny.keras")
    np.savez(tmp_path / "data.npz", **tiny_arrays())
    study_file = tmp_path / "auc.yaml"
    study_file.write_text(
        yaml.safe_dump(
            {
                "name": "auc",
                "n_trials": 3,
                "objective": "val_auc",
                "metrics": ["f1"],
                "reference_trials": False,
                "lr_range_test": False,
                "model": {"source": "file", "path": "tiny.keras"},
                "data": {"source": "npz", "path": "data.npz"},
                "train": {"epochs": 3, "batch_size": 8},
                "sampler": {"name": "random"},
                "pruner": {"compare": "median"},
            }
        )
    )
    assert thaw("run", study_file, "--no-progress").rc == 0
    study = optuna.load_study(study_name="auc", storage=f"sqlite:///{tmp_path / 'auc.db'}")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert done
    for trial in done:
        history = trial.user_attrs["history"]
        assert len(history["val_auc"]) == len(history["val_f1"]) == len(history["val_loss"])
        assert trial.value == max(v for v in history["val_auc"] if v is not None)
        assert all(0.0 <= v <= 1.0 for v in history["val_f1"] if v is not None)
    out = tmp_path / "report"
    assert thaw("report", study_file, "--out", out).rc == 0
    with open(out / "trials.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    best = next(r for r in rows if r["rank"] == "1")
    assert float(best["val_auc_at_best"]) == pytest.approx(study.best_value)
    assert 0.0 <= float(best["val_f1_at_best"]) <= 1.0
    assert not math.isnan(float(best["objective_value"]))
