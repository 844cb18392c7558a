"""Publish every finished trial, and the study, to optuna-dashboard while a study runs.

Per trial: the ``verdicts`` user attr (:func:`reports._diagnosis.diagnose_trial` against the
study's other finished trials), a Markdown trial note (verdicts with evidence and
recommendation), and two artifacts: the learning-curve chart (SVG) and the per-epoch history
(CSV). Per study: a Markdown study note (the study diagnosis and the top 10 of the ranking),
refreshed at most every ``study_note_every_s`` seconds while trials finish and once more by
:meth:`TrialPublisher.finish`, and the report files as study artifacts
(:func:`publish_report_artifacts`).

Optuna refuses to change a finished trial's attributes, and study callbacks only see finished
trials. So the parts that belong to the trial itself (``verdicts`` and the artifacts, uploaded
with :func:`optuna.artifacts.upload_artifact`) are written by :meth:`TrialPublisher.wrap`,
which runs just before the trial finishes; the callback writes the notes (study-level storage,
always writable). Used as a callback alone, the publisher still writes the notes (with
verdicts) and attaches the artifacts through optuna-dashboard's study-level artifact records.

Publishing never stops a study: every failure is logged (``logging.getLogger(__name__)``) and
the trial carries on.

Artifacts live in a :class:`optuna.artifacts.FileSystemArtifactStore` folder,
:func:`default_artifact_dir` unless told otherwise. **With PostgreSQL (several workers, maybe
on several machines), every worker and the dashboard must reach the same folder** (a shared
or network file system): a worker writing to a local folder leaves the dashboard with
artifact records whose files it cannot read.
"""

from __future__ import annotations

import json
import logging
import math
import mimetypes
import os
import re
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, cast

import optuna
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta, upload_artifact
from optuna.trial import FrozenTrial, TrialState

from thaw._keys import CONFIG, OBJECTIVE_METRIC
from thaw.reports._notes import (
    note_escape,
    render_history_csv,
    render_study_note,
    render_trial_curves_svg,
    render_trial_note,
    trial_verdicts,
)
from thaw.reports._ranking import get_ranking_info
from thaw.reports.diagnosis import Thresholds, Verdict, diagnose_study, study_verdicts

_logger = logging.getLogger(__name__)

ARTIFACTS_DIR_NAME = "artifacts"
ARTIFACT_ATTR_PREFIX = "artifacts:"
"""Key prefix of artifact records that :func:`optuna.artifacts.upload_artifact` writes."""
DASHBOARD_TRIAL_ARTIFACT_PREFIX = "dashboard:artifacts:"
"""Study system attr prefix (``dashboard:artifacts:<trial_id>:<artifact_id>``) under which
optuna-dashboard also lists a trial's artifacts; used for trials that already finished."""
DEFAULT_MIMETYPE = "application/octet-stream"
TOP_N = 10

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class ArtifactStore(Protocol):
    """What thaw needs of an Optuna artifact store."""

    def open_reader(self, artifact_id: str) -> Any: ...

    def write(self, artifact_id: str, content_body: Any) -> None: ...

    def remove(self, artifact_id: str) -> None: ...


class PublishError(RuntimeError):
    """The artifact folder cannot be used. The message is one line."""


# ------------------------------------------------------------------------- artifact folder


def default_artifact_dir(storage_url: str, study_file_dir: Path | str) -> Path:
    """The artifact folder for a storage: beside the database file for SQLite.

    ``sqlite:////x/y/demo.db`` gives ``/x/y/artifacts``; a relative SQLite path is taken
    relative to ``study_file_dir`` (as in study files). For in-memory SQLite and server
    databases (PostgreSQL, MySQL) it is ``<study_file_dir>/artifacts``.

    With PostgreSQL this default is only right when every worker and the dashboard see the
    study file's folder at the same path (a shared or network file system); otherwise pass a
    folder they all reach (``--artifact-dir``).
    """
    base = Path(study_file_dir)
    prefix = "sqlite:///"
    if storage_url.startswith(prefix):
        path = storage_url[len(prefix) :].split("?", 1)[0]
        if path and path != ":memory:" and not path.startswith("file:"):
            db = Path(path)
            if not db.is_absolute():
                db = base / db
            return db.resolve().parent / ARTIFACTS_DIR_NAME
    return (base / ARTIFACTS_DIR_NAME).resolve()


def study_artifact_dir(
    storage_url: str, study_file_dir: Path | str, artifacts: Path | str | None = None
) -> Path:
    """The dashboard artifacts' folder of a study: ``<artifacts>/artifacts`` when the study file
    sets ``artifacts`` (a folder every worker reaches), else :func:`default_artifact_dir`."""
    if artifacts is not None:
        return Path(artifacts) / ARTIFACTS_DIR_NAME
    return default_artifact_dir(storage_url, study_file_dir)


class ThawArtifactStore(FileSystemArtifactStore):
    """:class:`optuna.artifacts.FileSystemArtifactStore` that remembers its folder, so the
    publisher can keep readable per-trial names beside the id-named files
    (:data:`READABLE_DIR_NAME`)."""

    def __init__(self, folder: Path | str) -> None:
        super().__init__(str(folder))
        self.folder = Path(folder)


READABLE_DIR_NAME = "by-trial"
"""``<artifact folder>/by-trial/<study>/trial-<n>-<file>``: readable links to the artifacts
(the files themselves are named by artifact id, as optuna's artifact store requires)."""


def open_artifact_store(artifact_dir: Path | str) -> ThawArtifactStore:
    """A file-system artifact store in ``artifact_dir``, created if missing.

    Raises:
        PublishError: the folder cannot be created or is not a folder.
    """
    path = Path(artifact_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PublishError(
            f"cannot create the artifact folder {path}: {exc.strerror or exc}; "
            "pass another with --artifact-dir"
        ) from None
    if not path.is_dir():
        raise PublishError(
            f"artifact folder {path} is not a folder; pass another with --artifact-dir"
        )
    return ThawArtifactStore(path)


# ---------------------------------------------------------------------------------- notes


class _NoteTarget:
    """What :func:`optuna_dashboard.save_note` reads of a trial (storage, study, trial id),
    for a trial that has finished: ``optuna.Trial`` cannot be built for one."""

    def __init__(self, study: optuna.Study, trial_id: int) -> None:
        self.study = study
        self.storage = study._storage
        self._trial_id = trial_id


def save_trial_note(study: optuna.Study, trial: FrozenTrial, body: str) -> None:
    """Replace the dashboard note of a (finished) trial with ``body`` (Markdown)."""
    from optuna_dashboard import save_note

    save_note(cast(optuna.Trial, _NoteTarget(study, trial._trial_id)), body)


def save_study_note(study: optuna.Study, body: str) -> None:
    from optuna_dashboard import save_note

    save_note(study, body)


def study_note(study: optuna.Study, thresholds: Thresholds | None = None) -> str:
    """The study note: diagnosis and the top-10 ranking, stamped with the time (UTC), then
    the study's configuration as a readable table (the ``thaw:config`` user attr is a JSON
    blob in the dashboard's attribute list)."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    note = render_study_note(
        study.study_name,
        diagnose_study(study, thresholds),
        get_ranking_info(study),
        study_attrs=study.user_attrs,
        top_n=TOP_N,
        updated=stamp,
    )
    table = config_table(study.user_attrs.get(CONFIG))
    if table:
        note = note.rstrip("\n") + "\n\n#### Configuration\n\n" + table + "\n"
    return note


def config_table(config: Any) -> str:
    """A study configuration (nested mapping) as a two-column Markdown table with dotted
    keys (``train.epochs | 20``); empty for anything that is not a mapping."""
    if not isinstance(config, Mapping):
        return ""
    rows: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping) and value:
            for key in sorted(value, key=str):
                walk(f"{prefix}.{key}" if prefix else str(key), value[key])
        elif isinstance(value, (list, tuple)):
            rows.append((prefix, ", ".join(_cell_text(v) for v in value)))
        else:
            rows.append((prefix, _cell_text(value)))

    walk("", config)
    lines = ["| setting | value |", "| --- | --- |"]
    lines += [f"| {note_escape(k, 80)} | {note_escape(v, 200)} |" for k, v in rows]
    return "\n".join(lines)


def _cell_text(value: Any) -> str:
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)


def set_metric_name(study: optuna.Study) -> None:
    """Name the objective (``thaw:objective_metric``, else ``val_loss``) so the dashboard
    shows ``val_loss`` instead of ``Objective 0``. Idempotent; keeps names already set."""
    if study.metric_names is None:
        metric = study.user_attrs.get(OBJECTIVE_METRIC)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([metric if isinstance(metric, str) and metric else "val_loss"])


def pruned_best_line(trial: FrozenTrial, maximize: bool = False) -> str:
    """For a pruned trial: the best value it reached, which the report ranks it by (the
    dashboard's value column shows the last reported value). Empty for other trials."""
    if trial.state != TrialState.PRUNED:
        return ""
    best = trial.user_attrs.get("best_val_loss")
    epoch = trial.user_attrs.get("best_epoch")
    what = "best val loss"
    values = {step: v for step, v in trial.intermediate_values.items() if math.isfinite(v)}
    if maximize or not isinstance(best, (int, float)):
        if not values:
            return ""
        if maximize:
            step = max(values, key=lambda k: (values[k], -k))
        else:
            step = min(values, key=lambda k: (values[k], k))
        best, epoch = values[step], step
        what = "best value" if maximize else what
    last_step = max(trial.intermediate_values) if trial.intermediate_values else None
    at = f" at epoch {epoch}" if isinstance(epoch, int) else ""
    stopped = f", stopped at epoch {last_step}" if last_step is not None else ""
    return (
        f"**Pruned{stopped}. The {what} it reached: {float(best):.4g}{at}.** "
        "thaw ranks pruned trials by this value; the dashboard's value column shows the "
        "last reported one."
    )


def trial_note(study: optuna.Study, frozen: FrozenTrial, verdicts: Sequence[Verdict]) -> str:
    """A finished trial's note: its verdicts, evidence and parameters; for a pruned trial, the
    best value it reached first (what the report ranks it by)."""
    metric = study.user_attrs.get(OBJECTIVE_METRIC)
    note = render_trial_note(frozen, list(verdicts), objective_metric=metric)
    best_line = pruned_best_line(
        frozen, maximize=study.direction == optuna.study.StudyDirection.MAXIMIZE
    )
    if best_line:
        head, sep, rest = note.partition("\n\n")
        note = f"{head}{sep}{best_line}\n\n{rest}" if sep else f"{note}\n\n{best_line}\n"
    return note


def refresh_trial_notes(study: optuna.Study, thresholds: Thresholds | None = None) -> int:
    """Rewrite the note of every finished trial with its current verdicts (the same as the
    report's, from :func:`thaw.reports.diagnosis.study_verdicts`); returns the notes written."""
    verdicts = study_verdicts(study, thresholds)
    written = 0
    for frozen in study.get_trials(deepcopy=False):
        if frozen.state not in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
            continue
        save_trial_note(study, frozen, trial_note(study, frozen, verdicts.get(frozen.number, [])))
        written += 1
    return written


# ------------------------------------------------------------------------------ artifacts


def _artifact_files(
    trial: FrozenTrial, state: str, objective_metric: str | None, folder: Path
) -> list[Path]:
    files: list[Path] = []
    svg = render_trial_curves_svg(trial, state=state, objective_metric=objective_metric)
    if svg:
        chart = folder / f"trial-{trial.number}-learning-curves.svg"
        chart.write_text(svg, encoding="utf-8")
        files.append(chart)
    history = render_history_csv(trial)
    if history.count("\n") > 1:
        table = folder / f"trial-{trial.number}-history.csv"
        table.write_text(history, encoding="utf-8")
        files.append(table)
    return files


def _has_artifacts(study: optuna.Study, trial: FrozenTrial) -> bool:
    if any(k.startswith(ARTIFACT_ATTR_PREFIX) for k in trial.system_attrs):
        return True
    prefix = f"{DASHBOARD_TRIAL_ARTIFACT_PREFIX}{trial._trial_id}:"
    return any(k.startswith(prefix) for k in _study_system_attrs(study))


def _study_system_attrs(study: optuna.Study) -> dict[str, Any]:
    # ``Study.system_attrs`` is gone in Optuna 5; the storage still has them.
    return study._storage.get_study_system_attrs(study._study_id)


def _write_meta_last(artifact_store: ArtifactStore, artifact_id: str, path: Path) -> dict[str, Any]:
    with path.open("rb") as handle:
        artifact_store.write(artifact_id, handle)
    mimetype, encoding = mimetypes.guess_type(path.name)
    return {
        "artifact_id": artifact_id,
        "filename": path.name,
        "mimetype": mimetype or DEFAULT_MIMETYPE,
        "encoding": encoding,
    }


def _attach_to_finished_trial(
    study: optuna.Study, trial: FrozenTrial, artifact_store: ArtifactStore, path: Path
) -> str:
    artifact_id = str(uuid.uuid4())
    meta = _write_meta_last(artifact_store, artifact_id, path)
    key = f"{DASHBOARD_TRIAL_ARTIFACT_PREFIX}{trial._trial_id}:{artifact_id}"
    study._storage.set_study_system_attr(study._study_id, key, json.dumps(meta))
    return artifact_id


def publish_report_artifacts(
    study: optuna.Study, artifact_store: ArtifactStore, files: Any
) -> dict[str, str]:
    """Attach report files to the study as artifacts; returns ``{filename: artifact_id}``.

    ``files`` is a :class:`reports.ReportFiles` or paths. A file whose name the study already
    has an artifact for replaces that artifact's content (same id), so publishing again
    after every run keeps one artifact per report file.
    """
    paths = _report_paths(files)
    existing: dict[str, str] = {}
    for key, value in _study_system_attrs(study).items():
        if not key.startswith(ARTIFACT_ATTR_PREFIX):
            continue
        try:
            meta = json.loads(value) if isinstance(value, str) else value
            existing.setdefault(str(meta["filename"]), str(meta["artifact_id"]))
        except (TypeError, ValueError, KeyError):
            continue
    published: dict[str, str] = {}
    for path in paths:
        artifact_id = existing.get(path.name)
        if artifact_id is not None:
            with path.open("rb") as handle:
                artifact_store.write(artifact_id, handle)
        else:
            artifact_id = upload_artifact(
                artifact_store=cast(Any, artifact_store),
                file_path=str(path),
                study_or_trial=study,
            )
        published[path.name] = artifact_id
    return published


VERDICT_ATTR = "verdict"
"""Trial user attr with the verdict names as one string (``healthy``, ``overfitting,
lr_too_high``): optuna-dashboard shows scalar user attrs as trial-table columns."""


def verdict_text(names: Iterable[str]) -> str:
    return ", ".join(dict.fromkeys(names)) or "none"


def readable_name(study_name: str, filename: str) -> Path:
    """``by-trial/<study>/<filename>`` with the study name made safe for a folder name."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", study_name).strip("._") or "study"
    return Path(READABLE_DIR_NAME) / safe / Path(filename).name


def link_readable_name(
    artifact_store: ArtifactStore, study_name: str, filename: str, artifact_id: str
) -> Path | None:
    """Point ``<folder>/by-trial/<study>/<filename>`` at the artifact file (a relative
    symbolic link, replaced atomically). When the link pointed at another artifact (the
    study was re-created under the same name), that orphaned file is removed, so reruns
    do not pile up files. Only for :class:`ThawArtifactStore`; returns the link or
    ``None``. Never raises (logs at debug level)."""
    folder = getattr(artifact_store, "folder", None)
    if not isinstance(folder, Path):
        return None
    link = folder / readable_name(study_name, filename)
    target = Path("..") / ".." / artifact_id
    try:
        link.parent.mkdir(parents=True, exist_ok=True)
        previous = os.readlink(link) if link.is_symlink() else None
        tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex}")
        os.symlink(target, tmp)
        os.replace(tmp, link)
        if previous is not None and Path(previous).name != artifact_id:
            old = folder / Path(previous).name
            if old.is_file() and old.parent == folder:
                old.unlink()
    except OSError as exc:
        _logger.debug("no readable link for artifact %s: %s", artifact_id, exc)
        return None
    return link


def _report_paths(files: Any) -> list[Path]:
    names = ("markdown", "html", "csv", "summary_json")
    if all(hasattr(files, name) for name in names):
        return [Path(getattr(files, name)) for name in names]
    if isinstance(files, (str, Path)):
        return [Path(files)]
    return [Path(f) for f in cast(Iterable[Any], files)]


# ------------------------------------------------------------------------------ publisher


class TrialPublisher:
    """``study.optimize`` callback that publishes each finished trial and the study.

    Use it both as the callback and, for the trial's own ``verdicts`` attr and artifacts, as
    a wrapper of the objective::

        publisher = TrialPublisher(open_artifact_store(artifact_dir))
        study.optimize(publisher.wrap(objective), callbacks=[publisher], ...)
        publisher.finish(study)

    Args:
        artifact_store: Where the chart and history files go.
        study_note_every_s: Refresh the study note at most this often while trials finish
            (the first finished trial refreshes it at once; :meth:`finish` always does).
        thresholds: Diagnosis rules (default: the thresholds stored with the study).
        clock: Seconds, monotonic (tests pass a fake).
    """

    def __init__(
        self,
        artifact_store: ArtifactStore,
        study_note_every_s: float = 30.0,
        *,
        thresholds: Thresholds | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if study_note_every_s < 0 or math.isnan(study_note_every_s):
            raise ValueError(f"study_note_every_s must be >= 0, got {study_note_every_s!r}")
        self.artifact_store = artifact_store
        self.study_note_every_s = float(study_note_every_s)
        self.thresholds = thresholds
        self._clock = clock
        self._lock = threading.Lock()
        self._last_study_note: float | None = None

    # -- before the trial finishes --------------------------------------------------------

    def wrap(self, objective: Callable[[optuna.Trial], Any]) -> Callable[[optuna.Trial], Any]:
        """The objective, plus: just before the trial finishes (returned, pruned or raised),
        store its ``verdicts`` user attr and upload its chart and history artifacts.
        Ctrl-C (``KeyboardInterrupt``) passes through without publishing."""

        def publishing_objective(trial: optuna.Trial) -> Any:
            try:
                value = objective(trial)
            except optuna.TrialPruned:
                self.annotate(trial, "PRUNED")
                raise
            except Exception:
                self.annotate(trial, "FAIL")
                raise
            finite = isinstance(value, (int, float)) and math.isfinite(value)
            self.annotate(trial, "COMPLETE" if finite else "FAIL")
            return value

        publishing_objective.__wrapped__ = objective  # type: ignore[attr-defined]
        return publishing_objective

    def annotate(self, trial: optuna.Trial, state: str) -> None:
        """Store ``verdicts`` and upload the artifacts of a trial that is about to finish in
        ``state``. Logs and returns on any failure."""
        try:
            study = trial.study
            trials = study.get_trials(deepcopy=False)
            frozen = next((t for t in trials if t.number == trial.number), None)
            if frozen is None:
                return
            verdicts = trial_verdicts(
                study, frozen, state=state, trials=trials, thresholds=self.thresholds
            )
            trial.set_user_attr("verdicts", [v.to_dict() for v in verdicts])
            # One readable string: the dashboard lists it as a column of the trial table.
            trial.set_user_attr(VERDICT_ATTR, verdict_text(v.verdict for v in verdicts))
            metric = study.user_attrs.get(OBJECTIVE_METRIC, "val_loss")
            existing = {m.filename: m.artifact_id for m in get_all_artifact_meta(trial)}
            with tempfile.TemporaryDirectory(prefix="thaw-publish-") as tmp:
                for path in _artifact_files(frozen, state, metric, Path(tmp)):
                    artifact_id = existing.get(path.name)
                    if artifact_id is not None:  # published before: replace, not add
                        with path.open("rb") as handle:
                            self.artifact_store.write(artifact_id, handle)
                    else:
                        artifact_id = upload_artifact(
                            artifact_store=cast(Any, self.artifact_store),
                            file_path=str(path),
                            study_or_trial=trial,
                        )
                    link_readable_name(
                        self.artifact_store, study.study_name, path.name, artifact_id
                    )
        except Exception as exc:  # noqa: BLE001 - publishing must never stop the study
            self._log_failure(f"trial {trial.number}", exc)

    # -- after the trial finished ---------------------------------------------------------

    def __call__(self, study: optuna.Study, frozen_trial: FrozenTrial) -> None:
        """Callback: the trial note, missing artifacts, and (throttled) the study note."""
        try:
            self.publish_trial(study, frozen_trial)
        except Exception as exc:  # noqa: BLE001 - publishing must never stop the study
            self._log_failure(f"trial {frozen_trial.number}", exc)
        with self._lock:
            now = self._clock()
            due = (
                self._last_study_note is None
                or now - self._last_study_note >= self.study_note_every_s
            )
            if due:
                self._last_study_note = now
        if due:
            self._publish_study_note(study)

    def publish_trial(self, study: optuna.Study, frozen_trial: FrozenTrial) -> None:
        """Write the note of a finished trial; attach its artifacts if :meth:`wrap` did not.

        Raises whatever storage or the artifact store raises (the callback logs it).
        """
        state = frozen_trial.state.name
        # The current verdicts (the one verdict function), not the stored snapshot.
        verdicts = list(trial_verdicts(study, frozen_trial, thresholds=self.thresholds))
        metric = study.user_attrs.get(OBJECTIVE_METRIC)
        save_trial_note(study, frozen_trial, trial_note(study, frozen_trial, verdicts))
        if not _has_artifacts(study, frozen_trial):
            with tempfile.TemporaryDirectory(prefix="thaw-publish-") as tmp:
                files = _artifact_files(frozen_trial, state, metric or "val_loss", Path(tmp))
                for path in files:
                    artifact_id = _attach_to_finished_trial(
                        study, frozen_trial, self.artifact_store, path
                    )
                    link_readable_name(
                        self.artifact_store, study.study_name, path.name, artifact_id
                    )

    def finish(self, study: optuna.Study) -> None:
        """Refresh every trial note and the study note now (call at the end of ``thaw run``),
        so they say what the report says. Never raises."""
        with self._lock:
            self._last_study_note = self._clock()
        try:
            refresh_trial_notes(study, self.thresholds)
        except Exception as exc:  # noqa: BLE001 - publishing must never stop the study
            self._log_failure("the trial notes", exc)
        self._publish_study_note(study)

    def _publish_study_note(self, study: optuna.Study) -> None:
        try:
            set_metric_name(study)
        except Exception as exc:  # noqa: BLE001 - publishing must never stop the study
            self._log_failure("the metric name", exc)
        try:
            save_study_note(study, study_note(study, self.thresholds))
        except Exception as exc:  # noqa: BLE001 - publishing must never stop the study
            self._log_failure("the study note", exc)

    @staticmethod
    def _log_failure(what: str, exc: Exception) -> None:
        _logger.warning(
            "Could not publish %s to the dashboard: %s: %s",
            what,
            type(exc).__name__,
            str(exc).splitlines()[0] if str(exc) else "",
        )
        _logger.debug("Publishing %s failed", what, exc_info=exc)
