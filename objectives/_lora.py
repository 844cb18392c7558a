"""LoRA (low-rank adaptation) on the unfrozen layers, with Keras 3's own ``enable_lora``.

With a rank ``r > 0``, each unfrozen Dense, EinsumDense and Conv1D/2D/3D layer of the base (also
inside an unfrozen subclassed layer, as KerasHub's transformer encoders hold them) keeps
its pretrained kernel fixed and trains two small matrices ``A`` and ``B`` whose product, scaled
by ``alpha / r`` (Keras's default ``alpha = r``), is added to the kernel (``B`` starts at zero, so
training starts from the pretrained function). Biases keep training, and so do unfrozen layers
that Keras gives no LoRA (normalisation, depthwise convolutions, embeddings): only the kernels
of the supported layers are replaced by their low-rank updates. The new head trains fully.

Keras saves a LoRA layer with the update merged into its kernel (``save_own_variables``) and its
rank in its config: a saved model loads (``safe_mode`` on) with the merged kernel, its LoRA
matrices at zero, and predicts as the trained model did.

``enable_lora`` can be called once per layer and only on a built layer; it sets the kernel
non-trainable. :func:`enable_lora` is called after a trial's last
:func:`~thaw.objectives._model.freeze` (before compiling), on the layers that froze left
trainable.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from thaw.objectives._model import _leaf_layers, layer_groups
from thaw.objectives._specs import LORA_LAYER_KINDS, MAX_LORA_RANK

_SUPPORTED: tuple[type, ...] = (
    keras.layers.Dense,
    keras.layers.EinsumDense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
)


def supports_lora(layer: keras.layers.Layer) -> bool:
    """Whether thaw puts LoRA on ``layer``: a built Dense, EinsumDense or Conv1D/2D/3D layer
    without a kernel constraint (Keras refuses LoRA with one)."""
    return (
        isinstance(layer, _SUPPORTED)
        and bool(getattr(layer, "built", False))
        and getattr(layer, "kernel_constraint", None) is None
    )


def check_lora_rank(rank: object) -> int:
    """``rank`` as an int in ``0..MAX_LORA_RANK``; ValueError naming the value otherwise."""
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)):
        raise ValueError(
            f"LoRA rank {rank!r} is not a whole number; use 0 (off) to {MAX_LORA_RANK}"
        )
    if not 0 <= int(rank) <= MAX_LORA_RANK:
        raise ValueError(f"LoRA rank {rank} is outside 0..{MAX_LORA_RANK}; 0 turns LoRA off")
    return int(rank)


def _within(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """``layer`` and the layers inside it: a subclassed layer (a KerasHub transformer encoder)
    holds its Dense and EinsumDense layers as sublayers, which unfreezing it unfreezes."""
    flatten = getattr(layer, "_flatten_layers", None)  # Keras's own walk over tracked sublayers
    return list(flatten(include_self=True, recursive=True)) if flatten else [layer]


def lora_candidates(
    base: keras.Model, unfrozen_layers: int, unfreeze_by: str = "layers"
) -> list[keras.layers.Layer]:
    """The layers of the top ``unfrozen_layers`` layers (or blocks) of ``base`` that LoRA
    applies to."""
    groups = layer_groups(base, unfreeze_by)
    top = groups[len(groups) - unfrozen_layers :] if unfrozen_layers > 0 else []
    return [
        inner
        for group in top
        for layer in group
        for inner in _within(layer)
        if supports_lora(inner)
    ]


def check_lora_space(
    base: keras.Model, ranks: Sequence[int] | None, unfrozen_high: int, unfreeze_by: str
) -> None:
    """ValueError when ``ranks`` asks for LoRA (a rank above 0) but no layer that may be
    unfrozen (the top ``unfrozen_high`` layers or blocks of ``base``) supports it."""
    if not ranks or max(ranks) <= 0:
        return
    if lora_candidates(base, unfrozen_high, unfreeze_by):
        return
    groups = layer_groups(base, unfreeze_by)
    top = groups[len(groups) - unfrozen_high :] if unfrozen_high > 0 else []
    kinds = sorted({type(layer).__name__ for group in top for layer in group})
    found = (
        f"the {len(top)} {unfreeze_by} it may unfreeze hold only {', '.join(kinds)}"
        if kinds
        else "no layer of it is unfrozen (search_space.unfrozen_layers high is 0)"
    )
    raise ValueError(
        f"search_space.lora_rank asks for LoRA, but '{base.name}' has no layer that supports it "
        f"among those it may unfreeze: {found}. LoRA works on {LORA_LAYER_KINDS} layers; "
        + (
            "raise search_space.unfrozen_layers high or remove lora_rank"
            if len(top) < len(groups)
            else "remove lora_rank"
        )
    )


def enable_lora(base: keras.Model, rank: int) -> list[keras.layers.Layer]:
    """LoRA of ``rank`` on every trainable layer of ``base`` that supports it; returns those
    layers. A layer that has LoRA already keeps it, its pretrained kernel kept non-trainable.
    Rank 0: nothing."""
    rank = check_lora_rank(rank)
    if rank == 0:
        return []
    done = []
    for leaf in _leaf_layers(base):
        if not leaf.trainable:
            continue
        for layer in _within(leaf):
            if not layer.trainable or not supports_lora(layer):
                continue
            if getattr(layer, "lora_enabled", False):
                layer._kernel.trainable = False  # Keras's attribute: the pretrained kernel
            else:
                layer.enable_lora(rank)
            done.append(layer)
    return done


def own_weights(layer: keras.layers.Layer) -> list[np.ndarray]:
    """``layer``'s weights as its pretrained self holds them: the kernel of a LoRA layer (or of
    one inside it) with its update merged in, the LoRA matrices left out."""
    lora = [inner for inner in _within(layer) if getattr(inner, "lora_enabled", False)]
    merged = {id(inner._kernel): inner for inner in lora}
    extra = {id(v) for inner in lora for v in (inner.lora_kernel_a, inner.lora_kernel_b)}
    out = []
    for w in layer.weights:
        if id(w) in merged:
            out.append(np.asarray(keras.ops.convert_to_numpy(merged[id(w)].kernel)))
        elif id(w) not in extra:
            out.append(np.asarray(w.numpy()))
    return out
