"""The best model out: kept top models, ``thaw export`` and ``thaw.load_best``.

While a study runs with ``keep_best: true`` (the default), the top 3 trials' best-epoch models are
kept as ``.keras`` files in :func:`default_models_dir` (beside the SQLite file, or the study file
for a server database); the folder is stored on the study (user attr ``thaw:models_dir``).
:func:`export_trial` copies a kept model, or retrains the trial with its stored seed, and checks
that its validation loss matches the one stored on the trial.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from thaw._keys import MODELS_DIR
from thaw.search._config import StudyConfig

if TYPE_CHECKING:
    import keras

_logger = logging.getLogger(__name__)

MODELS_DIR_ATTR = MODELS_DIR
MODELS_DIR_NAME = "models"
KEEP_TOP_K = 3
#: Default largest |measured - stored| validation loss accepted by ``thaw export``.
DEFAULT_TOLERANCE = 1e-4


class ExportError(ValueError):
    """The model cannot be exported as asked: one line for the user."""


def default_models_dir(storage_url: str, study_file_dir: Path | str, study_name: str) -> Path:
    """``<SQLite file folder>/models/<study>``, else ``<study file folder>/models/<study>``."""
    from thaw.search._publish import default_artifact_dir

    return default_artifact_dir(storage_url, study_file_dir).parent / MODELS_DIR_NAME / study_name


def models_dir(config: StudyConfig) -> Path:
    """Where the study's kept models go: ``<artifacts>/models/<study>`` when the study file sets
    ``artifacts``, else :func:`default_models_dir`."""
    if config.artifacts is not None:
        return Path(config.artifacts) / MODELS_DIR_NAME / config.name
    return default_models_dir(str(config.storage), config.path.resolve().parent, config.name)


def attach_keeper(config: StudyConfig, objective: Any, study: optuna.Study) -> None:
    """With ``keep_best``, make ``objective`` keep the study's top best-epoch models."""
    if not config.keep_best:
        return
    from thaw.objectives import OBJECTIVE_METRICS, BestModelKeeper

    folder = models_dir(config)
    maximize = OBJECTIVE_METRICS[config.train.metric] == "maximize"
    objective.on_trial_model = BestModelKeeper(
        folder,
        config.train.metric,
        maximize,
        KEEP_TOP_K,
        prepare=getattr(objective, "compile_if_deferred", None),
    )
    if study.user_attrs.get(MODELS_DIR_ATTR) != str(folder):
        study.set_user_attr(MODELS_DIR_ATTR, str(folder))


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_trial` wrote and how its validation loss compares."""

    number: int
    path: Path
    source: str  # "kept" or "retrained"
    stored_val_loss: float | None
    measured_val_loss: float
    tolerance: float

    @property
    def difference(self) -> float | None:
        if self.stored_val_loss is None:
            return None
        return abs(self.measured_val_loss - self.stored_val_loss)

    @property
    def matches(self) -> bool:
        diff = self.difference
        return diff is not None and diff <= self.tolerance


def best_trial_number(study: optuna.Study) -> int:
    """The top trial of the report's ranking (best validation loss reached, pruned or not)."""
    from thaw.reports import get_ranking_info

    ranked = get_ranking_info(study).ranked
    if not ranked:
        raise ExportError(
            f"study {study.study_name!r} has no completed or pruned trial with a result yet"
        )
    return ranked[0].number


def _trial(study: optuna.Study, number: int | None) -> optuna.trial.FrozenTrial:
    number = best_trial_number(study) if number is None else number
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials:
        raise ExportError(
            f"study {study.study_name!r} has no trial {number}; trials are 0..{len(trials) - 1}"
        )
    trial = trials[number]
    if trial.state not in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
        raise ExportError(
            f"trial {number} is {trial.state.name.lower()}; export a completed or pruned trial"
        )
    return trial


def kept_model_path(study: optuna.Study, number: int) -> Path | None:
    """The kept ``.keras`` file of trial ``number``, if the run kept it."""
    from thaw.objectives._keep import kept_model_file

    folder = study.user_attrs.get(MODELS_DIR_ATTR)
    if not isinstance(folder, str):
        return None
    path = kept_model_file(folder, number)
    return path if path.is_file() else None


def load_kept_model(path: Path) -> keras.Model:
    import keras

    return keras.saving.load_model(path, compile=False, safe_mode=True)


def retrain_trial(objective: Any, trial: optuna.trial.FrozenTrial) -> keras.Model:
    """Train the trial's configuration again with its stored seed, up to the epoch it stopped.

    The model comes back at its best epoch (the epoch with the best objective metric).
    """
    from optuna.trial import FixedTrial

    epochs = trial.user_attrs.get("epochs_run") or objective.settings.epochs
    seed = trial.user_attrs.get("seed")
    fixed = FixedTrial(dict(trial.params), number=trial.number)
    params = objective.space.suggest(fixed)
    original = objective.settings
    objective.settings = replace(original, epochs=min(int(epochs), original.epochs))
    try:
        model, _, _ = objective.train(fixed, params, seed=seed if isinstance(seed, int) else None)
    finally:
        objective.settings = original
    from thaw.objectives import without_augmentation

    return without_augmentation(model)  # as a user calls it: model(x) must not augment


def validation_loss(objective: Any, model: keras.Model) -> float:
    """``model``'s loss on the objective's validation data, as the fit measured it."""
    from thaw.objectives import compile_model

    compile_model(model, 1e-3, 0.0, multilabel=bool(getattr(objective, "multilabel", False)))
    fit_data = objective._fit_data(0)
    validation = fit_data["validation_data"]
    if isinstance(validation, tuple):
        x, y = validation
        result = model.evaluate(
            x, y, batch_size=objective.settings.batch_size, verbose=0, return_dict=True
        )
    else:
        result = model.evaluate(validation, verbose=0, return_dict=True)
    return float(result["loss"])


def export_trial(
    config: StudyConfig,
    study: optuna.Study,
    out: Path | str,
    number: int | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    objective: Any = None,
) -> ExportResult:
    """Write trial ``number``'s (default: the best trial's) best-epoch model to ``out``.

    The kept model file if there is one, else the trial retrained with its stored seed. The
    validation loss of the written model is measured on the study's validation data.
    """
    out = Path(out)
    if out.suffix != ".keras":
        raise ExportError(f"--out must name a .keras file, got {str(out)!r}")
    if out.exists() and out.is_dir():
        raise ExportError(f"--out {str(out)!r} is a folder; give a file such as model.keras")
    if not out.parent.exists():
        raise ExportError(f"the folder of --out {str(out.parent)!r} does not exist")
    trial = _trial(study, number)
    if objective is None:
        objective = _objective(config)
    kept = kept_model_path(study, trial.number)
    if kept is not None:
        model = load_kept_model(kept)
        source = "kept"
    else:
        _logger.info("Trial %d's model was not kept: retraining it", trial.number)
        model = retrain_trial(objective, trial)
        source = "retrained"
    measured = validation_loss(objective, model)
    stored = trial.user_attrs.get("best_val_loss")
    stored = float(stored) if isinstance(stored, (int, float)) and math.isfinite(stored) else None
    if kept is not None:
        shutil.copyfile(kept, out)
    else:
        model.save(out)
    return ExportResult(trial.number, out, source, stored, measured, tolerance)


def load_trial_model(study: optuna.Study | str | Path, number: int | None = None) -> keras.Model:
    """Trial ``number``'s (default: the best trial's) best-epoch model, loaded in safe mode.

    For an ``optuna.Study``, the model kept during the run; for a study file, the kept model or
    else the trial retrained with its stored seed.
    """
    from thaw._api import _open_study

    config = None if isinstance(study, optuna.Study) else study
    opened = _open_study(study)
    trial = _trial(opened, number)
    kept = kept_model_path(opened, trial.number)
    if kept is not None:
        return load_kept_model(kept)
    if config is None:
        raise ExportError(
            f"trial {trial.number}'s model was not kept (keep_best is off, or it was not in the "
            "top 3); pass the study file to retrain it, or run: thaw export STUDY_FILE --trial "
            f"{trial.number} --out model.keras"
        )
    from thaw._api import load_config

    parsed = config if isinstance(config, StudyConfig) else load_config(config)
    return retrain_trial(_objective(parsed), trial)


def _objective(config: StudyConfig) -> Any:
    """The study's objective, on a device set up as ``thaw run`` does (precision, determinism)."""
    from thaw.objectives import FineTuneObjective, configure_device

    configure_device(config.train.mixed_precision)
    return FineTuneObjective.from_config(config)
