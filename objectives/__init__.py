"""Building, freezing and training fine-tuning models for thaw's objective.

Knows nothing of the CLI or of reports. The Keras-free descriptions (sources, search space,
settings, in-memory data) import without Keras; everything that builds or trains a model is
imported on first use, so parsing a study file or rendering a report never loads TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import Any

from objectives._data import ArrayData, DataSource, DataSourceError, load_npz
from objectives._space import FloatRange, IntRange, SearchSpace, TrialParams
from objectives._specs import (
    APPLICATION_NAMES,
    BATCHNORM_MODES,
    OBJECTIVE_METRICS,
    ModelSource,
    ModelSourceError,
    TrainSettings,
)

_LAZY: dict[str, str] = {
    "HistoryRecorder": "objectives._callbacks",
    "TrialHistory": "objectives._callbacks",
    "TrialReporter": "objectives._callbacks",
    "DEMO_CLASS_NAMES": "objectives._demo",
    "demo_pretrained_model_path": "objectives._demo",
    "demo_target_data": "objectives._demo",
    "load_data": "objectives._data",
    "batchnorm_layers": "objectives._model",
    "build_model": "objectives._model",
    "count_trainable_weights": "objectives._model",
    "cut_base": "objectives._model",
    "freeze": "objectives._model",
    "weighted_layers": "objectives._model",
    "DivergedError": "objectives._objective",
    "FineTuneObjective": "objectives._objective",
    "TrialOutcome": "objectives._objective",
    "compile_model": "objectives._objective",
    "summarise_history": "objectives._objective",
    "PretrainedBase": "objectives._sources",
    "DeviceInfo": "objectives._device",
    "configure_device": "objectives._device",
    "list_gpus": "objectives._device",
    "load_image_folder": "objectives._images",
    "stream_image_folder": "objectives._images",
    "StreamedImages": "objectives._images",
    "FileBatches": "objectives._batches",
    "load_application": "objectives._applications",
    "adapt_batchnorm": "objectives._model",
    "domain_shift_scores": "objectives._model",
    "layer_groups": "objectives._model",
    "block_name": "objectives._model",
    "UnfreezeRow": "objectives._inspect",
    "unfreeze_table": "objectives._inspect",
    "load_pretrained": "objectives._sources",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'objectives' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "APPLICATION_NAMES",
    "ArrayData",
    "BATCHNORM_MODES",
    "DataSource",
    "DataSourceError",
    "FloatRange",
    "IntRange",
    "ModelSource",
    "ModelSourceError",
    "OBJECTIVE_METRICS",
    "SearchSpace",
    "TrainSettings",
    "TrialParams",
    "load_npz",
    *sorted(_LAZY),
]
