"""Keras-free descriptions of what to load and how to train, built by the study-file parser."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

BATCHNORM_MODES: tuple[str, ...] = ("frozen", "adapt", "train")
#: How a trial's learning rate runs over its epochs (``TrainSettings.schedule``).
SCHEDULES: tuple[str, ...] = ("constant", "linear", "cosine")

#: The layer kinds LoRA works on (Keras's ``enable_lora``), as messages name them.
LORA_LAYER_KINDS = "Dense, EinsumDense, Conv1D, Conv2D, Conv3D"
#: The largest LoRA rank accepted: above it a "low-rank" update is as large as most kernels.
MAX_LORA_RANK = 256
#: Objective metrics and their direction (``val_auc``, ``val_f1``: ``objectives._metrics``).
OBJECTIVE_METRICS: dict[str, str] = {
    "val_loss": "minimize",
    "val_accuracy": "maximize",
    "val_auc": "maximize",
    "val_f1": "maximize",
}

#: ``keras.applications`` networks thaw knows the preprocessing of.
APPLICATION_NAMES: tuple[str, ...] = (
    "ConvNeXtTiny",
    "DenseNet121",
    "EfficientNetB0",
    "EfficientNetV2B0",
    "MobileNetV2",
    "MobileNetV3Large",
    "MobileNetV3Small",
    "ResNet50",
    "ResNet50V2",
    "Xception",
)

ModelKind = Literal["demo", "glyphs", "file", "application", "kerashub", "memory"]


class InMemory:
    """An object handed over in memory (a ``keras.Model``, arrays, a head function), carried by
    a source description with its content fingerprint.

    In the study's stored configuration (and so in its config hash) it reads as ``str(self)``:
    what it is and its fingerprint, so a study resumed with other weights or other data is
    refused like one with another model file. Copies (``dataclasses.asdict``) share the object.
    """

    def __init__(self, value: Any, fingerprint: str, description: str) -> None:
        self.value = value
        self.fingerprint = fingerprint
        self.description = description

    def __deepcopy__(self, memo: dict[int, Any]) -> InMemory:
        return self

    def __str__(self) -> str:
        return f"{self.description} (sha256 {self.fingerprint})"

    __repr__ = __str__


class ModelSourceError(ValueError):
    """The pretrained model cannot be loaded as configured."""


@dataclass(frozen=True)
class ModelSource:
    """A pretrained model: the embedded demo, a saved Keras model file, or a
    ``keras.applications`` network by name, a KerasHub backbone (``name``: its preset
    folder or preset name), or a ``keras.Model`` handed over in memory (``instance``).

    ``cut_at`` names the layer whose output feeds the new head (None: the whole model, or for an
    application ``include_top=False``). ``safe_mode`` stays on unless the user allows unsafe
    deserialisation explicitly. ``weights`` for an application: ``"imagenet"``, ``None`` (random)
    or a local weights file. ``unfreeze_by``: ``"layers"`` or ``"blocks"`` (whole blocks, so the
    search never splits a residual block).
    """

    kind: ModelKind
    path: Path | None = None
    cut_at: str | None = None
    seed: int = 0
    safe_mode: bool = True
    name: str | None = None
    weights: str | None = "imagenet"
    input_shape: tuple[int, int, int] | None = None
    alpha: float | None = None
    unfreeze_by: str = "layers"
    #: ``kind: memory``: the ``keras.Model`` itself (``thaw.run(model=...)``).
    instance: InMemory | None = None
    #: A function that builds the head on the base's output (``thaw.run(head=...)``).
    head: InMemory | None = None


@dataclass(frozen=True)
class TrainSettings:
    """How each trial trains.

    ``epochs`` is the total per trial; the first ``warmup_epochs`` of them train the head only
    (base frozen), the rest train the unfrozen layers too. ``mixed_precision``: ``"auto"`` turns
    it on when a GPU is visible. ``jit_compile`` compiles the train step with XLA.
    ``cache_frozen``: ``"auto"`` computes the activations at the top of the frozen bottom of the
    network once and trains the rest on them (same results, fewer computations); ``"off"``.
    ``probe_images``: the end-of-trial probes (``objectives._probes``) see at most this many
    training and this many validation images, a fixed stratified sample (0: no image probes,
    the weight drift only). ``class_weight``: how much each class's training images weigh in the
    training loss (``objectives._data.class_weights``); the validation loss is unweighted.
    ``precise_batchnorm``: before each validation of a trial whose BatchNorm layers train
    (``batchnorm: train``), their moving statistics are re-estimated on training images
    (``objectives._model.precise_batchnorm``), so the validation loss does not trail the weights
    (off by default: on the bench suite it did not lower the best validation loss).
    ``schedule``: the learning rate over each fit, ``"constant"`` (the trial's rate every epoch),
    ``"linear"`` (falling linearly to zero over the trial's epochs) or ``"cosine"`` (a half
    cosine to zero); see ``objectives._callbacks.RateSchedule``.
    """

    epochs: int = 15
    batch_size: int = 16
    metric: str = "val_loss"
    warmup_epochs: int = 0
    mixed_precision: str = "auto"
    jit_compile: bool = False
    cache_frozen: str = "auto"
    probe_images: int = 64
    precise_batchnorm: bool = False
    schedule: str = "constant"
    #: ``"balanced"``, or (class name or index, weight) pairs; None: every class weighs 1.
    class_weight: str | tuple[tuple[str | int, float], ...] | None = None
    #: Extra metrics logged every epoch (``auc``, ``f1``), in the trial's history.
    metrics: tuple[str, ...] = ()
