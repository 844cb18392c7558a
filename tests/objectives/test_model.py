"""Freezing a pretrained base, BatchNorm modes, the new head and cutting a model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest

from thaw.objectives import (
    ModelSourceError,
    batchnorm_layers,
    build_model,
    compile_model,
    count_trainable_weights,
    cut_base,
    freeze,
    weighted_layers,
)
from thaw.objectives._model import head_pooling

# Trainable parameter counts of tiny_cnn's layers (tests/conftest.py), from its architecture:
# conv1 3x3x3->4 + bias, conv2 3x3x4->6 + bias, old_head 6->3 + bias, BatchNorm gamma + beta.
TRAINABLE_PARAMS = {
    "conv1": 3 * 3 * 3 * 4 + 4,
    "conv2": 3 * 3 * 4 * 6 + 6,
    "old_head": 6 * 3 + 3,
    "bn1": 2 * 4,
    "bn2": 2 * 6,
}


def trainable_leaf_names(model: keras.Model) -> set[str]:
    """Names of layers whose weights the optimizer would update."""
    names = set()
    for w in model.trainable_weights:
        names.add(w.path.split("/")[-2])
    return names


# ------------------------------------------------------------------------- weighted layers


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
def test_weighted_layers_bottom_to_top_without_batchnorm(
    tiny_cnn: Callable[..., Any], nested: bool
) -> None:
    model = tiny_cnn(nested=nested)
    assert [layer.name for layer in weighted_layers(model)] == ["conv1", "conv2", "old_head"]
    assert [layer.name for layer in batchnorm_layers(model)] == ["bn1", "bn2"]


# --------------------------------------------------------------------------------- freeze

FREEZE_TABLE = [
    (0, "frozen", set()),
    (1, "frozen", {"old_head"}),
    (2, "frozen", {"conv2", "old_head"}),
    (3, "frozen", {"conv1", "conv2", "old_head"}),
    (3, "adapt", {"conv1", "conv2", "old_head"}),
    (0, "train", set()),
    (1, "train", {"old_head"}),  # both BatchNorm layers lie below the lowest unfrozen layer
    (2, "train", {"conv2", "bn2", "old_head"}),
    (3, "train", {"conv1", "bn1", "conv2", "bn2", "old_head"}),
]


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
@pytest.mark.parametrize(("unfrozen", "batchnorm", "expected"), FREEZE_TABLE)
def test_freeze_trains_exactly_the_top_layers(
    tiny_cnn: Callable[..., Any], nested: bool, unfrozen: int, batchnorm: str, expected: set[str]
) -> None:
    model = tiny_cnn(nested=nested)
    freeze(model, unfrozen, batchnorm)
    assert trainable_leaf_names(model) == expected
    assert count_trainable_weights(model) == sum(TRAINABLE_PARAMS[n] for n in expected)
    for bn in batchnorm_layers(model):
        assert bn.trainable == (bn.name in expected)


def test_freeze_again_undoes_the_previous_freeze(tiny_cnn: Callable[..., Any]) -> None:
    model = tiny_cnn()
    freeze(model, 3, "train")
    freeze(model, 1, "frozen")
    assert trainable_leaf_names(model) == {"old_head"}


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
def test_freeze_works_on_a_base_saved_frozen(tiny_cnn: Callable[..., Any], nested: bool) -> None:
    model = tiny_cnn(nested=nested)
    model.trainable = False
    if nested:
        model.get_layer("backbone").trainable = False
    freeze(model, 3)
    assert trainable_leaf_names(model) == {"conv1", "conv2", "old_head"}


@pytest.mark.parametrize("unfrozen", [-1, 4, 100])
def test_freeze_out_of_range(tiny_cnn: Callable[..., Any], unfrozen: int) -> None:
    with pytest.raises(
        ValueError,
        match=rf"unfrozen_layers={unfrozen} is outside 0\.\.3: the "
        r"base 'tiny_cnn' has 3 layers with weights",
    ):
        freeze(tiny_cnn(), unfrozen)


def test_freeze_unknown_batchnorm_mode(tiny_cnn: Callable[..., Any]) -> None:
    with pytest.raises(ValueError, match=r"batchnorm='warm'; expected one of"):
        freeze(tiny_cnn(), 1, "warm")


# ------------------------------------------------------------------- BatchNorm during a fit


def _bn_state(model: keras.Model) -> dict[str, list[np.ndarray]]:
    return {
        bn.name: [v.numpy() for v in (bn.moving_mean, bn.moving_variance, bn.gamma, bn.beta)]
        for bn in batchnorm_layers(model)
    }


@pytest.mark.parametrize("batchnorm", ["frozen", "train"])
def test_batchnorm_statistics_after_a_real_fit(
    tiny_cnn: Callable[..., Any], tiny_arrays: Callable[..., dict[str, np.ndarray]], batchnorm: str
) -> None:
    base = cut_base(tiny_cnn(), "features")
    freeze(base, len(weighted_layers(base)), batchnorm)  # full fine-tuning
    model = build_model(base, num_classes=3, dropout=0.0)
    compile_model(model, learning_rate=1e-2, weight_decay=0.0)
    before = _bn_state(base)
    conv_before = base.get_layer("conv1").kernel.numpy()
    arrays = tiny_arrays()
    model.fit(
        arrays["x_train"].astype("float32"), arrays["y_train"], epochs=2, batch_size=8, verbose=0
    )
    after = _bn_state(base)

    assert not np.allclose(conv_before, base.get_layer("conv1").kernel.numpy())
    for name in before:
        for old, new in zip(before[name], after[name], strict=True):
            if batchnorm == "frozen":
                np.testing.assert_array_equal(old, new)
            else:
                assert not np.allclose(old, new), name


@pytest.mark.parametrize(("batchnorm", "same"), [("frozen", True), ("train", False)])
def test_frozen_batchnorm_runs_in_inference_mode_during_training(
    tiny_cnn: Callable[..., Any],
    tiny_arrays: Callable[..., dict[str, np.ndarray]],
    batchnorm: str,
    same: bool,
) -> None:
    base = cut_base(tiny_cnn(), "features")
    freeze(base, 2, batchnorm)
    model = build_model(base, num_classes=3, dropout=0.0)
    x = tiny_arrays()["x_train"][:8].astype("float32")
    train_out = keras.ops.convert_to_numpy(model(x, training=True))
    infer_out = keras.ops.convert_to_numpy(model(x, training=False))
    assert np.allclose(train_out, infer_out, atol=1e-6) == same


# ---------------------------------------------------------------------------- build_model


@pytest.mark.parametrize(("cut_at", "pooled"), [("relu2", True), ("features", False)])
def test_build_model_head(tiny_cnn: Callable[..., Any], cut_at: str, pooled: bool) -> None:
    base = cut_base(tiny_cnn(), cut_at)
    model = build_model(base, num_classes=5, dropout=0.25)
    assert model.input_shape == (None, 8, 8, 3)
    assert model.output_shape == (None, 5)
    names = [layer.name for layer in model.layers]
    assert ("head_pool" in names) == pooled
    assert model.get_layer("head_dropout").rate == 0.25
    head = model.get_layer("head_dense")
    assert head.units == 5 and head.dtype_policy.compute_dtype == "float32"
    probs = keras.ops.convert_to_numpy(model(np.zeros((2, 8, 8, 3), "float32")))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    # the base is shared, not copied: its layers are the model's
    assert model.get_layer(base.name) is base


class _Tokens(keras.layers.Dense):
    """A Dense layer that says, as KerasHub's ViT patch embedding does, that token 0 of the
    sequence it feeds is a class token."""

    def __init__(self, units: int, use_class_token: bool, **kwargs: Any) -> None:
        super().__init__(units, **kwargs)
        self.use_class_token = use_class_token


def _base(output: str) -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    if output == "features":
        x = keras.layers.Dense(4)(keras.layers.Flatten()(inputs))
    elif output == "map":
        x = keras.layers.Conv2D(4, 3)(inputs)
    elif output in ("tokens", "class token"):
        seq = keras.layers.Reshape((64, 3))(inputs)
        x = _Tokens(4, use_class_token=output == "class token")(seq)
    else:
        x = keras.layers.Reshape((8, 8, 3, 1))(inputs)
    return keras.Model(inputs, x, name=f"{output.replace(' ', '_')}_base")


@pytest.mark.parametrize(
    ("output", "pooling", "pooled"),
    [
        ("features", "none", lambda y: y),
        ("map", "average", lambda y: y.mean(axis=(1, 2))),
        ("tokens", "token_average", lambda y: y.mean(axis=1)),
        ("class token", "class_token", lambda y: y[:, 0]),
    ],
    ids=["features", "feature map", "tokens", "class token"],
)
def test_the_head_pools_what_the_base_outputs(
    output: str, pooling: str, pooled: Callable[[np.ndarray], np.ndarray]
) -> None:
    base = _base(output)
    assert head_pooling(base) == pooling
    model = build_model(base, num_classes=3, dropout=0.0)
    head = model.get_layer("head_dropout").input
    features = keras.Model(model.inputs, head)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(features(x)),
        pooled(keras.ops.convert_to_numpy(base(x))),
        rtol=1e-5,
        atol=1e-6,
    )


def test_the_head_refuses_an_output_it_cannot_pool() -> None:
    base = _base("volume")
    with pytest.raises(
        ModelSourceError,
        match=r"output has shape \(None, 8, 8, 3, 1\); thaw's head takes \(batch, features\), "
        r"\(batch, tokens, features\) or \(batch, height, width, channels\): cut the model",
    ):
        build_model(base, num_classes=2, dropout=0.0)


# ------------------------------------------------------------------------------ cut_base


def test_cut_base_none_is_the_whole_model(tiny_cnn: Callable[..., Any]) -> None:
    model = tiny_cnn()
    assert cut_base(model, None) is model


def test_cut_base_drops_the_old_head(tiny_cnn: Callable[..., Any]) -> None:
    base = cut_base(tiny_cnn(), "features")
    assert base.name == "tiny_cnn_base"
    assert base.output_shape == (None, 6)
    assert [layer.name for layer in weighted_layers(base)] == ["conv1", "conv2"]


def test_cut_base_unknown_layer(tiny_cnn: Callable[..., Any]) -> None:
    with pytest.raises(
        ValueError,
        match=r"the model 'tiny_cnn' has no layer named 'nope'; its "
        r"last layers are \[.*'features', 'old_head'\]",
    ):
        cut_base(tiny_cnn(), "nope")
