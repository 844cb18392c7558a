"""What "number of unfrozen layers" means for a base: layers (or blocks) from the top."""

from __future__ import annotations

from dataclasses import dataclass

import keras

from thaw.objectives._model import block_name, layer_groups


@dataclass(frozen=True)
class UnfreezeRow:
    unfrozen: int  # value of unfrozen_layers that unfreezes this row and everything above
    name: str
    kind: str
    params: int
    cumulative_trainable: int


def _params(layer: keras.layers.Layer) -> int:
    return int(sum(int(w.numpy().size) for w in layer.weights))


def unfreeze_table(base: keras.Model, unfreeze_by: str = "layers") -> list[UnfreezeRow]:
    """One row per layer (or block), top first, with the trainable weights unfreezing it adds.

    BatchNormalization layers are not counted (they stay frozen unless ``batchnorm: train``).
    """
    groups = layer_groups(base, unfreeze_by)
    rows: list[UnfreezeRow] = []
    cumulative = 0
    for i, group in enumerate(reversed(groups), start=1):
        params = sum(_params(layer) for layer in group)
        cumulative += params
        name = block_name(group[0].name) if unfreeze_by == "blocks" else group[0].name
        kind = f"{len(group)} layers" if unfreeze_by == "blocks" else type(group[0]).__name__
        rows.append(UnfreezeRow(i, name, kind, params, cumulative))
    return rows
