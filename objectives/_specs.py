"""Keras-free descriptions of what to load and how to train, built by the study-file parser."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

BATCHNORM_MODES: tuple[str, ...] = ("frozen", "adapt", "train")
OBJECTIVE_METRICS: dict[str, str] = {"val_loss": "minimize", "val_accuracy": "maximize"}

ModelKind = Literal["demo", "file"]


class ModelSourceError(ValueError):
    """The pretrained model cannot be loaded as configured."""


@dataclass(frozen=True)
class ModelSource:
    """A pretrained model: the embedded demo, or a saved Keras model file.

    ``cut_at`` names the layer whose output feeds the new head (None: the whole model).
    ``safe_mode`` stays on unless the user allows unsafe deserialisation explicitly.
    """

    kind: ModelKind
    path: Path | None = None
    cut_at: str | None = None
    seed: int = 0
    safe_mode: bool = True


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 15
    batch_size: int = 16
    metric: str = "val_loss"
