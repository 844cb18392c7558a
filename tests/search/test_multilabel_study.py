"""A multi-label study end to end: ``.npz`` rows of 0/1 labels through ``thaw run`` and
``thaw report``, and ``thaw.run(model=..., data=(x, y))`` with such rows; the study stores its
task and chance levels, trains a sigmoid head on binary cross-entropy, and keeps a model that
loads in safe mode and gives one probability per label."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

LABELS = 3
SHAPE = (8, 8, 3)


def colour_labels(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images whose labels are the bright channels: each channel bright or not, on its
    own (a multi-label target a tiny CNN learns)."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, LABELS)) < 0.4).astype("int64")
    y[np.arange(LABELS), np.arange(LABELS)] = 1  # every label has images
    x = rng.integers(0, 110, size=(n, *SHAPE)) + 120 * y[:, None, None, :]
    return x.astype("uint8"), y


@pytest.mark.slow
def test_a_multilabel_npz_study_runs_reports_and_keeps_a_sigmoid_model(
    tmp_path: Path, tiny_cnn: Callable[..., Any], thaw: Callable[..., Any]
) -> None:
    import optuna

    import thaw as api
    from thaw._keys import CHANCE, TASK
    from thaw.objectives import multilabel_chance
    from thaw.reports.diagnosis import study_verdicts

    tiny_cnn().save(tmp_path / "tiny.keras")
    x, y = colour_labels(64, seed=1)
    x_val, y_val = colour_labels(32, seed=2)
    np.savez(tmp_path / "data.npz", x_train=x, y_train=y, x_val=x_val, y_val=y_val)
    study_file = tmp_path / "ml.yaml"
    study_file.write_text(
        yaml.safe_dump(
            {
                "name": "ml",
                "n_trials": 3,
                "metrics": ["auc", "f1"],
                "reference_trials": False,
                "lr_range_test": False,
                "model": {"source": "file", "path": "tiny.keras"},
                "data": {"source": "npz", "path": "data.npz", "class_names": ["r", "g", "b"]},
                "search_space": {"learning_rate": [3e-3, 3e-2], "batchnorm": ["frozen"]},
                "train": {"epochs": 4, "batch_size": 16},
                "sampler": {"name": "random"},
                "pruner": {"compare": "none"},
            }
        )
    )
    run = thaw("run", study_file, "--no-progress")
    assert run.rc == 0, run.err
    assert "3 labels (multi-label)" in run.out
    study = optuna.load_study(study_name="ml", storage=f"sqlite:///{tmp_path / 'ml.db'}")
    chance = multilabel_chance(y)
    assert study.user_attrs[TASK] == "multilabel"
    assert study.user_attrs[CHANCE] == pytest.approx(chance)
    assert study.user_attrs["thaw:data"]["train_counts"] == y.sum(axis=0).tolist()
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 3
    for trial in done:
        history = trial.user_attrs["history"]
        assert len(history["val_auc"]) == len(history["val_f1"]) == len(history["val_loss"])
        assert all(0.0 <= v <= 1.0 for v in history["val_accuracy"] if v is not None)
    # the labels reached the model: the best trial is clearly below the chance level
    assert study.best_value < 0.9 * chance["loss"]
    # the verdicts read the stored chance level, not ln K
    evidence = " ".join(v.evidence for vs in study_verdicts(study).values() for v in vs)
    assert f"ln {LABELS}" not in evidence

    out = tmp_path / "report"
    report = thaw("report", study_file, "--out", out)
    assert report.rc == 0, report.err
    with open(out / "trials.csv", encoding="utf-8") as f:
        ranked = [r for r in csv.DictReader(f) if r["rank"] == "1"]
    assert len(ranked) == 1 and int(ranked[0]["number"]) == study.best_trial.number
    assert (out / "report.html").is_file()

    kept = api.load_best(study)  # loaded with safe_mode on
    probs = kept.predict(x_val[:5], verbose=0)
    assert probs.shape == (5, LABELS)
    assert kept.layers[-1].activation.__name__ == "sigmoid"
    assert not np.allclose(probs.sum(axis=1), 1.0)


@pytest.mark.slow
def test_the_notebook_path_finds_multilabel_arrays_and_a_tf_data_dataset_of_them(
    tmp_path: Path, tiny_cnn: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import tensorflow as tf

    import thaw
    from thaw._keys import CHANCE, CONFIG_HASH, TASK
    from thaw.search._faults import counted_trials

    monkeypatch.chdir(tmp_path)
    model = tiny_cnn()
    x, y = colour_labels(48, seed=3)
    x_val, y_val = colour_labels(24, seed=4)
    settings: dict[str, Any] = {
        "n_trials": 2,
        "epochs": 3,
        "batch_size": 16,
        "reference_trials": False,
        "lr_range_test": False,
        "space": {"learning_rate": [3e-3, 3e-2], "batchnorm": ["frozen"]},
        "objective": "val_auc",
    }
    study = thaw.run(
        model=model, data=(x, y), validation_data=(x_val, y_val), study_name="ml", **settings
    )
    assert counted_trials(study) == 2
    assert study.user_attrs[TASK] == "multilabel"
    assert study.user_attrs[CHANCE]["loss"] < np.log(2)
    assert 0.5 <= study.best_value <= 1.0  # a multi-label ROC AUC, maximised
    best = thaw.load_best(study)
    assert best.predict(x_val[:3], verbose=0).shape == (3, LABELS)

    # The same images as a tf.data.Dataset: the same data, so the same study.
    dataset = thaw.run(
        model=model,
        data=tf.data.Dataset.from_tensor_slices((x, y)).batch(8),
        validation_data=tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(8),
        study_name="ml",
        **settings,
    )
    assert dataset.user_attrs[CONFIG_HASH] == study.user_attrs[CONFIG_HASH]
    assert counted_trials(dataset) == 2  # resumed: nothing more to run


def test_task_multilabel_reads_one_hot_rows_as_labels_and_refuses_a_bad_keyword() -> None:
    from thaw.objectives._memory import memory_data_source
    from thaw.search import StudyFileError
    from thaw.search._notebook import notebook_config

    x, _ = colour_labels(12, seed=0)
    one_hot = np.eye(LABELS, dtype="int64")[np.arange(12) % LABELS]
    auto = memory_data_source((x, one_hot), task="auto")
    assert auto.instance is not None and not auto.instance.value.multilabel
    asked = memory_data_source((x, one_hot), task="multilabel")
    assert asked.task == "multilabel" and asked.instance is not None
    data = asked.instance.value
    assert data.multilabel and data.y_train.shape[1] == LABELS
    assert len(data.y_train) + len(data.y_val) == 12
    with pytest.raises(StudyFileError, match="task is 'multi'; expected one of: auto, multiclass"):
        notebook_config(object(), (x, one_hot), task="multi", study_name="s")


def test_the_readme_multilabel_snippet_is_a_valid_study_file(tmp_path: Path) -> None:
    import re

    from thaw.search import load_study_file

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    start = text.index("### Multi-label targets")
    (snippet,) = re.findall(r"```yaml\n(.*?)```", text[start : text.index("\n### ", start)], re.S)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "labels.npz").write_bytes(b"")
    path = tmp_path / "study.yaml"
    path.write_text(f"name: labels\n{snippet}", encoding="utf-8")
    config = load_study_file(path)
    assert config.data.task == "multilabel"
    assert config.data.class_names == ("cat", "dog", "outdoors")
    assert config.train.metrics == ("auc", "f1")


ML_CHANCE = {"task": "multilabel", "loss": 0.4, "accuracy": 0.7}


@pytest.mark.parametrize(
    ("metric", "chance", "expected"),
    [
        ("val_loss", ML_CHANCE, 0.4),
        ("val_accuracy", ML_CHANCE, 0.7),
        ("val_auc", ML_CHANCE, 0.5),
        ("val_f1", ML_CHANCE, None),
        ("val_loss", {"task": "multiclass", "loss": 1.0986, "accuracy": 0.333}, np.log(3)),
        ("val_loss", None, np.log(3)),
        ("val_accuracy", None, 1 / 3),
    ],
)
def test_the_pruner_reads_the_chance_level_of_the_task(
    metric: str, chance: dict[str, Any] | None, expected: float | None
) -> None:
    from thaw.search._study import pruner_chance

    got = pruner_chance(metric, 3, chance)
    assert got == (pytest.approx(expected) if expected is not None else None)
