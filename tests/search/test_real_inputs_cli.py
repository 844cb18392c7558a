"""``thaw run`` and ``thaw report`` on real inputs: a keras.applications network (MobileNetV2,
random weights, alpha 0.35, 96x96) and a generated image folder with a corrupt file; then the
bad inputs a user meets with their own files, each refused in one line before storage is touched.

The CLI runs in-process (``thaw.search._cli.main``); the study is run once for the module.
"""

from __future__ import annotations

import csv
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import optuna
import pytest
import yaml
from optuna.trial import TrialState
from PIL import Image

if TYPE_CHECKING:
    from conftest import CliResult  # tests/search/conftest.py, a fixture module

optuna.logging.set_verbosity(optuna.logging.WARNING)

CLASSES = ("cat", "dog", "fox")
COLORS = {"cat": (200, 60, 50), "dog": (60, 180, 60), "fox": (50, 60, 210)}
PER_CLASS = 20
SKIPPED = "cat/broken.jpg ("  # then the decoder's exception name

STUDY: dict[str, Any] = {
    "name": "real-inputs",
    "seed": 0,
    "n_trials": 2,
    "storage": "sqlite:///real.db",
    "model": {
        "source": "application",
        "name": "MobileNetV2",
        "weights": None,
        "alpha": 0.35,
        "input_shape": [96, 96, 3],
        "unfreeze_by": "blocks",
    },
    "data": {"source": "directory", "path": "images"},
    "search_space": {
        "unfrozen_layers": {"low": 0, "high": "all"},
        "learning_rate": {"low": 1e-3, "high": 1e-2, "log": True},
        "dropout": {"low": 0.0, "high": 0.3},
        "weight_decay": {"low": 1e-6, "high": 1e-3, "log": True},
    },
    "train": {"epochs": 2, "batch_size": 16, "warmup_epochs": 1},
    "sampler": {"name": "random"},
    "pruner": {"compare": "none", "patience": 5, "n_warmup_steps": 0},
    "reference_trials": False,
}


def make_image_folder(root: Path, per_class: int = PER_CLASS, corrupt: bool = True) -> Path:
    """``root/<class>/`` with PNG and JPEG images of many sizes, plus ``cat/broken.jpg``."""
    rng = np.random.default_rng(0)
    for name in CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = int(rng.integers(40, 140)), int(rng.integers(40, 140))
            noise = rng.integers(-40, 41, size=(h, w, 3))
            pixels = np.clip(np.array(COLORS[name]) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels, "RGB").save(
                root / name / f"{i:02d}.{'png' if i % 2 else 'jpg'}"
            )
    if corrupt:
        (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 garbage " * 10)
    return root


def write_study(folder: Path, study: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False), encoding="utf-8")
    return path


def studies_in(db: Path) -> list[str]:
    if not db.exists():
        return []
    return sorted(s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{db}"))


@dataclass
class RealRun:
    folder: Path
    study_file: Path
    db: Path
    result: CliResult

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name="real-inputs", storage=f"sqlite:///{self.db}")


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory, thaw: Callable[..., CliResult]) -> RealRun:
    folder = tmp_path_factory.mktemp("real-inputs")
    make_image_folder(folder / "images")
    study_file = write_study(folder, STUDY)
    result = thaw("run", study_file, "--no-progress")
    return RealRun(folder, study_file, folder / "real.db", result)


# ------------------------------------------------------------------------------ a real run


@pytest.mark.slow
def test_run_on_mobilenet_and_an_image_folder(real_run: RealRun) -> None:
    result = real_run.result
    assert result.rc == 0, result.err[-3000:]
    assert "Created study 'real-inputs'" in result.out
    assert (
        "Model: keras.applications.MobileNetV2 (weights: None), 19 blocks with weights; "
        "data: 48 training and 12 validation images, 3 classes." in result.out
    )
    assert f"Skipped 1 unreadable files: {SKIPPED}" in result.out

    study = real_run.study()
    data = study.user_attrs["thaw:data"]
    assert data["class_names"] == list(CLASSES)
    assert data["train_counts"] == [16, 16, 16]
    assert data["val_counts"] == [4, 4, 4]
    (skipped,) = data["skipped_files"]
    assert skipped.startswith(SKIPPED) and skipped.endswith(")")
    assert len(data["fingerprint"]) == 64 and int(data["fingerprint"], 16) >= 0
    assert data["source"] == str(real_run.folder / "images")
    assert study.user_attrs["thaw:num_layers"] == 19
    model = study.user_attrs["thaw:config"]["model"]
    assert model["name"] == "MobileNetV2" and model["weights"] is None
    assert model["alpha"] == 0.35 and model["input_shape"] == [96, 96, 3]
    assert model["unfreeze_by"] == "blocks"

    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    for t in trials:
        assert 0 <= t.params["unfrozen_layers"] <= 19
        assert sorted(t.intermediate_values) == [1, 2]  # warm-up epoch 1, then epoch 2
        assert t.user_attrs["warmup_epochs"] == 1
        assert len(t.user_attrs["history"]["val_loss"]) == 2


@pytest.mark.slow
def test_report_of_the_real_run(
    real_run: RealRun, tmp_path: Path, thaw: Callable[..., CliResult]
) -> None:
    assert real_run.result.rc == 0
    out = tmp_path / "report"
    result = thaw("report", real_run.study_file, "--out", out)
    assert result.rc == 0, result.err
    for name in ("report.md", "report.html", "trials.csv", "summary.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
        assert str(out / name) in result.out
    with (out / "trials.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sorted(int(r["number"]) for r in rows) == [0, 1]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["study_name"] == "real-inputs"
    assert summary["n_trials"] == 2
    assert "MobileNetV2" in (out / "report.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_resume_after_an_image_changed_is_refused(
    real_run: RealRun, thaw: Callable[..., CliResult]
) -> None:
    assert real_run.result.rc == 0
    target = real_run.folder / "images" / "dog" / "03.png"
    original = target.read_bytes()
    with Image.open(target) as img:
        pixels = np.asarray(img).copy()
    pixels[0, 0] = 255 - pixels[0, 0]  # one pixel of one image
    try:
        Image.fromarray(pixels).save(target)
        result = thaw("run", real_run.study_file, "--n-trials", "1", "--no-progress")
    finally:
        target.write_bytes(original)
    assert result.rc == 2
    assert "study 'real-inputs' was run on different data (fingerprint" in result.error_line
    assert len(real_run.study().get_trials()) == 2


# ------------------------------------------------------------------------------ bad inputs


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("bad-inputs") / "images", per_class=10)


def _text_as_keras(folder: Path, images: Path) -> dict[str, Any]:
    (folder / "notes.keras").write_text("not a model, just notes\n")
    return {"model": {"source": "file", "path": "notes.keras"}, "data": _dir(images)}


def _zip_as_keras(folder: Path, images: Path) -> dict[str, Any]:
    with zipfile.ZipFile(folder / "archive.keras", "w") as z:
        z.writestr("readme.txt", "a zip, but no Keras model inside")
    return {"model": {"source": "file", "path": "archive.keras"}, "data": _dir(images)}


def _npz_of_another_size(folder: Path, images: Path) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    np.savez(
        folder / "small.npz",
        x_train=rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8),
        y_train=np.arange(12) % 3,
        x_val=rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8),
        y_val=np.arange(6) % 3,
    )
    return {"data": {"source": "npz", "path": "small.npz"}}


def _flat_folder(folder: Path, images: Path) -> dict[str, Any]:
    flat = folder / "flat"
    flat.mkdir()
    for f in sorted((images / "dog").iterdir())[:4]:
        (flat / f.name).write_bytes(f.read_bytes())
    return {"data": {"source": "directory", "path": "flat"}}


def _unfrozen_above_the_blocks(folder: Path, images: Path) -> dict[str, Any]:
    return {
        "data": _dir(images),
        "search_space": {**STUDY["search_space"], "unfrozen_layers": {"low": 0, "high": 20}},
    }


def _model_without_fixed_size(folder: Path, images: Path) -> dict[str, Any]:
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(2, 3, name="conv")(inputs)
    keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x)).save(folder / "any.keras")
    return {"model": {"source": "file", "path": "any.keras"}, "data": _dir(images)}


def _validation_classes_differ(folder: Path, images: Path) -> dict[str, Any]:
    for name in ("cat", "dog", "wolf"):
        (folder / "val" / name).mkdir(parents=True)
        src = sorted((images / "cat").glob("*.png"))[0]
        (folder / "val" / name / "a.png").write_bytes(src.read_bytes())
    return {"data": {**_dir(images), "val_path": "val"}}


def _no_unreadable_file_allowed(folder: Path, images: Path) -> dict[str, Any]:
    return {"data": {**_dir(images), "max_skipped_fraction": 0.0}}


def _dir(images: Path) -> dict[str, Any]:
    return {"source": "directory", "path": str(images)}


# pytest.param(setup returning changes to STUDY, fragment of the error line, id=...)
BAD_INPUTS = [
    pytest.param(
        _text_as_keras, "notes.keras is not a Keras model file", id="text file named .keras"
    ),
    pytest.param(
        _zip_as_keras, "archive.keras as a Keras model: KeyError", id="zip that is no model"
    ),
    pytest.param(
        _npz_of_another_size,
        "images have shape (32, 32, 3) but the model expects (96, 96, 3)",
        id="npz images of another size",
    ),
    pytest.param(
        _flat_folder,
        "has no class subfolders; put each class",
        id="folder without class subfolders",
    ),
    pytest.param(
        _unfrozen_above_the_blocks,
        "search_space.unfrozen_layers: high=20 but the model has only 19 blocks",
        id="unfrozen_layers above the blocks",
    ),
    pytest.param(
        _model_without_fixed_size,
        "has no fixed height and width",
        id="model without a fixed input size",
    ),
    pytest.param(_validation_classes_differ, "they must match", id="validation classes differ"),
    pytest.param(
        _no_unreadable_file_allowed,
        "1 of 31 files could not be read as images (more than 0%)",
        id="no unreadable file allowed",
    ),
]


@pytest.mark.parametrize(("setup", "fragment"), BAD_INPUTS)
def test_bad_real_input_is_one_line_exit_2_and_no_study(
    tmp_path: Path,
    images: Path,
    setup: Callable[[Path, Path], dict[str, Any]],
    fragment: str,
    thaw: Callable[..., CliResult],
) -> None:
    study = {**STUDY, "storage": "sqlite:///bad.db", **setup(tmp_path, images)}
    study_file = write_study(tmp_path, study)
    result = thaw("run", study_file, "--no-progress")
    assert result.rc == 2, result.out
    assert fragment in result.error_line
    assert str(study_file) in result.error_line  # says which study file
    assert "Created study" not in result.out
    assert studies_in(tmp_path / "bad.db") == []
