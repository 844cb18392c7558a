"""thaw's search against the engines its users already have, at equal budgets in training epochs.

Engines, all on the same search space (unfrozen layers, learning rate, dropout, weight decay,
BatchNorm mode) and the same model surgery (thaw's own ``FineTuneObjective.build``: a fresh copy
of the pretrained base, ``freeze()`` with the BatchNorm mode, a new head, AdamW):

* thaw, defaults (``thaw.search.run_study`` with ``budget_epochs``): informed start chosen by
  the domain-shift score, multivariate TPE, climbing rule + noise-aware Hyperband rungs.
* KerasTuner Hyperband (``max_epochs`` = the case's epochs per trial, factor 3).
* KerasTuner BayesianOptimization (every trial trains the full epochs).
* Optuna TPE without pruning (default ``TPESampler``, every trial trains the full epochs).

BatchNorm handling is the same for every engine: the mode is a searched choice of
``frozen`` (BN layers' ``trainable = False``, inference mode with pretrained statistics),
``adapt`` (statistics re-estimated on the target images, then frozen) and ``train`` (BN layers
above the lowest unfrozen layer train, in training mode), applied by thaw's ``freeze()``.

Every engine stops when the budget of training epochs (every trial, pruned ones included) is
spent. The score is the best validation loss seen in any epoch within 0.5x and 1x the budget.

    nice -n 10 .venv/bin/python bench/search_vs_peers.py            # full: 3 seeds, all cases
    nice -n 10 .venv/bin/python bench/search_vs_peers.py --quick    # 1 seed, small budget
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]

#: (case, study file, epochs per trial, full budget, quick budget)
CASES: tuple[tuple[str, str, int, int, int], ...] = (
    ("demo", "studies/demo.yaml", 20, 150, 40),
    ("glyphs", "studies/glyphs.yaml", 20, 150, 40),
)
ENGINES = ("thaw", "kt_hyperband", "kt_bayesian", "optuna_tpe")
BATCHNORM_HANDLING = {
    "thaw": "searched (frozen/adapt/train), informed start ordered by the domain-shift score",
    "kt_hyperband": "searched as hp.Choice(frozen/adapt/train), thaw's freeze()",
    "kt_bayesian": "searched as hp.Choice(frozen/adapt/train), thaw's freeze()",
    "optuna_tpe": "searched as suggest_categorical(frozen/adapt/train), thaw's freeze()",
}


class BudgetSpent(Exception):
    """Raised inside a KerasTuner fit once the epoch budget is spent."""


@dataclass
class Case:
    name: str
    config: object  # StudyConfig
    objective: object  # FineTuneObjective
    budget: int


def load_case(name: str, study_file: Path, epochs: int, budget: int) -> Case:
    from thaw.objectives import FineTuneObjective, load_data, load_pretrained
    from thaw.search import load_study_file

    config = load_study_file(study_file)
    config = replace(config, train=replace(config.train, epochs=epochs))
    pretrained = load_pretrained(config.model)
    data = load_data(config.data, pretrained.input_shape)
    space = config.space.resolve(pretrained.num_layers, pretrained.unfreeze_by)
    objective = FineTuneObjective(pretrained, data, space, config.train, seed=config.seed)
    return Case(name, config, objective, budget)


# ----------------------------------------------------------------------------- the engines


def curve_of_study(study: object) -> list[float]:
    """Every epoch's val loss, trial after trial (trials ran one at a time, in number order)."""
    out: list[float] = []
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):  # type: ignore[attr-defined]
        history = trial.user_attrs.get("history") or {}
        out += [v if v is not None else math.inf for v in history.get("val_loss", [])]
    return out


def run_thaw(case: Case, seed: int, workdir: Path) -> list[float]:
    from thaw.search import PrunerConfig, SamplerConfig
    from thaw.search._run import RunOptions, run_study

    config = replace(
        case.config,  # type: ignore[type-var]
        sampler=SamplerConfig(),  # thaw's defaults, whatever the study file pins
        pruner=PrunerConfig(),
        reference_trials=True,
        name=f"thaw-{case.name}-{seed}",
        seed=seed,
        storage=f"sqlite:///{workdir}/thaw-{case.name}-{seed}.db",
        n_trials=10_000,
        budget_epochs=case.budget,
    )
    result = run_study(
        config,
        options=RunOptions(budget_epochs=case.budget, artifact_dir=workdir / "artifacts"),
        on_message=lambda m: None,
    )
    return curve_of_study(result.study)


def run_optuna_tpe(case: Case, seed: int, workdir: Path) -> list[float]:
    import optuna

    from thaw.search import EpochBudget

    study = optuna.create_study(
        storage=f"sqlite:///{workdir}/tpe-{case.name}-{seed}.db",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.NopPruner(),
    )
    budget = EpochBudget(case.budget)
    objective = case.objective
    objective.seed = seed  # type: ignore[attr-defined]
    objective.epoch_cap = lambda: budget.remaining(study)  # type: ignore[attr-defined]
    try:
        study.optimize(objective, n_trials=10_000, callbacks=[budget], catch=(Exception,))  # type: ignore[arg-type]
    finally:
        objective.epoch_cap = None  # type: ignore[attr-defined]
    return curve_of_study(study)


def run_keras_tuner(case: Case, seed: int, workdir: Path, kind: str) -> list[float]:
    import keras
    import keras_tuner as kt

    from thaw.objectives import TrialParams

    objective = case.objective
    space = objective.space  # type: ignore[attr-defined]
    epochs = case.config.train.epochs  # type: ignore[attr-defined]
    curve: list[float] = []

    class Counter(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            value = (logs or {}).get("val_loss")
            curve.append(float(value) if value is not None else math.inf)
            if len(curve) >= case.budget:
                self.model.stop_training = True
                raise kt.errors.FatalError("epoch budget spent")

    class FineTune(kt.HyperModel):
        def build(self, hp: kt.HyperParameters) -> keras.Model:
            ul, lr, do, wd = (
                space.unfrozen_layers,
                space.learning_rate,
                space.dropout,
                space.weight_decay,
            )
            params = TrialParams(
                unfrozen_layers=hp.Int("unfrozen_layers", ul.low, ul.high),
                learning_rate=hp.Float("learning_rate", lr.low, lr.high, sampling="log"),
                dropout=hp.Float("dropout", do.low, do.high),
                weight_decay=hp.Float("weight_decay", wd.low, wd.high, sampling="log"),
                batchnorm=hp.Choice("batchnorm", list(space.batchnorm)),
            )
            keras.backend.clear_session()
            return objective.build(params)  # type: ignore[attr-defined]

        def fit(self, hp: kt.HyperParameters, model: keras.Model, *args, **kwargs):  # type: ignore[no-untyped-def]
            callbacks = [*kwargs.pop("callbacks", []), Counter()]
            return model.fit(
                **objective._fit_data(seed),  # type: ignore[attr-defined]
                epochs=kwargs.get("epochs", epochs),
                initial_epoch=kwargs.get("initial_epoch", 0),
                callbacks=callbacks,
                verbose=0,
            )

    common = {
        "objective": "val_loss",
        "seed": seed,
        "directory": str(workdir),
        "project_name": f"{kind}-{case.name}-{seed}",
        "overwrite": True,
        "max_consecutive_failed_trials": 1000,
    }
    if kind == "kt_hyperband":
        tuner = kt.Hyperband(
            FineTune(), max_epochs=epochs, factor=3, hyperband_iterations=100, **common
        )
    else:
        tuner = kt.BayesianOptimization(FineTune(), max_trials=10_000, **common)
    try:
        tuner.search(epochs=epochs, verbose=0)
    except kt.errors.FatalError:
        pass
    except BudgetSpent:
        pass
    return curve[: case.budget]


def run_engine(engine: str, case: Case, seed: int, workdir: Path) -> list[float]:
    import keras

    keras.utils.set_random_seed(seed)
    if engine == "thaw":
        return run_thaw(case, seed, workdir)
    if engine == "optuna_tpe":
        return run_optuna_tpe(case, seed, workdir)
    return run_keras_tuner(case, seed, workdir, engine)


def best_within(curve: list[float], epochs: int) -> float:
    finite = [v for v in curve[:epochs] if math.isfinite(v)]
    return min(finite) if finite else math.inf


# ------------------------------------------------------------------------------------ main


def print_summary(
    results: dict[tuple[str, str], list[tuple[int, float, float]]], engines: list[str]
) -> None:
    """The medians over seeds and the issue's targets, from per-run results."""
    print(f"{'case':<8} {'engine':<13} {'median@0.5x':>12} {'median@1x':>10}")
    cases = sorted({c for c, _ in results}, key=[c[0] for c in CASES].index)
    for case_name in cases:
        for engine in engines:
            rows = results.get((case_name, engine), [])
            if rows:
                print(
                    f"{case_name:<8} {engine:<13} "
                    f"{statistics.median(r[1] for r in rows):>12.4f} "
                    f"{statistics.median(r[2] for r in rows):>10.4f}"
                )
    if "thaw" in engines:
        print("\nTargets:")
        for case_name in cases:
            if (case_name, "thaw") not in results:
                continue
            thaw_rows = results[(case_name, "thaw")]
            if (case_name, "kt_hyperband") in results:
                thaw_half = statistics.median(r[1] for r in thaw_rows)
                hb_full = statistics.median(r[2] for r in results[(case_name, "kt_hyperband")])
                verdict = "holds" if thaw_half <= hb_full else "MISSED"
                print(
                    f"  {case_name}: thaw median at 0.5x {thaw_half:.4f} <= Hyperband median at "
                    f"1x {hb_full:.4f}: {verdict}"
                )
            for engine in engines:
                if engine == "thaw" or (case_name, engine) not in results:
                    continue
                peer = {s: w for s, _, w in results[(case_name, engine)]}
                wins = sum(1 for s, _, w in thaw_rows if s in peer and w <= peer[s])
                verdict = "holds" if wins >= math.ceil(2 * len(thaw_rows) / 3) else "MISSED"
                print(
                    f"  {case_name}: thaw <= {engine} at 1x in {wins} of {len(thaw_rows)} "
                    f"seeds: {verdict}"
                )


ROW = re.compile(
    r"^(?P<case>\S+)\s+(?P<engine>\S+)\s+(?P<seed>\d+)\s+(?P<half>\S+)\s+(?P<whole>\S+)"
    r"\s+\d+\s+\d+$"
)


def summarise_logs(paths: list[Path]) -> int:
    """Medians and targets from the per-run rows of earlier outputs of this bench (runs of
    different engines on the same cases and seeds, e.g. thaw alone after a change of thaw)."""
    results: dict[tuple[str, str], list[tuple[int, float, float]]] = {}
    engines: list[str] = []
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            m = ROW.match(line.strip())
            if not m or m["engine"] not in ENGINES:
                continue
            key = (m["case"], m["engine"])
            results.setdefault(key, []).append(
                (int(m["seed"]), float(m["half"]), float(m["whole"]))
            )
            print(line)
    for engine in ENGINES:
        if any(e == engine for _, e in results):
            engines.append(engine)
    print("\nMedians over seeds:")
    print_summary(results, engines)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, small budget")
    parser.add_argument("--seeds", type=int, help="number of seeds (default 3; quick 1)")
    parser.add_argument(
        "--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1"
    )
    parser.add_argument("--cases", help="comma-separated cases (default: all available)")
    parser.add_argument("--engines", help=f"comma-separated engines from {','.join(ENGINES)}")
    parser.add_argument("--budget", type=int, help="epochs per engine run (overrides the case's)")
    parser.add_argument("--epochs", type=int, help="epochs per trial (overrides the case's)")
    parser.add_argument(
        "--keep", type=Path, help="keep each engine run's storage under this folder (default: temp)"
    )
    parser.add_argument(
        "--summarise",
        nargs="+",
        type=Path,
        metavar="LOG",
        help="print the medians and targets from earlier outputs of this bench, run nothing",
    )
    args = parser.parse_args(argv)
    if args.summarise:
        return summarise_logs(args.summarise)
    logging.basicConfig(level=logging.WARNING)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("thaw").setLevel(logging.ERROR)
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")

    n_seeds = args.seeds or (1 if args.quick else 3)
    wanted = args.cases.split(",") if args.cases else None
    engines = args.engines.split(",") if args.engines else list(ENGINES)
    print("BatchNorm handling per engine:")
    for engine in engines:
        print(f"  {engine:<13} {BATCHNORM_HANDLING[engine]}")
    results: dict[tuple[str, str], list[tuple[int, float, float]]] = {}
    started = time.perf_counter()
    cases_run: list[Case] = []
    for name, study_file, epochs, full, quick in CASES:
        path = ROOT / study_file
        if wanted and name not in wanted:
            continue
        if not path.exists():
            print(f"(case {name}: {study_file} not found, skipped)")
            continue
        budget = args.budget or (quick if args.quick else full)
        epochs = args.epochs or epochs
        cases_run.append(load_case(name, path, epochs, budget))
        print(
            f"Case {name}: {study_file}, {epochs} epochs per trial, budget {budget} epochs per "
            f"engine run"
        )
    print(f"{n_seeds} seeds; seed by seed, so a cut-short run still compares every engine.")
    print(
        f"\n{'case':<8} {'engine':<13} {'seed':>4} {'best@0.5x':>10} {'best@1x':>9} "
        f"{'epochs':>7} {'s':>6}"
    )
    for seed in range(args.first_seed, args.first_seed + n_seeds):
        for case in cases_run:
            for engine in engines:
                t0 = time.perf_counter()
                if args.keep:
                    args.keep.mkdir(parents=True, exist_ok=True)
                    curve = run_engine(engine, case, seed, args.keep)
                else:
                    with tempfile.TemporaryDirectory(prefix="thaw-bench-") as tmp:
                        curve = run_engine(engine, case, seed, Path(tmp))
                budget = case.budget
                half, whole = best_within(curve, budget // 2), best_within(curve, budget)
                results.setdefault((case.name, engine), []).append((seed, half, whole))
                print(
                    f"{case.name:<8} {engine:<13} {seed:>4} {half:>10.4f} {whole:>9.4f} "
                    f"{len(curve):>7} {time.perf_counter() - t0:>6.0f}",
                    flush=True,
                )
    print(f"\nMedians over seeds (total {time.perf_counter() - started:.0f} s):")
    print_summary(results, engines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
