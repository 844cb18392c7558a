"""The run pipeline as a library call: load model and data once, create or resume the study, run.

``run_study`` is what ``thaw run`` does; the CLI only parses arguments, prints and maps errors to
exit codes. Progress messages go to ``on_message`` (the CLI prints them; a library caller gets
them logged at INFO by default).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna

from thaw.search._budget import EpochBudget
from thaw.search._config import StudyConfig, StudyFileError, load_study_file, mask_url
from thaw.search._study import (
    FINISHED_STATES,
    RunSummary,
    StorageError,
    StudyMismatchError,
    create_or_resume,
    open_storage,
    summarise,
)

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


def run_study(
    study: str | Path | StudyConfig,
    *,
    storage: str | None = None,
    options: RunOptions | None = None,
    on_message: Callable[[str], None] | None = None,
) -> RunResult:
    """Create or resume the study of a study file (or config) and run its trials.

    Raises :class:`RunError` for bad input, before anything is trained.
    """
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
    try:
        optuna_storage = open_storage(url)
    except StorageError as exc:
        raise RunError(str(exc)) from None

    from thaw.objectives import (
        DataSourceError,
        FineTuneObjective,
        ModelSourceError,
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
    except (ModelSourceError, DataSourceError, StudyFileError, ValueError) as exc:
        raise RunError(f"{config.path}: {exc}") from None
    from thaw.search._study import study_exists

    shift = None
    if not study_exists(optuna_storage, config.name):
        # Measured before the study is created: the informed start is chosen with it.
        try:
            shift = objective.domain_shift()
        except ValueError as exc:
            _logger.warning("Domain-shift score not measured: %s", exc)
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
        )
    except StudyMismatchError as exc:
        raise RunError(str(exc)) from None
    if not resumed:
        optuna_study.set_user_attr(
            "thaw:determinism",
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

    publisher = make_publisher(url, config.path.parent, options.artifact_dir)

    finished = len(optuna_study.get_trials(deepcopy=False, states=FINISHED_STATES))
    if options.worker_total is not None:
        interrupted = (
            False
            if budget is not None and budget.exhausted(optuna_study)
            else _run_as_worker(
                optuna_study,
                objective,
                publisher,
                options.worker_total,
                options.timeout,
                extra_callbacks,
            )
        )
        return RunResult(
            optuna_study, summarise(optuna_study, finished, resumed, interrupted), interrupted
        )
    n_trials = (
        options.n_trials if options.n_trials is not None else max(0, config.n_trials - finished)
    )
    if budget is not None:
        if budget.exhausted(optuna_study):
            n_trials = 0
        elif options.n_trials is None:
            # The budget, not the trial count, ends the study.
            n_trials = max(n_trials, budget.remaining(optuna_study))
    say(
        f"{'Resuming' if resumed else 'Created'} study {config.name!r} in {mask_url(url)}: "
        f"{finished} trials finished, running {n_trials} more"
        f"{_budget_note(budget, optuna_study)}"
        f"{f' on {workers} workers' if workers > 1 else ''}.\n"
        f"Model: {pretrained.description}, {pretrained.num_layers} {pretrained.unfreeze_by} with "
        f"weights; data: {len(data.y_train)} training and {len(data.y_val)} validation images, "
        f"{data.num_classes} classes.\n"
        f"Device: {', '.join(device.gpus) or 'CPU'}"
        f"{', mixed precision' if device.mixed_precision else ''}."
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
            config.path, url, options, finished + n_trials, say
        )
    elif n_trials > 0:
        try:
            optuna_study.optimize(
                publisher.wrap(objective),
                n_trials=n_trials,
                timeout=options.timeout,
                catch=(Exception,),
                callbacks=[publisher, *extra_callbacks],
                show_progress_bar=options.show_progress_bar,
            )
        except KeyboardInterrupt:
            interrupted = True
    publisher.finish(optuna_study)
    summary = summarise(optuna_study, finished, resumed, interrupted)
    return RunResult(optuna_study, summary, interrupted, failed_workers)


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


def _run_as_worker(
    study: optuna.Study,
    objective: Any,
    publisher: Any,
    total: int,
    timeout: float | None,
    extra_callbacks: list[Any] | None = None,
) -> bool:
    """One worker process: run trials until the study holds ``total`` trials."""
    from optuna.study import MaxTrialsCallback

    try:
        study.optimize(
            publisher.wrap(objective),
            timeout=timeout,
            catch=(Exception,),
            callbacks=[MaxTrialsCallback(total, states=None), publisher, *(extra_callbacks or [])],
        )
    except KeyboardInterrupt:
        return True
    return False


def _run_workers(
    study_file: Path,
    url: str,
    options: RunOptions,
    total: int,
    say: Callable[[str], None],
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
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        interrupted = True
        codes = [p.wait() for p in procs]
    failed = [
        f"worker {i} (pid {p.pid}) exited with status {c}"
        for i, (p, c) in enumerate(zip(procs, codes, strict=True))
        if c not in (0, EXIT_INTERRUPTED)
    ]
    return interrupted or EXIT_INTERRUPTED in codes, failed
