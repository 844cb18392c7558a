"""thaw's search against the engines its users already have, on a generalisation suite of ten
cases, at budgets counted in training epochs.

The cases (``bench/cases.py``) vary what decides fine-tuning: the architecture (the demo CNN, a
residual network, MobileNetV2 alpha 0.35 and MobileNetV3Small alpha 0.75 at 32 px, all
pretrained here on generated images), the shift (input-level: blur, noise, contrast, inversion,
tint; and new classes), the target size (5 to 100 training images per class) and whether
training BatchNorm helps or hurts. Each case is a study file (``model: {source: file}``,
``data: {source: npz}``) that thaw runs as a user would; seeds 0, 1, 2 draw the target images and
seed the search.

Engines (Hyperband's budget is B epochs, 150 by default; every epoch of every trial counts,
pruned ones included):

* ``thaw``: ``thaw.search.run_study`` with ``budget_epochs`` = B/2 and the study file as
  written (the closed loop on where this version of thaw has it).
* ``thaw_loop_off``: the same study with ``loop: off`` (the closed loop off), so the loop's
  effect is measured; where this version of thaw has no closed loop it prints a note and runs
  the same study as ``thaw``.
* ``kt_hyperband_user``: KerasTuner Hyperband as a user writes it from the Keras
  transfer-learning guide: the ``.keras`` model's classifier cut, the top ``hp.Int`` layers
  unfrozen (BatchNorm layers among them train, in training mode), a new ``Dense`` head after
  ``hp.Float`` dropout, AdamW with ``hp.Float`` learning rate (log) and weight decay;
  ``max_epochs`` = epochs per trial, factor 3; B epochs.
* ``kt_hyperband_thaw``: the same Hyperband on thaw's search space and model surgery (thaw's
  ``FineTuneObjective.build``: ``freeze()`` with a searched BatchNorm mode frozen/adapt/train, a
  new head, AdamW); B epochs.
* ``kt_bayesian``: KerasTuner BayesianOptimization, thaw's space and surgery; B epochs.
* ``optuna_tpe``: Optuna's default ``TPESampler`` without pruning, thaw's space and surgery;
  B epochs.
* ``optuna_gp``: Optuna's ``GPSampler`` without pruning; B epochs. It needs PyTorch (and scipy);
  where PyTorch is not installed the engine is skipped with a note (``pip install torch``).
  Optuna's AutoSampler is not used: it is loaded from OptunaHub over the network.
* ``textbook``: each textbook strategy trained alone with thaw's surgery, BatchNorm frozen and a
  constant learning rate, one fit of B/2 epochs (thaw's budget) with the best epoch kept: full
  fine-tuning (all layers, lr 1e-3), partial (top 3 layers, lr 1e-4), feature extraction (lr
  1e-3); the best of the three is reported.

The score of a run is the best validation loss of any epoch within B/2 and within B epochs
(thaw and textbook: within their B/2). The bench prints, per case, the medians over seeds and
the checks:

1. thaw's median best at B/2 <= the median at B of the better of the two Hyperband forms;
2. on every seed, thaw's best <= the best textbook strategy's;
3. no trial that ended above its best trained more than ``pruner.patience`` + 2 epochs past its
   best; also the epochs spent past the best by such trials, as a share of thaw's budget.

Every check is printed for ``thaw`` and ``thaw_loop_off``. All rows go to a JSON file in
``bench/out/`` (``--summarise`` merges such files and prints the tables and checks again).
KerasTuner's BayesianOptimization needs scipy and scikit-learn: ``pip install -e '.[bench]'``.

    nice -n 10 .venv/bin/python bench/search_vs_peers.py                  # every case x 3 seeds
    nice -n 10 .venv/bin/python bench/search_vs_peers.py --quick          # 1 seed, B = 40
    nice -n 10 .venv/bin/python bench/search_vs_peers.py --cases a,b --engines thaw,textbook \\
        --seeds 0,1
    nice -n 10 .venv/bin/python bench/search_vs_peers.py --summarise bench/out/svp-*.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import cases as suite  # noqa: E402

from thaw.objectives import SCHEDULES  # noqa: E402

ENGINES = (
    "thaw",
    "thaw_loop_off",
    "kt_hyperband_user",
    "kt_hyperband_thaw",
    "kt_bayesian",
    "optuna_tpe",
    "optuna_gp",
    "textbook",
)
#: Engines run at half of Hyperband's budget.
HALF_BUDGET = ("thaw", "thaw_loop_off", "textbook")
HYPERBAND = ("kt_hyperband_user", "kt_hyperband_thaw")
BATCHNORM_HANDLING = {
    "thaw": "searched (frozen/adapt/train), informed start ordered by the domain-shift score",
    "thaw_loop_off": "as thaw, closed loop off",
    "kt_hyperband_user": "unfrozen BatchNorm layers train (training mode), the rest frozen",
    "kt_hyperband_thaw": "searched as hp.Choice(frozen/adapt/train), thaw's freeze()",
    "kt_bayesian": "searched as hp.Choice(frozen/adapt/train), thaw's freeze()",
    "optuna_tpe": "searched as suggest_categorical(frozen/adapt/train), thaw's freeze()",
    "optuna_gp": "searched as suggest_categorical(frozen/adapt/train), thaw's freeze()",
    "textbook": "frozen (thaw's freeze())",
}


class EngineUnavailable(Exception):
    """The engine cannot run here (a missing optional package)."""


@dataclass
class Case:
    spec: suite.CaseSpec
    seed: int
    config: Any  # StudyConfig
    objective: Any  # FineTuneObjective
    budget: int  # Hyperband's budget B


@dataclass
class Run:
    """One engine run: every epoch's val loss in order, and per-trial summaries."""

    curve: list[float]
    trials: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


#: The range each fine-tuning method is searched in with ``--methods``.
METHOD_RANGES: dict[str, tuple[float, float, bool]] = {
    "l2sp": (1e-4, 1e-1, True),
    "lr_decay": (0.5, 1.0, False),
    "augment": (0.0, 1.0, False),
}
#: Surgical fine-tuning with ``--methods block_start``: the block's lowest layer, anywhere.
SURGICAL_METHOD = "block_start"
SURGICAL_RANGE = (0, "all")
#: The choices a categorical method is searched among with ``--methods``.
METHOD_CHOICES: dict[str, tuple[int, ...]] = {"lora_rank": (0, 4, 8, 16)}


def load_case(
    spec: suite.CaseSpec,
    seed: int,
    budget: int,
    epochs: int | None,
    methods: tuple[str, ...] = (),
    precise_batchnorm: bool = False,
    rate_guard: bool = False,
    schedule: str | None = None,
) -> Case:
    from thaw.objectives import FineTuneObjective, FloatRange, load_data, load_pretrained
    from thaw.search import load_study_file

    config = load_study_file(suite.build_case(spec, seed))
    if epochs:
        config = replace(config, train=replace(config.train, epochs=epochs))
    if precise_batchnorm:
        config = replace(config, train=replace(config.train, precise_batchnorm=True))
    if rate_guard:
        config = replace(config, rate_guard=True)
    if schedule is not None:
        config = replace(config, train=replace(config.train, schedule=schedule))
    if methods:  # searched besides the case's own space
        ranges: dict[str, Any] = {
            m: FloatRange(*METHOD_RANGES[m]) for m in methods if m in METHOD_RANGES
        }
        if SURGICAL_METHOD in methods:
            ranges[SURGICAL_METHOD] = SURGICAL_RANGE
        ranges |= {m: METHOD_CHOICES[m] for m in methods if m in METHOD_CHOICES}
        config = replace(config, space=replace(config.space, **ranges))
    pretrained = load_pretrained(config.model)
    data = load_data(config.data, pretrained.input_shape)
    space = config.space.resolve(pretrained.num_layers, pretrained.unfreeze_by)
    objective = FineTuneObjective(pretrained, data, space, config.train, seed=seed)
    return Case(spec, seed, config, objective, budget)


# ----------------------------------------------------------------------------- the engines


def trials_of_study(study: Any) -> tuple[list[float], list[dict[str, Any]]]:
    """Every epoch's val loss, trial after trial (trials ran one at a time, in number order),
    and per trial: state, epochs trained, best epoch, whether it ended above its best."""
    curve: list[float] = []
    trials: list[dict[str, Any]] = []
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        history = trial.user_attrs.get("history") or {}
        losses = [v if v is not None else math.inf for v in history.get("val_loss", [])]
        curve += losses
        if not losses:
            continue
        best_i = min(range(len(losses)), key=lambda i: losses[i])
        trials.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                "strategy": trial.user_attrs.get("strategy"),
                "params": dict(trial.params),
                "epochs": len(losses),
                "best_epoch": best_i + 1,
                "best": losses[best_i],
                "past_best": len(losses) - (best_i + 1),
                "ended_above_best": losses[-1] > losses[best_i],
            }
        )
    return curve, trials


def run_thaw(case: Case, workdir: Path, loop: bool) -> Run:
    from thaw.search._run import RunOptions, run_study

    budget = case.budget // 2
    config = replace(
        case.config,
        name=f"thaw-{case.spec.name}-{case.seed}-{'on' if loop else 'off'}",
        storage=f"sqlite:///{workdir}/thaw-{case.spec.name}-{case.seed}-{int(loop)}.db",
        n_trials=10_000,
        budget_epochs=budget,
        keep_best=False,
    )
    extra: dict[str, Any] = {"patience": config.pruner.patience}
    if hasattr(config, "loop"):
        config = replace(config, loop=loop)
        extra["loop"] = loop
    else:
        extra["loop"] = None
        if not loop:
            print("  (note: this version of thaw has no closed loop; thaw_loop_off runs thaw)")
    result = run_study(
        config,
        options=RunOptions(budget_epochs=budget, artifact_dir=workdir / "artifacts"),
        on_message=lambda m: None,
    )
    curve, trials = trials_of_study(result.study)
    return Run(curve, trials, extra)


def run_optuna(case: Case, workdir: Path, kind: str) -> Run:
    import optuna

    from thaw.search import EpochBudget

    if kind == "optuna_gp":
        try:
            import torch  # noqa: F401
        except ImportError:
            raise EngineUnavailable("GPSampler needs PyTorch: pip install torch") from None
        sampler: optuna.samplers.BaseSampler = optuna.samplers.GPSampler(seed=case.seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=case.seed)
    study = optuna.create_study(
        storage=f"sqlite:///{workdir}/{kind}-{case.spec.name}-{case.seed}.db",
        sampler=sampler,
        pruner=optuna.pruners.NopPruner(),
    )
    budget = EpochBudget(case.budget)
    objective = case.objective
    objective.seed = case.seed
    objective.epoch_cap = lambda: budget.remaining(study)
    try:
        study.optimize(objective, n_trials=10_000, callbacks=[budget], catch=(Exception,))
    finally:
        objective.epoch_cap = None
    curve, trials = trials_of_study(study)
    return Run(curve, trials)


def textbook_curves(case: Case, epochs: int) -> dict[str, list[float]]:
    """Each textbook strategy trained alone, BatchNorm frozen, one fit of ``epochs``: its
    validation loss per epoch (inf where it was not finite; a diverged fit keeps its epochs)."""
    import optuna

    from thaw.objectives import TrialParams
    from thaw.search._budget import TEXTBOOK, textbook_params

    objective = case.objective
    settings = objective.settings
    # The article's recipes: a constant learning rate, whatever thaw's trials use.
    objective.settings = replace(settings, epochs=epochs, schedule="constant")
    curves: dict[str, list[float]] = {}
    try:
        for strategy, _, _ in TEXTBOOK:
            params = textbook_params(objective.space, strategy, "frozen")
            params["batchnorm"] = "frozen"
            study = optuna.create_study(pruner=optuna.pruners.NopPruner())
            trial = study.ask()
            try:
                objective.run(trial, TrialParams(**params))
            except Exception as exc:  # noqa: BLE001 - a diverged strategy scores its epochs
                print(f"  (textbook {strategy}: {type(exc).__name__}: {str(exc)[:120]})")
            history = trial.user_attrs.get("history") or {}
            curves[strategy] = [
                v if v is not None else math.inf for v in history.get("val_loss", [])
            ]
    finally:
        objective.settings = settings
    return curves


def run_textbook(case: Case) -> Run:
    """Each textbook strategy alone, BatchNorm frozen, one fit of B/2 epochs."""
    epochs = case.budget // 2
    curves = textbook_curves(case, epochs)
    per_strategy = {strategy: best_within(losses, epochs) for strategy, losses in curves.items()}
    best = min(per_strategy, key=lambda s: per_strategy[s])
    return Run(curves[best], extra={"per_strategy": per_strategy, "best_strategy": best})


def _tuner(kind: str, hypermodel: Any, case: Case, workdir: Path) -> Any:
    import keras_tuner as kt

    common = {
        "objective": "val_loss",
        "seed": case.seed,
        "directory": str(workdir),
        "project_name": f"{kind}-{case.spec.name}-{case.seed}",
        "overwrite": True,
        "max_consecutive_failed_trials": 1000,
    }
    epochs = case.config.train.epochs
    if kind in HYPERBAND:
        return kt.Hyperband(
            hypermodel, max_epochs=epochs, factor=3, hyperband_iterations=100, **common
        )
    return kt.BayesianOptimization(hypermodel, max_trials=10_000, **common)


def run_keras_tuner(case: Case, workdir: Path, kind: str) -> Run:
    import keras
    import keras_tuner as kt
    import numpy as np

    from thaw.objectives import TrialParams

    objective = case.objective
    space = objective.space
    epochs = case.config.train.epochs
    batch_size = case.config.train.batch_size
    curve: list[float] = []

    class Counter(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            value = (logs or {}).get("val_loss")
            curve.append(float(value) if value is not None else math.inf)
            if len(curve) >= case.budget:
                self.model.stop_training = True
                raise kt.errors.FatalError("epoch budget spent")

    if kind == "kt_hyperband_user":
        # As a user writes it: the model file, its classifier cut, raw images (the model
        # rescales them itself).
        full = keras.saving.load_model(case.config.model.path, compile=False)
        full_weights = full.get_weights()
        data = objective.data
        x_train = np.asarray(data.x_train, dtype="float32")
        x_val = np.asarray(data.x_val, dtype="float32")
        n_layers = len(full.layers) - 2  # all but the input and the classifier

        class UserFineTune(kt.HyperModel):
            def build(self, hp: kt.HyperParameters) -> keras.Model:
                full.set_weights(full_weights)
                base = keras.Model(full.inputs, full.layers[-2].output)
                unfreeze = hp.Int("unfrozen_layers", 0, n_layers)
                base.trainable = True
                for i, layer in enumerate(base.layers):
                    layer.trainable = i >= len(base.layers) - unfreeze
                x = keras.layers.Dropout(hp.Float("dropout", 0.0, 0.6))(base.output)
                outputs = keras.layers.Dense(data.num_classes, activation="softmax")(x)
                model = keras.Model(base.inputs, outputs)
                model.compile(
                    optimizer=keras.optimizers.AdamW(
                        learning_rate=hp.Float("learning_rate", 1e-4, 1e-2, sampling="log"),
                        weight_decay=hp.Float("weight_decay", 1e-6, 1e-1, sampling="log"),
                    ),
                    loss="sparse_categorical_crossentropy",
                    metrics=["accuracy"],
                )
                return model

            def fit(self, hp: kt.HyperParameters, model: keras.Model, *args, **kwargs):  # type: ignore[no-untyped-def]
                return model.fit(
                    x_train,
                    data.y_train,
                    validation_data=(x_val, data.y_val),
                    batch_size=batch_size,
                    epochs=kwargs.get("epochs", epochs),
                    initial_epoch=kwargs.get("initial_epoch", 0),
                    callbacks=[*kwargs.pop("callbacks", []), Counter()],
                    verbose=0,
                )

        hypermodel: kt.HyperModel = UserFineTune()
    else:

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
                return objective.build(params)

            def fit(self, hp: kt.HyperParameters, model: keras.Model, *args, **kwargs):  # type: ignore[no-untyped-def]
                return model.fit(
                    **objective._fit_data(case.seed),
                    epochs=kwargs.get("epochs", epochs),
                    initial_epoch=kwargs.get("initial_epoch", 0),
                    callbacks=[*kwargs.pop("callbacks", []), Counter()],
                    verbose=0,
                )

        hypermodel = FineTune()
    tuner = _tuner(kind, hypermodel, case, workdir)
    with contextlib.suppress(kt.errors.FatalError):
        tuner.search(epochs=epochs, verbose=0)
    return Run(curve[: case.budget])


def run_engine(engine: str, case: Case, workdir: Path) -> Run:
    import keras

    keras.utils.set_random_seed(case.seed)
    if engine in ("thaw", "thaw_loop_off"):
        return run_thaw(case, workdir, loop=engine == "thaw")
    if engine in ("optuna_tpe", "optuna_gp"):
        return run_optuna(case, workdir, engine)
    if engine == "textbook":
        return run_textbook(case)
    return run_keras_tuner(case, workdir, engine)


def best_within(curve: list[float], epochs: int) -> float:
    finite = [v for v in curve[:epochs] if math.isfinite(v)]
    return min(finite) if finite else math.inf


def climbing(trials: list[dict[str, Any]], budget: int) -> dict[str, Any]:
    """Epochs trained past the best by trials that ended above it: their share of ``budget``,
    and the most any one of them trained past its best."""
    above = [t for t in trials if t["ended_above_best"]]
    spent = sum(t["past_best"] for t in above)
    return {
        "past_best_epochs": spent,
        "past_best_share": spent / budget if budget else 0.0,
        "max_past_best": max((t["past_best"] for t in above), default=0),
    }


# ------------------------------------------------------------------------------ reporting


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def print_summary(rows: list[dict[str, Any]]) -> None:
    """Medians over seeds, per-seed values, and the checks, from the result rows."""
    order = [c.name for c in suite.CASES]
    case_names = sorted(
        {r["case"] for r in rows}, key=lambda c: order.index(c) if c in order else 99
    )
    engines = [e for e in ENGINES if any(r["engine"] == e for r in rows)]
    print(f"\n{'case':<20} {'engine':<18} {'median@B/2':>10} {'median@B':>9}  per seed (score)")
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault((r["case"], r["engine"]), []).append(r)
    for case_name in case_names:
        for engine in engines:
            rs = sorted(by.get((case_name, engine), []), key=lambda r: r["seed"])
            if not rs:
                continue
            half = _median(rs, "best_half")
            whole = "" if engine in HALF_BUDGET else f"{_median(rs, 'best_full'):>9.4f}"
            seeds = " ".join(f"{r['seed']}:{r['score']:.4f}" for r in rs)
            print(f"{case_name:<20} {engine:<18} {half:>10.4f} {whole:>9}  {seeds}")
    for thaw in ("thaw", "thaw_loop_off"):
        if thaw not in engines:
            continue
        print(f"\nChecks for {thaw}:")
        for case_name in case_names:
            mine = sorted(by.get((case_name, thaw), []), key=lambda r: r["seed"])
            if not mine:
                continue
            half = _median(mine, "best_half")
            hb = [
                (_median(by[(case_name, e)], "best_full"), e)
                for e in HYPERBAND
                if (case_name, e) in by
            ]
            if hb:
                value, form = min(hb)
                verdict = "PASS" if half <= value else "FAIL"
                print(
                    f"  {verdict} {case_name}: median at B/2 {half:.4f} <= better Hyperband "
                    f"({form}) median at B {value:.4f}"
                )
            book = {r["seed"]: r["score"] for r in by.get((case_name, "textbook"), [])}
            if book:
                cells = [
                    f"seed {r['seed']} {r['score']:.4f} vs {book[r['seed']]:.4f}"
                    for r in mine
                    if r["seed"] in book
                ]
                ok = all(r["score"] <= book[r["seed"]] for r in mine if r["seed"] in book)
                print(
                    f"  {'PASS' if ok else 'FAIL'} {case_name}: <= best textbook strategy on "
                    f"every seed ({'; '.join(cells)})"
                )
            worst = max(r["max_past_best"] for r in mine)
            limit = mine[0]["patience"] + 2
            shares = ", ".join(f"{r['past_best_share']:.1%}" for r in mine)
            print(
                f"  {'PASS' if worst <= limit else 'FAIL'} {case_name}: most epochs past the "
                f"best of a trial that ended above it {worst} <= patience + 2 = {limit}; epochs "
                f"spent past the best, share of the budget per seed: {shares}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, B = the case's quick budget")
    parser.add_argument("--seeds", help="comma-separated seeds (default 0,1,2; quick: 0)")
    parser.add_argument("--cases", help="comma-separated case keys a-l (default: all)")
    parser.add_argument("--engines", help=f"comma-separated, from {','.join(ENGINES)}")
    parser.add_argument("--budget", type=int, help="Hyperband's budget B (overrides the case's)")
    parser.add_argument("--epochs", type=int, help="epochs per trial (overrides the case's)")
    parser.add_argument(
        "--methods",
        default="",
        help=f"comma-separated fine-tuning methods every engine's space searches too, from "
        f"{','.join([*METHOD_RANGES, *METHOD_CHOICES])},{SURGICAL_METHOD} (ranges: "
        f"{METHOD_RANGES}, {SURGICAL_METHOD} {SURGICAL_RANGE}; choices: {METHOD_CHOICES}; "
        f"default: none)",
    )
    parser.add_argument(
        "--precise-batchnorm",
        action="store_true",
        help="every study sets train.precise_batchnorm: true (default: the study's own, off)",
    )
    parser.add_argument(
        "--rate-guard",
        action="store_true",
        help="every study sets rate_guard: on (default: the study's own, off)",
    )
    parser.add_argument(
        "--schedule",
        choices=SCHEDULES,
        help="every study sets train.schedule (default: the study's own); the textbook "
        "strategies always train at a constant rate",
    )
    parser.add_argument(
        "--keep", type=Path, help="keep each engine run's storage under this folder (default: temp)"
    )
    parser.add_argument(
        "--out", type=Path, help="JSON file of the results (default: bench/out/svp-<time>.json)"
    )
    parser.add_argument(
        "--summarise",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="print the tables and checks from earlier JSON outputs of this bench, run nothing",
    )
    args = parser.parse_args(argv)
    if args.summarise:
        rows: list[dict[str, Any]] = []
        for path in args.summarise:
            rows += json.loads(path.read_text(encoding="utf-8"))["rows"]
        print_summary(rows)
        return 0
    logging.basicConfig(level=logging.WARNING)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("thaw").setLevel(logging.ERROR)
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")

    seeds = (
        [int(s) for s in args.seeds.split(",")]
        if args.seeds
        else ([0] if args.quick else list(suite.SEEDS))
    )
    keys = args.cases.split(",") if args.cases else [c.key for c in suite.CASES]
    engines = args.engines.split(",") if args.engines else list(ENGINES)
    unknown = [e for e in engines if e not in ENGINES] + [
        k for k in keys if k not in suite.CASES_BY_KEY
    ]
    methods = tuple(m for m in args.methods.split(",") if m)
    unknown += [
        m
        for m in methods
        if m not in METHOD_RANGES and m not in METHOD_CHOICES and m != SURGICAL_METHOD
    ]
    if unknown:
        parser.error(f"unknown engines, cases or methods: {unknown}")
    out = args.out or ROOT / "bench" / "out" / f"svp-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    print("BatchNorm handling per engine:")
    for engine in engines:
        print(f"  {engine:<18} {BATCHNORM_HANDLING[engine]}")
    print(f"Seeds {seeds}; seed by seed, so a cut-short run still compares every engine.")
    print(
        f"\n{'case':<20} {'engine':<18} {'seed':>4} {'best@B/2':>9} {'best@B':>9} "
        f"{'epochs':>6} {'s':>6} {'s/epoch':>7}"
    )
    rows = []
    started = time.perf_counter()
    for seed in seeds:
        for key in keys:
            spec = suite.CASES_BY_KEY[key]
            budget = args.budget or (spec.quick_budget if args.quick else spec.budget)
            case = load_case(
                spec,
                seed,
                budget,
                args.epochs,
                methods,
                args.precise_batchnorm,
                args.rate_guard,
                args.schedule,
            )
            for engine in engines:
                t0 = time.perf_counter()
                try:
                    if args.keep:
                        args.keep.mkdir(parents=True, exist_ok=True)
                        run = run_engine(engine, case, args.keep)
                    else:
                        with tempfile.TemporaryDirectory(prefix="thaw-bench-") as tmp:
                            run = run_engine(engine, case, Path(tmp))
                except EngineUnavailable as exc:
                    print(f"{spec.name:<20} {engine:<18} {seed:>4} skipped: {exc}", flush=True)
                    continue
                seconds = time.perf_counter() - t0
                own = budget // 2 if engine in HALF_BUDGET else budget
                half, whole = best_within(run.curve, budget // 2), best_within(run.curve, budget)
                row: dict[str, Any] = {
                    "case": spec.name,
                    "engine": engine,
                    "seed": seed,
                    "methods": list(methods),
                    "precise_batchnorm": case.config.train.precise_batchnorm,
                    "rate_guard": getattr(case.config, "rate_guard", False),
                    "schedule": getattr(case.config.train, "schedule", "constant"),
                    "budget": budget,
                    "engine_budget": own,
                    "epochs_per_trial": case.config.train.epochs,
                    "best_half": half,
                    "best_full": whole,
                    "score": half if engine in HALF_BUDGET else whole,
                    "epochs": len(run.curve),
                    "seconds": seconds,
                    "patience": case.config.pruner.patience,
                    **climbing(run.trials, own),
                    **run.extra,
                    "trials": run.trials,
                }
                rows.append(row)
                shown_whole = "-" if engine in HALF_BUDGET else f"{whole:.4f}"
                if engine == "textbook":
                    row["epochs"] = 3 * own  # three strategies, each B/2 epochs
                print(
                    f"{spec.name:<20} {engine:<18} {seed:>4} {half:>9.4f} {shown_whole:>9} "
                    f"{row['epochs']:>6} {seconds:>6.0f} {seconds / max(1, row['epochs']):>7.2f}",
                    flush=True,
                )
                out.write_text(
                    json.dumps(
                        {
                            "args": vars(args)
                            | {"out": str(out), "keep": str(args.keep), "summarise": None},
                            "rows": rows,
                        },
                        indent=1,
                        default=str,
                    ),
                    encoding="utf-8",
                )
    print(f"\nTotal {time.perf_counter() - started:.0f} s; results in {out}")
    print_summary(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
