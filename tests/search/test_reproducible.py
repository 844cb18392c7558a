"""Running the same study twice with the same seed on CPU, one worker, gives the same values."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from thaw.search._cli import main

STUDY = {
    "name": "repro",
    "seed": 3,
    "n_trials": 5,
    "model": {"source": "demo"},
    "data": {"source": "demo"},
    "search_space": {
        "unfrozen_layers": {"low": 0, "high": "all"},
        "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
    },
    "train": {"epochs": 3, "batch_size": 16},
    "sampler": {"name": "tpe", "n_startup_trials": 2},
    "pruner": {"compare": "median", "n_startup_trials": 2, "n_warmup_steps": 1},
    "reference_trials": True,
}


def run_once(folder: Path) -> optuna.Study:
    folder.mkdir()
    study_file = folder / "repro.yaml"
    study_file.write_text(yaml.safe_dump(STUDY))
    assert main(["run", str(study_file), "--no-progress"]) == 0
    return optuna.load_study(study_name="repro", storage=f"sqlite:///{folder}/repro.db")


@pytest.mark.slow
def test_same_seed_same_values_and_ranking(demo_model_path: Path, tmp_path: Path) -> None:
    first = run_once(tmp_path / "a")
    second = run_once(tmp_path / "b")
    # Finished trials only: informed-start trials beyond n_trials wait for a resume.
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    a, b = first.get_trials(states=finished), second.get_trials(states=finished)
    assert len(a) == len(b) == STUDY["n_trials"]
    for ta, tb in zip(a, b, strict=True):
        assert ta.params == tb.params
        assert ta.state == tb.state
        assert sorted(ta.intermediate_values) == sorted(tb.intermediate_values)
        for step, value in ta.intermediate_values.items():
            assert value == pytest.approx(tb.intermediate_values[step], abs=1e-6)
    determinism = first.user_attrs["thaw:determinism"]
    assert determinism["deterministic"] is True
    assert "one worker" in determinism["reason"]
