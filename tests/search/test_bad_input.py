"""The bad-input battery: every refused ``thaw run`` is one line, exit 2, and storage untouched.

One table, five kinds of input: the study file (config), the model, the data, the storage and
the command line. Each row writes a tiny valid study (a saved 8x8 CNN and ``.npz`` arrays), breaks
one thing, runs ``thaw run`` in-process and checks:

- exit status 2 and exactly one line on stderr, ``thaw: error: ...``, containing the fragment;
- no study created or resumed on stdout (only "Loading model and data ..." may come first);
- the SQLite file is not created (or, where the row made one beforehand, its bytes unchanged).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import yaml

if TYPE_CHECKING:
    from conftest import CliResult  # tests/search/conftest.py, a fixture module

BASE: dict[str, Any] = {
    "name": "battery",
    "n_trials": 2,
    "storage": "sqlite:///battery.db",
    "model": {"source": "file", "path": "tiny.keras", "cut_at": "features"},
    "data": {"source": "npz", "path": "data.npz", "class_names": ["a", "b", "c"]},
    "search_space": {"unfrozen_layers": [0, "all"]},
    "train": {"epochs": 1, "batch_size": 8},
    "sampler": {"name": "random"},
    "pruner": {"compare": "none"},
}


#: Rows of 0/1 labels (multi-label) for the 12 training images (validation: the first 6).
MULTI_HOT = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]] * 3, dtype=np.int32)


def arrays(**changes: Any) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {
        "x_train": rng.integers(0, 256, size=(12, 8, 8, 3), dtype=np.uint8),
        "y_train": (np.arange(12) % 3).astype(np.int32),
        "x_val": rng.integers(0, 256, size=(6, 8, 8, 3), dtype=np.uint8),
        "y_val": (np.arange(6) % 3).astype(np.int32),
    }
    out.update(changes)
    return {k: v for k, v in out.items() if v is not None}


def image_folder(
    root: Path, classes: dict[str, int], extra: dict[str, bytes] | None = None
) -> None:
    from PIL import Image

    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("RGB", (8, 8), (i * 20, 40, 80)).save(root / name / f"{i}.png")
    for rel, data in (extra or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


@dataclass(frozen=True)
class Case:
    id: str
    kind: str  # config | model | data | storage | cli
    fragment: str
    changes: dict[str, Any] = field(default_factory=dict)  # dotted keys: "train.epochs"
    args: tuple[str, ...] = ()
    prepare: Callable[[Path], None] | None = None  # writes files before the run
    raw_text: str | None = None  # the study file's text, instead of BASE + changes
    study_file: str = "study.yaml"  # what to pass to thaw run (relative to the folder)
    as_user: bool = False  # a permission check: root writes anywhere, so only run as a user


def apply(study: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = yaml.safe_load(yaml.safe_dump(study))
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        if value is DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    return out


DELETE = object()


def npz(**changes: Any) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        np.savez(folder / "data.npz", **arrays(**changes))

    return write


def write_bytes(name: str, data: bytes) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        (folder / name).write_bytes(data)

    return write


def make_dir(name: str) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        (folder / name).mkdir()

    return make


def weightless_model(folder: Path) -> None:
    import keras

    inputs = keras.Input(shape=(8, 8, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="features")(x)
    keras.Model(inputs, x, name="weightless").save(folder / "tiny.keras")


def depthwise_model(folder: Path) -> None:
    """Weighted layers that Keras gives no LoRA: a depthwise convolution, a LayerNorm."""
    import keras

    inputs = keras.Input(shape=(8, 8, 3))
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise")(inputs)
    x = keras.layers.LayerNormalization(name="norm")(x)
    x = keras.layers.GlobalAveragePooling2D(name="features")(x)
    keras.Model(inputs, x, name="no_lora").save(folder / "tiny.keras")


def folders(
    classes: dict[str, int], extra: dict[str, bytes] | None = None
) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        image_folder(folder / "images", classes, extra)

    return write


def val_folders(folder: Path) -> None:
    image_folder(folder / "images", {"a": 3, "b": 3, "c": 3})
    image_folder(folder / "val", {"a": 2, "b": 2, "x": 2})


DIR = {"data": {"source": "directory", "path": "images", "val_fraction": 0.34}}


def foreign_sqlite(folder: Path) -> None:
    """Another application's SQLite file where the study's storage should be."""
    import sqlite3

    conn = sqlite3.connect(folder / "battery.db")
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    conn.execute("INSERT INTO notes (text) VALUES ('keep me')")
    conn.commit()
    conn.close()


def read_only_dir(name: str) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        (folder / name).mkdir()
        (folder / name).chmod(0o555)

    return make


NAN_IMAGES = np.full((12, 8, 8, 3), np.nan, dtype=np.float32)
ONE_INF = np.zeros((6, 8, 8, 3), dtype=np.float32)
ONE_INF[4, 1, 2, 0] = np.inf
TWICE = yaml.safe_dump(BASE) + "n_trials: 5\n"  # n_trials given a second time, at the end

CASES: list[Case] = [
    # --------------------------------------------------------------------------- config
    Case("empty study file", "config", "the study file is empty; write at least", raw_text=""),
    Case("comments only", "config", "the study file is empty", raw_text="# nothing yet\n"),
    Case("list study file", "config", "must be a mapping of keys", raw_text="- name: x\n"),
    Case(
        "scalar study file",
        "config",
        "must be a mapping of keys (name: ..., model: ...), got str",
        raw_text="hello\n",
    ),
    Case("invalid YAML", "config", "not valid YAML at line", raw_text="name: [x\n"),
    Case("missing study file", "config", "does not exist", study_file="nope.yaml"),
    Case("study file is a folder", "config", "is a folder; give a study file", study_file="."),
    Case("unknown top key", "config", "unknown key 'epochz'", {"epochz": 3}),
    Case(
        "a key given twice",
        "config",
        "key 'n_trials' is given twice (lines ",
        raw_text=TWICE,
    ),
    Case(
        "artifacts under a file",
        "config",
        "tiny.keras (to create ",
        {"artifacts": "tiny.keras/shared"},
    ),
    Case("unknown nested key", "config", "unknown key 'train.epoch'", {"train.epoch": 3}),
    Case("n_trials 0", "config", "n_trials must be >= 1, got 0", {"n_trials": 0}),
    Case(
        "n_trials text", "config", "n_trials must be an integer, got 'many'", {"n_trials": "many"}
    ),
    Case("negative seed", "config", "seed must be >= 0, got -1", {"seed": -1}),
    Case("empty name", "config", "name must be a non-empty string", {"name": ""}),
    Case(
        "learning rate low > high",
        "config",
        "low=0.01 > high=0.001; swap them",
        {"search_space.learning_rate": [1e-2, 1e-3]},
    ),
    Case(
        "log scale from 0",
        "config",
        "must be > 0 on a log scale",
        {"search_space.learning_rate": {"low": 0, "high": 0.1}},
    ),
    Case("dropout 1", "config", "dropout: high=1.0 must be < 1", {"search_space.dropout": [0, 1]}),
    Case(
        "unfrozen low negative",
        "config",
        "unfrozen_layers.low must be an integer >= 0, got -1",
        {"search_space.unfrozen_layers": [-1, 2]},
    ),
    Case(
        "unfrozen high text",
        "config",
        "unfrozen_layers.high must be an integer or 'all', got 'most'",
        {"search_space.unfrozen_layers": [0, "most"]},
    ),
    Case(
        "l2sp strength above 1",
        "config",
        "search_space.l2sp: high=5.0 is above 1.0",
        {"search_space.l2sp": [1e-3, 5.0]},
    ),
    Case(
        "l2sp strength 0",
        "config",
        "search_space.l2sp: low=0.0 must be > 0",
        {"search_space.l2sp": {"low": 0.0, "high": 0.1, "log": False}},
    ),
    Case(
        "rate decay factor below 0.5",
        "config",
        "search_space.lr_decay: low=0.2 is below 0.5",
        {"search_space.lr_decay": [0.2, 1.0]},
    ),
    Case(
        "rate decay factor above 1",
        "config",
        "search_space.lr_decay: high=1.2 is above 1.0",
        {"search_space.lr_decay": [0.5, 1.2]},
    ),
    Case(
        "augmentation strength above 1",
        "config",
        "search_space.augment: high=2.0 is above 1.0",
        {"search_space.augment": [0.0, 2.0]},
    ),
    Case(
        "augmentation strength negative",
        "config",
        "search_space.augment: low=-0.5 is below 0.0",
        {"search_space.augment": [-0.5, 0.5]},
    ),
    Case(
        "block start negative",
        "config",
        "search_space.block_start.low must be an integer >= 0 (0 is the bottom layer), got -1",
        {"search_space.block_start": [-1, 1]},
    ),
    Case(
        "block start beyond the model's depth",
        "config",
        "search_space.block_start: [0, 9] is beyond the model's depth: it has 2 layers",
        {"search_space.block_start": [0, 9]},
    ),
    Case(
        "block start log-scaled",
        "config",
        "search_space.block_start cannot be log-scaled",
        {"search_space.block_start": {"low": 0, "high": 1, "log": True}},
    ),
    Case(
        "LoRA rank negative",
        "config",
        "search_space.lora_rank: -4 is outside 0..256",
        {"search_space.lora_rank": [0, -4]},
    ),
    Case(
        "LoRA rank not whole",
        "config",
        "search_space.lora_rank: 2.5 is not a whole number",
        {"search_space.lora_rank": [2.5, 8]},
    ),
    Case(
        "LoRA rank text",
        "config",
        "search_space.lora_rank: 'eight' is not a whole number",
        {"search_space.lora_rank": "eight"},
    ),
    Case(
        "LoRA rank too large",
        "config",
        "search_space.lora_rank: 1024 is outside 0..256",
        {"search_space.lora_rank": 1024},
    ),
    Case(
        "LoRA ranks empty",
        "config",
        "search_space.lora_rank is an empty list",
        {"search_space.lora_rank": []},
    ),
    Case(
        "unknown batchnorm mode",
        "config",
        "search_space.batchnorm must be a list drawn from",
        {"search_space.batchnorm": ["sometimes"]},
    ),
    Case("unknown objective", "config", "objective is 'accuracy'", {"objective": "accuracy"}),
    Case("zero epochs", "config", "train.epochs must be >= 1, got 0", {"train.epochs": 0}),
    Case(
        "warm-up as long as training",
        "config",
        "train.warmup_epochs=1 must be below train.epochs=1",
        {"train.warmup_epochs": 1},
    ),
    Case("unknown sampler", "config", "sampler.name is 'grid'", {"sampler.name": "grid"}),
    Case("unknown pruner", "config", "pruner.compare is 'fast'", {"pruner.compare": "fast"}),
    Case(
        "validation fraction above 1",
        "config",
        "data.val_fraction must be a number between 0 and 1, got 1.5",
        {"data.val_fraction": 1.5},
    ),
    Case("unknown model source", "config", "model.source is 'hub'", {"model.source": "hub"}),
    # ---------------------------------------------------------------------------- model
    Case(
        "missing model file",
        "model",
        "missing.keras' does not exist; check the path",
        {"model.path": "missing.keras"},
    ),
    Case(
        "model not a zip",
        "model",
        "bad.keras is not a Keras model file",
        {"model.path": "bad.keras"},
        prepare=write_bytes("bad.keras", b"not a zip"),
    ),
    Case(
        "model with another suffix",
        "model",
        "has suffix '.pt'; thaw loads '.keras'",
        {"model.path": "model.pt"},
        prepare=write_bytes("model.pt", b"torch"),
    ),
    Case(
        "model path is a folder",
        "model",
        "folder.keras is not a Keras model file",
        {"model.path": "folder.keras"},
        prepare=make_dir("folder.keras"),
    ),
    Case(
        "unknown cut_at",
        "model",
        "the model 'tiny_cnn' has no layer named 'fc7'",
        {"model.cut_at": "fc7"},
    ),
    Case(
        "model without weighted layers",
        "model",
        "has no layers with weights (BatchNorm excluded) below the cut",
        prepare=weightless_model,
    ),
    Case(
        "LoRA on a model without a layer that supports it",
        "model",
        "LoRA works on Dense, EinsumDense, Conv1D, Conv2D, Conv3D layers",
        {"search_space.lora_rank": [0, 4]},
        prepare=depthwise_model,
    ),
    Case(
        "LoRA with no layer unfrozen",
        "model",
        "no layer of it is unfrozen",
        {"search_space.lora_rank": [4], "search_space.unfrozen_layers": [0, 0]},
    ),
    Case(
        "unfrozen above the model",
        "model",
        "high=9 but the model has only 2 layers with weights",
        {"search_space.unfrozen_layers": [0, 9]},
    ),
    # ----------------------------------------------------------------------------- data
    Case(
        "missing data file",
        "data",
        "missing.npz' does not exist; check the path",
        {"data.path": "missing.npz"},
    ),
    Case(
        "data file not npz",
        "data",
        "junk.npz is not a .npz archive (it begins with b'junk b')",
        {"data.path": "junk.npz"},
        prepare=write_bytes("junk.npz", b"junk bytes"),
    ),
    Case("npz lacks arrays", "data", "lacks arrays ['y_val']", prepare=npz(y_val=None)),
    Case(
        "negative labels",
        "data",
        "y_train has negative labels [-1]",
        prepare=npz(y_train=np.array([-1, 0, 1, 2] * 3)),
    ),
    Case(
        "fractional labels",
        "data",
        "y_val must hold integer class labels, got values such as [0.5]",
        prepare=npz(y_val=np.array([0.5, 1, 2, 0, 1, 2])),
    ),
    Case(
        "text labels",
        "data",
        "y_train must hold integer class labels, got dtype <U1",
        prepare=npz(y_train=np.array(list("abcabcabcabc"))),
    ),
    Case(
        "validation label that training lacks",
        "data",
        "validation labels [3] do not occur in the training labels",
        {"data.class_names": ["a", "b", "c", "d"]},
        prepare=npz(y_val=np.array([0, 1, 2, 3, 0, 1])),
    ),
    Case(
        "validation label beyond the inferred classes",
        "data",
        "validation labels [3] do not occur in the training labels",
        {"data.class_names": DELETE},
        prepare=npz(y_val=np.array([0, 1, 2, 3, 0, 1])),
    ),
    Case(
        "class without training images",
        "data",
        "class 'd' (label 3) has no training images",
        {"data.class_names": ["a", "b", "c", "d"]},
    ),
    Case(
        "labels beyond class_names",
        "data",
        "the labels go up to 2 but data.class_names names 2 classes",
        {"data.class_names": ["a", "b"]},
    ),
    Case(
        "one class only",
        "data",
        "need at least two classes",
        {"data.class_names": DELETE},
        prepare=npz(y_train=np.zeros(12, np.int32), y_val=np.zeros(6, np.int32)),
    ),
    Case(
        "one-hot training labels, integer validation labels",
        "data",
        "y_train has rows of 0/1 labels of shape (12, 3) but y_val has shape (6,); give both "
        "splits labels of the same form",
        prepare=npz(y_train=np.eye(3, dtype=np.int32)[np.arange(12) % 3]),
    ),
    Case(
        "multi-label rows with a value other than 0 and 1",
        "data",
        "y_train has labels of shape (12, 3) with values other than 0 and 1 (such as 0.5)",
        prepare=npz(y_train=np.where(MULTI_HOT == 1, 0.5, 0.0), y_val=MULTI_HOT[:6]),
    ),
    Case(
        "multi-label rows, validation with another number of labels",
        "data",
        "y_train has 3 label columns but y_val has 4; every split needs one column per label",
        prepare=npz(y_train=MULTI_HOT, y_val=np.ones((6, 4), np.int32)),
    ),
    Case(
        "multi-label rows, a label no training image has",
        "data",
        "label 'c' (column 2) is 0 for every training image",
        prepare=npz(y_train=MULTI_HOT * np.array([1, 1, 0]), y_val=MULTI_HOT[:6]),
    ),
    Case(
        "multi-label rows, class_names of another length",
        "data",
        "the labels have 3 columns but data.class_names names 2 (a, b)",
        {"data.class_names": ["a", "b"]},
        prepare=npz(y_train=MULTI_HOT, y_val=MULTI_HOT[:6]),
    ),
    Case(
        "multi-label rows read as single-label",
        "data",
        "y_train labels of shape (12, 3) are not one-hot rows",
        {"data.task": "multiclass"},
        prepare=npz(y_train=MULTI_HOT, y_val=MULTI_HOT[:6]),
    ),
    Case(
        "multi-label rows found, with class_weight",
        "data",
        "train.class_weight is not defined for a multi-label target",
        {"train.class_weight": "balanced"},
        prepare=npz(y_train=MULTI_HOT, y_val=MULTI_HOT[:6]),
    ),
    Case(
        "multilabel asked, with class_weight",
        "config",
        "train.class_weight is not defined for a multi-label target",
        {"data.task": "multilabel", "train.class_weight": {"a": 2.0}},
    ),
    Case(
        "multilabel asked of an image folder",
        "config",
        "data.task: multilabel needs npz arrays or thaw.run(data=...) arrays: an image folder has "
        "one class per image",
        {"data": {"source": "directory", "path": "images", "task": "multilabel"}},
        prepare=folders({"a": 4, "b": 4}),
    ),
    Case(
        "unknown data.task",
        "config",
        "data.task is 'sometimes'; expected one of: auto, multiclass, multilabel",
        {"data.task": "sometimes"},
    ),
    Case(
        "labels and images differ in count",
        "data",
        "x_train has 12 images but y_train 11 labels",
        prepare=npz(y_train=(np.arange(11) % 3).astype(np.int32)),
    ),
    Case(
        "images without a channel axis",
        "data",
        "x_train must hold images as (count, height, width, channels), got shape (12, 8, 8)",
        prepare=npz(x_train=np.zeros((12, 8, 8), np.uint8)),
    ),
    Case(
        "validation images of another size",
        "data",
        "training images have shape (8, 8, 3) but validation images (9, 9, 3)",
        prepare=npz(x_val=np.zeros((6, 9, 9, 3), np.uint8)),
    ),
    Case(
        "images of another size than the model",
        "data",
        "images have shape (10, 10, 3) but the model expects (8, 8, 3)",
        prepare=npz(
            x_train=np.zeros((12, 10, 10, 3), np.uint8), x_val=np.zeros((6, 10, 10, 3), np.uint8)
        ),
    ),
    Case(
        "image folder with one class",
        "data",
        "has one class subfolder ('a'); a classifier needs at least two",
        DIR,
        prepare=folders({"a": 4}),
    ),
    Case(
        "class folder with only a README",
        "data",
        "has no images (it holds only non-image files: README.txt, ...)",
        DIR,
        prepare=folders({"a": 4, "b": 4}, {"c/README.txt": b"notes"}),
    ),
    Case(
        "class too small for a validation split",
        "data",
        "class 'b' has 1 usable images",
        DIR,
        prepare=folders({"a": 4, "b": 1}),
    ),
    Case(
        "validation folder with other classes",
        "data",
        "has classes ['a', 'b', 'x'] but the training folder has ['a', 'b', 'c']",
        {"data": {"source": "directory", "path": "images", "val_path": "val"}},
        prepare=val_folders,
    ),
    Case(
        "too many corrupt images",
        "data",
        "2 of 10 files could not be read as images (more than 5%)",
        DIR,
        prepare=folders({"a": 4, "b": 4}, {"a/x.png": b"garbage", "b/y.jpg": b"garbage"}),
    ),
    Case(
        "images all NaN",
        "data",
        "x_train holds NaN or infinite values in all images (the first: image 0); replace them",
        prepare=npz(x_train=NAN_IMAGES),
    ),
    Case(
        "an infinite pixel",
        "data",
        "x_val holds NaN or infinite values in 1 of 6 images (the first: image 4)",
        prepare=npz(x_val=ONE_INF),
    ),
    Case(
        "text file named .npz",
        "data",
        "data.npz is not a .npz archive (it begins with b'x_trai'); save the arrays",
        prepare=write_bytes("data.npz", b"x_train,y_train\n1,2\n"),
    ),
    # -------------------------------------------------------------------------- storage
    Case(
        "another application's SQLite file",
        "storage",
        "battery.db is another application's SQLite database (tables: notes); give thaw a "
        "file of its own",
        prepare=foreign_sqlite,
    ),
    Case(
        "read-only storage folder",
        "storage",
        "/ro is not writable; give a storage file in a folder you can write",
        {"storage": "sqlite:///ro/x.db"},
        prepare=read_only_dir("ro"),
        as_user=True,
    ),
    Case("storage not a URL", "storage", "storage must be a database URL", {"storage": "x.db"}),
    Case(
        "storage folder missing",
        "storage",
        "folder /nonexistent-dir does not exist",
        {"storage": "sqlite:////nonexistent-dir/x.db"},
    ),
    Case(
        "storage is a folder",
        "storage",
        "is a folder; give a file",
        {"storage": "sqlite:///dbdir"},
        prepare=make_dir("dbdir"),
    ),
    Case(
        "storage is not a database",
        "storage",
        "exists and is not a SQLite database",
        prepare=write_bytes("battery.db", b"my notes, not a database\n"),
    ),
    Case(
        "in-memory storage",
        "storage",
        "an in-memory SQLite database is lost when thaw exits",
        {"storage": "sqlite:///:memory:"},
    ),
    Case(
        "unknown database",
        "storage",
        "unknown database 'oracle'",
        {"storage": "oracle://user@host/db"},
    ),
    Case(
        "several workers on SQLite",
        "storage",
        "--workers 2 needs a storage several processes can share",
        args=("--workers", "2"),
    ),
    Case("loop misspelt", "config", "loop must be on or off, got 'of'", {"loop": "of"}),
    Case("loop a number", "config", "loop must be on or off, got 1", {"loop": 1}),
    Case(
        "lr_range_test misspelt",
        "config",
        "lr_range_test must be on or off, got 'maybe'",
        {"lr_range_test": "maybe"},
    ),
    Case(
        "rate_guard misspelt",
        "config",
        "rate_guard must be on or off, got 'yes please'",
        {"rate_guard": "yes please"},
    ),
    # ------------------------------------------------------------------------------ CLI
    Case(
        "--storage not a URL",
        "cli",
        "--storage must be a database URL such as sqlite:///demo.db, got 'x.db'",
        args=("--storage", "x.db"),
    ),
    Case(
        "unknown flag",
        "cli",
        "unrecognized arguments: --n-trails 3; see 'thaw run --help'",
        args=("--n-trails", "3"),
    ),
    Case("--n-trials 0", "cli", "--n-trials must be >= 1, got 0", args=("--n-trials", "0")),
    Case("--n-trials -3", "cli", "--n-trials must be >= 1, got -3", args=("--n-trials", "-3")),
    Case("--timeout 0", "cli", "--timeout must be > 0 seconds", args=("--timeout", "0")),
    Case("--workers 0", "cli", "--workers must be >= 1, got 0", args=("--workers", "0")),
    Case("--gpus 0,x", "cli", "--gpus must be GPU indices such as 0,1", args=("--gpus", "0,x")),
    # This machine has no GPU: any index names one that is not there.
    Case(
        "--gpus 0, no GPU",
        "cli",
        "--gpus 0: no GPU 0 on this machine (found none",
        args=("--gpus", "0"),
    ),
    Case(
        "--gpus 0,1, no GPU",
        "cli",
        "--gpus 0,1: no GPU 0, 1 on this machine (found none",
        args=("--gpus", "0,1", "--storage", "postgresql://nobody@127.0.0.1:1/none"),
    ),
]


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``conv1 -> bn1 -> conv2 -> features (GAP) -> old_head``: 2 weighted layers below the cut."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=(8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same", name="conv1")(inputs)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.Conv2D(4, 3, padding="same", name="conv2")(x)
    x = layers.GlobalAveragePooling2D(name="features")(x)
    outputs = layers.Dense(3, activation="softmax", name="old_head")(x)
    path = tmp_path_factory.mktemp("battery-model") / "tiny.keras"
    keras.Model(inputs, outputs, name="tiny_cnn").save(path)
    return path


def test_the_battery_is_large_and_covers_every_kind() -> None:
    kinds = {c.kind for c in CASES}
    assert kinds == {"config", "model", "data", "storage", "cli"}
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_storage_untouched(
    case: Case, tmp_path: Path, tiny_model_file: Path, thaw: Callable[..., CliResult]
) -> None:
    if case.as_user and os.geteuid() == 0:
        pytest.skip("root writes to read-only folders; run as a user to check this refusal")
    folder = tmp_path / "study"
    folder.mkdir()
    shutil.copy(tiny_model_file, folder / "tiny.keras")
    np.savez(folder / "data.npz", **arrays())
    if case.prepare is not None:
        case.prepare(folder)
    study_file = folder / "study.yaml"
    if case.raw_text is not None:
        study_file.write_text(case.raw_text, encoding="utf-8")
    else:
        study_file.write_text(yaml.safe_dump(apply(BASE, case.changes)), encoding="utf-8")
    db = folder / "battery.db"
    before = db.read_bytes() if db.exists() else None
    listing = sorted(p.name for p in folder.iterdir())

    result = thaw("run", folder / case.study_file, *case.args, "--no-progress")

    assert result.rc == 2, result.err
    assert case.fragment in result.error_line  # exactly one line, "thaw: error: ..."
    assert "allow_pickle" not in result.err and "usage:" not in result.err
    assert "Created study" not in result.out and "Resuming study" not in result.out
    if before is None:
        assert not db.exists()
    else:
        assert db.read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == listing  # no other file appeared
    assert not Path("/nonexistent-dir").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (
            ("report", "study.yaml", "--format", "xlsx"),
            "argument --format: invalid choice: 'xlsx' (choose from 'csv', 'parquet'); see "
            "'thaw report --help'",
        ),
        (("report", "study.yaml", "--bogus"), "unrecognized arguments: --bogus; see 'thaw report"),
        (("run",), "the following arguments are required: study_file; see 'thaw run --help'"),
        (("run", "study.yaml", "--workers", "two"), "argument --workers: invalid int value: 'two'"),
        (("frobnicate",), "argument command: invalid choice: 'frobnicate'"),
        (("--bogus", "run", "study.yaml"), "unrecognized arguments: --bogus"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else None,
)
def test_a_usage_error_is_one_line_exit_2_and_writes_nothing(
    args: tuple[str, ...],
    fragment: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    thaw: Callable[..., CliResult],
) -> None:
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(BASE), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = thaw(*args)
    assert result.rc == 2
    assert fragment in result.error_line  # exactly one line, "thaw: error: ..."
    assert "usage:" not in result.err and result.out == ""
    assert [p.name for p in tmp_path.iterdir()] == ["study.yaml"]
