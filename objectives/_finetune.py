"""Fine-tuning methods beyond the four levers: L2-SP, layer-wise rate decay, augmentation.

* **L2-SP** (Li et al., 2018): the unfrozen pretrained variables decay toward their pretrained
  values instead of toward zero. It is applied like AdamW's decoupled weight decay, each step
  ``w -= lr * strength * (w - w0)``; the new head, which has no pretrained values, keeps plain
  weight decay. With L2-SP on, the base's variables get no plain weight decay: the two never
  act on the same variable.
* **Layer-wise learning-rate decay**: the top unfrozen group (layer or block, as "unfrozen
  layers" counts them) trains at the trial's rate, the one below at ``rate * factor``, the next at
  ``rate * factor**2``, and so on; the head trains at the trial's rate. Adam's step does not
  depend on the scale of the gradient, so the rate itself is scaled per variable (in
  ``update_step``), as is each variable's decay.
* **Augmentation**: random horizontal flips, rotations, zooms and contrast changes, as Keras
  preprocessing layers in front of the base; they act in training only.

All three are Keras 3 API only and run on any backend.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import keras
import numpy as np

from thaw.objectives._model import _leaf_layers, is_batchnorm, layer_groups, unfrozen_span

#: The augmentation layers' name in the model.
AUGMENT_NAME = "thaw_augment"

#: At strength 1: rotations up to this fraction of a full turn, zooms up to this fraction,
#: contrast changes up to this factor (each scales linearly with the strength).
MAX_ROTATION = 0.1
MAX_ZOOM = 0.2
MAX_CONTRAST = 0.4


@keras.saving.register_keras_serializable(package="thaw")
class FineTuneAdamW(keras.optimizers.AdamW):
    """AdamW with a learning-rate factor per variable and L2-SP decay on some variables.

    ``rate_scales``: ``id(variable) -> factor`` (others: 1). ``anchored``: the ``id``s of the
    variables that decay toward their values when the optimizer is built (the pretrained
    weights: it is built before the first step) with strength ``l2sp``, instead of toward zero
    with ``weight_decay``. Only the plain AdamW configuration is saved.
    """

    def __init__(
        self,
        *args: Any,
        rate_scales: Mapping[int, float] | None = None,
        anchored: Iterable[int] = (),
        l2sp: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._rate_scale_by_id = dict(rate_scales or {})
        self._anchored_ids = set(anchored) if l2sp > 0 else set()
        self.l2sp = float(l2sp)
        self._scales: list[float] = []
        self._anchors: list[Any] = []

    def build(self, variables: list[Any]) -> None:
        if self.built:
            return
        super().build(variables)
        self._scales = [float(self._rate_scale_by_id.get(id(v), 1.0)) for v in variables]
        self._anchors = []
        for v in variables:
            if id(v) in self._anchored_ids:
                anchor = self.add_variable_from_reference(v, name="l2sp_anchor")
                # a copy, not the variable's own buffer (JAX donates both to the train step)
                anchor.assign(np.array(keras.ops.convert_to_numpy(v)))
                self._anchors.append(anchor)
            else:
                self._anchors.append(None)

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        scale = self._scales[self._get_variable_index(variable)] if self._scales else 1.0
        if scale != 1.0:
            learning_rate = keras.ops.multiply(learning_rate, scale)
        super().update_step(gradient, variable, learning_rate)

    def _apply_weight_decay(self, variables: list[Any]) -> None:
        decay = self.weight_decay or 0.0
        if not decay and not self._anchored_ids:
            return
        for variable in variables:
            i = self._get_variable_index(variable)
            scale = self._scales[i] if self._scales else 1.0
            anchor = self._anchors[i] if self._anchors else None
            lr = keras.ops.cast(self.learning_rate, variable.dtype) * scale
            if anchor is not None:
                strength = keras.ops.cast(self.l2sp, variable.dtype)
                variable.assign(variable - (variable - anchor) * strength * lr)
            elif decay and self._use_weight_decay(variable):
                wd = keras.ops.cast(decay, variable.dtype)
                variable.assign(variable - variable * wd * lr)


def variable_plan(
    base: keras.Model,
    unfrozen_layers: int,
    unfreeze_by: str,
    lr_decay: float,
    block_start: int | None = None,
) -> tuple[dict[int, float], set[int]]:
    """Per trainable variable of ``base`` (by ``id``): its rate factor, ``lr_decay`` to the power
    of its group's depth below the top unfrozen group; and the ``id``s of all of them (what L2-SP
    anchors). A trainable BatchNorm layer takes the depth of the weighted layer below it.
    ``block_start``: the unfrozen layers are that block (``_model.unfrozen_span``)."""
    groups = layer_groups(base, unfreeze_by)
    unfrozen = [groups[g] for g in unfrozen_span(len(groups), unfrozen_layers, block_start)]
    depth_of = {
        id(layer): len(unfrozen) - 1 - g for g, group in enumerate(unfrozen) for layer in group
    }
    scales: dict[int, float] = {}
    depth = len(unfrozen) - 1
    for layer in _leaf_layers(base):
        depth = depth_of.get(id(layer), depth)
        if not layer.trainable or not (id(layer) in depth_of or is_batchnorm(layer)):
            continue
        for variable in layer.trainable_weights:
            scales[id(variable)] = float(lr_decay) ** max(depth, 0)
    return scales, set(scales)


def augmentation(strength: float, value_range: tuple[float, float]) -> keras.Sequential | None:
    """Flip, rotation, zoom and contrast layers at ``strength`` in [0, 1] (0: None), for images
    whose values lie in ``value_range``."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"augmentation strength {strength}; expected a value in [0, 1]")
    if strength == 0:
        return None
    low, high = float(value_range[0]), float(value_range[1])
    if not high > low:
        high = low + 1.0
    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal"),
            keras.layers.RandomRotation(MAX_ROTATION * strength, fill_mode="reflect"),
            keras.layers.RandomZoom(MAX_ZOOM * strength, fill_mode="reflect"),
            keras.layers.RandomContrast(MAX_CONTRAST * strength, value_range=(low, high)),
        ],
        name=AUGMENT_NAME,
    )


def model_base(model: keras.Model) -> keras.layers.Layer:
    """The base of a ``build_model`` model: its first layer after the input and augmentation."""
    layers = [layer for layer in model.layers[1:] if layer.name != AUGMENT_NAME]
    return layers[0] if layers else model


def without_augmentation(model: keras.Model) -> keras.Model:
    """``model`` without its augmentation layers, sharing every other layer (and so its
    weights): the model the end-of-trial probes measure, as ``build_model`` builds it without
    ``augment``. A model without augmentation comes back as it is."""
    if not any(layer.name == AUGMENT_NAME for layer in model.layers):
        return model
    base = model_base(model)
    inputs = keras.Input(shape=base.input_shape[1:], name="input")
    x = base(inputs)
    for layer in model.layers[1:]:
        if layer is not base and layer.name != AUGMENT_NAME:
            x = layer(x)
    return keras.Model(inputs, x, name=model.name)
