"""The run pipeline as a library call: load model and data once, create or resume the study, run.

``run_study`` is what ``thaw run`` does; the CLI only parses arguments, prints and maps errors to
exit codes. Progress messages go to ``on_message`` (the CLI prints them; a library caller gets
them logged at INFO by default).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from thaw._keys import DETERMINISM, RANGE_TEST
from thaw.search._budget import EpochBudget, GradualUnfreezing, ScreenedStart
from thaw.search._config import StudyConfig, StudyFileError, load_study_file, mask_url
from thaw.search._faults import (
    INTERRUPTED,
    LOST,
    WORKER,
    TrialSlots,
    counted_trials,
    is_connection_error,
    mark_storage_lost,
    quiet_experimental,
    recover_lost_trials,
    requeue_failed_strategies,
    slot_counts,
    wait_for_storage,
    worker_id,
)
from thaw.search._loop import ClosedLoop
from thaw.search._range import narrowed_space, range_test_message, run_range_tests
from thaw.search._study import (
    FINISHED_STATES,
    RunSummary,
    StorageError,
    StudyMismatchError,
    check_storage_url,
    create_or_resume,
    open_storage,
    sqlite_run_lock,
    summarise,
)

if TYPE_CHECKING:
    from thaw.search._progress import TrialProgress

_logger = logging.getLogger(__name__)

EXIT_INTERRUPTED = 130


class RunError(ValueError):
    """Bad input for a run (study file, storage, model, data, options): one line for the user."""


@dataclass(frozen=True)
class RunOptions:
    """How to run a study; the study file says what to run."""

    n_trials: int | None = None
    timeout: float | None = None
    workers: int = 1
    gpus: tuple[str, ...] = ()
    artifact_dir: Path | None = None
    show_progress_bar: bool = False
    threads: int | None = None
    # Set on the worker processes that run_study starts (``--worker-total`` on the CLI).
    worker_total: int | None = None
    worker_count: int | None = None
    #: Stop once this many training epochs are spent (overrides the study file's budget_epochs).
    budget_epochs: int | None = None

    def __post_init__(self) -> None:
        if self.budget_epochs is not None and (
            isinstance(self.budget_epochs, bool)
            or not isinstance(self.budget_epochs, int)
            or self.budget_epochs < 1
        ):
            raise RunError(
                f"--budget-epochs must be a whole number of epochs >= 1, got {self.budget_epochs!r}"
            )
        if self.n_trials is not None and self.n_trials < 1:
            raise RunError(f"--n-trials must be >= 1, got {self.n_trials}")
        if self.timeout is not None and self.timeout <= 0:
            raise RunError(f"--timeout must be > 0 seconds, got {self.timeout}")
        if self.n_workers < 1:
            raise RunError(f"--workers must be >= 1, got {self.n_workers}")
        if not all(g.isdigit() for g in self.gpus):
            raise RunError(f"--gpus must be GPU indices such as 0,1, got {','.join(self.gpus)!r}")

    @property
    def n_workers(self) -> int:
        return len(self.gpus) if self.gpus else self.workers


@dataclass
class RunResult:
    """What a call of :func:`run_study` left in the storage."""

    study: optuna.Study
    summary: RunSummary
    interrupted: bool = False
    failed_workers: list[str] = field(default_factory=list)


def load_config(study: str | Path | StudyConfig, storage: str | None = None) -> StudyConfig:
    """The typed study configuration, with ``storage`` (a URL) overriding the study file's."""
    from thaw.search._config import resolve_storage_url

    if isinstance(study, StudyConfig):
        config = study
    else:
        try:
            config = load_study_file(study)
        except StudyFileError as exc:
            raise RunError(str(exc)) from None
    if storage is not None:
        if "://" not in storage:
            raise RunError(
                f"--storage must be a database URL such as sqlite:///demo.db, got {storage!r}"
            )
        config = replace(config, storage=resolve_storage_url(storage, Path.cwd()))
    return config


def _needs(config: StudyConfig) -> list[tuple[str, str, str]]:
    """What ``config`` needs beyond the base install: (the setting, its module, the extra)."""
    needs = []
    if config.tensorboard:
        needs.append(("train.tensorboard: true", "tensorboard", "tensorboard"))
    if config.model.kind == "kerashub":
        needs.append(("model.source: kerashub", "keras_hub", "kerashub"))
    return needs


def check_extras(config: StudyConfig) -> None:
    """Refuse a study file whose settings need a package that is not installed, naming the
    extra that installs it (before anything is loaded or written)."""
    for needed_by, module, extra in _needs(config):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise RunError(
                f"{config.where}: {needed_by} needs the {module.replace('_', '-')} package, which "
                f"is not installed; pip install 'thaw-keras[{extra}]' (or drop that setting)"
            )


def check_gpus(gpus: Sequence[str]) -> None:
    """Refuse GPU indices this machine does not have (as the configured Keras backend sees it)."""
    if not gpus:
        return
    import keras

    from thaw.objectives import list_gpus

    found = list_gpus()
    missing = [g for g in gpus if int(g) >= len(found)]
    if not missing:
        return
    seen = (
        f"found {len(found)}: GPU {', '.join(str(i) for i in range(len(found)))}"
        if found
        else "found none"
    )
    fix = (
        "pass the index of a GPU listed by nvidia-smi"
        if found
        else "check nvidia-smi and install the gpu (or jax-gpu) extra"
    )
    raise RunError(
        f"--gpus {','.join(gpus)}: no GPU {', '.join(missing)} on this machine ({seen} with the "
        f"{keras.backend.backend()} backend); {fix}, or leave out --gpus to run on the CPU"
    )


def run_study(
    study: str | Path | StudyConfig,
    *,
    storage: str | None = None,
    options: RunOptions | None = None,
    on_message: Callable[[str], None] | None = None,
) -> RunResult:
    """Create or resume the study of a study file (or config) and run its trials.

    Raises :class:`RunError` for bad input, before anything is trained; also when another
    process runs a study in the same SQLite file (SQLite serves one process).
    """
    with contextlib.ExitStack() as held:
        return _run_study(study, storage, options, on_message, held)


def _run_study(
    study: str | Path | StudyConfig,
    storage: str | None,
    options: RunOptions | None,
    on_message: Callable[[str], None] | None,
    held: contextlib.ExitStack,
) -> RunResult:
    options = options or RunOptions()
    say = on_message or _logger.info
    config = load_config(study, storage)
    url = str(config.storage)
    workers = options.n_workers
    if workers > 1 and url.startswith("sqlite"):
        raise RunError(
            f"--workers {workers} needs a storage several processes can share; SQLite is for one "
            "process. Use a PostgreSQL URL (--storage postgresql://user@host/db) or one worker"
        )
    if workers > 1 and "memory" in (config.model.kind, config.data.kind):
        raise RunError(
            f"--workers {workers}: a model or data held in memory cannot be handed to worker "
            "processes; save the model (model.save) and the data (np.savez) and write a study "
            "file, or run one worker"
        )
    # Nothing is written before every input is checked: the callbacks and the storage URL first
    # (without opening it), then the model, the data and the search space; only then is the
    # storage opened.
    from thaw.search._logs import CallbackImportError, import_callbacks

    try:
        callback_classes = import_callbacks(config.callbacks)
    except CallbackImportError as exc:
        raise RunError(f"{config.where}: {exc}") from None
    try:
        check_storage_url(url)
    except StorageError as exc:
        raise RunError(str(exc)) from None
    check_gpus(options.gpus)
    check_extras(config)

    from thaw.objectives import (
        DataSourceError,
        FineTuneObjective,
        ModelSourceError,
        chance_levels,
        configure_device,
        load_data,
        load_pretrained,
    )

    worker_mode = options.worker_total is not None
    device = configure_device(
        config.train.mixed_precision,
        threads=options.threads,
        workers=max(workers, options.worker_count or 1),
    )
    if not worker_mode:
        say(f"Loading model and data for study {config.name!r} ...")
    try:
        pretrained = load_pretrained(config.model)
        data = load_data(config.data, pretrained.input_shape)
        space = config.space.resolve(pretrained.num_layers, pretrained.unfreeze_by)
        objective = FineTuneObjective(pretrained, data, space, config.train, seed=config.seed)
        objective.on_step = say  # steps before the first epoch that take a while
    except (ModelSourceError, DataSourceError, StudyFileError, ValueError) as exc:
        raise RunError(f"{config.where}: {exc}") from None
    artifact_dir = artifacts_folder(config, options)
    check_writable(artifact_dir)
    if config.keep_best:
        from thaw.search._export import models_dir

        check_writable(models_dir(config))
    try:
        held.enter_context(sqlite_run_lock(url))  # SQLite serves one process
        optuna_storage = open_storage(url)
    except StorageError as exc:
        raise RunError(str(exc)) from None
    from thaw.objectives import model_fingerprint
    from thaw.search._study import needs_creation

    try:
        model_fp = model_fingerprint(config.model)
    except OSError as exc:
        raise RunError(f"{config.path}: cannot read the model: {exc}") from None
    if options.budget_epochs is not None:
        # The informed start is sized to the budget the run is given.
        config = replace(config, budget_epochs=options.budget_epochs)
    shift = None
    profile = None
    range_test = None
    if needs_creation(optuna_storage, config.name):
        # Measured before the study is created (or completed, when a run killed while creating
        # it left it half-created): the informed start is chosen with it.
        try:
            shift = objective.domain_shift()
            layers = shift.get("layers")
            profile = objective.shift_profile(layers) if isinstance(layers, dict) else None
        except ValueError as exc:
            _logger.warning("Domain-shift score not measured: %s", exc)
        if (
            config.reference_trials
            and config.lr_range_test
            and not _has_range_test(optuna_storage, config.name)
        ):
            range_test = _range_test(objective, space, config, say)
    try:
        optuna_study, resumed = create_or_resume(
            config,
            optuna_storage,
            pretrained.num_layers,
            data.summary(),
            domain_shift=shift,
            n_workers=max(workers, options.worker_count or 1),
            sampler_salt=os.getpid() if worker_mode else 0,
            num_classes=data.num_classes,
            unfreeze_by=pretrained.unfreeze_by,
            range_test=range_test,
            model_fingerprint=model_fp,
            shift_profile=profile,
            chance=chance_levels(data),
        )
    except StudyMismatchError as exc:
        raise RunError(str(exc)) from None
    # The sampler searches the learning rates around what the range test found.
    objective.space = narrowed_space(space, optuna_study.user_attrs.get(RANGE_TEST))
    if not resumed:
        optuna_study.set_user_attr(
            DETERMINISM,
            {"deterministic": device.deterministic, "reason": device.determinism_reason},
        )
    budget_epochs = (
        options.budget_epochs if options.budget_epochs is not None else config.budget_epochs
    )
    budget = EpochBudget(budget_epochs) if budget_epochs is not None else None
    extra_callbacks: list[Any] = []
    if budget is not None:
        objective.epoch_cap = lambda: budget.remaining(optuna_study)
        extra_callbacks.append(budget)
        budget.record(optuna_study)
    before_trial = before_trial_hooks(config, space)

    from thaw.search._export import attach_keeper
    from thaw.search._logs import attach_logs

    attach_keeper(config, objective, optuna_study)
    # One process shows the bar (workers of --workers do not): each trial's epochs go on it.
    progress = None
    if options.show_progress_bar and options.worker_total is None and workers <= 1:
        from thaw.search._progress import TrialProgress

        progress = TrialProgress()
    attach_logs(
        config, objective, callback_classes, () if progress is None else (progress.callbacks,)
    )
    publisher = make_publisher(url, config.path.parent, artifact_dir)

    finished = len(optuna_study.get_trials(deepcopy=False, states=FINISHED_STATES))
    if options.worker_total is not None:
        interrupted = optimize_exactly(
            optuna_study,
            optuna_storage,
            url,
            publisher.wrap(objective),
            options.worker_total,
            timeout=options.timeout,
            callbacks=[publisher, *extra_callbacks],
            stop_when=budget.exhausted if budget is not None else None,
            before_trial=before_trial,
        )
        return RunResult(
            optuna_study, summarise(optuna_study, finished, resumed, interrupted), interrupted
        )
    recovered = recover_lost_trials(optuna_study, optuna_storage)
    requeued: list[str] = []
    if resumed and config.reference_trials:
        slots = TrialSlots(url, optuna_study.study_name)
        slots.acquire()
        try:
            requeued = requeue_failed_strategies(optuna_study)
        finally:
            slots.release()
            slots.close()
    counted = counted_trials(optuna_study)
    n_trials = (
        options.n_trials if options.n_trials is not None else max(0, config.n_trials - counted)
    )
    if requeued and options.n_trials is None:
        # A missing strategy runs even when the rest of the study is done.
        n_trials = max(n_trials, len(requeued))
    if budget is not None:
        if budget.exhausted(optuna_study):
            n_trials = 0
        elif options.n_trials is None:
            # The budget, not the trial count, ends the study.
            n_trials = max(n_trials, budget.remaining(optuna_study))
    say(
        f"{'Resuming' if resumed else 'Created'} study {config.name!r} in {mask_url(url)}: "
        f"{counted} trials finished, running {n_trials} more"
        f"{_budget_note(budget, optuna_study)}"
        f"{f' on {workers} workers' if workers > 1 else ''}.\n"
        f"Model: {pretrained.description}, {pretrained.num_layers} {pretrained.unfreeze_by} with "
        f"weights; data: {len(data.y_train)} training and {len(data.y_val)} validation images, "
        f"{data.num_classes} {'labels (multi-label)' if objective.multilabel else 'classes'}.\n"
        f"Device: {', '.join(device.gpus) or 'CPU'}"
        f"{', mixed precision' if device.mixed_precision else ''}."
    )
    if recovered:
        say(
            f"Queued again {len(recovered)} trials lost by an earlier run (killed or "
            f"interrupted): {', '.join(map(str, recovered))}."
        )
    if requeued:
        say(f"Queued again the strategies whose every attempt failed: {', '.join(requeued)}.")
    ignored = getattr(data, "ignored_files", ())
    if ignored:
        say(
            f"Ignored {len(ignored)} files that are not images: {', '.join(ignored[:10])}"
            f"{' ...' if len(ignored) > 10 else ''}"
        )
    if data.skipped_files:
        say(
            f"Skipped {len(data.skipped_files)} unreadable files: "
            f"{', '.join(data.skipped_files[:10])}"
            f"{' ...' if len(data.skipped_files) > 10 else ''}"
        )
    interrupted = False
    failed_workers: list[str] = []
    if n_trials > 0 and workers > 1:
        interrupted, failed_workers = _run_workers(
            config.path, url, options, counted + n_trials, say, optuna_study, optuna_storage
        )
    elif n_trials > 0:
        interrupted = optimize_exactly(
            optuna_study,
            optuna_storage,
            url,
            publisher.wrap(objective),
            counted + n_trials,
            timeout=options.timeout,
            callbacks=[publisher, *extra_callbacks],
            show_progress_bar=options.show_progress_bar,
            stop_when=budget.exhausted if budget is not None else None,
            before_trial=before_trial,
            trial_progress=progress,
        )
    publisher.finish(optuna_study)
    summary = summarise(optuna_study, finished, resumed, interrupted)
    return RunResult(optuna_study, summary, interrupted, failed_workers)


def before_trial_hooks(config: StudyConfig, space: Any) -> Callable[[optuna.Study], None] | None:
    """What runs right before each trial, under the study's slot lock, in order: the screen of
    the informed start (its next round, or its survivor at full length), then the closed loop
    (``loop: on``) or, without it, the gradual-unfreezing step after the start."""
    hooks: list[Callable[[optuna.Study], Any]] = []
    if config.reference_trials:
        hooks.append(ScreenedStart(config.pruner.reduction_factor, rate_guard=config.rate_guard))
        if not config.loop:
            hooks.append(GradualUnfreezing(space))
    if config.loop:
        hooks.append(ClosedLoop())
    if not hooks:
        return None

    def run_hooks(study: optuna.Study) -> None:
        for hook in hooks:
            hook(study)

    return run_hooks


def _has_range_test(storage: optuna.storages.BaseStorage, name: str) -> bool:
    """Whether a half-created study already holds its range test (its start was queued with it)."""
    from thaw.search._study import study_exists

    if not study_exists(storage, name):
        return False
    attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(name))
    return RANGE_TEST in attrs


def _range_test(
    objective: Any, space: Any, config: StudyConfig, say: Callable[[str], None]
) -> dict[str, Any] | None:
    """The learning-rate range test of a new study; None when it cannot run (logged)."""
    modes = ", ".join(space.batchnorm)
    say(f"Learning-rate range test ({modes}) ...")
    try:
        summary = run_range_tests(objective, space, config.seed)
    except ValueError as exc:
        say(f"Learning-rate range test skipped: {exc}; searching the configured range.")
        return None
    say(range_test_message(summary, space.learning_rate))
    return summary


def optimize_exactly(
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    url: str,
    objective: Callable[[optuna.Trial], float],
    target: int,
    *,
    timeout: float | None = None,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
    poll_seconds: float = 2.0,
    show_progress_bar: bool = False,
    stop_when: Callable[[optuna.Study], bool] | None = None,
    before_trial: Callable[[optuna.Study], None] | None = None,
    trial_progress: TrialProgress | None = None,
) -> bool:
    """Run trials until the whole study counts ``target`` completed and pruned trials.

    Several processes may call this on one study: each checks the count and creates its next
    trial under one lock (:class:`TrialSlots`), so the study never overshoots; a process whose
    slot is taken by running trials waits, and takes over a trial another worker lost. Failed
    and interrupted trials do not count; lost ones are queued again. Stops early after as many
    failures of its own as trials it had to run, after ``timeout`` seconds (no new trial), or
    once ``stop_when(study)`` is true (an epoch budget spent). ``before_trial(study)`` runs
    under the lock right before each trial it creates (it may queue that trial). With
    ``show_progress_bar``, ``trial_progress`` (a :class:`~thaw.search._progress.TrialProgress`)
    holds the bar while it is shown, so the running trial's epochs go on it. Returns whether
    Ctrl-C interrupted it.
    """
    slots = TrialSlots(url, study.study_name, storage)
    # Storages without Optuna's heartbeats (gRPC proxy, journal file) get thaw's.
    from thaw.search._faults import HEARTBEAT_INTERVAL
    from thaw.search._proxy import AttrHeartbeat, has_optuna_heartbeat

    own_heartbeat = not has_optuna_heartbeat(storage)
    me = worker_id()
    held = [False]
    failures = [0]
    budget = max(1, target - counted_trials(study))

    def release() -> None:
        if held[0]:
            held[0] = False
            slots.release()

    def tracked(trial: optuna.Trial) -> float:
        trial.set_user_attr(WORKER, me)
        release()  # the trial exists (RUNNING): other workers may now take the next slot
        beat = (
            AttrHeartbeat(storage, trial._trial_id, HEARTBEAT_INTERVAL)
            if own_heartbeat
            else contextlib.nullcontext()
        )
        try:
            with beat:
                return objective(trial)
        except KeyboardInterrupt:
            with contextlib.suppress(Exception):
                trial.set_user_attr(LOST, INTERRUPTED)
            raise
        except Exception as exc:
            if is_connection_error(exc):
                # The storage went away for longer than the retry window: once it is back the
                # trial is failed with that reason and queued again, like a killed one.
                mark_storage_lost(trial, exc)
            raise

    def count_failures(study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state == TrialState.FAIL and LOST not in trial.user_attrs:
            failures[0] += 1

    start = time.monotonic()
    last_recovery = start
    bar: Any = None
    if show_progress_bar:
        from tqdm.auto import tqdm

        bar = tqdm(total=target, initial=min(target, counted_trials(study)), unit="trial")
        _show_best(bar, study)
        if trial_progress is not None:
            trial_progress.bar = bar
    # The model and data are loaded: freeze what is alive, so each trial's collection is short.
    # (An objective without Keras, such as bench/storage_load.py's stub, does not load it here.)
    heap = contextlib.ExitStack()
    if "keras" in sys.modules:
        from thaw.objectives import frozen_heap

        heap.enter_context(frozen_heap())
    try:
        while timeout is None or time.monotonic() - start < timeout:
            try:
                slots.acquire()
                held[0] = True
                if time.monotonic() - last_recovery >= poll_seconds:
                    recover_lost_trials(study, storage)
                    last_recovery = time.monotonic()
                counted, running = slot_counts(study)
                if counted >= target or (stop_when is not None and stop_when(study)):
                    break
                if counted + running >= target:
                    release()
                    time.sleep(poll_seconds)
                    continue
                if before_trial is not None:
                    before_trial(study)  # e.g. queue the gradual-unfreezing step
                with quiet_experimental():
                    study.optimize(
                        tracked,
                        n_trials=1,
                        catch=(Exception,),
                        callbacks=[*callbacks, count_failures],
                    )
            except Exception as exc:
                if finished_elsewhere(exc):
                    # After an outage another worker found this trial's heartbeat stale, failed
                    # it and queued it again before this worker could finish it.
                    _logger.warning("A trial was finished by another worker meanwhile: %s", exc)
                    continue
                if not is_connection_error(exc):
                    raise
                # An outage longer than the retry window: wait for the storage, then go on
                # (a trial it cut short is queued again by recover_lost_trials).
                release()
                wait_for_storage(storage)
                last_recovery = time.monotonic() - poll_seconds
                continue
            finally:
                release()
            if bar is not None:
                bar.n = min(target, counted_trials(study))
                bar.set_description("", refresh=False)  # the trial that ran has ended
                _show_best(bar, study)
                bar.refresh()
            if failures[0] >= budget:
                _logger.warning(
                    "Stopping: %d trials failed in this run (see each trial's fail_reason)",
                    failures[0],
                )
                break
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            recover_lost_trials(study, storage)  # queue the interrupted trial again
        return True
    finally:
        slots.close()
        heap.close()
        if bar is not None:
            bar.close()
        if trial_progress is not None:
            trial_progress.bar = None
    return False


def finished_elsewhere(exc: BaseException) -> bool:
    """Whether ``exc`` says the trial this worker ran was finished by another worker meanwhile
    (failed as stale after an outage, then queued again)."""
    if isinstance(exc, optuna.exceptions.UpdateFinishedTrialError):
        return True
    return isinstance(exc, ValueError) and str(exc).startswith("Cannot tell a ")


def _show_best(bar: Any, study: optuna.Study) -> None:
    """The progress bar's postfix: the best value so far and its trial."""
    from thaw.search._budget import best_trial

    best = best_trial(study)
    if best is not None:
        bar.set_postfix(best=f"{best.value:.4g}", trial=best.trial.number, refresh=False)


def artifacts_folder(config: StudyConfig, options: RunOptions) -> Path:
    """The dashboard artifacts' folder: ``--artifact-dir``, else ``<artifacts>/artifacts`` when
    the study file sets ``artifacts``, else beside the SQLite file (or the study file)."""
    from thaw.search._publish import study_artifact_dir

    if options.artifact_dir:
        return Path(options.artifact_dir).resolve()
    return study_artifact_dir(str(config.storage), config.path.resolve().parent, config.artifacts)


def check_writable(folder: Path) -> None:
    """Refuse, in one line, a folder this worker cannot write (or create), before anything is
    written: every worker of a study writes its artifacts and kept models there."""
    existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
        return
    why = "is not a folder" if not existing.is_dir() else "is not writable by this worker"
    where = "" if existing == Path(folder) else f" (to create {folder})"
    raise RunError(
        f"artifacts folder {existing}{where} {why}; set 'artifacts' in the study file (or "
        "--artifact-dir) to a folder every worker can write"
    )


def make_publisher(url: str, study_dir: Path, artifact_dir: Path | None = None) -> Any:
    """Publishes verdicts, notes and artifacts of each finished trial (optuna-dashboard)."""
    from thaw.search._publish import (
        PublishError,
        TrialPublisher,
        default_artifact_dir,
        open_artifact_store,
    )

    folder = (
        Path(artifact_dir).resolve()
        if artifact_dir
        else default_artifact_dir(url, Path(study_dir).resolve())
    )
    try:
        return TrialPublisher(open_artifact_store(folder))
    except PublishError as exc:
        raise RunError(str(exc)) from None


def _budget_note(budget: EpochBudget | None, study: optuna.Study) -> str:
    if budget is None:
        return ""
    return (
        f" (or until the epoch budget is spent: {budget.budget - budget.remaining(study)} of "
        f"{budget.budget} epochs used)"
    )


def _run_workers(
    study_file: Path,
    url: str,
    options: RunOptions,
    total: int,
    say: Callable[[str], None],
    study: optuna.Study | None = None,
    storage: optuna.storages.BaseStorage | None = None,
) -> tuple[bool, list[str]]:
    """Start one worker process per GPU (or share the CPU cores).

    Returns whether the run was interrupted, and a line for each worker that failed.
    """
    workers = options.n_workers
    gpus = options.gpus
    cores = os.cpu_count() or 1
    threads = max(1, cores // workers)
    procs = []
    for i in range(workers):
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i]
        command = [
            sys.executable,
            "-m",
            "thaw.search._cli",
            "run",
            str(study_file),
            "--storage",
            url,
            "--worker-total",
            str(total),
            "--worker-count",
            str(workers),
            "--no-progress",
        ]
        if not gpus:
            command += ["--threads", str(threads)]
        if options.timeout is not None:
            command += ["--timeout", str(options.timeout)]
        if options.budget_epochs is not None:
            command += ["--budget-epochs", str(options.budget_epochs)]
        if options.artifact_dir:
            command += ["--artifact-dir", str(options.artifact_dir)]
        procs.append(subprocess.Popen(command, env=env))
    say(
        f"Started {workers} workers "
        + (f"on GPUs {','.join(gpus)}" if gpus else f"on CPU, {threads} threads each")
        + "."
    )
    interrupted = False
    codes: list[int | None] = [None] * len(procs)
    try:
        while any(c is None for c in codes):
            for i, p in enumerate(procs):
                if codes[i] is None and (code := p.poll()) is not None:
                    codes[i] = code
                    if code not in (0, EXIT_INTERRUPTED):
                        say(f"Worker {i} (pid {p.pid}) {_exit_reason(code)}; the others go on.")
                        if study is not None and storage is not None:
                            # its running trial is failed with the reason and queued again
                            with contextlib.suppress(Exception):
                                recover_lost_trials(study, storage)
            time.sleep(0.5)
    except KeyboardInterrupt:
        interrupted = True
        codes = [p.wait() for p in procs]
    failed = [
        f"worker {i} (pid {p.pid}) {_exit_reason(c)}"
        for i, (p, c) in enumerate(zip(procs, codes, strict=True))
        if c not in (0, EXIT_INTERRUPTED)
    ]
    return interrupted or EXIT_INTERRUPTED in codes, failed


def _exit_reason(code: int | None) -> str:
    """``killed by SIGKILL`` for a signal, ``exited with status 1`` otherwise."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with status {code}"
