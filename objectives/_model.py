"""Building a fine-tuning model from a pretrained base, and freezing it.

"Unfrozen layers" counts the base's layers that carry weights, BatchNormalization excluded, from
the top: 0 is feature extraction (only the new head trains), ``len(weighted_layers(base))`` is
full fine-tuning. BatchNormalization layers are governed separately by the BatchNorm mode:

* ``frozen`` (default, the Keras guide's advice): every BatchNormalization layer has
  ``trainable = False``, which in Keras 3 is what keeps it in inference mode (using its pretrained
  moving statistics) during ``fit``. Passing ``training=False`` to the base is *not* enough once the
  base is trainable (keras-team/keras#20285).
* ``adapt``: like ``frozen``, after the moving statistics were re-estimated on the target data.
* ``train``: BatchNormalization layers above the lowest unfrozen layer train, in training mode.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Literal

import keras

from objectives._specs import BATCHNORM_MODES

_logger = logging.getLogger(__name__)

BatchNormMode = Literal["frozen", "adapt", "train"]


def _leaf_layers(model: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    """Leaf layers in topological (bottom-to-top) order, descending into nested models."""
    for layer in getattr(model, "layers", []):
        if getattr(layer, "layers", None):
            yield from _leaf_layers(layer)
        else:
            yield layer


def is_batchnorm(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization)


def weighted_layers(base: keras.Model) -> list[keras.layers.Layer]:
    """Layers of ``base`` that "unfrozen layers" counts, bottom to top."""
    return [
        layer for layer in _leaf_layers(base) if layer.weights and not is_batchnorm(layer)
    ]


def batchnorm_layers(base: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in _leaf_layers(base) if is_batchnorm(layer)]


def freeze(base: keras.Model, unfrozen_layers: int, batchnorm: str = "frozen") -> None:
    """Make the top ``unfrozen_layers`` weighted layers of ``base`` trainable, the rest frozen.

    Takes effect at the next ``compile()``.
    """
    candidates = weighted_layers(base)
    if not 0 <= unfrozen_layers <= len(candidates):
        raise ValueError(
            f"unfrozen_layers={unfrozen_layers} is outside 0..{len(candidates)}: the base "
            f"'{base.name}' has {len(candidates)} layers with weights (BatchNorm excluded)"
        )
    if batchnorm not in BATCHNORM_MODES:
        raise ValueError(f"batchnorm={batchnorm!r}; expected one of {BATCHNORM_MODES}")
    base.trainable = True  # Containers must be trainable for their leaves' flags to count.
    leaves = list(_leaf_layers(base))
    unfrozen = set(id(layer) for layer in candidates[len(candidates) - unfrozen_layers :])
    lowest_unfrozen = (
        min(i for i, layer in enumerate(leaves) if id(layer) in unfrozen) if unfrozen else None
    )
    for i, layer in enumerate(leaves):
        if is_batchnorm(layer):
            layer.trainable = (
                batchnorm == "train" and lowest_unfrozen is not None and i > lowest_unfrozen
            )
        else:
            layer.trainable = id(layer) in unfrozen


def build_model(
    base: keras.Model,
    num_classes: int,
    dropout: float,
    name: str = "thaw_finetune",
) -> keras.Model:
    """Put a new classification head (global pooling if needed, dropout, dense) on ``base``."""
    inputs = keras.Input(shape=base.input_shape[1:], name="input")
    x = base(inputs)
    if len(x.shape) == 4:
        x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    elif len(x.shape) != 2:
        raise ValueError(
            f"the base's output has shape {tuple(x.shape)}; expected (batch, features) or "
            "(batch, height, width, channels). Cut the model at another layer."
        )
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="head_dense"
    )(x)
    return keras.Model(inputs, outputs, name=name)


def cut_base(model: keras.Model, cut_at: str | None) -> keras.Model:
    """The part of ``model`` up to and including the layer named ``cut_at`` (None: whole model)."""
    if cut_at is None:
        return model
    try:
        layer = model.get_layer(cut_at)
    except ValueError:
        names = [layer.name for layer in model.layers][-8:]
        raise ValueError(
            f"the model '{model.name}' has no layer named {cut_at!r}; its last layers are {names}"
        ) from None
    return keras.Model(model.inputs, layer.output, name=f"{model.name}_base")


def count_trainable_weights(model: keras.Model) -> int:
    return int(sum(int(w.numpy().size) for w in model.trainable_weights))
