"""Fixtures shared by every test folder.

- ``thaw_cache_dir`` (session, autouse): ``THAW_CACHE_DIR`` points at a session temp folder, so
  no test reads or writes ``~/.cache/thaw``. Subprocesses started by tests inherit it.
- ``demo_model_path`` (session): the demo CNN pretrained in that cache, once (~30 s on 2 cores);
  every test that runs the demo model or the demo study must request it.
- ``tiny_cnn``: builds a tiny functional CNN with Conv/BatchNorm/Dense layers (optionally with a
  nested sub-model), so fits take milliseconds.
- ``tiny_arrays``: random uint8 images and labels matching ``tiny_cnn``'s input.

Keras is imported inside the fixtures only: ``tests/reports`` never needs it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# pytest's default (prepend) import mode put this folder on sys.path to import this file. Its
# sub-folders search/, objectives/ and reports/ have no __init__.py, so from there they would be
# found as namespace packages and shadow the real packages of the same names (installed editable
# through a meta-path finder, which runs after sys.path). Nothing here is imported by name.
_TESTS_DIR = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if not p or Path(p).resolve() != _TESTS_DIR]

TINY_SHAPE = (8, 8, 3)
TINY_CLASSES = 3


@pytest.fixture(scope="session", autouse=True)
def thaw_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cache = tmp_path_factory.mktemp("thaw-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("THAW_CACHE_DIR", str(cache))
        mp.setenv("TF_CPP_MIN_LOG_LEVEL", os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
        yield cache


@pytest.fixture(scope="session")
def demo_model_path(thaw_cache_dir: Path) -> Path:
    """The pretrained demo model, trained once per session into the session cache."""
    from thaw.objectives._demo import demo_pretrained_model_path

    path = demo_pretrained_model_path(seed=0)
    assert path.parent == thaw_cache_dir and path.is_file()
    return path


def build_tiny_cnn(
    input_shape: tuple[int, int, int] = TINY_SHAPE,
    num_classes: int = TINY_CLASSES,
    nested: bool = False,
    seed: int = 0,
) -> Any:
    """``rescale -> conv1 -> bn1 -> relu -> conv2 -> bn2 -> relu -> features (GAP) -> old_head``.

    With ``nested=True``, ``conv1 -> bn1 -> relu`` live in a functional sub-model ``backbone``.
    Layers that carry weights (BatchNorm excluded), bottom to top: conv1, conv2, old_head.
    """
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    if nested:
        inner_in = keras.Input(shape=input_shape, name="backbone_in")
        y = layers.Conv2D(4, 3, padding="same", name="conv1")(inner_in)
        y = layers.BatchNormalization(name="bn1")(y)
        y = layers.Activation("relu", name="relu1")(y)
        x = keras.Model(inner_in, y, name="backbone")(x)
    else:
        x = layers.Conv2D(4, 3, padding="same", name="conv1")(x)
        x = layers.BatchNormalization(name="bn1")(x)
        x = layers.Activation("relu", name="relu1")(x)
    x = layers.Conv2D(6, 3, padding="same", name="conv2")(x)
    x = layers.BatchNormalization(name="bn2")(x)
    x = layers.Activation("relu", name="relu2")(x)
    x = layers.GlobalAveragePooling2D(name="features")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="old_head")(x)
    return keras.Model(inputs, outputs, name="tiny_cnn")


@pytest.fixture(scope="session")
def tiny_cnn() -> Callable[..., Any]:
    return build_tiny_cnn


def make_tiny_arrays(
    seed: int = 0,
    n_train: int = 24,
    n_val: int = 12,
    shape: tuple[int, ...] = TINY_SHAPE,
    num_classes: int = TINY_CLASSES,
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, size=(n_train, *shape), dtype=np.uint8),
        "y_train": (np.arange(n_train) % num_classes).astype(np.int32),
        "x_val": rng.integers(0, 256, size=(n_val, *shape), dtype=np.uint8),
        "y_val": (np.arange(n_val) % num_classes).astype(np.int32),
    }


@pytest.fixture(scope="session")
def tiny_arrays() -> Callable[..., dict[str, np.ndarray]]:
    return make_tiny_arrays
