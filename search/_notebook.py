"""The study of ``thaw.run(model=..., data=...)``: study-file settings as keywords, the model and
the data in memory.

The keywords are the study file's keys: its top-level keys (``n_trials``, ``objective``,
``seed``, ``storage``, ``sampler``, ``pruner``, ``budget_epochs``, ...), ``space`` (the
``search_space`` section), every ``train`` key (``epochs``, ``batch_size``, ...) or a ``train``
mapping, and for the model ``cut_at``, ``input_shape`` and ``unfreeze_by``, for the data
``class_names``, ``val_fraction`` and ``task`` (``auto``, ``multiclass`` or ``multilabel``).
They are validated by the study file's schema, so a wrong
one gets the same one line a study file would; the typed :class:`StudyConfig` they build is the
one a study file builds, with sources of kind ``memory``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from thaw.search._config import StudyConfig, StudyFileError, parse_study
from thaw.search._schema import StudyFile, TrainSection, unknown_key_message

#: Keywords that describe the in-memory model or data rather than a study-file section.
MODEL_KEYWORDS: tuple[str, ...] = ("cut_at", "input_shape", "unfreeze_by")
DATA_KEYWORDS: tuple[str, ...] = ("class_names", "val_fraction", "task")
#: Top-level study-file keys a keyword sets as they are.
TOP_KEYWORDS: tuple[str, ...] = tuple(
    k for k in StudyFile.model_fields if k not in ("name", "model", "data", "search_space")
)
TRAIN_KEYWORDS: tuple[str, ...] = tuple(TrainSection.model_fields)


def accepted_keywords() -> tuple[str, ...]:
    return (
        "study_name",
        "space",
        *TOP_KEYWORDS,
        *TRAIN_KEYWORDS,
        *MODEL_KEYWORDS,
        *DATA_KEYWORDS,
    )


def notebook_config(
    model: Any,
    data: Any,
    validation_data: Any = None,
    *,
    head: Callable[..., Any] | None = None,
    study_name: str | None = None,
    base: StudyConfig | None = None,
    **settings: Any,
) -> StudyConfig:
    """The typed study of an in-memory model and data, with ``settings`` as keywords.

    ``base``: a study file's configuration whose settings the keywords override (its model and
    data are replaced by ``model`` and ``data``). Raises :class:`StudyFileError` (one line) for
    a bad keyword, :class:`~thaw.objectives.ModelSourceError` or
    :class:`~thaw.objectives.DataSourceError` for a model or data that cannot be searched.
    """
    allowed = accepted_keywords()
    for key in settings:
        if key not in allowed:
            raise StudyFileError(unknown_key_message("", key, allowed).replace("key", "keyword", 1))
    model_options = {k: settings.pop(k) for k in MODEL_KEYWORDS if k in settings}
    data_options = {k: settings.pop(k) for k in DATA_KEYWORDS if k in settings}
    task = data_options.get("task", "auto")
    if task not in ("auto", "multiclass", "multilabel"):
        raise StudyFileError(f"task is {task!r}; expected one of: auto, multiclass, multilabel")
    raw: dict[str, Any] = copy.deepcopy(dict(base.raw)) if base is not None else {}
    raw.pop("model", None)
    raw.pop("data", None)
    if "space" in settings:
        raw["search_space"] = settings.pop("space")
    train = dict(raw.get("train") or {})
    train.update(settings.pop("train", None) or {})
    for key in TRAIN_KEYWORDS:
        if key in settings:
            train[key] = settings.pop(key)
    if train:
        raw["train"] = train
    raw.update(settings)
    name = study_name or (base.name if base is not None else getattr(model, "name", None))
    if not isinstance(name, str) or not name:
        raise StudyFileError(f"study_name must be a non-empty string, got {name!r}")
    raw["name"] = name
    # Relative paths (a SQLite storage, the kept models) are relative to the study file's
    # folder, or to the working folder without one.
    path = base.path if base is not None else Path.cwd() / name
    config = parse_study(raw, path)
    from thaw.objectives._memory import memory_data_source, memory_model_source

    input_shape = model_options.get("input_shape")
    model_source = memory_model_source(
        model,
        head,
        cut_at=_optional_str("cut_at", model_options.get("cut_at")),
        input_shape=_shape(input_shape) if input_shape is not None else None,
        unfreeze_by=_unfreeze_by(model_options.get("unfreeze_by", "layers")),
    )
    class_names = data_options.get("class_names", ())
    if isinstance(class_names, str) or not all(isinstance(n, str) for n in class_names):
        raise StudyFileError(f"class_names must be a list of strings, got {class_names!r}")
    fraction = data_options.get("val_fraction", 0.2)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise StudyFileError(f"val_fraction must be a number between 0 and 1, got {fraction!r}")
    data_source = memory_data_source(
        data,
        validation_data,
        class_names=tuple(class_names),
        val_fraction=float(fraction),
        seed=config.seed,
        task=task,
    )
    return replace(config, model=model_source, data=data_source, from_file=base is not None)


def _optional_str(key: str, value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise StudyFileError(f"{key} must be a layer name, got {value!r}")
    return value


def _shape(value: Any) -> tuple[int, int, int]:
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 3
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in value)
    ):
        raise StudyFileError(f"input_shape must be (height, width, channels), got {value!r}")
    return (int(value[0]), int(value[1]), int(value[2]))


def _unfreeze_by(value: Any) -> str:
    if value not in ("layers", "blocks"):
        raise StudyFileError(f"unfreeze_by is {value!r}; expected one of: layers, blocks")
    return str(value)
