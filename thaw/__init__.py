"""thaw: hyperparameter search and diagnosis for fine-tuning pretrained Keras models.

The import packages are ``thaw.search`` (study files, orchestration, CLI), ``thaw.objectives``
(everything Keras: build, freeze, train) and ``thaw.reports`` (reads storage only, never Keras).
Importing ``thaw`` loads neither Keras nor TensorFlow: the public names below are imported on
first use.

In a notebook::

    import thaw

    study = thaw.run("studies/flowers.yaml", n_trials=10)   # an optuna.Study
    thaw.trials_frame(study)                                 # the trial table (pandas)
    thaw.diagnose(study)                                     # why validation loss rose
    thaw.report(study, "thaw-report/flowers")                # report.md, report.html, ...
    thaw.report("studies/flowers.yaml")                      # as `thaw report` writes it
    model = thaw.load_best(study)                            # the best trial's best epoch
"""

from __future__ import annotations

import importlib
from typing import Any

from thaw._version import __version__

_LAZY: dict[str, str] = {
    "run": "thaw._api",
    "report": "thaw._api",
    "diagnose": "thaw._api",
    "load_best": "thaw._api",
    "load_config": "thaw._api",
    "trials_frame": "thaw._api",
    "FineTuneObjective": "thaw.objectives",
    "RunError": "thaw.search._run",
    "StudyConfig": "thaw.search._config",
    "StudyFileError": "thaw.search._config",
}


_SUBPACKAGES = ("search", "objectives", "reports")


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"thaw.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'thaw' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY, *_SUBPACKAGES])


__all__ = ["__version__", *sorted(_LAZY)]
