"""thaw's Python API: what ``thaw run``, ``thaw report`` and ``thaw diagnose`` do, as calls.

Everything here is re-exported from :mod:`thaw` and imported on first use.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from thaw._keys import CONFIG

if TYPE_CHECKING:
    import keras
    import pandas

    from thaw.reports import ReportFiles, StudyDiagnosis, Verdict
    from thaw.search._config import StudyConfig


def load_config(study_file: str | Path, storage: str | None = None) -> StudyConfig:
    """Parse a study file into its typed configuration (``storage`` overrides the file's).

    Raises :class:`thaw.RunError` (a ``ValueError``) with one line on a bad file.
    """
    from thaw.search._run import load_config as _load_config

    return _load_config(study_file, storage)


def run(
    study_file_or_config: str | Path | StudyConfig,
    storage: str | None = None,
    n_trials: int | None = None,
    budget_epochs: int | None = None,
) -> optuna.Study:
    """Create or resume the study of a study file (or config) and run its trials.

    ``n_trials`` runs that many trials now (default: up to the file's ``n_trials``);
    ``budget_epochs`` caps the epochs all trials together may spend. Returns the study, as
    stored in ``storage`` (default: the study file's). Bad input raises :class:`thaw.RunError`
    before anything is trained; a Ctrl-C stops the run and returns the trials finished so far.
    """
    from thaw.search._run import RunOptions, run_study

    options = RunOptions(n_trials=n_trials, budget_epochs=budget_epochs)
    return run_study(study_file_or_config, storage=storage, options=options).study


def _open_study(study: optuna.Study | str | Path | StudyConfig) -> optuna.Study:
    """An existing study: given, or the one a study file (or config) names in its storage."""
    if isinstance(study, optuna.Study):
        return study
    from thaw.search._study import StorageError, load_existing_study, open_storage

    config = study if not isinstance(study, (str, Path)) else load_config(study)
    url = str(config.storage)
    try:
        return load_existing_study(open_storage(url, must_exist=True), config.name, url)
    except StorageError as exc:
        from thaw.search._run import RunError

        raise RunError(str(exc)) from None


def report(study: optuna.Study | str | Path, out_dir: str | Path) -> ReportFiles:
    """Write ``report.md``, ``report.html``, ``trials.csv`` and ``summary.json`` to ``out_dir``.

    ``study`` is an ``optuna.Study`` or a study file whose study has run.
    """
    from thaw.reports import write_report

    return write_report(_open_study(study), Path(out_dir))


def _thresholds(study: optuna.Study) -> Any:
    """The diagnosis thresholds the study file set (stored on the study), else the defaults."""
    from thaw.reports import Thresholds

    stored = study.user_attrs.get(CONFIG, {})
    diagnosis = stored.get("diagnosis") if isinstance(stored, Mapping) else None
    return Thresholds.from_dict(diagnosis or {})


def diagnose(
    study_or_history: optuna.Study | optuna.trial.FrozenTrial | Mapping[str, Any] | Any,
) -> StudyDiagnosis | list[Verdict]:
    """Say why validation loss rose.

    - an ``optuna.Study`` run by thaw: the study diagnosis (every trial, and the study's
      findings; ``.render_text()`` prints it);
    - one trial (a ``FrozenTrial``), a history dict (``{"loss": [...], "val_loss": [...],
      "accuracy": [...], "val_accuracy": [...]}``, one value per epoch) or the ``History``
      that Keras' ``model.fit`` returns: the verdicts of that single run.
    """
    from thaw.reports import TrialCurves, diagnose_study, diagnose_trial
    from thaw.reports.diagnosis import diagnose_history

    if isinstance(study_or_history, optuna.Study):
        return diagnose_study(study_or_history, _thresholds(study_or_history))
    if isinstance(study_or_history, optuna.trial.FrozenTrial):
        return diagnose_trial(TrialCurves.from_frozen_trial(study_or_history))
    history = getattr(study_or_history, "history", study_or_history)  # keras History
    if not isinstance(history, Mapping):
        raise TypeError(
            "diagnose() takes an optuna.Study, a FrozenTrial, a Keras History or a history dict "
            f"such as {{'loss': [...], 'val_loss': [...]}}, got {type(study_or_history).__name__}"
        )
    # The one history parser (as ``thaw diagnose --history``); a History's model says whether
    # there are BatchNorm layers to blame.
    counted = _batchnorm_layers(getattr(study_or_history, "model", None))
    return list(diagnose_history(dict(history), batchnorm_layers=counted).verdicts)


def _batchnorm_layers(model: Any) -> int | None:
    """BatchNorm layers of a Keras model, nested models included; ``None`` without a model."""
    if model is None or not hasattr(model, "layers"):
        return None

    def leaves(layer: Any) -> list[Any]:
        inner = getattr(layer, "layers", None)
        return [x for sub in inner for x in leaves(sub)] if inner else [layer]

    return sum(1 for layer in leaves(model) if "BatchNormalization" in type(layer).__name__)


def trials_frame(study: optuna.Study | str | Path) -> pandas.DataFrame:
    """The trial table as a pandas DataFrame, one row per finished trial in rank order.

    The columns of ``trials.csv``: ``rank``, ``number``, ``state``, ``params_<name>``, the
    objective value, best validation loss and its epoch, prune and fail reasons, verdicts.
    """
    import pandas

    from thaw.reports import get_trial_records

    columns, records = get_trial_records(_open_study(study))
    return pandas.DataFrame.from_records(records, columns=columns)


def load_best(study: optuna.Study | str | Path, trial: int | None = None) -> keras.Model:
    """The best trial's model at its best epoch (or trial ``trial``'s), loaded in safe mode.

    Reads the ``.keras`` file kept during the run (``keep_best``); for a study file whose
    model was not kept, retrains the trial with its stored seed (as ``thaw export``).
    """
    from thaw.search._export import load_trial_model

    return load_trial_model(study, trial)
