"""The ``thaw`` command line. Only this module prints and sets verbosity."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from thaw._version import __version__

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_logger = logging.getLogger("thaw")


class UserError(Exception):
    """Bad input: printed as one line, exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors are one line, ``thaw: error: ...``, exit 2
    (not the usage block): an unknown flag, a missing argument, a value not among the choices.
    Its sub-command parsers are of the same class."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"thaw: error: {message}; see '{self.prog} --help'\n")


def _fail(message: str) -> int:
    print(f"thaw: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    import optuna

    optuna.logging.set_verbosity(logging.WARNING if verbosity <= 1 else logging.INFO)
    if verbosity <= 1:
        # "Trial 3 failed with parameters ... because of the following error: ..." stays one
        # line; -vv shows the traceback. The reason is stored on the trial either way.
        logging.getLogger("optuna.study._optimize").addFilter(_drop_traceback)
        # Each trial builds new models, so TensorFlow warns that its functions retrace: about
        # 400 characters each, landing in the middle of the progress bar, about nothing the
        # user can change. -vv shows them.
        logging.getLogger("tensorflow").addFilter(_drop_retracing)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3" if verbosity <= 1 else "0")


def _drop_retracing(record: logging.LogRecord) -> bool:
    return "triggered tf.function retracing" not in record.getMessage()


def _drop_traceback(record: logging.LogRecord) -> bool:
    record.exc_info = None
    record.exc_text = None
    return True


def _import_keras_quietly() -> None:
    """Import Keras and its backend with stderr silenced at the file-descriptor level.

    TensorFlow's C++ start-up notices (absl, oneDNN) ignore TF_CPP_MIN_LOG_LEVEL; without this a
    one-line error would come after several lines of them. Python exceptions are unaffected.
    """
    if "keras" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import keras

            keras.backend.backend()
            if keras.backend.backend() == "tensorflow":
                import tensorflow  # noqa: F401 - the import prints the notices

                tensorflow.constant(0)  # the first op prints the oneDNN notice
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _load_config(path: str, storage: str | None = None) -> Any:
    """The typed study config (``--storage`` overriding the study file's); errors are one line."""
    from thaw.search._run import RunError, load_config

    try:
        return load_config(path, storage)
    except RunError as exc:
        raise UserError(str(exc)) from None


# ----------------------------------------------------------------------------------- run


def _parse_gpus(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    gpus = tuple(g.strip() for g in value.split(",") if g.strip())
    if not all(g.isdigit() for g in gpus):
        raise UserError(f"--gpus must be GPU indices such as 0,1, got {value!r}")
    return gpus


def cmd_run(args: argparse.Namespace) -> int:
    from thaw.search._config import StudyFileError, parse_budget_epochs
    from thaw.search._run import RunError, RunOptions, load_config, run_study

    try:
        budget_epochs = parse_budget_epochs(args.budget_epochs, "--budget-epochs")
    except StudyFileError as exc:
        raise UserError(str(exc)) from None
    try:
        options = RunOptions(
            budget_epochs=budget_epochs,
            n_trials=args.n_trials,
            timeout=args.timeout,
            workers=args.workers,
            gpus=_parse_gpus(args.gpus),
            artifact_dir=Path(args.artifact_dir) if args.artifact_dir else None,
            show_progress_bar=not args.no_progress and args.worker_total is None,
            threads=args.threads,
            worker_total=args.worker_total,
            worker_count=args.worker_count,
        )
        # Parse the study file first: its errors come before TensorFlow's start-up.
        config = load_config(args.study_file, args.storage)
        _import_keras_quietly()
        result = run_study(config, options=options, on_message=lambda m: print(m, flush=True))
    except RunError as exc:
        raise UserError(str(exc)) from None
    if options.worker_total is not None:
        return EXIT_INTERRUPTED if result.interrupted else 0
    _print_summary(result.summary, config.path)
    for line in result.failed_workers:
        print(f"thaw: {line}", file=sys.stderr)
    if result.interrupted:
        return EXIT_INTERRUPTED
    return 1 if result.failed_workers else 0


def _print_summary(summary: Any, study_file: Path) -> None:
    print()
    if summary.interrupted:
        print(
            "Interrupted: the running trial was marked failed and queued again; finished trials "
            "are kept."
        )
    counts = summary.counts
    print(
        f"Study {summary.study_name!r}: {summary.trials_run} trials run now; in all "
        f"{counts.get('complete', 0)} completed, {counts.get('pruned', 0)} pruned, "
        f"{counts.get('fail', 0)} failed."
    )
    if summary.prune_reasons:
        reasons = ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in summary.prune_reasons.items())
        print(f"Pruned because: {reasons}.")
    if summary.headline:
        print(summary.headline)
    if summary.best_number is not None:
        params = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in summary.best_params.items()
        )
        pruned = " (pruned; value at its best epoch)" if summary.best_pruned else ""
        metrics = "".join(
            f", {name} {value:.4f}"
            for name, value in summary.best_metrics.items()
            if value is not None
        )
        print(
            f"Best so far: trial {summary.best_number}{pruned}, value {summary.best_value:.4f}"
            f"{metrics} ({params})." + (f" {summary.advice}" if summary.advice else "")
        )
    if summary.budget_epochs is not None and summary.epochs_spent is not None:
        print(f"Epochs spent: {summary.epochs_spent} of a budget of {summary.budget_epochs}.")
    print(f"Write the report: thaw report {study_file}")


# -------------------------------------------------------------------------------- report


def cmd_report(args: argparse.Namespace) -> int:
    from thaw._api import report

    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder (it is created if missing)")
    table_format = getattr(args, "format", "csv")
    if table_format == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise UserError(
            "--format parquet needs pyarrow: pip install 'thaw-keras[parquet]' (or use "
            "--format csv)"
        )
    try:
        files = report(args.study_file, out, storage=args.storage, table_format=table_format)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    print(f"Report for study {files.study_name!r} written to {files.out_dir}/:")
    for path in files.written:
        print(f"  {path}")
    return 0


# ------------------------------------------------------------------------------- compare


def cmd_compare(args: argparse.Namespace) -> int:
    from thaw.reports import write_comparison
    from thaw.search._config import mask_url
    from thaw.search._study import StorageError, load_existing_study, open_storage

    if len(args.study_files) < 2:
        raise UserError(
            f"compare needs at least two study files, got {len(args.study_files)}; "
            "e.g. thaw compare studies/a.yaml studies/b.yaml --out DIR"
        )
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder (it is created if missing)")
    studies = []
    urls = []
    for study_file in args.study_files:
        config = _load_config(study_file)
        url = str(config.storage)
        try:
            storage = open_storage(url, must_exist=True)
            studies.append(load_existing_study(storage, config.name, url))
        except StorageError as exc:
            raise UserError(str(exc)) from None
        urls.append(mask_url(url))
    try:
        files = write_comparison(studies, out, storage_urls_masked=urls)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    print(f"Comparison of {len(studies)} studies written to {out}/:")
    for path in (files.markdown, files.html, files.csv):
        print(f"  {path}")
    return 0


# ------------------------------------------------------------------------------- inspect


def _stored_profile(config: Any) -> Any:
    """The study's ``thaw:shift_profile`` when its storage holds it (None otherwise; nothing
    is created)."""
    from thaw._keys import SHIFT_PROFILE
    from thaw.search._study import StorageError, open_storage, study_exists

    try:
        storage = open_storage(str(config.storage), must_exist=True)
    except StorageError:
        return None
    if not study_exists(storage, config.name):
        return None
    import optuna

    return optuna.load_study(study_name=config.name, storage=storage).user_attrs.get(SHIFT_PROFILE)


def _inspect_study(args: argparse.Namespace) -> int:
    """``thaw inspect study.yaml``: the study's model, and its BatchNorm shift profile (stored
    at creation; measured on the training images when the study does not exist yet)."""
    config = _load_config(args.model_source)
    _import_keras_quietly()
    from thaw.objectives import (
        DataSourceError,
        FineTuneObjective,
        ModelSourceError,
        load_data,
        load_pretrained,
        unfreeze_table,
    )
    from thaw.reports._surgical import profile_groups
    from thaw.search._config import StudyFileError
    from thaw.search._study import profile_attr

    try:
        pretrained = load_pretrained(config.model)
    except ModelSourceError as exc:
        raise UserError(f"{config.where}: {exc}") from None
    unit = pretrained.unfreeze_by
    rows = unfreeze_table(pretrained.model, unit)
    attr = _stored_profile(config)
    origin = "stored when the study was created"
    if attr is None:
        try:
            data = load_data(config.data, pretrained.input_shape)
            space = config.space.resolve(pretrained.num_layers, unit)
            objective = FineTuneObjective(pretrained, data, space, config.train, seed=config.seed)
            shift = objective.domain_shift()
        except (DataSourceError, StudyFileError, ValueError) as exc:
            raise UserError(f"{config.where}: {exc}") from None
        layers = shift.get("layers")
        groups = objective.shift_profile(layers) if isinstance(layers, dict) else []
        attr = profile_attr(config, pretrained.num_layers, unit, groups)
        origin = "measured now on the training images (the study does not exist yet)"
    _, profile, sentence = profile_groups(attr)
    print(
        f"{pretrained.description}: input {pretrained.input_shape}, {len(rows)} {unit} with weights"
    )
    print(f"BatchNorm shift profile, {origin}:")
    print(f"{'unfrozen':>8}  {'name':<34} {'params':>10} {'shift':>6}  block")
    for row in rows:
        group = profile[len(rows) - row.unfrozen] if len(profile) == len(rows) else None
        score = "-" if group is None or group.shift is None else f"{group.shift:.3f}"
        mark = "profile's block" if group is not None and group.in_block else ""
        line = f"{row.unfrozen:>8}  {row.name[:34]:<34} {row.params:>10,} {score:>6}  {mark}"
        print(line.rstrip())
    print(sentence)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from thaw.objectives import APPLICATION_NAMES, ModelSource, ModelSourceError

    source = args.model_source
    if source.endswith((".yaml", ".yml")):
        return _inspect_study(args)
    input_shape = None
    if args.input_shape:
        try:
            input_shape = tuple(int(d) for d in args.input_shape.split(","))
        except ValueError:
            input_shape = ()
        if len(input_shape) != 3:
            raise UserError(
                f"--input-shape must be H,W,C such as 96,96,3, got {args.input_shape!r}"
            )
    if source == "demo":
        model = ModelSource(kind="demo", cut_at=args.cut_at, unfreeze_by=args.unfreeze_by)
    elif source == "glyphs":
        model = ModelSource(kind="glyphs", cut_at=args.cut_at, unfreeze_by=args.unfreeze_by)
    elif source in APPLICATION_NAMES:
        weights = None if args.weights in ("none", "null") else args.weights
        model = ModelSource(
            kind="application",
            name=source,
            weights=weights,
            input_shape=input_shape,  # type: ignore[arg-type]
            alpha=args.alpha,
            cut_at=args.cut_at,
            unfreeze_by=args.unfreeze_by,
        )
    else:
        path = Path(source)
        if not path.exists():
            raise UserError(
                f"{source!r} is neither 'demo', a keras.applications name "
                f"({', '.join(APPLICATION_NAMES)}) nor an existing model file"
            )
        model = ModelSource(
            kind="file", path=path, cut_at=args.cut_at, unfreeze_by=args.unfreeze_by
        )
    _import_keras_quietly()
    from thaw.objectives import load_pretrained, unfreeze_table

    try:
        pretrained = load_pretrained(model)
    except ModelSourceError as exc:
        raise UserError(str(exc)) from None
    rows = unfreeze_table(pretrained.model, args.unfreeze_by)
    unit = "blocks" if args.unfreeze_by == "blocks" else "layers"
    print(
        f"{pretrained.description}: input {pretrained.input_shape}, {len(rows)} {unit} with weights"
    )
    print("(BatchNorm layers are not counted; they stay frozen unless 'batchnorm: train'.)")
    print(
        f"{'unfrozen':>8}  {'name':<34} {'kind':<18} {'params':>10} {'trainable if unfrozen':>22}"
    )
    if pretrained.cut_classifier_info is not None:
        name, kind, params = pretrained.cut_classifier_info
        # The source classifier, cut off by default: marked, not counted.
        print(
            f"{'cut':>8}  {name[:34]:<34} {kind[:18]:<18} {params:>10,} {'(not in the base)':>22}"
        )
    for row in rows:
        print(
            f"{row.unfrozen:>8}  {row.name[:34]:<34} {row.kind[:18]:<18} {row.params:>10,} "
            f"{row.cumulative_trainable:>22,}"
        )
    if pretrained.cut_classifier_info is not None:
        print(
            f"The top classifier '{pretrained.cut_classifier_info[0]}' was cut (the new head "
            "replaces it); --cut-at none keeps the whole model."
        )
    return 0


# ------------------------------------------------------------------------------ diagnose


def _diagnose_history(args: argparse.Namespace) -> int:
    """``thaw diagnose --history FILE.json``: a run trained outside thaw, judged alone."""
    import json

    from thaw.reports.diagnosis import diagnose_history, load_history

    if args.study_file is not None or args.trial is not None or args.storage is not None:
        raise UserError("--history takes no study file, --trial or --storage; give one or other")
    try:
        result = diagnose_history(load_history(args.history))
    except ValueError as exc:
        raise UserError(f"{args.history}: {exc}") from None
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    else:
        print(result.render_text(str(args.history)), end="")
    return 0


def _diagnose_kerastuner(args: argparse.Namespace) -> int:
    """``thaw diagnose --kerastuner DIR``: the trials of a KerasTuner search."""
    import json

    from thaw.reports.diagnosis import diagnose_kerastuner

    if args.study_file is not None or args.trial is not None or args.storage is not None:
        raise UserError("--kerastuner takes no study file, --trial or --storage; give one or other")
    try:
        result = diagnose_kerastuner(args.kerastuner)
    except ValueError as exc:
        raise UserError(f"--kerastuner {args.kerastuner}: {exc}") from None
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    else:
        print(result.render_text(), end="")
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    import json

    if args.history is not None and args.kerastuner is not None:
        raise UserError("give --history or --kerastuner, not both")
    if args.history is not None:
        return _diagnose_history(args)
    if args.kerastuner is not None:
        return _diagnose_kerastuner(args)
    if args.study_file is None:
        raise UserError(
            "give a study file, --history FILE.json for a run trained elsewhere, or "
            "--kerastuner DIR for a KerasTuner search"
        )
    from thaw.reports import diagnose_study, trial_verdicts
    from thaw.search._study import StorageError, load_existing_study, open_storage

    config = _load_config(args.study_file, args.storage)
    url = str(config.storage)
    try:
        storage = open_storage(url, must_exist=True)
        study = load_existing_study(storage, config.name, url)
    except StorageError as exc:
        raise UserError(str(exc)) from None
    if args.trial is not None:
        trials = study.get_trials(deepcopy=False)
        by_number = {t.number: t for t in trials}
        if args.trial not in by_number:
            raise UserError(
                f"study {config.name!r} has no trial {args.trial}; trials are 0..{len(trials) - 1}"
            )
        verdicts = trial_verdicts(
            study, by_number[args.trial], trials=trials, thresholds=config.thresholds
        )
        if args.json:
            print(
                json.dumps(
                    {"trial": args.trial, "verdicts": [v.to_dict() for v in verdicts]},
                    indent=2,
                    sort_keys=True,
                )
            )
        else:
            print(f"Trial {args.trial} ({by_number[args.trial].state.name.lower()}):")
            if not verdicts:
                print("  no verdict: the trial has no usable learning curve")
            for v in verdicts:
                print(f"  {v.verdict} (confidence {v.confidence:.2f})")
                print(f"    evidence: {v.evidence}")
                print(f"    recommendation: {v.recommendation}")
        return 0
    diagnosis = diagnose_study(study, config.thresholds)
    if args.json:
        print(json.dumps(diagnosis.to_dict(), indent=2, sort_keys=True))
    else:
        print(diagnosis.render_text())
    return 0


# -------------------------------------------------------------------------------- export


def cmd_export(args: argparse.Namespace) -> int:
    from thaw.search._export import ExportError, export_trial
    from thaw.search._study import StorageError, load_existing_study, open_storage

    config = _load_config(args.study_file, args.storage)
    url = str(config.storage)
    if args.tolerance is not None and not args.tolerance >= 0:
        raise UserError(f"--tolerance must be >= 0, got {args.tolerance}")
    try:
        study = load_existing_study(open_storage(url, must_exist=True), config.name, url)
    except StorageError as exc:
        raise UserError(str(exc)) from None
    _import_keras_quietly()
    from thaw.objectives import DataSourceError, ModelSourceError

    kwargs = {} if args.tolerance is None else {"tolerance": args.tolerance}
    try:
        result = export_trial(config, study, args.out, args.trial, **kwargs)
    except (ExportError, ModelSourceError, DataSourceError) as exc:
        raise UserError(str(exc)) from None
    stored = "not stored" if result.stored_val_loss is None else f"{result.stored_val_loss:.6g}"
    print(
        f"Trial {result.number}'s best-epoch model ({result.source}) written to {result.path}: "
        f"validation loss {result.measured_val_loss:.6g}, stored {stored}"
        + ("" if result.difference is None else f", difference {result.difference:.2e}")
        + "."
    )
    if result.stored_val_loss is not None and not result.matches:
        print(
            f"thaw: the validation loss differs from the stored one by more than "
            f"{result.tolerance:g}; the training is not reproducible here (another device, "
            "library version or non-deterministic ops?)",
            file=sys.stderr,
        )
        return 1
    return 0


# -------------------------------------------------------------------------------- schema


def cmd_schema(args: argparse.Namespace) -> int:
    import json

    from thaw.search._schema import study_file_schema

    print(json.dumps(study_file_schema(), indent=2, sort_keys=True))
    return 0


# ---------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="thaw",
        description="Search and diagnose fine-tuning of pretrained Keras models with Optuna.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument(
        "--version", action="version", version=f"thaw {__version__}", help="print the version"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="create or resume a study and run trials")
    run.add_argument("study_file", help="study file, e.g. studies/demo.yaml")
    run.add_argument("--n-trials", type=int, help="run this many trials (default: up to n_trials)")
    run.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    run.add_argument("--storage", help="Optuna storage URL (overrides the study file)")
    run.add_argument(
        "--budget-epochs",
        metavar="N",
        help="stop once N training epochs (all trials) are spent (overrides budget_epochs)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument(
        "--workers", type=int, default=1, help="worker processes sharing the study (PostgreSQL)"
    )
    run.add_argument("--gpus", help="GPU indices, one worker per GPU, e.g. 0,1")
    run.add_argument(
        "--artifact-dir",
        help="artifact folder every worker reaches (default: beside the SQLite file / study file)",
    )
    run.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    run.add_argument("--worker-total", type=int, help=argparse.SUPPRESS)
    run.add_argument("--worker-count", type=int, help=argparse.SUPPRESS)
    run.set_defaults(func=cmd_run)

    report = sub.add_parser("report", help="write report.md, report.html and trials.csv")
    report.add_argument("study_file")
    report.add_argument("--storage", help="Optuna storage URL (overrides the study file)")
    report.add_argument(
        "--out", help="output folder (default: <study name>-report/ beside the study file)"
    )
    report.add_argument(
        "--format",
        choices=("csv", "parquet"),
        default="csv",
        help="trial table format: trials.csv (always written) or also trials.parquet (pyarrow)",
    )
    report.set_defaults(func=cmd_report)

    compare = sub.add_parser("compare", help="compare several studies side by side")
    compare.add_argument("study_files", nargs="+", help="two or more study files")
    compare.add_argument("--out", required=True, help="output folder")
    compare.set_defaults(func=cmd_compare)

    inspect = sub.add_parser(
        "inspect", help="list a model's layers (or blocks) from the top, to choose unfrozen_layers"
    )
    inspect.add_argument(
        "model_source",
        help="'demo', a keras.applications name (MobileNetV2), a .keras file, or a study file "
        "(its model with the BatchNorm shift profile of its data)",
    )
    inspect.add_argument("--weights", default="none", help="imagenet, none, or a weights file")
    inspect.add_argument("--input-shape", help="H,W,C for an application, e.g. 96,96,3")
    inspect.add_argument("--alpha", type=float, help="width multiplier (MobileNet)")
    inspect.add_argument(
        "--cut-at",
        help="layer whose output feeds the new head (default: a model file's top classifier is "
        "cut; none: keep the whole model)",
    )
    inspect.add_argument("--unfreeze-by", choices=("layers", "blocks"), default="layers")
    inspect.set_defaults(func=cmd_inspect)

    diagnose = sub.add_parser("diagnose", help="say why validation loss rose, per study or trial")
    diagnose.add_argument("study_file", nargs="?")
    diagnose.add_argument(
        "--history",
        help="a Keras History.history saved as JSON (optional params, num_classes); "
        "see docs/diagnose.md",
    )
    diagnose.add_argument(
        "--kerastuner",
        metavar="DIR",
        help="a KerasTuner project folder (directory/project_name): each trial's verdicts and "
        "the study's findings",
    )
    diagnose.add_argument("--storage", help="Optuna storage URL (overrides the study file)")
    diagnose.add_argument("--trial", type=int, help="diagnose this trial number only")
    diagnose.add_argument("--json", action="store_true", help="machine-readable output")
    diagnose.set_defaults(func=cmd_diagnose)

    export = sub.add_parser("export", help="write a trial's best-epoch model as a .keras file")
    export.add_argument("study_file")
    export.add_argument("--storage", help="Optuna storage URL (overrides the study file)")
    export.add_argument("--trial", type=int, help="trial number (default: the best trial)")
    export.add_argument("--out", required=True, help="the .keras file to write")
    export.add_argument(
        "--tolerance",
        type=float,
        help="largest accepted difference from the stored validation loss (default 1e-4)",
    )
    export.set_defaults(func=cmd_export)

    schema = sub.add_parser(
        "schema", help="print the JSON Schema of study files (for editor completion)"
    )
    schema.set_defaults(func=cmd_schema)

    from thaw.search._dashboard import add_dashboard_parser

    add_dashboard_parser(sub)
    from thaw.search._proxy import add_proxy_parser

    add_proxy_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:
            parser.exit(
                EXIT_USAGE,
                f"thaw: error: unrecognized arguments: {' '.join(unknown)}; see "
                f"'thaw {args.command} --help'\n",
            )
    except SystemExit as exc:
        # --version, --help: printed, nothing else to do; a usage error: its one line printed
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else EXIT_USAGE
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
