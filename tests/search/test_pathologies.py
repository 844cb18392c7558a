"""Real short runs on the embedded default that induce each pathology on purpose.

Each run trains the demo's pretrained CNN on the shifted target domain through the real
objective, stores its history in a real SQLite study, and must get the right verdict from the
diagnosis. ``python tests/search/test_pathologies.py`` prints the confusion table.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest

from thaw.objectives import (
    FloatRange,
    IntRange,
    ModelSource,
    SearchSpace,
    TrainSettings,
    TrialParams,
)
from thaw.reports import (
    BATCHNORM_MISMATCH,
    HEALTHY,
    LR_TOO_HIGH,
    OVERFITTING,
    UNDERFITTING,
    TrialCurves,
    diagnose_trial,
)


@dataclass(frozen=True)
class Pathology:
    name: str
    params: TrialParams
    expected: str
    epochs: int = 20
    train_per_class: int = 8
    bn_momentum: float | None = None


PATHOLOGIES = [
    Pathology("lr 1e-1 on all layers", TrialParams(5, 1e-1, 0.0, 1e-6), LR_TOO_HIGH),
    Pathology(
        "zero dropout, tiny target, many epochs",
        TrialParams(2, 2e-3, 0.0, 1e-6),
        OVERFITTING,
        epochs=40,
        train_per_class=3,
    ),
    Pathology(
        "BatchNorm training mode, momentum 0.999, few steps",
        TrialParams(5, 3e-4, 0.2, 1e-4, batchnorm="train"),
        BATCHNORM_MISMATCH,
        bn_momentum=0.999,
    ),
    Pathology(
        "BatchNorm frozen on the shifted target, head only",
        TrialParams(0, 1e-3, 0.2, 1e-4, batchnorm="frozen"),
        UNDERFITTING,
    ),
    Pathology("base frozen, lr 1e-5", TrialParams(0, 1e-5, 0.2, 1e-4), UNDERFITTING),
]
#: Peers the diagnosis compares with (underfitting and weak regularisation are relative).
PEERS = [
    TrialParams(5, 3e-4, 0.2, 1e-3),
    TrialParams(2, 2e-3, 0.3, 1e-3),
    TrialParams(1, 2e-3, 0.2, 1e-3),
    TrialParams(0, 3e-3, 0.2, 1e-4),
]


def run_pathologies(cache_dir: Path, storage: str) -> dict[str, list[str]]:
    """Run every pathology and the peers; return the verdict names per pathology."""
    import keras

    from thaw.objectives import FineTuneObjective, demo_target_data, load_pretrained

    pretrained = load_pretrained(ModelSource(kind="demo"), cache_dir=cache_dir)
    space = SearchSpace(
        IntRange(0, pretrained.num_layers),
        FloatRange(1e-5, 1e-1, log=True),
        FloatRange(0.0, 0.6),
        FloatRange(1e-6, 1e-1, log=True),
        batchnorm=("frozen", "adapt", "train"),
    )
    study = optuna.create_study(
        storage=storage, study_name="pathologies", pruner=optuna.pruners.NopPruner()
    )
    numbers: dict[str, int] = {}
    objectives: dict[tuple[int, int], Any] = {}

    def objective_for(epochs: int, train_per_class: int) -> Any:
        key = (epochs, train_per_class)
        if key not in objectives:
            data = demo_target_data(train_per_class=train_per_class)
            objectives[key] = FineTuneObjective(
                pretrained, data, space, TrainSettings(epochs=epochs, batch_size=16)
            )
        return objectives[key]

    def run(label: str, params: TrialParams, objective: Any, momentum: float | None) -> None:
        trial = study.ask()
        for name, value in vars(params).items():
            trial.set_user_attr(f"param_{name}", value)
        if momentum is not None:
            original = objective.build

            def build(p: TrialParams) -> keras.Model:
                model = original(p)
                for layer in model.layers[1].layers:
                    if isinstance(layer, keras.layers.BatchNormalization):
                        layer.momentum = momentum
                return model

            objective.build = build
        try:
            value = objective.run(trial, params)
            study.tell(trial, value)
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        except Exception:  # noqa: BLE001 - a diverged run is still diagnosed
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        finally:
            if momentum is not None:
                del objective.build
        numbers[label] = trial.number

    for i, params in enumerate(PEERS):
        run(f"peer {i}", params, objective_for(20, 8), None)
    for p in PATHOLOGIES:
        run(p.name, p.params, objective_for(p.epochs, p.train_per_class), p.bn_momentum)

    trials = {t.number: t for t in study.get_trials()}
    curves = {}
    for number, t in trials.items():
        params = {k[len("param_") :]: v for k, v in t.user_attrs.items() if k.startswith("param_")}
        base = TrialCurves.from_frozen_trial(t)
        curves[number] = TrialCurves(
            number=base.number,
            params=params,
            loss=base.loss,
            val_loss=base.val_loss,
            accuracy=base.accuracy,
            val_accuracy=base.val_accuracy,
            state=base.state,
            prune_reason=base.prune_reason,
        )
    verdicts: dict[str, list[str]] = {}
    for p in PATHOLOGIES:
        number = numbers[p.name]
        peers = [c for n, c in curves.items() if n != number]
        found = diagnose_trial(curves[number], peers, num_layers=pretrained.num_layers)
        verdicts[p.name] = [v.verdict for v in found]
    return verdicts


@pytest.fixture(scope="module")
def pathology_verdicts(demo_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("pathologies")
    return run_pathologies(demo_model_path.parent, f"sqlite:///{tmp}/p.db")


@pytest.mark.slow
@pytest.mark.parametrize("pathology", PATHOLOGIES, ids=[p.name for p in PATHOLOGIES])
def test_induced_pathology_gets_its_verdict(
    pathology: Pathology, pathology_verdicts: dict[str, list[str]]
) -> None:
    found = pathology_verdicts[pathology.name]
    assert pathology.expected in found, f"{pathology.name}: got {found}"
    assert HEALTHY not in found


def confusion_table(verdicts: dict[str, list[str]]) -> str:
    from thaw.reports import VERDICTS

    lines = ["| induced pathology | expected | " + " | ".join(VERDICTS) + " |"]
    lines.append("|---|---|" + "---|" * len(VERDICTS))
    for p in PATHOLOGIES:
        found = verdicts[p.name]
        cells = ["x" if v in found else "" for v in VERDICTS]
        lines.append(f"| {p.name} | {p.expected} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - prints the confusion table for the notes
    import tempfile

    from thaw.objectives._demo import default_cache_dir

    with tempfile.TemporaryDirectory() as tmp:
        result = run_pathologies(default_cache_dir(), f"sqlite:///{tmp}/p.db")
    print(confusion_table(result))
    sys.exit(0)
