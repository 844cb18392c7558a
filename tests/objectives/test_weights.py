"""assign_weights, restore_weights and copy_weights: the result of set_weights, one check,
nothing assigned on a mismatch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from thaw.objectives._weights import (  # noqa: E402
    assign_weights,
    copy_weights,
    restore_weights,
)


def _random_weights(model: Any, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=w.shape).astype(w.dtype) for w in model.get_weights()]


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
def test_assign_weights_gives_what_set_weights_gives(
    tiny_cnn: Callable[..., Any], nested: bool
) -> None:
    by_keras, by_thaw = tiny_cnn(nested=nested), tiny_cnn(nested=nested, seed=1)
    weights = _random_weights(by_keras, seed=1)  # BatchNorm moving statistics included
    by_keras.set_weights(weights)
    assign_weights(by_thaw, weights)
    assert _same(by_thaw.get_weights(), by_keras.get_weights())
    assert _same(by_thaw.get_weights(), weights)


def test_copy_weights_between_differently_frozen_copies(tiny_cnn: Callable[..., Any]) -> None:
    source = tiny_cnn()
    source.set_weights(_random_weights(source, seed=2))
    target = keras.models.clone_model(source)
    for layer in source.layers[:-1]:  # frozen flags differ; the weights' order does not
        layer.trainable = False
    copy_weights(source, target)
    assert _same(target.get_weights(), source.get_weights())
    # a copy, not shared: changing the source leaves the target as it was
    copied = target.get_weights()
    source.set_weights(_random_weights(source, seed=3))
    assert _same(target.get_weights(), copied)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda ws: ws[:-1], "weights for a model with"),
        (lambda ws: [*ws, ws[-1]], "weights for a model with"),
        (lambda ws: [np.zeros((*w.shape, 2), w.dtype) for w in ws], "has shape"),
        (lambda ws: [*ws[:-1], np.zeros((ws[-1].size + 1,), ws[-1].dtype)], "has shape"),
    ],
    ids=["one-too-few", "one-too-many", "every-shape-wrong", "last-shape-wrong"],
)
def test_a_mismatch_is_refused_and_nothing_assigned(
    tiny_cnn: Callable[..., Any], change: Callable[[list[np.ndarray]], list[np.ndarray]], match: str
) -> None:
    model = tiny_cnn()
    before = model.get_weights()
    wrong = change(_random_weights(model, seed=4))
    with pytest.raises(ValueError, match=match):
        assign_weights(model, wrong)
    assert _same(model.get_weights(), before)


def test_restore_weights_assigns_only_what_differs(tiny_cnn: Callable[..., Any]) -> None:
    """The result of set_weights, bit for bit; the variables already holding their weight are
    left alone (a trial changed a few of them)."""
    model = tiny_cnn()
    weights = _random_weights(model, seed=5)
    assert restore_weights(model, weights) == len(weights)  # a fresh model differs everywhere
    assert _same(model.get_weights(), weights)
    assert restore_weights(model, weights) == 0
    changed = model.weights[-1]
    changed.assign(changed + 1.0)
    assert restore_weights(model, weights) == 1
    assert _same(model.get_weights(), weights)
    # equal values are not enough: -0.0 is put back as 0.0 where the weight is 0.0
    zeros = [np.zeros_like(w) for w in weights]
    restore_weights(model, zeros)
    model.weights[0].assign(-np.zeros_like(zeros[0]))
    assert restore_weights(model, zeros) == 1
    assert not np.signbit(model.get_weights()[0]).any()


@pytest.mark.parametrize(
    "change",
    [lambda ws: ws[:-1], lambda ws: [*ws[:-1], np.zeros((ws[-1].size + 1,), ws[-1].dtype)]],
    ids=["one-too-few", "last-shape-wrong"],
)
def test_restore_weights_refuses_a_mismatch_and_assigns_nothing(
    tiny_cnn: Callable[..., Any], change: Callable[[list[np.ndarray]], list[np.ndarray]]
) -> None:
    model = tiny_cnn()
    before = model.get_weights()
    with pytest.raises(ValueError, match="restore_weights: "):
        restore_weights(model, change(_random_weights(model, seed=6)))
    assert _same(model.get_weights(), before)


def test_copy_from_another_architecture_is_refused(tiny_cnn: Callable[..., Any]) -> None:
    model = tiny_cnn()
    before = model.get_weights()
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="copy_weights: "):
        copy_weights(other, model)
    assert _same(model.get_weights(), before)


def test_a_snapshot_stays_as_it_was_while_the_model_trains(tiny_cnn: Callable[..., Any]) -> None:
    """Optimizer steps update variables in place; the snapshot (backend tensors) must not move
    with them, and puts the model back exactly."""
    from thaw.objectives._weights import snapshot_weights

    model = tiny_cnn()
    model.compile(keras.optimizers.Adam(0.1), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(16, *model.input_shape[1:])).astype("float32")
    y = rng.integers(0, model.output_shape[-1], size=16)
    before = model.get_weights()
    snapshot = snapshot_weights(model)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    trained = model.get_weights()
    assert not _same(trained, before)  # the fit moved the weights (BatchNorm statistics too)
    assert _same([keras.ops.convert_to_numpy(w) for w in snapshot], before)
    assign_weights(model, snapshot)
    assert _same(model.get_weights(), before)


_JAX_SCRIPT = """
import numpy as np, keras
from thaw.objectives._weights import (
    assign_weights, copy_weights, restore_weights, snapshot_weights
)
assert keras.backend.backend() == "jax"

def model():
    inputs = keras.Input((4,))
    m = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    m.compile(keras.optimizers.Adam(0.1), "sparse_categorical_crossentropy")
    return m

x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
y = np.arange(16) % 3
a, b = model(), model()
a.fit(x, y, epochs=1, verbose=0)
kept = snapshot_weights(a)
assign_weights(a, kept)
a.fit(x, y, epochs=1, verbose=0)  # donates a's buffers: the snapshot must not be one of them
copy_weights(a, b)
b.fit(x, y, epochs=1, verbose=0)  # donates b's buffers: a's must not be among them
b.predict(x, verbose=0)
pristine = [np.zeros_like(w) for w in a.get_weights()]
assert restore_weights(a, pristine) == len(pristine)
a.fit(x, y, epochs=1, verbose=0)  # trains from the restored arrays: none shared or deleted
assert restore_weights(a, pristine) >= 1 and restore_weights(a, pristine) == 0
print(sum(float(np.sum(keras.ops.convert_to_numpy(w))) for w in kept + a.get_weights()))
"""


def test_on_jax_every_variable_gets_an_array_of_its_own() -> None:
    """On the JAX backend an assign keeps the array it is given and Keras's jitted steps donate
    the variables' buffers: a snapshot or a second model sharing one would be deleted under
    them ("Array has been deleted"). Runs where JAX is installed (the GPU check's backend)."""
    import importlib.util
    import os
    import subprocess
    import sys

    if importlib.util.find_spec("jax") is None:
        pytest.skip("JAX is not installed here")
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    done = subprocess.run(
        [sys.executable, "-c", _JAX_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
