"""thaw diagnose --kerastuner DIR on the project folder of a real KerasTuner search: one with
thaw's FineTuneHyperModel (Hyperband, per-epoch curves), one with a plain build function
(KerasTuner's own trial.json only); and the folder refused with one line when it is not one."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

SHAPE = (8, 8, 3)
CLASSES = 3


def colour_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images whose class is the brightest channel."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % CLASSES).astype("int32")
    x = rng.integers(0, 120, size=(n, *SHAPE))
    x[np.arange(n), :, :, y] += 120
    return x.astype("uint8"), y


@pytest.mark.slow
def test_a_hyperband_search_with_finetunehypermodel_is_diagnosed_trial_for_trial(
    tmp_path: Path,
    tiny_cnn: Callable[..., Any],
    thaw: Callable[..., Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    import keras
    import keras_tuner

    from thaw.objectives import FineTuneHyperModel

    model = tiny_cnn(SHAPE, CLASSES, seed=3)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(*colour_images(60, seed=11), epochs=3, batch_size=12, verbose=0)
    hypermodel = FineTuneHyperModel(model, CLASSES, learning_rate=(1e-3, 3e-2), warmup_epochs=1)
    assert isinstance(hypermodel, keras_tuner.HyperModel)
    tuner = keras_tuner.Hyperband(
        hypermodel,
        objective="val_loss",
        max_epochs=3,
        factor=3,
        directory=str(tmp_path),
        project_name="tiny",
        seed=1,
    )
    x, y = colour_images(36, seed=1)
    tuner.search(x, y, validation_data=colour_images(18, seed=2), batch_size=12, verbose=0)
    ran = len(tuner.oracle.trials)
    assert ran >= 2
    best = tuner.get_best_models(1)[0]
    assert "old_head" not in {layer.name for layer in best.layers}  # thaw's surgery: cut

    result = thaw("diagnose", "--kerastuner", tmp_path / "tiny", "--json")
    assert result.rc == 0, result.err
    report = json.loads(result.out)
    assert report["trials_read"] == ran
    assert report["per_epoch_curves"] == ran
    assert report["objective"] == "val_loss"
    assert all(t["verdicts"] for t in report["trials"])  # every trial judged
    assert report["study"]["state_counts"] == {"COMPLETE": ran}
    # A trial's curve has as many epochs as it trained (a continued trial: its parent's too).
    for t, trial in zip(
        report["trials"],
        sorted(tuner.oracle.trials.values(), key=lambda t: t.trial_id),
        strict=True,
    ):
        assert t["epochs"] == trial.hyperparameters.values["tuner/epochs"]
    text = thaw("diagnose", "--kerastuner", tmp_path)  # the folder above the project works too
    assert text.rc == 0
    assert f"{ran} trials read; objective val_loss" in text.out
    assert "Robust region:" in text.out
    with capsys.disabled():
        print(f"\nKerasTuner Hyperband: {ran} trials run, {report['trials_read']} read")


def test_a_plain_kerastuner_search_is_read_from_trial_json_alone(
    tmp_path: Path, thaw: Callable[..., Any]
) -> None:
    import keras
    import keras_tuner

    def build(hp: Any) -> Any:
        model = keras.Sequential(
            [
                keras.Input(SHAPE),
                keras.layers.Rescaling(1 / 255),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dropout(hp.Float("dropout", 0.0, 0.5)),
                keras.layers.Dense(CLASSES, activation="softmax"),
            ]
        )
        lr = hp.Float("learning_rate", 1e-3, 1e-1, sampling="log")
        model.compile(
            optimizer=keras.optimizers.Adam(lr),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        return model

    tuner = keras_tuner.RandomSearch(
        build,
        objective="val_loss",
        max_trials=2,
        directory=str(tmp_path),
        project_name="plain",
        seed=0,
    )
    x, y = colour_images(24, seed=1)
    tuner.search(x, y, validation_data=colour_images(12, seed=2), epochs=2, verbose=0)
    result = thaw("diagnose", "--kerastuner", tmp_path / "plain", "--json")
    assert result.rc == 0, result.err
    report = json.loads(result.out)
    assert report["trials_read"] == len(tuner.oracle.trials) == 2
    assert report["per_epoch_curves"] == 0
    assert report["objective"] == "val_loss"
    scores = sorted(t.score for t in tuner.oracle.trials.values())
    assert sorted(t["score"] for t in report["trials"]) == pytest.approx(scores)
    text = thaw("diagnose", "--kerastuner", tmp_path / "plain")
    assert "2 of them have the best epoch's metrics only" in text.out


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d, "has no trial_*/trial.json; give the KerasTuner project folder"),
        (lambda d: d / "missing", "is not a folder; give a KerasTuner project folder"),
    ],
)
def test_a_folder_that_is_not_a_project_is_refused_with_one_line(
    make: Callable[[Path], Path], message: str, tmp_path: Path, thaw: Callable[..., Any]
) -> None:
    result = thaw("diagnose", "--kerastuner", make(tmp_path))
    assert result.rc == 2
    assert message in result.error_line


def test_diagnose_kerastuner_never_imports_keras(tmp_path: Path) -> None:
    import subprocess

    trial = tmp_path / "trial_0"
    trial.mkdir()
    (trial / "trial.json").write_text(
        json.dumps(
            {
                "trial_id": "0",
                "hyperparameters": {"space": [], "values": {}},
                "metrics": {
                    "metrics": {
                        "val_loss": {
                            "direction": "min",
                            "observations": [{"value": [1.0], "step": 0}],
                        }
                    }
                },
                "score": 1.0,
                "best_step": 0,
                "status": "COMPLETED",
            }
        )
    )
    code = (
        "import sys\n"
        "from thaw.reports.diagnosis import diagnose_kerastuner\n"
        f"r = diagnose_kerastuner({str(tmp_path)!r})\n"
        "print(len(r.trials), sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1 []"
