"""thaw's Python API: what ``thaw run``, ``thaw report`` and ``thaw diagnose`` do, as calls.

Everything here is re-exported from :mod:`thaw` and imported on first use.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from thaw._keys import CONFIG

_logger = logging.getLogger(__name__)

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
      one-hot rows), or for a multi-label target rows of 0/1, one column per label (``task``:
      ``auto`` finds them, or ``multiclass``, ``multilabel``; a sigmoid head and binary
      cross-entropy). Without ``validation_data``, ``val_fraction`` (0.2) of each class (of a
      multi-label target, of the images) is held out;
    - ``head``: ``head(x, *, dropout, weight_decay, num_classes) -> probabilities`` builds the
      new head on the base's output ``x`` with the trial's dropout and weight decay (default:
      pooling, dropout, a softmax ``Dense``);
    - ``study_name`` (default: the model's name) and ``storage`` (default:
      ``sqlite:///<study_name>.db`` in the working folder): calling again resumes the study;
    - every study-file key is a keyword: ``n_trials`` (the finished trials the study should
      hold, as in a study file), ``objective``, ``seed``, ``space`` (the ``search_space``
      section), the ``train`` keys (``epochs``, ``batch_size``, ``warmup_epochs``, ...),
      ``sampler``, ``pruner``, ``budget_epochs``, ``reference_trials``, ``loop``,
      ``lr_range_test``, ``rate_guard``, ``keep_best``, ``diagnosis``; and ``cut_at``,
      ``input_shape``, ``unfreeze_by``, ``class_names``, ``val_fraction``, ``task``. Given
      with a study file, they override its settings, and the model and data replace its own.

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


def report(
    study: optuna.Study | str | Path | StudyConfig,
    out_dir: str | Path | None = None,
    *,
    storage: str | None = None,
    table_format: str = "csv",
) -> ReportFiles:
    """Write ``report.md``, ``report.html``, ``trials.csv`` and ``summary.json`` to ``out_dir``,
    what ``thaw report`` writes.

    ``study`` is an ``optuna.Study``, or a study file (or config) whose study has run:
    ``storage`` overrides its storage, ``out_dir`` defaults to ``<name>-report/`` beside it, the
    manifest shows its storage URL (password masked) and the report files are attached to the
    study in the dashboard. The study is diagnosed with the study file's thresholds (for an
    ``optuna.Study``, those stored on it), and the dashboard's trial and study notes are
    rewritten to say what the report says. ``table_format="parquet"`` writes
    ``trials.parquet`` as well (needs pyarrow).

    Raises :class:`thaw.RunError` (a ``ValueError``) with one line on bad input (a study that
    has not run, an ``out_dir`` that is a file); nothing is written then.
    """
    from thaw.reports import write_report
    from thaw.reports._findings import run_diagnosis
    from thaw.search._config import mask_url
    from thaw.search._run import RunError

    if table_format not in ("csv", "parquet"):
        raise RunError(f"table_format must be 'csv' or 'parquet', got {table_format!r}")
    if table_format == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise RunError(
            "table_format='parquet' needs pyarrow: pip install 'thaw-keras[parquet]' (or write "
            "the csv only)"
        )
    config = None
    if not isinstance(study, optuna.Study):
        config = load_config(study, storage) if isinstance(study, (str, Path)) else study
    if out_dir is None:
        if config is None:
            raise RunError("out_dir is needed for an optuna.Study (a study file has a default)")
        out_dir = default_report_dir(config.path, config.name)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RunError(f"{out} is a file; give a folder (it is created if missing)")
    opened = _open_study(study if config is None else config)
    thresholds = _thresholds(opened) if config is None else config.thresholds
    url = None if config is None else str(config.storage)
    try:
        files = write_report(
            opened,
            out,
            storage_url_masked=None if url is None else mask_url(url),
            diagnose=run_diagnosis(opened, thresholds),
        )
    except ValueError as exc:
        raise RunError(str(exc)) from None
    if config is not None and url is not None:
        _attach_report(opened, files, url, config.path, config.artifacts)
    if table_format == "parquet":
        files = dataclasses.replace(files, parquet=out / "trials.parquet")
        trials_frame(opened).to_parquet(files.parquet, index=False)
    _refresh_notes(opened, thresholds)
    return files


def default_report_dir(study_file: str | Path, study_name: str) -> Path:
    """Where a study file's report goes by default: ``<name>-report/`` beside the study file
    (``studies/demo.yaml`` -> ``studies/demo-report/``), whatever the working folder."""
    return Path(study_file).parent / f"{study_name}-report"


def _attach_report(
    study: optuna.Study, files: ReportFiles, url: str, study_file: Path, artifacts: Path | None
) -> None:
    """Attach the report files to the study in the dashboard (a warning when that fails)."""
    from thaw.search._publish import (
        PublishError,
        open_artifact_store,
        publish_report_artifacts,
        study_artifact_dir,
    )

    try:
        store = open_artifact_store(study_artifact_dir(url, study_file.resolve().parent, artifacts))
        publish_report_artifacts(study, store, files)
    except (PublishError, OSError) as exc:
        _logger.warning("Report not attached to the study in the dashboard: %s", exc)


def _refresh_notes(study: optuna.Study, thresholds: Any) -> None:
    """Trial and study notes say what the report says (one verdict function)."""
    from thaw.search._publish import refresh_trial_notes, save_study_note, study_note

    try:
        refresh_trial_notes(study, thresholds)
        save_study_note(study, study_note(study, thresholds))
    except Exception as exc:  # noqa: BLE001 - the report is written; notes are a bonus
        _logger.warning("Dashboard notes not refreshed: %s: %s", type(exc).__name__, exc)


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
