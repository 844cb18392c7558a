"""Building, freezing and training fine-tuning models for thaw's objective.

Knows nothing of the CLI or of reports. The Keras-free descriptions (sources, search space,
settings, in-memory data) import without Keras; everything that builds or trains a model is
imported on first use, so parsing a study file or rendering a report never loads TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import Any

from thaw.objectives._data import (
    TASKS,
    ArrayData,
    DataSource,
    DataSourceError,
    chance_levels,
    load_npz,
    multilabel_chance,
    resolve_labels,
)
from thaw.objectives._pruning import ExplainingPruner, record_prune_reason
from thaw.objectives._space import FloatRange, IntRange, SearchSpace, TrialParams
from thaw.objectives._specs import (
    APPLICATION_NAMES,
    BATCHNORM_MODES,
    LORA_LAYER_KINDS,
    MAX_LORA_RANK,
    OBJECTIVE_METRICS,
    SCHEDULES,
    ModelSource,
    ModelSourceError,
    TrainSettings,
)

_LAZY: dict[str, str] = {
    "CACHE_FROZEN": "thaw.objectives._cache",
    "FeatureCache": "thaw.objectives._cache",
    "Split": "thaw.objectives._cache",
    "split_frozen_prefix": "thaw.objectives._cache",
    "BestEpoch": "thaw.objectives._callbacks",
    "HistoryRecorder": "thaw.objectives._callbacks",
    "RestoreBestWeights": "thaw.objectives._callbacks",
    "RateSchedule": "thaw.objectives._callbacks",
    "scheduled_rate": "thaw.objectives._callbacks",
    "BestModelKeeper": "thaw.objectives._keep",
    "kept_model_file": "thaw.objectives._keep",
    "TrialHistory": "thaw.objectives._callbacks",
    "TrialReporter": "thaw.objectives._callbacks",
    "DEMO_CLASS_NAMES": "thaw.objectives._demo",
    "demo_pretrained_model_path": "thaw.objectives._demo",
    "demo_target_data": "thaw.objectives._demo",
    "GLYPHS_SOURCE_CLASSES": "thaw.objectives._glyphs",
    "GLYPHS_TARGET_CLASSES": "thaw.objectives._glyphs",
    "glyphs_pretrained_model_path": "thaw.objectives._glyphs",
    "glyphs_source_data": "thaw.objectives._glyphs",
    "glyphs_target_data": "thaw.objectives._glyphs",
    "load_data": "thaw.objectives._data",
    "batchnorm_layers": "thaw.objectives._model",
    "build_model": "thaw.objectives._model",
    "count_trainable_weights": "thaw.objectives._model",
    "cut_base": "thaw.objectives._model",
    "freeze": "thaw.objectives._model",
    "weighted_layers": "thaw.objectives._model",
    "DivergedError": "thaw.objectives._objective",
    "FineTuneObjective": "thaw.objectives._objective",
    "FineTuneHyperModel": "thaw.objectives._hypermodel",
    "TrialOutcome": "thaw.objectives._objective",
    "build_training_state": "thaw.objectives._objective",
    "compile_model": "thaw.objectives._objective",
    "without_augmentation": "thaw.objectives._finetune",
    "enable_lora": "thaw.objectives._lora",
    "supports_lora": "thaw.objectives._lora",
    "summarise_history": "thaw.objectives._objective",
    "PretrainedBase": "thaw.objectives._sources",
    "DeviceInfo": "thaw.objectives._device",
    "configure_device": "thaw.objectives._device",
    "list_gpus": "thaw.objectives._device",
    "load_image_folder": "thaw.objectives._images",
    "stream_image_folder": "thaw.objectives._images",
    "StreamedImages": "thaw.objectives._images",
    "FileBatches": "thaw.objectives._batches",
    "load_application": "thaw.objectives._applications",
    "file_fingerprint": "thaw.objectives._fingerprint",
    "model_fingerprint": "thaw.objectives._fingerprint",
    "adapt_batchnorm": "thaw.objectives._model",
    "domain_shift_scores": "thaw.objectives._model",
    "shift_profile": "thaw.objectives._model",
    "unfrozen_span": "thaw.objectives._model",
    "layer_groups": "thaw.objectives._model",
    "block_name": "thaw.objectives._model",
    "UnfreezeRow": "thaw.objectives._inspect",
    "unfreeze_table": "thaw.objectives._inspect",
    "load_pretrained": "thaw.objectives._sources",
    "frozen_heap": "thaw.objectives._release",
    "released_custom_gradients": "thaw.objectives._release",
    "RangeTestResult": "thaw.objectives._range_test",
    "lr_range_test": "thaw.objectives._range_test",
    "suggest_learning_rate": "thaw.objectives._range_test",
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
    "LORA_LAYER_KINDS",
    "MAX_LORA_RANK",
    "DataSourceError",
    "ExplainingPruner",
    "FloatRange",
    "IntRange",
    "ModelSource",
    "ModelSourceError",
    "OBJECTIVE_METRICS",
    "SCHEDULES",
    "SearchSpace",
    "TASKS",
    "TrainSettings",
    "TrialParams",
    "chance_levels",
    "load_npz",
    "multilabel_chance",
    "record_prune_reason",
    "resolve_labels",
    *sorted(_LAZY),
]
