"""thaw's fine-tuning surgery as a KerasTuner ``HyperModel``, for a KerasTuner search.

``build(hp)`` searches thaw's parameters (the unfrozen layers from the top, the learning rate,
the head's dropout, AdamW's weight decay, the BatchNorm mode) and builds the model as a thaw
trial does: the pretrained base (its top classifier cut) with its weights, frozen below the
unfrozen layers, BatchNorm per mode, a new head, AdamW. ``fit`` trains with thaw's phases: the
warm-up epochs train the head only, then the unfrozen layers join; with BatchNorm ``adapt`` the
moving statistics are re-estimated on the training images first.

Each fit also writes the trial's per-epoch curves beside KerasTuner's ``trial.json``
(``thaw_history.json``: KerasTuner itself records only the best epoch's metrics), which
``thaw diagnose --kerastuner DIR`` reads.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import keras
import keras_tuner
import numpy as np

from thaw.objectives._memory import memory_model_source
from thaw.objectives._model import adapt_batchnorm, batchnorm_layers, build_model, freeze
from thaw.objectives._objective import ADAPT_IMAGES, compile_model
from thaw.objectives._sources import load_pretrained
from thaw.objectives._specs import BATCHNORM_MODES

_logger = logging.getLogger(__name__)

#: The file beside a KerasTuner trial's ``trial.json`` that holds its per-epoch curves.
HISTORY_FILE = "thaw_history.json"


class FineTuneHyperModel(keras_tuner.HyperModel):
    """A ``keras_tuner.HyperModel`` that fine-tunes a pretrained ``keras.Model``.

    ``model``: the pretrained network (its top classifier is cut unless ``cut_at`` names the
    layer to cut at); ``num_classes``: the target's classes (integer labels). The searched
    ranges: ``unfrozen_layers`` (default 0 .. every weighted layer), ``learning_rate``,
    ``dropout``, ``weight_decay`` (``(low, high)``; the learning rate and weight decay on a log
    scale), ``batchnorm`` (modes to choose from). ``warmup_epochs``: head-only epochs first.
    ``head``: as in ``thaw.run`` (``head(x, *, dropout, weight_decay, num_classes)``).
    """

    def __init__(
        self,
        model: keras.Model,
        num_classes: int,
        *,
        unfrozen_layers: tuple[int, int] | None = None,
        learning_rate: tuple[float, float] = (1e-5, 1e-2),
        dropout: tuple[float, float] = (0.0, 0.6),
        weight_decay: tuple[float, float] = (1e-6, 1e-1),
        batchnorm: Sequence[str] = BATCHNORM_MODES,
        warmup_epochs: int = 0,
        cut_at: str | None = None,
        head: Callable[..., Any] | None = None,
        name: str | None = None,
        tunable: bool = True,
    ) -> None:
        super().__init__(name=name, tunable=tunable)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        bad = [b for b in batchnorm if b not in BATCHNORM_MODES]
        if not batchnorm or bad:
            raise ValueError(f"batchnorm must be drawn from {BATCHNORM_MODES}, got {batchnorm!r}")
        self.pretrained = load_pretrained(memory_model_source(model, head, cut_at=cut_at))
        self.num_classes = num_classes
        layers = self.pretrained.num_layers
        low, high = unfrozen_layers if unfrozen_layers is not None else (0, layers)
        if not 0 <= low <= high <= layers:
            raise ValueError(
                f"unfrozen_layers=({low}, {high}) must lie in 0..{layers} (the base's layers with "
                "weights, BatchNorm excluded)"
            )
        self.unfrozen_layers = (int(low), int(high))
        self.learning_rate = learning_rate
        self.dropout = dropout
        self.weight_decay = weight_decay
        self.batchnorm = tuple(batchnorm)
        self.warmup_epochs = int(warmup_epochs)

    def params(self, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        """thaw's parameters of this trial (declared in ``hp`` on first use)."""
        return {
            "unfrozen_layers": hp.Int("unfrozen_layers", *self.unfrozen_layers),
            "learning_rate": hp.Float("learning_rate", *self.learning_rate, sampling="log"),
            "dropout": hp.Float("dropout", *self.dropout),
            "weight_decay": hp.Float("weight_decay", *self.weight_decay, sampling="log"),
            "batchnorm": hp.Choice("batchnorm", list(self.batchnorm)),
        }

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        p = self.params(hp)
        base = self.pretrained.instantiate()  # KerasTuner may hold several models at once
        freeze(
            base,
            0 if self.warmup_epochs > 0 else p["unfrozen_layers"],
            p["batchnorm"],
            self.pretrained.unfreeze_by,
        )
        model = build_model(
            base,
            self.num_classes,
            p["dropout"],
            head=self.pretrained.head,
            weight_decay=p["weight_decay"],
        )
        compile_model(model, p["learning_rate"], p["weight_decay"])
        return model

    def fit(
        self, hp: keras_tuner.HyperParameters, model: keras.Model, *args: Any, **kwargs: Any
    ) -> keras.callbacks.History:
        p = self.params(hp)
        base = model.layers[1]
        x = args[0] if args else kwargs.get("x")
        if p["batchnorm"] == "adapt" and isinstance(x, np.ndarray) and batchnorm_layers(base):
            adapt_batchnorm(base, np.asarray(x, dtype="float32"), max_images=ADAPT_IMAGES)
        initial = int(kwargs.pop("initial_epoch", 0))
        epochs = int(kwargs.pop("epochs", 1))
        phases = [(initial, epochs)]
        if self.warmup_epochs > 0:
            if initial < self.warmup_epochs < epochs:
                phases = [(initial, self.warmup_epochs), (self.warmup_epochs, epochs)]
            elif initial >= self.warmup_epochs:
                phases = [(initial, epochs)]
                self._unfreeze(model, p)
        merged: dict[str, list[float]] = {}
        history = keras.callbacks.History()
        for i, (start, stop) in enumerate(phases):
            if i == 1:
                self._unfreeze(model, p)
            history = model.fit(*args, initial_epoch=start, epochs=stop, **kwargs)
            for key, values in history.history.items():
                merged.setdefault(key, []).extend(float(v) for v in values)
        history.history = merged
        self._write_history(kwargs.get("callbacks") or [], merged, initial, p, base)
        return history

    def _unfreeze(self, model: keras.Model, p: dict[str, Any]) -> None:
        freeze(model.layers[1], p["unfrozen_layers"], p["batchnorm"], self.pretrained.unfreeze_by)
        compile_model(model, p["learning_rate"], p["weight_decay"])

    def _write_history(
        self,
        callbacks: Sequence[Any],
        history: dict[str, list[float]],
        initial_epoch: int,
        params: dict[str, Any],
        base: keras.Model,
    ) -> None:
        """``thaw_history.json`` in the trial's folder (found through KerasTuner's own
        callback, which knows the tuner and the trial); nothing outside a KerasTuner search."""
        found = next((c for c in callbacks if hasattr(c, "tuner") and hasattr(c, "trial")), None)
        if found is None or not hasattr(found.tuner, "get_trial_dir"):
            return
        folder = found.tuner.get_trial_dir(found.trial.trial_id)
        record = {
            "history": {
                k: [v if math.isfinite(v) else None for v in vs] for k, vs in history.items()
            },
            "initial_epoch": initial_epoch,
            "num_classes": self.num_classes,
            "params": {
                **params,
                "of_layers": self.pretrained.num_layers,
                "batchnorm_layers": len(batchnorm_layers(base)),
            },
        }
        try:
            with open(os.path.join(folder, HISTORY_FILE), "w", encoding="utf-8") as f:
                json.dump(record, f, indent=1)
        except OSError as exc:
            _logger.warning("Trial %s: curves not written: %s", found.trial.trial_id, exc)
