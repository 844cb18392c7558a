"""Surgical fine-tuning: the block the BatchNorm shift profile points to, against unfreezing the
same number of layers from the top, on an input-level-shift case of the generalisation suite.

For each seed: the case's study file (``bench/cases.py``) loaded as thaw loads it, the domain
shift measured on the target's training images, its per-layer profile
(``objectives.shift_profile``) and the block it points to for the textbook partial trial's
number of layers (``search._budget.profile_block``). Then two fits with the same parameters
(learning rate, dropout, weight decay, BatchNorm mode, epochs), one unfreezing the profile's
block (``block_start``), one the top layers. The score is each fit's best validation loss.
It prints both per seed, their medians and the profile.

The case (f: the demo CNN, the same six shapes inverted and tinted, 100 training images per
class), the seeds, the block size (3, the textbook partial trial's) and the parameters below
were fixed before the first run.

    nice -n 5 .venv/bin/python bench/surgical.py                 # case f, seeds 0, 1, 2
    nice -n 5 .venv/bin/python bench/surgical.py --case d --seeds 0
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import cases as suite  # noqa: E402

#: The parameters both fits share (fixed before the first run).
LEARNING_RATE = 1e-3
DROPOUT = 0.0
WEIGHT_DECAY = 1e-6
BATCHNORM = "frozen"


def fit(objective: object, params: object) -> float:
    """One fit of ``params``; its best validation loss (inf when it diverged)."""
    import optuna

    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    try:
        objective.run(trial, params)  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - a diverged fit scores inf
        print(f"  ({type(exc).__name__}: {str(exc)[:120]})")
    losses = (trial.user_attrs.get("history") or {}).get("val_loss", [])
    finite = [v for v in losses if v is not None and math.isfinite(v)]
    return min(finite) if finite else math.inf


def run_seed(spec: suite.CaseSpec, seed: int, size: int, epochs: int | None) -> dict[str, object]:
    from thaw.objectives import FineTuneObjective, TrialParams, load_data, load_pretrained
    from thaw.search import load_study_file
    from thaw.search._budget import profile_block

    config = load_study_file(suite.build_case(spec, seed))
    if epochs:
        config = replace(config, train=replace(config.train, epochs=epochs))
    pretrained = load_pretrained(config.model)
    data = load_data(config.data, pretrained.input_shape)
    space = config.space.resolve(pretrained.num_layers, pretrained.unfreeze_by)
    objective = FineTuneObjective(pretrained, data, space, config.train, seed=seed)
    shift = objective.domain_shift()
    profile = objective.shift_profile(shift["layers"])  # type: ignore[arg-type]
    shifts = [g["shift"] for g in profile]
    start = profile_block(shifts, size)  # type: ignore[arg-type]
    common = {
        "unfrozen_layers": size,
        "learning_rate": LEARNING_RATE,
        "dropout": DROPOUT,
        "weight_decay": WEIGHT_DECAY,
        "batchnorm": BATCHNORM,
    }
    top = fit(objective, TrialParams(**common))  # type: ignore[arg-type]
    block = fit(objective, TrialParams(**common, block_start=start))  # type: ignore[arg-type]
    names = [str(g["name"]) for g in profile]
    return {
        "seed": seed,
        "profile": [(n, s) for n, s in zip(names, shifts, strict=True)],
        "block": (start, names[start] if start is not None else None),
        "top": top,
        "surgical": block,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="f", help="a case of bench/cases.py (default f)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--size", type=int, default=3, help="layers unfrozen (default 3)")
    parser.add_argument("--epochs", type=int, default=None, help="default: the case's")
    args = parser.parse_args(argv)
    spec = suite.CASES_BY_KEY[args.case]
    seeds = [int(s) for s in args.seeds.split(",")]
    print(
        f"case {spec.name} ({spec.shift}); {args.size} layers unfrozen; lr {LEARNING_RATE}, "
        f"dropout {DROPOUT}, weight decay {WEIGHT_DECAY}, BatchNorm {BATCHNORM}, "
        f"epochs {args.epochs or spec.epochs}"
    )
    rows = []
    for seed in seeds:
        row = run_seed(spec, seed, args.size, args.epochs)
        rows.append(row)
        profile = ", ".join(
            f"{n} {'-' if s is None else f'{s:.3f}'}"
            for n, s in row["profile"]  # type: ignore[attr-defined]
        )
        print(f"seed {seed}: shift profile (bottom to top) {profile}")
        start, first = row["block"]  # type: ignore[misc]
        print(
            f"seed {seed}: block from layer {start} ({first}): best val loss "
            f"{row['surgical']:.4f}; top {args.size}: {row['top']:.4f}"
        )
    top = statistics.median(float(r["top"]) for r in rows)  # type: ignore[arg-type]
    block = statistics.median(float(r["surgical"]) for r in rows)  # type: ignore[arg-type]
    verdict = "at or below" if block <= top else "above"
    print(
        f"median over seeds {args.seeds}: profile block {block:.4f}, top {top:.4f} "
        f"(the profile's block is {verdict} the top)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
