"""The ``thaw`` command line. Only this module prints and sets verbosity."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_logger = logging.getLogger("thaw")


class UserError(Exception):
    """Bad input: printed as one line, exit status 2."""


def _fail(message: str) -> int:
    print(f"thaw: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    import optuna

    optuna.logging.set_verbosity(logging.WARNING if verbosity <= 1 else logging.INFO)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if verbosity <= 1 else "0")


def _load_config(path: str) -> Any:
    from search._config import StudyFileError, load_study_file

    try:
        return load_study_file(path)
    except StudyFileError as exc:
        raise UserError(str(exc)) from None


def _storage_url(config: Any, override: str | None) -> str:
    from search._config import resolve_storage_url

    if override is None:
        return str(config.storage)
    if "://" not in override:
        raise UserError(
            f"--storage must be a database URL such as sqlite:///demo.db, got {override!r}"
        )
    return resolve_storage_url(override, Path.cwd())


# ----------------------------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from objectives import DataSourceError, ModelSourceError
    from search._config import StudyFileError, mask_url
    from search._study import (
        FINISHED_STATES,
        StorageError,
        StudyMismatchError,
        create_or_resume,
        mark_interrupted,
        open_storage,
        summarise,
    )

    config = _load_config(args.study_file)
    url = _storage_url(config, args.storage)
    config = replace(config, storage=url)
    if args.n_trials is not None and args.n_trials < 1:
        raise UserError(f"--n-trials must be >= 1, got {args.n_trials}")
    if args.timeout is not None and args.timeout <= 0:
        raise UserError(f"--timeout must be > 0 seconds, got {args.timeout}")
    try:
        storage = open_storage(url)
    except StorageError as exc:
        raise UserError(str(exc)) from None

    print(f"Loading model and data for study {config.name!r} ...", flush=True)
    from objectives import FineTuneObjective, load_data, load_pretrained

    try:
        pretrained = load_pretrained(config.model)
        data = load_data(config.data)
        space = config.space.resolve(pretrained.num_layers)
        objective = FineTuneObjective(pretrained, data, space, config.train, seed=config.seed)
    except (ModelSourceError, DataSourceError, StudyFileError) as exc:
        raise UserError(f"{config.path}: {exc}") from None
    except ValueError as exc:
        raise UserError(f"{config.path}: {exc}") from None
    try:
        study, resumed = create_or_resume(config, storage, pretrained.num_layers, data.summary())
    except StudyMismatchError as exc:
        raise UserError(str(exc)) from None

    finished = len(study.get_trials(deepcopy=False, states=FINISHED_STATES))
    n_trials = args.n_trials if args.n_trials is not None else max(0, config.n_trials - finished)
    print(
        f"{'Resuming' if resumed else 'Created'} study {config.name!r} in {mask_url(url)}: "
        f"{finished} trials finished, running {n_trials} more.\n"
        f"Model: {pretrained.description}, {pretrained.num_layers} layers with weights; "
        f"data: {len(data.y_train)} training and {len(data.y_val)} validation images, "
        f"{data.num_classes} classes.",
        flush=True,
    )
    interrupted = False
    if n_trials > 0:
        try:
            study.optimize(
                objective,
                n_trials=n_trials,
                timeout=args.timeout,
                catch=(Exception,),
                show_progress_bar=not args.no_progress,
            )
        except KeyboardInterrupt:
            interrupted = True
            mark_interrupted(study)
    summary = summarise(study, finished, resumed, interrupted)
    _print_summary(summary, config.path)
    return EXIT_INTERRUPTED if interrupted else 0


def _print_summary(summary: Any, study_file: Path) -> None:
    print()
    if summary.interrupted:
        print("Interrupted: the running trial was marked failed; finished trials are kept.")
    counts = summary.counts
    print(
        f"Study {summary.study_name!r}: {summary.trials_run} trials run now; in all "
        f"{counts.get('complete', 0)} completed, {counts.get('pruned', 0)} pruned, "
        f"{counts.get('fail', 0)} failed."
    )
    if summary.prune_reasons:
        reasons = ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in summary.prune_reasons.items())
        print(f"Pruned because: {reasons}.")
    if summary.best_number is not None:
        params = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in summary.best_params.items()
        )
        print(f"Best so far: trial {summary.best_number}, value {summary.best_value:.4f} ({params}).")
    print(f"Write the report: thaw report {study_file}")


# -------------------------------------------------------------------------------- report


def cmd_report(args: argparse.Namespace) -> int:
    from reports import write_report
    from search._config import mask_url
    from search._study import StorageError, load_existing_study, open_storage

    config = _load_config(args.study_file)
    url = _storage_url(config, args.storage)
    out = Path(args.out) if args.out else Path("thaw-report") / config.name
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder (it is created if missing)")
    try:
        storage = open_storage(url, must_exist=True)
        study = load_existing_study(storage, config.name, url)
    except StorageError as exc:
        raise UserError(str(exc)) from None
    try:
        files = write_report(study, out, storage_url_masked=mask_url(url))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    print(f"Report for study {config.name!r} written to {out}/:")
    for path in (files.markdown, files.html, files.csv, files.summary_json):
        print(f"  {path}")
    return 0


# ---------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="thaw",
        description="Search and diagnose fine-tuning of pretrained Keras models with Optuna.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="create or resume a study and run trials")
    run.add_argument("study_file", help="study file, e.g. studies/demo.yaml")
    run.add_argument("--n-trials", type=int, help="run this many trials (default: up to n_trials)")
    run.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    run.add_argument("--storage", help="Optuna storage URL (overrides the study file)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(func=cmd_run)

    report = sub.add_parser("report", help="write report.md, report.html and trials.csv")
    report.add_argument("study_file")
    report.add_argument("--storage", help="Optuna storage URL (overrides the study file)")
    report.add_argument("--out", help="output folder (default: thaw-report/<study name>)")
    report.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return int(args.func(args))
    except UserError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        print("thaw: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
