"""Benchmark the study report on a realistic 200-trial SQLite study.

Builds (in a temporary folder) a study like thaw writes it: 20 epochs per trial, a
``history`` per trial whose shape follows its parameters (too high a learning rate with many
unfrozen layers climbs, a tiny one underfits), three textbook strategy trials, about a third
pruned (climbing / below_peers / diverged), a few failed ones. Then times:

- ``write_report`` on all 200 trials (diagnosis included, study loaded fresh as the
  CLI does)                                                  target < 5 s
- the size of ``report.html``                                target < 2 MB
- ``diagnose_study`` on a 100-trial study (loaded fresh)     target < 2 s

and prints each number with its ratio to the target (< 1.00 is within target)::

    python bench/bench_report.py [--trials 200] [--diagnose-trials 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from thaw.reports import diagnose_study, write_report

EPOCHS = 20
NUM_LAYERS = 154
WRITE_TARGET_S = 5.0
HTML_TARGET_BYTES = 2 * 1024 * 1024
DIAGNOSE_TARGET_S = 2.0
T0 = dt.datetime(2025, 3, 1, 9, 0, 0)

DISTRIBUTIONS = {
    "unfrozen_layers": IntDistribution(0, NUM_LAYERS),
    "learning_rate": FloatDistribution(1e-5, 1e-2, log=True),
    "dropout": FloatDistribution(0.0, 0.6),
    "weight_decay": FloatDistribution(1e-6, 1e-2, log=True),
    "batchnorm": CategoricalDistribution(["frozen", "adapt", "train"]),
}
STRATEGIES = (
    ("full fine-tuning", NUM_LAYERS, 1e-4),
    ("partial fine-tuning", 30, 1e-4),
    ("feature extraction", 0, 1e-3),
)


def _study_attrs() -> dict[str, Any]:
    return {
        "thaw:version": "0.1.0",
        "thaw:config": {
            "name": "bench",
            "seed": 0,
            "n_trials": 200,
            "sampler": {"name": "tpe", "n_startup_trials": 10},
            "pruner": {"compare": "median", "patience": 3, "n_warmup_steps": 5},
            "model": {"kind": "keras_app", "name": "MobileNetV2"},
            "train": {"epochs": EPOCHS, "batch_size": 32, "metric": "val_loss"},
        },
        "thaw:config_hash": "0" * 64,
        "thaw:objective_metric": "val_loss",
        "thaw:num_layers": NUM_LAYERS,
        "thaw:data": {
            "fingerprint": "bench-fingerprint",
            "class_names": ["a", "b", "c", "d", "e"],
            "train_counts": [400] * 5,
            "val_counts": [100] * 5,
        },
        "thaw:manifest": {
            "thaw": "0.1.0",
            "python": sys.version.split()[0],
            "keras": "3.6.0",
            "backend": "tensorflow",
            "tensorflow": "2.17.0",
            "optuna": optuna.__version__,
            "numpy": np.__version__,
            "device": "bench",
        },
        "thaw:domain_shift": {
            "overall": 0.35,
            "layers": {f"block{i}_conv": round(0.05 * i, 2) for i in range(1, 17)},
        },
        "thaw:determinism": {"deterministic": False, "reason": "benchmark data"},
    }


def _curves(
    rng: np.random.Generator, params: dict[str, Any]
) -> tuple[list[float | None], list[float | None]]:
    """Validation and training loss per epoch, shaped by the parameters."""
    depth = params["unfrozen_layers"] / NUM_LAYERS
    lr = params["learning_rate"]
    aggressive = math.log10(lr / 1e-4) + 2.0 * depth  # > 1.5: destroys features, climbs
    floor = 0.25 + 0.25 * abs(math.log10(lr / 3e-4)) + 0.15 * abs(depth - 0.2)
    floor += 0.1 * params["dropout"] * (params["dropout"] > 0.4)
    speed = 0.15 + 0.5 * min(lr / 1e-3, 1.0)
    climb = max(0.0, aggressive - 1.0) * 0.04
    val: list[float | None] = []
    train: list[float | None] = []
    for epoch in range(1, EPOCHS + 1):
        base = floor + (1.6 - floor) * math.exp(-speed * epoch)
        v = base + climb * max(0, epoch - 4) ** 1.3 + rng.normal(0, 0.01)
        t = base * 0.8 - 0.01 * epoch * (1 - params["dropout"]) + rng.normal(0, 0.005)
        val.append(round(max(v, 0.01), 5))
        train.append(round(max(t, 0.005), 5))
    if aggressive > 2.6:  # diverges: NaN from some epoch on
        start = int(rng.integers(2, 6))
        for i in range(start, EPOCHS):
            val[i] = train[i] = None
    return val, train


def _trial(rng: np.random.Generator, number: int, params: dict[str, Any], **attrs: Any) -> Any:
    val, train = _curves(rng, params)
    state = TrialState.COMPLETE
    stop = EPOCHS
    extra: dict[str, Any] = dict(attrs)
    if number >= 3 and rng.random() < 0.04:
        state, stop = TrialState.FAIL, 0
        extra["fail_reason"] = "ResourceExhaustedError: OOM when allocating tensor"
    elif any(v is None for v in val):
        state, stop = TrialState.PRUNED, next(i for i, v in enumerate(val) if v is None) + 1
        extra.update(prune_reason="diverged", prune_detail="loss is NaN")
    elif number >= 3 and rng.random() < 0.3:
        stop = int(rng.integers(4, 12))
        finite = [v for v in val[:stop] if v is not None]
        climbing = len(finite) > 3 and finite[-1] > min(finite) * 1.05
        state = TrialState.PRUNED
        extra["prune_reason"] = "climbing" if climbing else "below_peers"
    val, train = val[:stop], train[:stop]
    if state == TrialState.PRUNED:
        extra["prune_epoch"] = stop
    finite = [(v, i) for i, v in enumerate(val) if v is not None]
    history = {
        "loss": train,
        "val_loss": val,
        "accuracy": [None if t is None else round(min(1.0, 1.05 - t / 2), 4) for t in train],
        "val_accuracy": [None if v is None else round(max(0.0, 1.0 - v / 2), 4) for v in val],
    }
    user_attrs: dict[str, Any] = {"history": history} if val else {}
    if finite:
        best, index = min(finite)
        user_attrs.update(
            best_val_loss=best,
            best_epoch=index + 1,
            final_val_loss=val[-1],
            val_accuracy_at_best=history["val_accuracy"][index],
            epochs_run=len(val),
        )
    user_attrs.update(extra)
    start = T0 + dt.timedelta(minutes=10 * number)
    trial = optuna.trial.create_trial(
        state=state,
        params=params,
        distributions=dict(DISTRIBUTIONS),
        value=min(finite)[0] if state == TrialState.COMPLETE and finite else None,
        intermediate_values={i + 1: (float("nan") if v is None else v) for i, v in enumerate(val)},
        user_attrs=user_attrs,
    )
    trial.datetime_start = start
    trial.datetime_complete = start + dt.timedelta(seconds=30 * max(stop, 1))
    return trial


def build_study(path: Path, n_trials: int, seed: int = 0) -> optuna.Study:
    """A thaw-like SQLite study of ``n_trials`` trials at ``path``."""
    rng = np.random.default_rng(seed)
    study = optuna.create_study(storage=f"sqlite:///{path}", study_name=path.stem)
    for key, value in _study_attrs().items():
        study.set_user_attr(key, value)
    trials: list[FrozenTrial] = []
    for number in range(n_trials):
        if number < len(STRATEGIES):
            name, layers, lr = STRATEGIES[number]
            params = {
                "unfrozen_layers": layers,
                "learning_rate": lr,
                "dropout": 0.2,
                "weight_decay": 1e-5,
                "batchnorm": "frozen",
            }
            trials.append(_trial(rng, number, params, strategy=name, warmup_epochs=2))
            continue
        params = {
            "unfrozen_layers": int(rng.integers(0, NUM_LAYERS + 1)),
            "learning_rate": float(10 ** rng.uniform(-5, -2)),
            "dropout": round(float(rng.uniform(0, 0.6)), 3),
            "weight_decay": float(10 ** rng.uniform(-6, -2)),
            "batchnorm": str(rng.choice(["frozen", "adapt", "train"])),
        }
        trials.append(_trial(rng, number, params))
    study.add_trials(trials)
    return study


def _timed(fn: Any, repeat: int) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--diagnose-trials", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="thaw-bench-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        study = build_study(root / "bench.db", args.trials)
        small = build_study(root / "bench100.db", args.diagnose_trials, seed=1)
        built = time.perf_counter() - start
        counts: dict[str, int] = {}
        for t in study.get_trials(deepcopy=False):
            counts[t.state.name] = counts.get(t.state.name, 0) + 1
        print(
            f"built {args.trials}-trial study ({counts}) and a {args.diagnose_trials}-trial "
            f"study in {built:.2f} s"
        )

        out = root / "report"
        url = f"sqlite:///{root / 'bench.db'}"

        def fresh_report() -> Any:
            # As the CLI does it: a fresh storage handle (no cached trials), then the report.
            loaded = optuna.load_study(study_name=study.study_name, storage=url)
            return write_report(loaded, out, "sqlite:///bench.db")

        write_times, files = _timed(fresh_report, args.repeat)
        html_bytes = files.html.stat().st_size
        small_url = f"sqlite:///{root / 'bench100.db'}"
        diag_times, _ = _timed(
            lambda: diagnose_study(
                optuna.load_study(study_name=small.study_name, storage=small_url)
            ),
            args.repeat,
        )
        again = write_report(study, root / "again", "sqlite:///bench.db")
        same = all(
            a.read_bytes() == b.read_bytes()
            for a, b in [
                (files.html, again.html),
                (files.markdown, again.markdown),
                (files.csv, again.csv),
                (files.summary_json, again.summary_json),
            ]
        )

    def line(name: str, value: float, unit: str, target: float) -> str:
        return (
            f"{name:<46} {value:10.3f} {unit:<3} target < {target:g} {unit:<3} "
            f"ratio {value / target:5.2f}"
        )

    write_s = min(write_times)
    diag_s = min(diag_times)
    print(
        line(
            f"load + write_report ({args.trials} trials, best of {args.repeat})",
            write_s,
            "s",
            WRITE_TARGET_S,
        )
    )
    print(
        f"{'':<46} runs: "
        + ", ".join(f"{t:.3f}" for t in write_times)
        + f" s (median {statistics.median(write_times):.3f})"
    )
    print(line("report.html size", html_bytes / 1024 / 1024, "MB", HTML_TARGET_BYTES / 1024**2))
    print(
        line(
            f"load + diagnose_study ({args.diagnose_trials} trials, best of {args.repeat})",
            diag_s,
            "s",
            DIAGNOSE_TARGET_S,
        )
    )
    print(f"{'':<46} runs: " + ", ".join(f"{t:.3f}" for t in diag_times) + " s")
    print(f"re-render byte-identical: {same}")
    ok = write_s < WRITE_TARGET_S and html_bytes < HTML_TARGET_BYTES and diag_s < DIAGNOSE_TARGET_S
    print("all within target" if ok and same else "NOT within target")
    return 0 if ok and same else 1


if __name__ == "__main__":
    raise SystemExit(main())
