"""Is the glyphs case a real fine-tuning problem? Quick numbers, not a test (~2-4 min on 2 cores).

Prints the pretrained model's accuracy on held-out source letters and on source letters drawn in
the target domain (how strong the shift is), the BatchNorm domain-shift score, then the best
validation loss (and accuracy there) on the target for feature extraction, partial and full
fine-tuning with BatchNorm frozen vs adapted, against a network trained from scratch on the 150
target images. Chance is ln 5 = 1.609.

    python bench/glyphs_case.py [--epochs 20]

Measured 2026-11-30 on the shared 2-core machine (loaded; times are long), default arguments:
source-letter accuracy 0.970 in the source domain, 0.100 in the target domain (collapses to one
class with frozen BatchNorm; AdaBN alone recovers 0.35); domain-shift score 0.457.

| configuration | frozen | adapt |
|---|---|---|
| feature extraction, lr 3e-3 | 1.616 (acc 0.22) | 1.434 (acc 0.34) |
| top 3 layers, lr 3e-4 | 1.555 (acc 0.29) | 1.323 (acc 0.41) |
| all layers, lr 3e-4 | 1.528 (acc 0.36) | 1.045 (acc 0.58) |
| all layers, lr 1e-3 | 1.598 (acc 0.25) | 1.595 (acc 0.27) |
| from scratch, all layers, lr 1e-3, BN train | 1.611 (acc 0.17) | |
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    import keras
    import optuna

    from thaw.objectives import (
        FineTuneObjective,
        FloatRange,
        IntRange,
        ModelSource,
        SearchSpace,
        TrainSettings,
        TrialParams,
        load_pretrained,
    )
    from thaw.objectives._glyphs import (
        GLYPHS_SOURCE_CLASSES,
        GLYPHS_SOURCE_DOMAIN,
        GLYPHS_TARGET_DOMAIN,
        build_glyphs_network,
        glyphs_pretrained_model_path,
        glyphs_target_data,
        render_glyphs,
    )

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    start = time.perf_counter()
    path = glyphs_pretrained_model_path()
    print(f"pretrained model: {path} ({time.perf_counter() - start:.0f} s, cached after once)")
    full = keras.saving.load_model(path, compile=False, safe_mode=True)
    for label, domain in (("source", GLYPHS_SOURCE_DOMAIN), ("target", GLYPHS_TARGET_DOMAIN)):
        x, y = render_glyphs(500, GLYPHS_SOURCE_CLASSES, domain, seed=12345)
        acc = float((full.predict(x.astype("float32"), verbose=0).argmax(1) == y).mean())
        print(f"source-letter accuracy, {label} domain (held out): {acc:.3f} (chance 0.100)")

    start = time.perf_counter()
    data = glyphs_target_data()
    print(
        f"target data: train {data.x_train.shape}, val {data.x_val.shape}, classes "
        f"{list(data.class_names)} ({time.perf_counter() - start:.1f} s to render)"
    )
    pretrained = load_pretrained(ModelSource(kind="glyphs"))
    print(f"model: {pretrained.description}, {pretrained.num_layers} layers")
    space = SearchSpace(
        IntRange(0, pretrained.num_layers),
        FloatRange(1e-5, 1e-1, log=True),
        FloatRange(0.0, 0.6),
        FloatRange(1e-6, 1e-1, log=True),
        batchnorm=("frozen", "adapt", "train"),
    )
    settings = TrainSettings(epochs=args.epochs, batch_size=16)
    objective = FineTuneObjective(pretrained, data, space, settings)
    shift = objective.domain_shift()
    print(f"domain-shift score (Hellinger, 0..1): overall {shift['overall']:.3f}")

    def trial_row(obj: FineTuneObjective, params: TrialParams) -> str:
        study = optuna.create_study(pruner=optuna.pruners.NopPruner())
        trial = study.ask()
        t0 = time.perf_counter()
        try:
            best = obj.run(trial, params)
        except Exception as exc:  # noqa: BLE001 - show the failure in the table
            return f"failed: {type(exc).__name__}"
        acc = trial.user_attrs.get("val_accuracy_at_best")
        epoch = trial.user_attrs.get("best_epoch")
        return f"{best:.3f} (acc {acc:.2f}, ep {epoch}, {time.perf_counter() - t0:.0f} s)"

    n = pretrained.num_layers
    rows = [
        ("feature extraction, lr 3e-3", 0, 3e-3),
        (f"top {n // 3} layers, lr 3e-4", n // 3, 3e-4),
        ("all layers, lr 3e-4", n, 3e-4),
        ("all layers, lr 1e-3", n, 1e-3),
    ]
    print(f"\nbest val loss on the target ({args.epochs} epochs; chance ln 5 = {math.log(5):.3f})")
    print("| configuration | frozen | adapt |")
    print("|---|---|---|")
    for label, layers, lr in rows:
        cells = [
            trial_row(objective, TrialParams(layers, lr, 0.2, 1e-4, mode))
            for mode in (
                "frozen",
                "adapt",
            )
        ]
        print(f"| {label} | {' | '.join(cells)} |", flush=True)

    # Baseline: the same architecture with random weights, trained on the target alone.
    with tempfile.TemporaryDirectory() as tmp:
        keras.utils.set_random_seed(0)
        scratch_path = Path(tmp) / "scratch.keras"
        build_glyphs_network().save(scratch_path)
        scratch = load_pretrained(ModelSource(kind="file", path=scratch_path, cut_at="features"))
        scratch_obj = FineTuneObjective(scratch, data, space, settings)
        cell = trial_row(scratch_obj, TrialParams(scratch.num_layers, 1e-3, 0.2, 1e-4, "train"))
        print(f"| from scratch (random weights), all layers, lr 1e-3, BN train | {cell} | |")


if __name__ == "__main__":
    main()
