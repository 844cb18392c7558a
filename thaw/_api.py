"""thaw's Python API: what ``thaw run``, ``thaw report`` and ``thaw diagnose`` do, as calls.

Everything here is re-exported from :mod:`thaw` and imported on first use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
    study_file_or_config: str | Path | StudyConfig | None = None,
    storage: str | None = None,
    n_trials: int | None = None,
    budget_epochs: int | None = None,
    *,
    model: keras.Model | None = None,
    data: Any = None,
    validation_data: Any = None,
    head: Callable[..., Any] | None = None,
    study_name: str | None = None,
    **settings: Any,
) -> optuna.Study:
    """Create or resume a study and run its trials; returns the ``optuna.Study``.

    With a study file (or config): ``n_trials`` runs that many trials now (default: up to the
    file's ``n_trials``); ``budget_epochs`` caps the epochs all trials together may spend.

    With your own model, no study file needed::

        study = thaw.run(model=model, data=(x, y), validation_data=(x_val, y_val),
                         study_name="mine", storage="sqlite:///mine.db", n_trials=10, epochs=8)

    - ``model``: a ``keras.Model``, searched as a model file is (its top classifier cut);
    - ``data`` and ``validation_data``: ``(images, labels)`` arrays, or a ``tf.data.Dataset`` or
      ``keras.utils.PyDataset`` of them, read once into memory; labels are class indices (or
      one-hot rows). Without ``validation_data``, ``val_fraction`` (0.2) of each class is held
      out;
    - ``head``: ``head(x, *, dropout, weight_decay, num_classes) -> probabilities`` builds the
      new head on the base's output ``x`` with the trial's dropout and weight decay (default:
      pooling, dropout, a softmax ``Dense``);
    - ``study_name`` (default: the model's name) and ``storage`` (default:
      ``sqlite:///<study_name>.db`` in the working folder): calling again resumes the study;
    - every study-file key is a keyword: ``n_trials`` (the finished trials the study should
      hold, as in a study file), ``objective``, ``seed``, ``space`` (the ``search_space``
      section), the ``train`` keys (``epochs``, ``batch_size``, ``warmup_epochs``, ...),
      ``sampler``, ``pruner``, ``budget_epochs``, ``reference_trials``, ``loop``,
      ``lr_range_test``, ``keep_best``, ``diagnosis``; and ``cut_at``, ``input_shape``,
      ``unfreeze_by``, ``class_names``, ``val_fraction``. Given with a study file, they
      override its settings, and the model and data replace its own.

    Bad input raises :class:`thaw.RunError` before anything is trained; a Ctrl-C stops the run
    and returns the trials finished so far.
    """
    from thaw.search._run import RunError, RunOptions, run_study

    memory = model is not None or data is not None
    if not memory:
        if study_file_or_config is None:
            raise RunError(
                "thaw.run needs a study file (thaw.run('studies/demo.yaml')) or your model and "
                "data (thaw.run(model=model, data=(x, y), ...))"
            )
        unused = [k for k, v in (("validation_data", validation_data), ("head", head)) if v]
        unused += sorted(settings) + (["study_name"] if study_name else [])
        if unused:
            raise RunError(
                f"{', '.join(unused)}: these keywords go with model= and data=; with a study "
                "file, write them in the file"
            )
        options = RunOptions(n_trials=n_trials, budget_epochs=budget_epochs)
        return run_study(study_file_or_config, storage=storage, options=options).study
    if model is None or data is None:
        raise RunError(
            f"thaw.run(model=..., data=...) needs both; {'model' if model is None else 'data'} "
            "is missing"
        )
    from thaw.objectives import DataSourceError, ModelSourceError
    from thaw.search._config import StudyFileError
    from thaw.search._notebook import notebook_config
    from thaw.search._run import load_config as _load_config

    base = _load_config(study_file_or_config) if study_file_or_config is not None else None
    for key, value in (
        ("storage", storage),
        ("n_trials", n_trials),
        ("budget_epochs", budget_epochs),
    ):
        if value is not None:
            settings[key] = value
    try:
        config = notebook_config(
            model,
            data,
            validation_data,
            head=head,
            study_name=study_name,
            base=base,
            **settings,
        )
    except (StudyFileError, ModelSourceError, DataSourceError) as exc:
        raise RunError(str(exc)) from None
    return run_study(config, options=RunOptions()).study


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
