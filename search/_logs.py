"""Logs people expect from a fit: TensorBoard runs per trial, and the user's own callbacks.

``train.callbacks`` names Keras callback classes by import path; they are imported before the
storage is touched (a bad path is one line, exit 2) and built with no arguments for each trial,
so no state leaks from one trial to the next.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from thaw.search._config import StudyConfig

TENSORBOARD_DIR_NAME = "tensorboard"


class CallbackImportError(ValueError):
    """A ``train.callbacks`` entry cannot be imported as a Keras callback class."""


def import_callbacks(paths: Sequence[str]) -> list[type]:
    """The classes ``pkg.module.Class`` names, checked to be Keras callbacks."""
    classes = []
    for path in paths:
        module_name, _, attr = path.rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # noqa: BLE001 - any import failure is the user's to fix
            raise CallbackImportError(
                f"train.callbacks: cannot import {module_name!r} for {path!r} "
                f"({type(exc).__name__}: {exc}); is it installed or on PYTHONPATH?"
            ) from None
        cls = getattr(module, attr, None)
        if cls is None:
            raise CallbackImportError(f"train.callbacks: module {module_name!r} has no {attr!r}")
        import keras

        if not (isinstance(cls, type) and issubclass(cls, keras.callbacks.Callback)):
            raise CallbackImportError(
                f"train.callbacks: {path!r} is not a keras.callbacks.Callback subclass"
            )
        classes.append(cls)
    return classes


def tensorboard_dir(config: StudyConfig) -> Path:
    """``<study file folder>/tensorboard/<study name>``: one run (sub-folder) per trial."""
    return config.path.resolve().parent / TENSORBOARD_DIR_NAME / config.name


def trial_callbacks(
    config: StudyConfig, classes: Sequence[type]
) -> Callable[[Any], list[Any]] | None:
    """A factory of each trial's extra callbacks, or None when there are none."""
    if not config.tensorboard and not classes:
        return None
    folder = tensorboard_dir(config)

    def make(trial: Any) -> list[Any]:
        callbacks = [cls() for cls in classes]
        if config.tensorboard:
            import keras

            log_dir = folder / f"trial-{trial.number}"
            callbacks.insert(0, keras.callbacks.TensorBoard(log_dir=str(log_dir)))
        return callbacks

    return make


def attach_logs(config: StudyConfig, objective: Any, classes: Sequence[type]) -> None:
    """Give ``objective`` the study's TensorBoard and user callbacks."""
    objective.extra_callbacks = trial_callbacks(config, classes)
