"""Shared fixtures: real Optuna studies in SQLite that look like what thaw writes.

Fixtures (use these rather than importing this module, whose name is not unique):

- ``thaw_study``: the reference study built by :func:`build_thaw_study` (session-scoped,
  read-only). Trials 0-2 are the textbook strategies, 3 is the best searched configuration,
  4/5/6 were pruned (climbing / below_peers / diverged), 7 failed, 8 ties with 3, 9 has
  only intermediate values, 10 has a history but no summary attrs, 11 is still running.
  Expected ranking by best val loss: 3, 8, 10, 1, 2, 4, 0, 9, 5, 6, then failed 7.
- ``make_study(study_name=..., direction=..., attrs=True)``: a fresh SQLite study.
- ``add_trial``: :func:`add_thaw_trial`, adds one trial with a realistic ``history`` and
  the user attrs of ``docs/storage.md``.
- ``thaw_params``: :func:`params`, a parameter dict in thaw's search space.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import optuna
import pytest
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

optuna.logging.set_verbosity(optuna.logging.WARNING)

EPOCHS = 10
NUM_LAYERS = 154
T0 = dt.datetime(2025, 3, 1, 9, 0, 0)

DISTRIBUTIONS: dict[str, BaseDistribution] = {
    "unfrozen_layers": IntDistribution(0, NUM_LAYERS),
    "learning_rate": FloatDistribution(1e-5, 1e-2, log=True),
    "dropout": FloatDistribution(0.0, 0.5),
    "weight_decay": FloatDistribution(1e-6, 1e-2, log=True),
    "batchnorm": CategoricalDistribution(["frozen", "adapt", "train"]),
}

STUDY_ATTRS: dict[str, Any] = {
    "thaw:version": "0.1.0",
    "thaw:config": {
        "study": {"name": "flowers"},
        "seed": 1234,
        "sampler": {"name": "TPESampler", "n_startup_trials": 5},
        "pruner": {"name": "thaw", "patience": 2},
        "train": {"epochs": EPOCHS, "batch_size": 32},
        "storage": "postgresql://thaw:***@db/thaw",
    },
    "thaw:config_hash": "3f5a9c0e1d2b4a6f8e7d9c1b3a5f7e9d2c4b6a8f0e1d3c5b7a9f1e3d5c7b9a1f",
    "thaw:objective_metric": "val_loss",
    "thaw:num_layers": NUM_LAYERS,
    "thaw:data": {
        "fingerprint": "d41d8cd98f00b204",
        "class_names": ["daisy", "dandelion", "roses"],
        "train_counts": [500, 600, 520],
        "val_counts": [120, 150, 130],
    },
    "thaw:manifest": {
        "thaw": "0.1.0",
        "python": "3.11.9",
        "keras": "3.6.0",
        "backend": "tensorflow",
        "tensorflow": "2.17.0",
        "jax": None,
        "optuna": "5.0.0",
        "numpy": "2.1.0",
        "device": "NVIDIA H100",
    },
}


def params(
    unfrozen_layers: int,
    learning_rate: float,
    dropout: float = 0.2,
    weight_decay: float = 1e-5,
    batchnorm: str | None = None,
) -> dict[str, Any]:
    """A parameter dict in thaw's search space (``batchnorm`` only when given)."""
    out: dict[str, Any] = {
        "unfrozen_layers": unfrozen_layers,
        "learning_rate": learning_rate,
        "dropout": dropout,
        "weight_decay": weight_decay,
    }
    if batchnorm is not None:
        out["batchnorm"] = batchnorm
    return out


def add_thaw_trial(
    study: optuna.Study,
    *,
    state: TrialState,
    params: dict[str, Any],
    val_loss: Sequence[float | None] = (),
    train_loss: Sequence[float | None] | None = None,
    val_accuracy: Sequence[float | None] | None = None,
    user_attrs: dict[str, Any] | None = None,
    summary_attrs: bool = True,
    history: bool = True,
    intermediate: bool = True,
    duration_s: float = 60.0,
) -> optuna.trial.FrozenTrial:
    """Add a trial as thaw would store it.

    ``val_loss[i]`` is epoch ``i + 1`` (``None`` = non-finite). Unless switched off, writes
    ``history``, intermediate values, and the summary attrs (``best_val_loss``,
    ``best_epoch``, ``final_val_loss``, ``val_accuracy_at_best``, ``epochs_run``) computed
    from the curve. The objective follows the study: ``val_accuracy`` when the study
    attr ``thaw:objective_metric`` says so (direction maximize), else ``val_loss``.
    ``user_attrs`` are added last and override anything computed.
    """
    val = list(val_loss)
    train = (
        list(train_loss)
        if train_loss is not None
        else [None if v is None else round(v * 0.8 - 0.02 * i, 4) for i, v in enumerate(val)]
    )
    acc = (
        list(val_accuracy)
        if val_accuracy is not None
        else [None if v is None else round(max(0.0, min(1.0, 1.05 - v * 0.5)), 4) for v in val]
    )
    attrs: dict[str, Any] = {}
    if history and val:
        attrs["history"] = {
            "loss": train,
            "val_loss": val,
            "accuracy": [None if v is None else round(min(1.0, 1.1 - v * 0.5), 4) for v in train],
            "val_accuracy": acc,
        }
    maximize = study.user_attrs.get("thaw:objective_metric") == "val_accuracy"
    objective = acc if maximize else val
    finite = [(-v if maximize else v, i) for i, v in enumerate(objective) if v is not None]
    best_index = min(finite)[1] if finite else None
    if summary_attrs and val:
        finite_loss = [v for v in val if v is not None]
        attrs.update(
            best_val_loss=min(finite_loss) if finite_loss else None,
            best_epoch=None if best_index is None else best_index + 1,
            final_val_loss=val[-1],
            val_accuracy_at_best=None if best_index is None else acc[best_index],
            epochs_run=len(val),
        )
    attrs.update(user_attrs or {})
    value = None
    if state == TrialState.COMPLETE and best_index is not None:
        value = objective[best_index]
    trial = optuna.trial.create_trial(
        state=state,
        params=params,
        distributions={name: DISTRIBUTIONS[name] for name in params},
        value=value,
        intermediate_values=(
            {i + 1: (float("nan") if v is None else v) for i, v in enumerate(objective)}
            if intermediate
            else None
        ),
        user_attrs=attrs,
    )
    start = T0 + dt.timedelta(hours=len(study.get_trials(deepcopy=False)))
    trial.datetime_start = start
    if state.is_finished():
        trial.datetime_complete = start + dt.timedelta(seconds=duration_s)
    study.add_trial(trial)
    return study.get_trials(deepcopy=False)[-1]


def build_thaw_study(
    storage: str, study_name: str = "flowers-finetune", attrs: bool = True
) -> optuna.Study:
    """The reference study: 3 strategy trials, climbing/pruned/diverged/failed trials,
    a tie, trials with missing attrs, one running trial (see the module docstring).
    """
    study = optuna.create_study(storage=storage, study_name=study_name, direction="minimize")
    if attrs:
        for key, value in STUDY_ATTRS.items():
            study.set_user_attr(key, value)
    C, P, F = TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL
    # 0: full fine-tuning, overfits after epoch 4
    add_thaw_trial(
        study,
        state=C,
        params=params(NUM_LAYERS, 1e-4),
        val_loss=[0.9, 0.7, 0.62, 0.6, 0.63, 0.68, 0.72, 0.75, 0.8, 0.85],
        user_attrs={"strategy": "full fine-tuning", "warmup_epochs": 0},
        duration_s=610.5,
    )
    # 1: partial fine-tuning, flat after epoch 5
    add_thaw_trial(
        study,
        state=C,
        params=params(30, 1e-4),
        val_loss=[0.85, 0.6, 0.5, 0.46, 0.45, 0.45, 0.46, 0.47, 0.47, 0.48],
        user_attrs={"strategy": "partial fine-tuning", "warmup_epochs": 2},
        duration_s=420.0,
    )
    # 2: feature extraction, slow but steady
    add_thaw_trial(
        study,
        state=C,
        params=params(0, 1e-3, dropout=0.3),
        val_loss=[0.8, 0.65, 0.58, 0.55, 0.53, 0.52, 0.515, 0.51, 0.505, 0.5],
        user_attrs={"strategy": "feature extraction"},
        duration_s=95.25,
    )
    # 3: the best searched configuration
    add_thaw_trial(
        study,
        state=C,
        params=params(20, 3e-4, dropout=0.3, weight_decay=1e-4),
        val_loss=[0.75, 0.55, 0.47, 0.42, 0.4, 0.39, 0.38, 0.385, 0.39, 0.4],
        user_attrs={
            "verdicts": [
                {
                    "verdict": "healthy",
                    "confidence": 0.8,
                    "evidence": "val loss flat after epoch 7",
                    "recommendation": "keep",
                }
            ]
        },
        duration_s=380.0,
    )
    # 4: too many layers, too high a learning rate: climbs and is pruned
    add_thaw_trial(
        study,
        state=P,
        params=params(100, 2e-3, dropout=0.1, weight_decay=1e-6),
        val_loss=[0.7, 0.55, 0.6, 0.68, 0.75],
        user_attrs={
            "prune_reason": "climbing",
            "prune_epoch": 5,
            "prune_detail": "val loss rose 3 epochs in a row (0.55 -> 0.75)",
            "verdicts": [{"verdict": "overfitting"}, {"verdict": "lr_too_high"}],
        },
        duration_s=200.0,
    )
    # 5: clearly worse than its peers at epoch 3
    add_thaw_trial(
        study,
        state=P,
        params=params(5, 1.5e-5, dropout=0.45, weight_decay=3e-3),
        val_loss=[1.2, 1.1, 1.05],
        user_attrs={"prune_reason": "below_peers", "prune_epoch": 3},
        duration_s=80.0,
    )
    # 6: diverged: val loss became NaN at epoch 2
    add_thaw_trial(
        study,
        state=P,
        params=params(154, 9e-3, dropout=0.0, weight_decay=1e-6),
        val_loss=[2.0, None],
        train_loss=[1.5, None],
        user_attrs={
            "prune_reason": "diverged",
            "prune_epoch": 2,
            "prune_detail": "loss is NaN",
        },
        duration_s=45.0,
    )
    # 7: out of memory before the first epoch finished
    add_thaw_trial(
        study,
        state=F,
        params=params(154, 1e-4, batchnorm="train"),
        user_attrs={
            "fail_reason": "ResourceExhaustedError: OOM when allocating tensor "
            "with shape [64,224,224,3]\nTraceback follows"
        },
        duration_s=5.0,
    )
    # 8: ties with trial 3 on best val loss
    add_thaw_trial(
        study,
        state=C,
        params=params(10, 5e-4, dropout=0.1, weight_decay=3e-5, batchnorm="adapt"),
        val_loss=[0.7, 0.5, 0.45, 0.41, 0.39, 0.38, 0.385, 0.39, 0.395, 0.4],
        duration_s=350.0,
    )
    # 9: an old trial: only intermediate values, no user attrs at all
    add_thaw_trial(
        study,
        state=C,
        params=params(40, 2e-4, batchnorm="frozen"),
        val_loss=[0.9, 0.7, 0.65],
        summary_attrs=False,
        history=False,
        duration_s=120.0,
    )
    # 10: history but no summary attrs (written before they existed)
    add_thaw_trial(
        study,
        state=C,
        params=params(15, 4e-4, dropout=0.25, weight_decay=2e-5, batchnorm="adapt"),
        val_loss=[0.8, 0.42, 0.44],
        summary_attrs=False,
        duration_s=110.0,
    )
    # 11: still running
    add_thaw_trial(
        study,
        state=TrialState.RUNNING,
        params=params(25, 3e-4),
        val_loss=[0.8, 0.6],
    )
    return study


@pytest.fixture(scope="session")
def thaw_study(tmp_path_factory: pytest.TempPathFactory) -> optuna.Study:
    """The reference study (read-only: shared by the whole session)."""
    path = tmp_path_factory.mktemp("thaw_study") / "s.db"
    return build_thaw_study(f"sqlite:///{path}")


@pytest.fixture
def make_study(tmp_path: Path) -> Callable[..., optuna.Study]:
    """Factory for an empty SQLite study in ``tmp_path``: ``make_study(name, direction)``."""
    counter = iter(range(1_000_000))

    def make(
        study_name: str = "study",
        direction: Literal["minimize", "maximize"] = "minimize",
        attrs: bool = True,
    ) -> optuna.Study:
        storage = f"sqlite:///{tmp_path}/s{next(counter)}.db"
        study = optuna.create_study(storage=storage, study_name=study_name, direction=direction)
        if attrs:
            for key, value in STUDY_ATTRS.items():
                study.set_user_attr(key, value)
        return study

    return make


@pytest.fixture
def add_trial() -> Callable[..., optuna.trial.FrozenTrial]:
    """:func:`add_thaw_trial`: ``add_trial(study, state=..., params=..., val_loss=[...])``."""
    return add_thaw_trial


@pytest.fixture
def thaw_params() -> Callable[..., dict[str, Any]]:
    """:func:`params`: ``thaw_params(unfrozen_layers, learning_rate, dropout=...)``."""
    return params
