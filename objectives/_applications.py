"""``keras.applications`` networks by name, with their own ``preprocess_input``."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from thaw.objectives._specs import ModelSourceError


@dataclass(frozen=True)
class Application:
    constructor: str  # attribute of keras.applications
    module: str  # keras.applications submodule holding preprocess_input
    default_size: int
    takes_alpha: bool = False


APPLICATIONS: dict[str, Application] = {
    "MobileNetV2": Application("MobileNetV2", "mobilenet_v2", 224, takes_alpha=True),
    "MobileNetV3Small": Application("MobileNetV3Small", "mobilenet_v3", 224, takes_alpha=True),
    "MobileNetV3Large": Application("MobileNetV3Large", "mobilenet_v3", 224, takes_alpha=True),
    "EfficientNetB0": Application("EfficientNetB0", "efficientnet", 224),
    "EfficientNetV2B0": Application("EfficientNetV2B0", "efficientnet_v2", 224),
    "ResNet50": Application("ResNet50", "resnet50", 224),
    "ResNet50V2": Application("ResNet50V2", "resnet_v2", 224),
    "DenseNet121": Application("DenseNet121", "densenet", 224),
    "ConvNeXtTiny": Application("ConvNeXtTiny", "convnext", 224),
    "Xception": Application("Xception", "xception", 299),
}


def _weights_hint(exc: Exception, name: str) -> str:
    match = re.search(r"(https?://\S+?\.h5)", str(exc))
    cache = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    if match:
        filename = match.group(1).rsplit("/", 1)[-1]
        return (
            f"Keras could not download the ImageNet weights of {name} (offline?): it wants "
            f"{filename} from {match.group(1)}; put that file in {cache / 'models'}/ or set "
            "'model.weights' to a local weights file (or null for random weights)"
        )
    return (
        f"cannot build {name} with ImageNet weights: {type(exc).__name__}: {exc}; put the weights "
        f"file in {cache / 'models'}/ or set 'model.weights' to a local file"
    )


def load_application(
    name: str,
    weights: str | None,
    input_shape: tuple[int, int, int] | None,
    alpha: float | None = None,
) -> tuple[keras.Model, Callable[[np.ndarray], np.ndarray]]:
    """Build the network without its top; return it and its ``preprocess_input``."""
    app = APPLICATIONS.get(name)
    if app is None:
        raise ModelSourceError(
            f"unknown keras.applications network {name!r}; thaw supports: "
            f"{', '.join(sorted(APPLICATIONS))}"
        )
    if weights not in (None, "imagenet") and not Path(weights).exists():
        raise ModelSourceError(f"weights file {weights} does not exist; check 'model.weights'")
    kwargs: dict[str, Any] = {"include_top": False, "weights": weights}
    kwargs["input_shape"] = input_shape or (app.default_size, app.default_size, 3)
    if alpha is not None:
        if not app.takes_alpha:
            raise ModelSourceError(f"{name} has no 'alpha' (width multiplier); remove model.alpha")
        kwargs["alpha"] = alpha
    constructor = getattr(keras.applications, app.constructor)
    try:
        model = constructor(**kwargs)
    except ValueError as exc:
        if weights not in (None, "imagenet"):
            raise ModelSourceError(
                f"weights file {weights} does not fit {name} with input shape "
                f"{kwargs['input_shape']}: {str(exc).splitlines()[0][:200]}"
            ) from None
        raise ModelSourceError(f"cannot build {name}: {str(exc).splitlines()[0][:300]}") from None
    except Exception as exc:  # noqa: BLE001 - download failures come as many exception types
        if weights == "imagenet":
            raise ModelSourceError(_weights_hint(exc, name)) from None
        raise ModelSourceError(f"cannot build {name}: {type(exc).__name__}: {exc}") from None
    module = getattr(keras.applications, app.module)
    preprocess = module.preprocess_input

    def preprocess_input(x: np.ndarray) -> np.ndarray:
        return np.asarray(preprocess(np.array(x, dtype="float32", copy=True)), dtype="float32")

    return model, preprocess_input
