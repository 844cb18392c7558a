"""Logs people expect from a fit: TensorBoard runs and CSV logs per trial, the user's callbacks.

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
CSV_LOG_DIR_NAME = "logs"


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


def csv_log_dir(config: StudyConfig) -> Path:
    """``<study file folder>/logs/<study name>``: ``trial-<n>.csv`` per trial."""
    return config.path.resolve().parent / CSV_LOG_DIR_NAME / config.name


def trial_callbacks(
    config: StudyConfig,
    classes: Sequence[type],
    also: Sequence[Callable[[Any], list[Any]]] = (),
) -> Callable[[Any], list[Any]] | None:
    """A factory of each trial's extra callbacks, or None when there are none. ``also``: more
    factories of the trial's callbacks (the progress bar's), called after the study's own."""
    if not config.tensorboard and not config.csv_log and not classes and not also:
        return None

    def make(trial: Any) -> list[Any]:
        import keras

        callbacks = []
        if config.tensorboard:
            log_dir = tensorboard_dir(config) / f"trial-{trial.number}"
            callbacks.append(keras.callbacks.TensorBoard(log_dir=str(log_dir)))
        if config.csv_log:
            csv_path = csv_log_dir(config) / f"trial-{trial.number}.csv"
            csv_path.parent.mkdir(parents=True, exist_ok=True)
            # append: a warm-up's second fit() phase continues the same file
            callbacks.append(keras.callbacks.CSVLogger(str(csv_path), append=True))
        callbacks += [cls() for cls in classes]
        for factory in also:
            callbacks += factory(trial)
        return callbacks

    return make


def attach_logs(
    config: StudyConfig,
    objective: Any,
    classes: Sequence[type],
    also: Sequence[Callable[[Any], list[Any]]] = (),
) -> None:
    """Give ``objective`` the study's TensorBoard and user callbacks, and ``also``'s."""
    objective.extra_callbacks = trial_callbacks(config, classes, also)
