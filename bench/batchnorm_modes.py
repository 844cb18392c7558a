"""Best validation loss per BatchNorm mode on the embedded default.

For feature extraction and for full fine-tuning at a few learning rates, each BatchNorm mode
(frozen, adapt, train) is trained with the same seed through thaw's objective.

    python bench/batchnorm_modes.py [--epochs 20]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    import optuna

    from thaw.objectives import (
        FineTuneObjective,
        FloatRange,
        IntRange,
        ModelSource,
        SearchSpace,
        TrainSettings,
        TrialParams,
        demo_target_data,
        load_pretrained,
    )

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pretrained = load_pretrained(ModelSource(kind="demo"))
    data = demo_target_data()
    space = SearchSpace(
        IntRange(0, pretrained.num_layers),
        FloatRange(1e-5, 1e-1, log=True),
        FloatRange(0.0, 0.6),
        FloatRange(1e-6, 1e-1, log=True),
        batchnorm=("frozen", "adapt", "train"),
    )
    objective = FineTuneObjective(
        pretrained, data, space, TrainSettings(epochs=args.epochs, batch_size=16)
    )
    shift = objective.domain_shift()
    print(f"domain-shift score (Hellinger, 0..1): overall {shift['overall']:.3f}")
    for name, score in shift["layers"].items():  # type: ignore[union-attr]
        print(f"  {name}: {score:.3f}")
    rows = [
        ("feature extraction, lr 3e-3", 0, 3e-3),
        ("all layers, lr 3e-4", pretrained.num_layers, 3e-4),
        ("all layers, lr 1e-3", pretrained.num_layers, 1e-3),
    ]
    print(f"\n| configuration | {' | '.join(('frozen', 'adapt', 'train'))} |")
    print("|---|---|---|---|")
    for label, layers, lr in rows:
        cells = []
        for mode in ("frozen", "adapt", "train"):
            study = optuna.create_study(pruner=optuna.pruners.NopPruner())
            trial = study.ask()
            params = TrialParams(layers, lr, 0.2, 1e-4, batchnorm=mode)
            try:
                best = objective.run(trial, params)
                acc = trial.user_attrs.get("val_accuracy_at_best")
                cells.append(f"{best:.3f} (acc {acc:.2f})")
            except Exception as exc:  # noqa: BLE001 - show the failure in the table
                cells.append(f"failed: {type(exc).__name__}")
        print(f"| {label} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
