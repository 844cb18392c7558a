"""``thaw run`` with the closed loop on and off, end to end: a real tiny model, real training,
real SQLite storage. The target is noise (random images, random labels), so nothing can be
learnt: every trial stays near chance, the loop must act on it, and the run says so."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import pytest
import yaml

from thaw._keys import PROPOSED_BY, RANGE_TEST, SCREEN, SCREEN_WINNER
from thaw.search import FOLLOW_UP_ATTR

if TYPE_CHECKING:
    from conftest import CliResult

optuna.logging.set_verbosity(optuna.logging.WARNING)

pytestmark = pytest.mark.slow


def noise_study(folder: Path, **changes: Any) -> Path:
    import keras
    from keras import layers

    folder.mkdir(parents=True, exist_ok=True)
    inputs = keras.Input(shape=(8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same", name="conv1")(inputs)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.Conv2D(4, 3, padding="same", name="conv2")(x)
    x = layers.GlobalAveragePooling2D(name="features")(x)
    outputs = layers.Dense(3, activation="softmax", name="old_head")(x)
    keras.Model(inputs, outputs).save(folder / "tiny.keras")
    rng = np.random.default_rng(0)
    np.savez(
        folder / "data.npz",
        x_train=rng.integers(0, 256, size=(24, 8, 8, 3), dtype=np.uint8),
        y_train=rng.permutation(np.arange(24) % 3).astype(np.int32),
        x_val=rng.integers(0, 256, size=(12, 8, 8, 3), dtype=np.uint8),
        y_val=(np.arange(12) % 3).astype(np.int32),
    )
    study = {
        "name": "noise",
        "n_trials": 6,
        "model": {"source": "file", "path": "tiny.keras"},
        "data": {"source": "npz", "path": "data.npz"},
        "search_space": {
            "unfrozen_layers": {"low": 0, "high": "all"},
            "learning_rate": {"low": 1e-6, "high": 1e-1, "log": True},
            "batchnorm": ["frozen"],
        },
        "train": {"epochs": 4, "batch_size": 8, "probe_images": 0},
        "sampler": {"name": "random"},
        "pruner": {"compare": "none"},
        **changes,
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study), encoding="utf-8")
    return path


def trials_of(folder: Path) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name="noise", storage=f"sqlite:///{folder / 'noise.db'}")
    return study.get_trials()


def test_the_loop_acts_on_the_diagnosis_and_the_run_says_nothing_learnt(
    tmp_path: Path, thaw: Callable[..., CliResult]
) -> None:
    study_file = noise_study(tmp_path / "on")
    result = thaw("run", study_file, "--no-progress")
    assert result.rc == 0, result.err
    trials = trials_of(tmp_path / "on")
    # 3 strategies screened for 1 epoch, the survivor at full length, then the search.
    assert [SCREEN in t.user_attrs for t in trials[:3]] == [True] * 3
    survivor = trials[3]
    assert SCREEN_WINNER in survivor.user_attrs and "strategy" in survivor.user_attrs
    # probe_images: 0 probes no image (only the weight drift), and never fails
    assert "probes" in survivor.user_attrs
    assert "sample_images" not in survivor.user_attrs["probes"]
    moves = [t for t in trials if PROPOSED_BY in t.user_attrs]
    assert moves, "the loop queued nothing"
    first = moves[0].user_attrs[PROPOSED_BY]
    assert first["trial"] == survivor.number
    assert first["cause"] in ("near_chance", "lr_too_high", "diverged", "underfitting", "climbing")
    assert moves[0].params != survivor.params
    # The range test ran first and counts in the epochs.
    stored = optuna.load_study(
        study_name="noise", storage=f"sqlite:///{tmp_path / 'on' / 'noise.db'}"
    ).user_attrs[RANGE_TEST]
    assert set(stored["modes"]) == {"frozen"} and stored["epochs"] > 0
    assert "Learning-rate range test" in result.out
    # Nothing could be learnt: the end summary says so first and names the next move.
    assert "Nothing learnt much: " in result.out and "Next: " in result.out
    report = thaw("report", study_file)
    assert report.rc == 0, report.err
    markdown = (tmp_path / "on" / "noise-report" / "report.md").read_text(encoding="utf-8")
    answer = markdown.split("## Answer", 1)[1]
    assert next(line for line in answer.splitlines() if line.strip()).startswith(
        "**Nothing learnt much: "
    )


def test_loop_off_queues_no_move(tmp_path: Path, thaw: Callable[..., CliResult]) -> None:
    study_file = noise_study(tmp_path / "off", loop="off", lr_range_test="off")
    result = thaw("run", study_file, "--no-progress")
    assert result.rc == 0, result.err
    trials = trials_of(tmp_path / "off")
    assert not any(PROPOSED_BY in t.user_attrs for t in trials)
    followed = [t for t in trials if FOLLOW_UP_ATTR in t.user_attrs]  # gradual unfreezing instead
    assert len(followed) <= 1
    assert "Learning-rate range test" not in result.out


def test_a_run_searches_the_fine_tuning_methods_when_the_study_file_asks(
    tmp_path: Path, thaw: Callable[..., CliResult]
) -> None:
    folder = tmp_path / "methods"
    study_file = noise_study(folder)
    study = yaml.safe_load(study_file.read_text())
    study["n_trials"] = 3
    study["search_space"] |= {
        "l2sp": {"low": 1e-4, "high": 1e-1},
        "lr_decay": [0.5, 1.0],
        "augment": [0.0, 1.0],
    }
    study_file.write_text(yaml.safe_dump(study), encoding="utf-8")
    result = thaw("run", study_file, "--no-progress")
    assert result.rc == 0, result.err
    # noise: every trial is pruned (screened, or running away), none fails
    trials = trials_of(folder)
    assert trials and all(t.state != optuna.trial.TrialState.FAIL for t in trials)
    for trial in trials:
        assert {"l2sp", "lr_decay", "augment"} <= set(trial.params)
        # frozen BatchNorm: each trial trains on cached activations unless it augments
        assert ("cache_off" in trial.user_attrs) == (trial.params["augment"] > 0)
    assert any(t.params["augment"] > 0 for t in trials)
    report = thaw("report", study_file, "--out", tmp_path / "report")
    assert report.rc == 0, report.err
    text = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert all(f"| {name} " in text for name in ("l2sp", "lr_decay", "augment"))


def test_a_run_searches_lora_and_its_best_model_exports_and_loads_in_safe_mode(
    tmp_path: Path, thaw: Callable[..., CliResult]
) -> None:
    import keras

    folder = tmp_path / "lora"
    study_file = noise_study(folder, n_trials=3, lr_range_test="off")
    study = yaml.safe_load(study_file.read_text())
    study["search_space"] |= {"lora_rank": [2], "unfrozen_layers": {"low": 1, "high": "all"}}
    study_file.write_text(yaml.safe_dump(study), encoding="utf-8")
    result = thaw("run", study_file, "--no-progress")
    assert result.rc == 0, result.err
    trials = trials_of(folder)
    assert trials and all(t.state != optuna.trial.TrialState.FAIL for t in trials)
    assert all(t.params["lora_rank"] == 2 for t in trials)
    out = tmp_path / "best.keras"
    export = thaw("export", study_file, "--out", out)
    # the kept model holds the update merged into its kernels: its loss is the stored one
    assert export.rc == 0, export.err
    number = int(export.out.split()[1].rstrip("'s"))
    model = keras.models.load_model(out, safe_mode=True)
    x = np.load(folder / "data.npz")["x_val"].astype("float32")
    probs = model.predict(x, verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    # the top unfrozen layers had LoRA: Keras reloads them with it, their update merged
    unfrozen = next(t for t in trials if t.number == number).params["unfrozen_layers"]
    weighted = [layer for layer in model.layers[1].layers if layer.weights]
    weighted = [
        layer for layer in weighted if not isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert [getattr(layer, "lora_enabled", False) for layer in weighted] == [
        i >= len(weighted) - unfrozen for i in range(len(weighted))
    ]
    report = thaw("report", study_file, "--out", tmp_path / "report")
    assert report.rc == 0, report.err
    assert "| lora_rank " in (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
