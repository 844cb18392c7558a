"""Building a fine-tuning model from a pretrained base, and freezing it.

"Unfrozen layers" counts the base's layers that carry weights, BatchNormalization excluded, from
the top: 0 is feature extraction (only the new head trains), ``len(weighted_layers(base))`` is
full fine-tuning. BatchNormalization layers are governed separately by the BatchNorm mode:

* ``frozen`` (default, the Keras guide's advice): every BatchNormalization layer has
  ``trainable = False``, which in Keras 3 is what keeps it in inference mode (using its pretrained
  moving statistics) during ``fit``. Passing ``training=False`` to the base is *not* enough once the
  base is trainable (keras-team/keras#20285).
* ``adapt``: like ``frozen``, after the moving statistics were re-estimated on the target data.
* ``train``: BatchNormalization layers above the lowest unfrozen layer train, in training mode
  (with a block below the top, those up to the first frozen layer above the block).

Surgical fine-tuning (Lee et al., 2023): ``block_start`` puts the unfrozen layers lower, as a
contiguous block of ``unfrozen_layers`` layers (or blocks) whose lowest is ``block_start``,
counted from the bottom (0: the first layer with weights). A start too high for the block to
fit below the top is lowered until it does: ``block_start >= depth - unfrozen_layers`` (and
``None``) is unfreezing from the top.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from typing import Any, Literal

import keras
import numpy as np

from thaw.objectives._specs import BATCHNORM_MODES, ModelSourceError

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
    return [layer for layer in _leaf_layers(base) if layer.weights and not is_batchnorm(layer)]


#: Block prefixes of common architectures: MobileNetV2 ``block_3_``, EfficientNet ``block2a_``,
#: ResNet stages ``conv3_``, DenseNet ``conv4_block7_``-> stage ``conv4``, ConvNeXt stages,
#: KerasHub's ResNet blocks ``stack1_block0_`` and transformer layers ``transformer_layer_3_``.
_BLOCK_PATTERN = re.compile(
    r"^(expanded_conv|block_\d+|block\d+[a-z]?|conv\d+|stage_?\d+|\w+_stage_\d+"
    r"|stack\d+_block\d+|transformer_layer_\d+)_"
)
UNFREEZE_BY: tuple[str, ...] = ("layers", "blocks")


def block_name(layer_name: str) -> str:
    """The block a layer belongs to (its own name when it is in no recognised block)."""
    match = _BLOCK_PATTERN.match(layer_name)
    return match.group(1) if match else layer_name


def layer_groups(base: keras.Model, unfreeze_by: str = "layers") -> list[list[keras.layers.Layer]]:
    """What "unfrozen layers" counts, bottom to top: single layers, or whole blocks."""
    layers = weighted_layers(base)
    if unfreeze_by == "layers":
        return [[layer] for layer in layers]
    if unfreeze_by != "blocks":
        raise ValueError(f"unfreeze_by={unfreeze_by!r}; expected one of {UNFREEZE_BY}")
    groups: list[list[keras.layers.Layer]] = []
    names: list[str] = []
    for layer in layers:
        name = block_name(layer.name)
        if names and names[-1] == name:
            groups[-1].append(layer)
        else:
            groups.append([layer])
            names.append(name)
    return groups


def batchnorm_layers(base: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in _leaf_layers(base) if is_batchnorm(layer)]


def unfrozen_span(depth: int, unfrozen_layers: int, block_start: int | None = None) -> range:
    """The groups (bottom to top, 0-based) a trial unfreezes out of ``depth``: the top
    ``unfrozen_layers``, or with ``block_start`` the block of that many starting there (lowered
    until it fits below the top)."""
    if not 0 <= unfrozen_layers <= depth:
        raise ValueError(f"unfrozen_layers={unfrozen_layers} is outside 0..{depth}")
    if block_start is None:
        return range(depth - unfrozen_layers, depth)
    if isinstance(block_start, bool) or not 0 <= block_start <= depth:
        raise ValueError(
            f"block_start={block_start} is outside 0..{depth} (counted from the bottom layer, 0)"
        )
    start = min(block_start, depth - unfrozen_layers)
    return range(start, start + unfrozen_layers)


def freeze(
    base: keras.Model,
    unfrozen_layers: int,
    batchnorm: str = "frozen",
    unfreeze_by: str = "layers",
    block_start: int | None = None,
) -> None:
    """Make the top ``unfrozen_layers`` weighted layers (or blocks) of ``base`` trainable, or
    with ``block_start`` the contiguous block of that many starting there (:func:`unfrozen_span`).

    Everything else is frozen. Takes effect at the next ``compile()``.
    """
    groups = layer_groups(base, unfreeze_by)
    if not 0 <= unfrozen_layers <= len(groups):
        raise ValueError(
            f"unfrozen_layers={unfrozen_layers} is outside 0..{len(groups)}: the base "
            f"'{base.name}' has {len(groups)} {unfreeze_by} with weights (BatchNorm excluded)"
        )
    span = unfrozen_span(len(groups), unfrozen_layers, block_start)
    candidates = [layer for g in span for layer in groups[g]]
    above = [layer for g in range(span.stop, len(groups)) for layer in groups[g]]
    if batchnorm not in BATCHNORM_MODES:
        raise ValueError(f"batchnorm={batchnorm!r}; expected one of {BATCHNORM_MODES}")
    base.trainable = True  # Containers must be trainable for their leaves' flags to count.
    leaves = list(_leaf_layers(base))
    unfrozen = {id(layer) for layer in candidates}
    lowest_unfrozen = (
        min(i for i, layer in enumerate(leaves) if id(layer) in unfrozen) if unfrozen else None
    )
    frozen_above = {id(layer) for layer in above}
    first_frozen_above = min(
        (i for i, layer in enumerate(leaves) if id(layer) in frozen_above), default=len(leaves)
    )
    for i, layer in enumerate(leaves):
        if is_batchnorm(layer):
            layer.trainable = (
                batchnorm == "train"
                and lowest_unfrozen is not None
                and lowest_unfrozen < i < first_frozen_above
            )
        else:
            layer.trainable = id(layer) in unfrozen


#: How thaw's head pools the base's output: ``none`` (already (batch, features)), ``average``
#: (over height and width), ``class_token`` (the first of a sequence of tokens) and
#: ``token_average`` (the mean of the tokens).
HeadPooling = Literal["none", "average", "class_token", "token_average"]


def _has_class_token(base: keras.layers.Layer) -> bool:
    """Whether ``base`` puts a class token first in its sequence of tokens, as a KerasHub ViT
    with ``use_class_token`` does (its patch embedding and the backbone carry the flag)."""
    return any(
        getattr(layer, "use_class_token", None) is True
        for layer in [base, *getattr(base, "layers", []), *_leaf_layers(base)]
    )


def head_pooling(base: keras.Model) -> HeadPooling:
    """How thaw's head pools ``base``'s output, from its shape: a feature map (batch, height,
    width, channels) is averaged over height and width; a sequence of tokens (batch, tokens,
    width) gives its class token where the base has one (what KerasHub's ViT image classifier
    reads by default), else the mean of its tokens. ModelSourceError for any other shape."""
    shape = tuple(base.output_shape) if not isinstance(base.output_shape, list) else ()
    if len(shape) == 2:
        return "none"
    if len(shape) == 4:
        return "average"
    if len(shape) == 3:
        return "class_token" if _has_class_token(base) and shape[1] else "token_average"
    raise ModelSourceError(
        f"the base's output has shape {shape or base.output_shape}; thaw's head takes "
        "(batch, features), (batch, tokens, features) or (batch, height, width, channels): "
        "cut the model at another layer ('model.cut_at') or give your own head"
    )


def _pool(x: Any, pooling: HeadPooling) -> Any:
    if pooling == "average":
        return keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    if pooling == "token_average":
        return keras.layers.GlobalAveragePooling1D(name="head_pool")(x)
    if pooling == "class_token":
        # Keras layers only (no Lambda), so the saved model loads with safe_mode on.
        tokens = int(x.shape[1])
        x = keras.layers.Cropping1D((0, tokens - 1), name="head_class_token")(x)
        return keras.layers.Flatten(name="head_pool")(x)
    return x


def build_model(
    base: keras.Model,
    num_classes: int,
    dropout: float,
    name: str = "thaw_finetune",
    head: Callable[..., Any] | None = None,
    weight_decay: float = 0.0,
    augment: keras.layers.Layer | None = None,
    multilabel: bool = False,
) -> keras.Model:
    """Put a new classification head on ``base``: pooling if needed (:func:`head_pooling`),
    dropout, dense (softmax over the classes; with ``multilabel``, one sigmoid per label).

    ``head``: your own, called as ``head(x, dropout=..., weight_decay=..., num_classes=...)``
    on the base's output tensor ``x`` (as it is: pool it yourself), with the trial's dropout and
    weight decay; it returns the class probabilities (softmax over ``num_classes``; for a
    multi-label target, one sigmoid per label: ``num_classes`` is the number of labels). AdamW
    applies the weight decay to every trained weight already: a head that adds a kernel
    regulariser with it decays its weights twice. ``augment``: layers in front of the base
    (active in training only).
    """
    inputs = keras.Input(shape=base.input_shape[1:], name="input")
    x = base(inputs if augment is None else augment(inputs))
    if head is not None:
        outputs = head(x, dropout=dropout, weight_decay=weight_decay, num_classes=num_classes)
        shape = tuple(getattr(outputs, "shape", ()))
        if len(shape) != 2 or shape[-1] != num_classes:
            raise ValueError(
                f"head() returned shape {shape or type(outputs).__name__}; it must return the "
                f"class probabilities, shape (batch, {num_classes})"
            )
        if str(outputs.dtype) != "float32":  # mixed precision: the loss in float32
            outputs = keras.layers.Activation("linear", dtype="float32", name="head_float32")(
                outputs
            )
        return keras.Model(inputs, outputs, name=name)
    x = _pool(x, head_pooling(base))
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(
        num_classes,
        activation="sigmoid" if multilabel else "softmax",
        dtype="float32",
        name="head_dense",
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


def batchnorm_input_stats(
    base: keras.Model,
    x: np.ndarray,
    layers: list[keras.layers.Layer] | None = None,
    batch_size: int = 64,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-channel mean and variance of the inputs of BatchNorm ``layers`` over images ``x``.

    Computed in inference mode, so the statistics are those the pretrained network produces on
    this data. Needs a flat functional base (the layers' inputs must be tensors of ``base``).
    """
    layers = batchnorm_layers(base) if layers is None else layers
    if not layers:
        return []
    try:
        inputs = base.inputs[0] if len(base.inputs) == 1 else base.inputs
        probe = keras.Model(inputs, [layer.input for layer in layers])
    except Exception as exc:  # noqa: BLE001 - nested or subclassed models cannot be probed
        raise ValueError(
            f"cannot read BatchNorm inputs of '{base.name}' (nested or subclassed model): {exc}"
        ) from None
    sums: list[np.ndarray] = []
    squares: list[np.ndarray] = []
    count = 0
    for start in range(0, len(x), batch_size):
        outputs = probe(x[start : start + batch_size], training=False)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        for i, out in enumerate(outputs):
            a = np.asarray(keras.ops.convert_to_numpy(out), dtype="float64")
            a = a.reshape(-1, a.shape[-1])
            if len(sums) <= i:
                sums.append(np.zeros(a.shape[-1]))
                squares.append(np.zeros(a.shape[-1]))
            sums[i] += a.sum(axis=0)
            squares[i] += (a**2).sum(axis=0)
        count += int(np.prod(np.asarray(keras.ops.shape(outputs[0]))[:-1]))
    results = []
    for s, q in zip(sums, squares, strict=True):
        mean = s / count
        results.append((mean, np.maximum(q / count - mean**2, 0.0)))
    return results


#: Memory one ``adapt`` pass may take for its activations: the sampled images go through the
#: network in as few passes as fit in it (one, unless the images are large).
ADAPT_PASS_BYTES = 2 << 30


def _activation_elements(base: keras.Model) -> int:
    """Elements of every layer's output for one image: what an eager pass keeps alive."""
    total = 0
    for layer in _leaf_layers(base):
        try:
            outputs = layer.output
        except (AttributeError, ValueError):  # several nodes: count the input instead
            outputs = None
        for tensor in outputs if isinstance(outputs, (list, tuple)) else [outputs]:
            if isinstance(tensor, keras.KerasTensor):
                total += int(np.prod([d or 1 for d in tensor.shape[1:]]))
    return max(total, 1)


def adapt_images_per_pass(
    base: keras.Model, images: int, memory_bytes: int = ADAPT_PASS_BYTES, minimum: int = 64
) -> int:
    """How many of ``images`` one :func:`adapt_batchnorm` pass takes: all of them when their
    activations (float32, every layer's output kept until the pass ends) fit in
    ``memory_bytes``, otherwise at least ``minimum`` (the batches of the layer-by-layer version,
    which keep as much alive), the images split evenly over the passes."""
    if images <= 0:
        return 1
    fits = max(minimum, memory_bytes // (4 * _activation_elements(base)))
    passes = -(-images // fits)
    return -(-images // passes)


def _moments_model(base: keras.Model, layers: list[keras.layers.Layer]) -> keras.Model:
    """Images -> for each BatchNorm layer, the per-image, per-channel mean and variance of its
    input, shaped (images, channels): two small outputs per layer, whatever the image size."""
    outputs = []
    for layer in layers:
        tensor = keras.ops.cast(layer.input, "float32")
        ndim = len(tensor.shape)
        channel = layer.axis % ndim if isinstance(layer.axis, int) else ndim - 1
        axes = tuple(i for i in range(1, ndim) if i != channel)
        if axes:
            outputs += [keras.ops.mean(tensor, axis=axes), keras.ops.var(tensor, axis=axes)]
        else:
            outputs += [tensor, keras.ops.zeros_like(tensor)]
    inputs = base.inputs[0] if len(base.inputs) == 1 else base.inputs
    return keras.Model(inputs, outputs, name=f"{base.name}_batchnorm_moments")


def _pooled(means: np.ndarray, variances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) variance over all images' positions, from each image's own:
    every image has the same number of positions, so the law of total variance applies."""
    means = np.asarray(means, dtype="float64")
    variances = np.asarray(variances, dtype="float64")
    mean = means.mean(axis=0)
    return mean, np.maximum(variances.mean(axis=0) + ((means - mean) ** 2).mean(axis=0), 0.0)


def _training_mode_safe(base: keras.Model) -> str | None:
    """Why a pass in training mode would not compute what inference mode computes, apart
    from BatchNorm on batch statistics (dropout is switched off for it); None when it does."""
    for layer in _leaf_layers(base):
        if is_batchnorm(layer):
            if getattr(layer, "renorm", False):
                return f"'{layer.name}' uses batch renormalization"
        elif not isinstance(layer, keras.layers.Dropout) and any(
            isinstance(v, keras.random.SeedGenerator) for v in vars(layer).values()
        ):
            return f"'{layer.name}' is random in training mode"
    return None


def adapt_batchnorm(
    base: keras.Model,
    x: np.ndarray,
    batch_size: int = 64,
    max_images: int = 512,
    images_per_pass: int | None = None,
) -> None:
    """AdaBN: replace each BatchNorm layer's moving statistics by those of the target images.

    Each layer gets the mean and (population) variance of its inputs over the first
    ``max_images`` images, as the adapted layers below it normalise them. One forward pass does
    it: every BatchNorm layer normalises with the statistics of its own inputs over the pass's
    images (BatchNorm in training mode, dropout off), and those are the statistics it is given.
    When the images fit in one pass (``images_per_pass``; by default as many as
    :data:`ADAPT_PASS_BYTES` allows), the result is that of
    :func:`adapt_batchnorm_layer_by_layer` up to float rounding, at the cost of one inference
    pass. With several passes, each is normalised with its own images' statistics and the
    statistics are pooled over all of them (the usual AdaBN estimate).

    A base the pass cannot handle (a layer random in training mode, batch renormalization) is
    adapted layer by layer: one pass per BatchNorm layer.
    """
    from thaw.objectives._probes import _batch_statistics

    layers = batchnorm_layers(base)
    x = x[:max_images]
    if not layers or len(x) == 0:
        return
    reason = _training_mode_safe(base)
    if reason is not None:
        _logger.info("BatchNorm statistics re-estimated layer by layer: %s", reason)
        adapt_batchnorm_layer_by_layer(base, x, batch_size, max_images)
        return
    try:
        moments = _moments_model(base, layers)
    except Exception as exc:  # noqa: BLE001 - nested or subclassed models cannot be probed
        raise ValueError(
            f"cannot read BatchNorm inputs of '{base.name}' (nested or subclassed model): {exc}"
        ) from None
    per_pass = images_per_pass or adapt_images_per_pass(base, len(x), minimum=batch_size)
    passes = -(-len(x) // per_pass)
    size = -(-len(x) // passes)  # even passes: no small last one with noisy statistics
    # Eager calls: one pass of a deep network costs less than tracing it (DenseNet121, 32 px,
    # 150 images: 2 s against 13 s), and a pass runs once.
    with _batch_statistics(base):  # restores the moving statistics when it ends
        stats = _pooled_moments(moments, x, size, len(layers))
    _assign_statistics(layers, stats)


def _pooled_moments(
    moments: keras.Model, x: np.ndarray, size: int, n_layers: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Runs ``moments`` in training mode over ``x`` in passes of ``size`` images: per layer,
    the mean and variance of its inputs pooled over every image."""
    chunks: list[list[np.ndarray]] = []
    for start in range(0, len(x), size):
        outputs = moments(x[start : start + size], training=True)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        chunks.append([keras.ops.convert_to_numpy(out) for out in outputs])
        del outputs
    return [
        _pooled(
            np.concatenate([chunk[2 * i] for chunk in chunks]),
            np.concatenate([chunk[2 * i + 1] for chunk in chunks]),
        )
        for i in range(n_layers)
    ]


def _assign_statistics(
    layers: list[keras.layers.Layer], stats: list[tuple[np.ndarray, np.ndarray]]
) -> None:
    for layer, (mean, var) in zip(layers, stats, strict=True):
        layer.moving_mean.assign(mean.astype("float32"))
        layer.moving_variance.assign(var.astype("float32"))


def precise_batchnorm(
    base: keras.Model,
    x: np.ndarray,
    max_images: int = 512,
    images_per_pass: int | None = None,
    moments: keras.Model | None = None,
    layers: list[keras.layers.Layer] | None = None,
) -> list[keras.layers.Layer]:
    """Precise BatchNorm (Wu and Johnson, 2021): the moving statistics of the BatchNorm layers
    that train, replaced by the mean and variance of their inputs over training images ``x``.

    In training a BatchNorm layer normalises each batch by its own statistics, while
    validation uses the moving averages, which trail weights that change fast (momentum 0.99
    averages over about a hundred steps: a few epochs of a small target). Validated on them, a
    trial that trains BatchNorm looks worse than it is, most in its first epochs. Only the
    layers that train are re-estimated, in one pass in training mode (dropout off): the frozen
    ones keep their statistics and normalise with them, as in inference. ``layers`` (the
    BatchNorm layers that train), ``moments`` (:func:`batchnorm_moments_model` of them) and
    ``images_per_pass``: what a caller that re-estimates every epoch computed once. Returns the
    layers re-estimated (none when no BatchNorm layer trains, or a layer would be random in
    training mode)."""
    if layers is None:
        layers = [layer for layer in batchnorm_layers(base) if layer.trainable]
    x = x[:max_images]
    if not layers or len(x) == 0 or _training_mode_safe(base) is not None:
        return []
    moments = moments if moments is not None else batchnorm_moments_model(base, layers)
    per_pass = images_per_pass or adapt_images_per_pass(base, len(x))
    passes = -(-len(x) // per_pass)
    size = -(-len(x) // passes)
    drops = [layer for layer in _leaf_layers(base) if isinstance(layer, keras.layers.Dropout)]
    rates = [layer.rate for layer in drops]
    try:
        for layer in drops:
            layer.rate = 0.0
        stats = _pooled_moments(moments, x, size, len(layers))
    finally:
        for layer, rate in zip(drops, rates, strict=True):
            layer.rate = rate
    _assign_statistics(layers, stats)
    return layers


def batchnorm_moments_model(base: keras.Model, layers: list[keras.layers.Layer]) -> keras.Model:
    """:func:`_moments_model`, or ValueError when ``base`` cannot be probed (nested or
    subclassed)."""
    try:
        return _moments_model(base, layers)
    except Exception as exc:  # noqa: BLE001 - nested or subclassed models cannot be probed
        raise ValueError(
            f"cannot read BatchNorm inputs of '{base.name}' (nested or subclassed model): {exc}"
        ) from None


def adapt_batchnorm_layer_by_layer(
    base: keras.Model, x: np.ndarray, batch_size: int = 64, max_images: int = 512
) -> None:
    """:func:`adapt_batchnorm` the slow way: bottom to top, one inference pass per BatchNorm
    layer over the images, each reading the inputs of one layer as the layers below, already
    adapted, normalise them. Its cost grows with the square of the depth."""
    x = x[:max_images]
    for layer in batchnorm_layers(base):
        ((mean, var),) = batchnorm_input_stats(base, x, [layer], batch_size)
        layer.moving_mean.assign(mean.astype("float32"))
        layer.moving_variance.assign(var.astype("float32"))


def domain_shift_scores(
    base: keras.Model, x: np.ndarray, batch_size: int = 64, max_images: int = 512
) -> dict[str, float]:
    """How far the target images' BatchNorm input statistics are from the pretrained ones.

    Per layer: the mean over channels of the Hellinger distance between the pretrained moving
    statistics N(moving_mean, moving_variance) and the target's N(mean, variance) at that layer;
    0 is no shift, 1 the largest possible. No source data is needed (in the spirit of AdaBN).
    """
    layers = batchnorm_layers(base)
    stats = batchnorm_input_stats(base, x[:max_images], layers, batch_size)
    scores: dict[str, float] = {}
    for layer, (mean_t, var_t) in zip(layers, stats, strict=True):
        mean_s = np.asarray(keras.ops.convert_to_numpy(layer.moving_mean), dtype="float64")
        var_s = np.asarray(keras.ops.convert_to_numpy(layer.moving_variance), dtype="float64")
        var_s = var_s + 1e-6
        var_t = var_t + 1e-6
        total = var_s + var_t
        coef = np.sqrt(2 * np.sqrt(var_s * var_t) / total) * np.exp(
            -((mean_s - mean_t) ** 2) / (4 * total)
        )
        scores[layer.name] = float(np.mean(np.sqrt(np.clip(1 - coef, 0.0, 1.0))))
    return scores


def shift_profile(
    base: keras.Model, scores: dict[str, float], unfreeze_by: str = "layers"
) -> list[dict[str, object]]:
    """The per-layer BatchNorm shift profile of ``base``, bottom to top, in the units
    "unfrozen layers" counts (weighted layers, or blocks): for each, its name, the mean
    :func:`domain_shift_scores` score of the BatchNorm layers that normalise its outputs (those
    after it and before the next weighted layer; None where it has none) and how many there are.
    BatchNorm layers below the first weighted layer count with the first."""
    groups = layer_groups(base, unfreeze_by)
    group_of = {id(layer): g for g, group in enumerate(groups) for layer in group}
    found: list[list[float]] = [[] for _ in groups]
    current = 0
    for layer in _leaf_layers(base):
        current = group_of.get(id(layer), current)
        if is_batchnorm(layer) and layer.name in scores and groups:
            found[current].append(float(scores[layer.name]))
    return [
        {
            "name": block_name(group[0].name) if unfreeze_by == "blocks" else group[0].name,
            "shift": float(np.mean(values)) if values else None,
            "batchnorm": len(values),
        }
        for group, values in zip(groups, found, strict=True)
    ]
