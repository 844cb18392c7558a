"""KerasHub backbones from a preset: a local folder saved with ``save_to_preset``, or a name.

``keras_hub`` is an optional dependency (``pip install 'thaw-keras[kerashub]'``), imported only
when a study uses ``model.source: kerashub``. Offline, a preset name cannot be downloaded: the
error says where to put the files instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from thaw.objectives._specs import ModelSourceError

_logger = logging.getLogger(__name__)


def _import_keras_hub() -> object:
    try:
        import keras_hub
    except ImportError as exc:
        raise ModelSourceError(
            f"model.source: kerashub needs the keras-hub package ({exc}); "
            "pip install 'thaw-keras[kerashub]'"
        ) from None
    return keras_hub


def load_kerashub_backbone(
    preset: str,
) -> tuple[keras.Model, Callable[[np.ndarray], np.ndarray] | None]:
    """The preset's backbone (no task head) and its image converter as a preprocess function."""
    keras_hub = _import_keras_hub()
    local = Path(preset)
    if not local.exists() and (local.is_absolute() or preset.startswith(".")):
        raise ModelSourceError(f"KerasHub preset folder {preset} does not exist; check the path")
    try:
        backbone = keras_hub.models.Backbone.from_preset(preset)  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - download and format failures come as many types
        if local.is_dir():
            raise ModelSourceError(
                f"cannot load a KerasHub backbone from {preset}: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:300]} (a folder written by save_to_preset holds "
                "config.json and model.weights.h5)"
            ) from None
        raise ModelSourceError(
            f"KerasHub preset {preset!r} needs a download ({type(exc).__name__}); where there is "
            f"internet run keras_hub.models.Backbone.from_preset({preset!r})"
            ".save_to_preset('DIR'), copy DIR here and set 'model.preset: DIR'"
        ) from None
    return backbone, _image_converter(keras_hub, preset)


def _image_converter(keras_hub: object, preset: str) -> Callable[[np.ndarray], np.ndarray] | None:
    """The preset's own image preprocessing (rescaling, normalisation), if it ships one."""
    if not (Path(preset) / "image_converter.json").exists():
        return None
    converter = keras_hub.layers.ImageConverter.from_preset(preset)  # type: ignore[attr-defined]
    # thaw feeds images at the model's input size already: only rescale and normalise.
    converter.image_size = None

    def preprocess(x: np.ndarray) -> np.ndarray:
        return np.asarray(converter(np.asarray(x, dtype="float32")), dtype="float32")

    return preprocess
