"""Make the labelled set of real fine-tuning runs that ``bench/diagnosis_accuracy.py`` scores.

Every run is a real Keras fit through thaw's own objective (``FineTuneObjective``), stored in an
Optuna SQLite study (one per model family), and its history, params and end-of-trial probes are
written to a JSON file. Labels are guaranteed by construction:

- ``healthy``: moderate settings (partial fine-tuning, lr 1e-3, dropout, BatchNorm statistics
  adapted to the target) on a training set large enough not to overfit in the epochs given;
- ``overfitting``: 3 images per class, no dropout, almost no weight decay, many epochs;
- ``lr_too_high``: learning rate 0.1-0.3 with every layer unfrozen (Adam);
- ``too_little_finetuning``: lr 1e-5 (or head only) for a few epochs: the weights barely move;
- ``underfit_bn_frozen_shift``: head only, BatchNorm frozen with the source-domain statistics on
  the shifted target domain;
- ``batchnorm_mismatch``: BatchNorm layers trained with momentum 0.999 (batch statistics in
  training, stale source statistics in inference).

Two model families: the embedded demo CNN (6 shapes, shifted render domain) and the glyphs
residual network (5 target letters, shifted ink/paper domain). scikit-learn's digits are not
used. Run with ``nice -n 10``: ``python bench/make_labelled_runs.py --out bench/labelled_runs.json``
(about 10-15 minutes of CPU).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from thaw.objectives import (
    FloatRange,
    IntRange,
    ModelSource,
    SearchSpace,
    TrainSettings,
    TrialParams,
)

#: Expected primary verdict per label.
EXPECTED = {
    "healthy": "healthy",
    "overfitting": "overfitting",
    "lr_too_high": "lr_too_high",
    "too_little_finetuning": "underfitting",
    "underfit_bn_frozen_shift": "underfitting",
    "batchnorm_mismatch": "batchnorm_mismatch",
}


@dataclass(frozen=True)
class Recipe:
    label: str
    params: TrialParams
    epochs: int
    train_per_class: int
    bn_momentum: float | None = None
    note: str = ""


@dataclass
class Family:
    name: str
    source: str
    recipes: list[Recipe] = field(default_factory=list)


def _recipes(all_layers: int, family: str) -> list[Recipe]:
    """Three or four runs per label, varied in depth, learning rate and regularisation."""
    top = max(1, all_layers // 2)
    big = 40 if family == "demo" else 40
    r: list[Recipe] = []
    # Healthy runs fine-tune at least half the base at lr ~1e-3 for about 12 epochs: shallower
    # or slower (lr 3e-4) runs underfit the glyphs' shifted domain, longer ones overfit it.
    if family == "glyphs":
        # (Every layer at lr 1e-3 stayed at chance on glyphs: full fine-tuning is no healthy
        # construction there.)
        # 16 epochs overfit the 40 images per class: stop at 12 as the run that converged did.
        healthy = ((top, 1e-3, 0.3, 12), (top, 1e-3, 0.25, 12), (top, 1e-3, 0.35, 12))
    else:
        healthy = ((top, 1e-3, 0.3, 12), (all_layers, 3e-4, 0.3, 12), (top, 2e-3, 0.2, 12))
    for u, lr, d, epochs in healthy:
        r.append(Recipe("healthy", TrialParams(u, lr, d, 1e-4, "adapt"), epochs, big))
    # Overfitting: a few images, no regularisation; the glyph network explodes at lr 3e-3 with
    # 3 images per class, so its frozen-BatchNorm variant uses 1e-3.
    frozen_lr = 1e-3 if family == "glyphs" else 3e-3
    for u, lr, bn in (
        (top, 2e-3, "adapt"),
        (all_layers, 1e-3, "adapt"),
        (top, frozen_lr, "frozen"),
    ):
        r.append(Recipe("overfitting", TrialParams(u, lr, 0.0, 1e-6, bn), 30, 3))
    for lr, bn in ((0.3, "adapt"), (0.1, "frozen"), (0.2, "adapt")):
        r.append(Recipe("lr_too_high", TrialParams(all_layers, lr, 0.1, 1e-6, bn), 10, 20))
    for u, lr in ((0, 1e-5), (1, 1e-5), (top, 3e-6)):
        r.append(Recipe("too_little_finetuning", TrialParams(u, lr, 0.2, 1e-4, "adapt"), 6, 20))
    for lr, d in ((1e-3, 0.2), (3e-3, 0.3), (1e-3, 0.0)):
        r.append(Recipe("underfit_bn_frozen_shift", TrialParams(0, lr, d, 1e-4, "frozen"), 10, 20))
    for u, lr in ((all_layers, 3e-4), (all_layers, 1e-3), (top, 5e-4)):
        r.append(
            Recipe("batchnorm_mismatch", TrialParams(u, lr, 0.2, 1e-4, "train"), 12, 20, 0.999)
        )
    return r


def _space(num_layers: int) -> SearchSpace:
    return SearchSpace(
        IntRange(0, num_layers),
        FloatRange(1e-7, 1.0, log=True),
        FloatRange(0.0, 0.9),
        FloatRange(1e-7, 0.1, log=True),
        batchnorm=("frozen", "adapt", "train"),
    )


def _data(family: str, train_per_class: int) -> Any:
    if family == "demo":
        from thaw.objectives import demo_target_data

        return demo_target_data(train_per_class=train_per_class, val_per_class=40)
    from thaw.objectives import glyphs_target_data

    return glyphs_target_data(train_per_class=train_per_class, val_per_class=40)


def run_family(
    family: str,
    storage: str,
    seed: int,
    log: Any,
    orders: list[int] | None = None,
    probe_images: int = TrainSettings().probe_images,
) -> list[dict[str, Any]]:
    import keras

    from thaw.objectives import FineTuneObjective, load_pretrained

    pretrained = load_pretrained(ModelSource(kind=family))
    num_layers = pretrained.num_layers
    recipes = _recipes(num_layers, family)
    random.Random(seed).shuffle(recipes)  # finish order mixes the labels ("as stored" peers)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=storage,
        study_name=f"labelled-{family}",
        pruner=optuna.pruners.NopPruner(),
        load_if_exists=orders is not None,
    )
    space = _space(num_layers)
    objectives: dict[tuple[int, int], Any] = {}
    runs: list[dict[str, Any]] = []
    class_names: tuple[str, ...] = ()
    chosen = list(range(len(recipes))) if orders is None else orders
    for order in chosen:
        recipe = recipes[order]
        key = (recipe.epochs, recipe.train_per_class)
        if key not in objectives:
            data = _data(family, recipe.train_per_class)
            class_names = data.class_names
            objectives[key] = FineTuneObjective(
                pretrained,
                data,
                space,
                TrainSettings(epochs=recipe.epochs, batch_size=16, probe_images=probe_images),
            )
        objective = objectives[key]
        if order == 0 or "thaw:data" not in study.user_attrs:
            study.set_user_attr("thaw:objective_metric", "val_loss")
            study.set_user_attr("thaw:num_layers", num_layers)
            study.set_user_attr("thaw:data", {"class_names": list(class_names)})
        study.enqueue_trial(
            {
                "unfrozen_layers": recipe.params.unfrozen_layers,
                "learning_rate": recipe.params.learning_rate,
                "dropout": recipe.params.dropout,
                "weight_decay": recipe.params.weight_decay,
                "batchnorm": recipe.params.batchnorm,
            }
        )
        trial = study.ask()
        trial.set_user_attr("labelled:order", order)
        trial.set_user_attr("labelled:label", recipe.label)
        params = space.suggest(trial)
        if recipe.bn_momentum is not None:
            original = objective.build
            momentum = recipe.bn_momentum

            def build(p: TrialParams, original: Any = original, momentum: float = momentum) -> Any:
                model = original(p)
                for layer in model.layers[1].layers:
                    if isinstance(layer, keras.layers.BatchNormalization):
                        layer.momentum = momentum
                return model

            objective.build = build
        start = time.perf_counter()
        state = "COMPLETE"
        try:
            value = objective.run(trial, params)
            study.tell(trial, value)
        except optuna.TrialPruned:
            state = "PRUNED"
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        except Exception:  # noqa: BLE001 - a diverged run is labelled all the same
            state = "FAIL"
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        finally:
            if recipe.bn_momentum is not None:
                del objective.build
        frozen = study.get_trials(deepcopy=False)[-1]
        attrs = frozen.user_attrs
        runs.append(
            {
                "id": f"{family}-{order:02d}-{recipe.label}",
                "family": family,
                "order": order,
                "label": recipe.label,
                "expected": EXPECTED[recipe.label],
                "number": frozen.number,
                "state": state,
                "params": dict(frozen.params),
                "epochs": recipe.epochs,
                "train_per_class": recipe.train_per_class,
                "bn_momentum": recipe.bn_momentum,
                "num_classes": len(class_names),
                "num_layers": num_layers,
                "history": attrs.get("history", {}),
                "probes": attrs.get("probes", {}),
                "prune_reason": attrs.get("prune_reason"),
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
        print(
            f"{family} {order:2d} {recipe.label:<26} {state:<8} {runs[-1]['seconds']:5.1f}s",
            file=log,
            flush=True,
        )
    return runs


def _write(path: Path, runs: list[dict[str, Any]]) -> None:
    payload = {
        "description": "Labelled real fine-tuning runs; see bench/make_labelled_runs.py",
        "expected": EXPECTED,
        "runs": runs,
    }
    path.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")


def export_family(storage: str, family: str, seed: int = 0) -> list[dict[str, Any]]:
    """The runs of a finished (or interrupted) family study, rebuilt from storage: the labels
    follow from the recipe order (the same seeded shuffle as :func:`run_family`)."""
    study = optuna.load_study(study_name=f"labelled-{family}", storage=storage)
    num_layers = int(study.user_attrs["thaw:num_layers"])
    class_names = study.user_attrs["thaw:data"]["class_names"]
    recipes = _recipes(num_layers, family)
    random.Random(seed).shuffle(recipes)
    runs = []
    for frozen in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if frozen.state.name not in ("COMPLETE", "PRUNED", "FAIL"):
            continue
        attrs = frozen.user_attrs
        order = int(attrs.get("labelled:order", frozen.number))
        recipe = recipes[order]
        runs.append(
            {
                "id": f"{family}-{order:02d}-{recipe.label}",
                "family": family,
                "order": order,
                "label": recipe.label,
                "expected": EXPECTED[recipe.label],
                "number": frozen.number,
                "state": frozen.state.name,
                "params": dict(frozen.params),
                "epochs": recipe.epochs,
                "train_per_class": recipe.train_per_class,
                "bn_momentum": recipe.bn_momentum,
                "num_classes": len(class_names),
                "num_layers": num_layers,
                "history": attrs.get("history", {}),
                "probes": attrs.get("probes", {}),
                "prune_reason": attrs.get("prune_reason"),
            }
        )
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/labelled_runs.json", help="histories JSON")
    parser.add_argument("--db", default="labelled_runs.db", help="SQLite file for the studies")
    parser.add_argument("--families", default="demo,glyphs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--orders", help="run only these recipe positions, e.g. 17,16,15")
    parser.add_argument(
        "--probe-images",
        type=int,
        default=TrainSettings().probe_images,
        help="images per split the end-of-trial probes see (train.probe_images)",
    )
    parser.add_argument(
        "--export",
        nargs="+",
        metavar="FAMILY=DB",
        help="no training: rebuild the JSON from these family studies (e.g. demo=a.db)",
    )
    args = parser.parse_args(argv)
    runs: list[dict[str, Any]] = []
    if args.export:
        for item in args.export:
            family, _, db_path = item.partition("=")
            runs += export_family(f"sqlite:///{db_path}", family, args.seed)
        seen: set[str] = set()
        runs = [r for r in runs if not (r["id"] in seen or seen.add(r["id"]))]  # type: ignore[func-returns-value]
        runs.sort(key=lambda r: (r["family"], r["order"]))
        _write(Path(args.out), runs)
        print(f"{len(runs)} runs exported to {args.out}", file=sys.stderr)
        return 0
    db = Path(args.db)
    orders = [int(x) for x in args.orders.split(",")] if args.orders else None
    if db.exists() and orders is None:
        db.unlink()
    storage = f"sqlite:///{db}"
    for family in args.families.split(","):
        runs += run_family(family, storage, args.seed, sys.stderr, orders, args.probe_images)
    _write(Path(args.out), runs)
    print(f"{len(runs)} runs written to {args.out} and {db}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
