"""thaw as a library: only the public names of ``import thaw``, on a tiny model and data."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import yaml


def test_import_thaw_loads_neither_keras_nor_tensorflow() -> None:
    code = (
        "import sys, thaw\n"
        "assert callable(thaw.run) and callable(thaw.trials_frame)\n"
        "heavy = sorted(m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules)\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unknown_attribute_is_an_attribute_error() -> None:
    import thaw

    with pytest.raises(AttributeError, match="no attribute 'rn'"):
        thaw.rn  # noqa: B018


def test_public_names_and_subpackages_are_reachable_from_thaw() -> None:
    import thaw

    assert {"run", "report", "diagnose", "load_best", "trials_frame", "FineTuneObjective"} <= set(
        thaw.__all__
    )
    assert set(thaw.__all__) <= set(dir(thaw))
    assert thaw.reports.write_report is not None
    assert thaw.search.parse_study is not None


@pytest.fixture
def study_file(
    tmp_path: Path, tiny_cnn: Callable[..., Any], tiny_arrays: Callable[..., dict[str, Any]]
) -> Path:
    tiny_cnn().save(tmp_path / "tiny.keras")
    np.savez(tmp_path / "data.npz", **tiny_arrays())
    path = tmp_path / "tiny.yaml"
    study = {
        "name": "tiny",
        "n_trials": 4,
        "reference_trials": False,  # 4 sampled trials, no informed start left waiting
        "model": {"source": "file", "path": "tiny.keras", "cut_at": "features"},
        "data": {"source": "npz", "path": "data.npz", "class_names": ["a", "b", "c"]},
        "search_space": {"learning_rate": [1e-3, 3e-2]},
        "train": {"epochs": 3, "batch_size": 8},
        "sampler": {"name": "random"},
        "pruner": {"compare": "none"},
    }
    path.write_text(yaml.safe_dump(study))
    return path


@pytest.mark.slow
def test_public_api_end_to_end(study_file: Path, tmp_path: Path) -> None:
    import keras

    import thaw
    from thaw.objectives._release import custom_gradient_count

    entries = custom_gradient_count()
    study = thaw.run(study_file)
    assert isinstance(study, optuna.Study)
    assert len(study.trials) == 4
    # Each trial dropped the registry entries that keep its traced graphs alive (a bare fit
    # leaves them: tests/objectives/test_release.py).
    assert custom_gradient_count() == entries

    frame = thaw.trials_frame(study)
    assert len(frame) == 4
    assert {"rank", "number", "state", "params_learning_rate", "best_val_loss"} <= set(frame)
    assert list(frame["rank"].dropna()) == sorted(frame["rank"].dropna())

    diagnosis = thaw.diagnose(study)
    assert {d.number for d in diagnosis.trials} == {t.number for t in study.trials}
    verdicts = thaw.diagnose(study.trials[0].user_attrs["history"])
    assert isinstance(verdicts, list)

    files = thaw.report(study, tmp_path / "report")
    assert files.html.is_file() and files.csv.is_file()

    # The top 3 trials' best-epoch models are kept; the worst trial's file was deleted.
    best_first = frame.sort_values("best_val_loss")["number"].tolist()
    folder = tmp_path / "models" / "tiny"
    assert sorted(p.name for p in folder.glob("*.keras")) == sorted(
        f"trial-{n}.keras" for n in best_first[:3]
    )

    model = thaw.load_best(study)
    assert isinstance(model, keras.Model)
    data = np.load(tmp_path / "data.npz")
    model.compile(loss="sparse_categorical_crossentropy")
    measured = model.evaluate(data["x_val"], data["y_val"], batch_size=8, verbose=0)
    assert measured == pytest.approx(frame["best_val_loss"].min(), abs=1e-4)


@pytest.mark.slow
def test_objective_in_the_users_own_study(study_file: Path) -> None:
    import thaw

    objective = thaw.FineTuneObjective.from_config(thaw.load_config(study_file))
    study = optuna.create_study()
    study.optimize(objective, n_trials=2)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert math.isfinite(study.best_value)
    assert study.best_trial.user_attrs["best_val_loss"] == pytest.approx(study.best_value)


def test_diagnose_takes_a_history_dict() -> None:
    import thaw

    history = {
        "loss": [1.0, 0.6, 0.3, 0.15, 0.07, 0.03],
        "val_loss": [1.0, 0.8, 0.9, 1.1, 1.3, 1.6],
        "accuracy": [0.4, 0.6, 0.8, 0.9, 0.95, 0.99],
        "val_accuracy": [0.4, 0.55, 0.55, 0.5, 0.5, 0.48],
    }
    verdicts = thaw.diagnose(history)
    assert [v.verdict for v in verdicts] == ["overfitting"]


@pytest.mark.parametrize(
    ("value", "match"),
    [({"loss": [1.0]}, "no 'val_loss'"), (3, "takes an optuna.Study")],
)
def test_diagnose_refuses_what_it_cannot_read(value: Any, match: str) -> None:
    import thaw

    with pytest.raises((TypeError, ValueError), match=match):
        thaw.diagnose(value)


def test_run_refuses_a_bad_budget(study_file: Path) -> None:
    import thaw

    with pytest.raises(
        thaw.RunError, match="budget-epochs must be a whole number of epochs >= 1, got 0"
    ):
        thaw.run(study_file, budget_epochs=0)


# The late BatchNorm mismatch of tests/reports/diagnosis_curves.py: train accuracy climbs to
# 0.99 while val accuracy stays at 0.28 and val loss rises.
LATE_BN = {
    "loss": [1.7, 1.3, 1.0, 0.8, 0.62, 0.5, 0.4, 0.3, 0.22, 0.17, 0.13, 0.1],
    "val_loss": [1.75, 1.68, 1.62, 1.6, 1.62, 1.7, 1.82, 1.95, 2.1, 2.2, 2.3, 2.4],
    "accuracy": [0.3, 0.5, 0.62, 0.72, 0.8, 0.84, 0.88, 0.92, 0.95, 0.97, 0.98, 0.99],
    "val_accuracy": [0.2, 0.26, 0.3, 0.32, 0.31, 0.3, 0.3, 0.29, 0.29, 0.28, 0.28, 0.28],
}


class _Layer:
    pass


class BatchNormalization(_Layer):
    pass


class _Model:
    def __init__(self, *layers: Any) -> None:
        self.layers = list(layers)


class _History:
    """What ``model.fit`` returns: ``.history`` and ``.model``."""

    def __init__(self, history: dict[str, Any], model: Any) -> None:
        self.history = history
        self.model = model


@pytest.mark.parametrize(
    ("run", "blames_batchnorm", "unchecked"),
    [
        (_History(LATE_BN, _Model(_Layer(), _Model(_Layer(), BatchNormalization()))), True, False),
        (_History(LATE_BN, _Model(_Layer(), _Model(_Layer()))), False, False),
        (LATE_BN, True, True),  # a dict: no model fact, the verdict says it could not check
        ({"history": LATE_BN, "params": {"batchnorm_layers": 0}}, False, False),
        ({"history": LATE_BN, "params": {"batchnorm": "train"}}, True, False),
    ],
)
def test_batchnorm_is_blamed_only_where_the_model_has_it(
    run: Any, blames_batchnorm: bool, unchecked: bool
) -> None:
    import thaw

    verdicts = thaw.diagnose(run)
    names = [v.verdict for v in verdicts]
    assert ("batchnorm_mismatch" in names) is blames_batchnorm, names
    assert names  # without BatchNorm the curve still gets a verdict
    said = " ".join(v.evidence for v in verdicts)
    assert ("not checked: the history does not say" in said) is unchecked


@pytest.mark.parametrize("key", ["accuracy", "acc", "sparse_categorical_accuracy"])
def test_the_api_reads_every_accuracy_name_as_the_cli_does(key: str) -> None:
    import thaw
    from thaw.reports.diagnosis import diagnose_history

    history = {
        "loss": LATE_BN["loss"],
        "val_loss": LATE_BN["val_loss"],
        key: LATE_BN["accuracy"],
        f"val_{key}": LATE_BN["val_accuracy"],
    }
    api = thaw.diagnose(history)
    cli = diagnose_history(history).verdicts
    assert [v.to_dict() for v in api] == [v.to_dict() for v in cli]
    assert [v.to_dict() for v in api] == [v.to_dict() for v in thaw.diagnose(LATE_BN)]
