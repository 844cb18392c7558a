"""No work lost to a long outage: a trial that lost the storage is queued again, a strategy
whose every attempt failed is queued again on resume, and a half-created study is completed
with its domain shift."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import pytest
import yaml
from optuna.trial import TrialState
from sqlalchemy import exc as sa_exc

from thaw._keys import CONFIG_HASH, DOMAIN_SHIFT
from thaw.search import create_or_resume, open_storage, parse_study
from thaw.search._faults import LOST, RETRY_OF, counted_trials, requeue_failed_strategies
from thaw.search._run import optimize_exactly

if TYPE_CHECKING:
    from conftest import CliResult  # tests/search/conftest.py, a fixture module

optuna.logging.set_verbosity(optuna.logging.WARNING)

NUM_LAYERS = 5
DATA = {"fingerprint": "f" * 64, "class_names": ["a", "b"], "train_counts": [4, 4]}
STRATEGIES = ["full fine-tuning", "partial fine-tuning", "feature extraction"]


def created(folder: Path) -> tuple[Any, Any, optuna.Study]:
    raw = {
        "name": "s",
        "storage": "sqlite:///s.db",
        # one BatchNorm mode, 1 epoch: the informed start is the 3 strategies, unscreened
        "search_space": {"unfrozen_layers": [0, "all"], "batchnorm": ["frozen"]},
        "train": {"epochs": 1},
        "sampler": {"name": "random"},
    }
    config = parse_study(raw, folder / "s.yaml")
    storage = open_storage(config.storage)
    study, _ = create_or_resume(config, storage, NUM_LAYERS, DATA)
    return config, storage, study


def objective_for(config: Any, fail: Callable[[optuna.Trial], None]) -> Any:
    space = config.space.resolve(NUM_LAYERS)

    def objective(trial: optuna.Trial) -> float:
        params = space.suggest(trial)
        fail(trial)
        return params.learning_rate

    return objective


def outage(trial: optuna.Trial) -> None:
    """What a trial's storage call raises once the retry window has passed, the database
    still down: Optuna's wrapper around the driver's error."""
    if trial.number == 1 and RETRY_OF not in trial.user_attrs:
        cause = sa_exc.OperationalError(
            "UPDATE trials", {}, Exception("connection to server at 127.0.0.1 failed")
        )
        raise optuna.exceptions.StorageInternalError(
            "An exception is raised during the commit. This typically happens due to invalid "
            "data in the commit, e.g. exceeding max length."
        ) from cause


def test_a_trial_that_lost_the_storage_is_queued_again_with_the_reason(tmp_path: Path) -> None:
    config, storage, study = created(tmp_path)
    done = optimize_exactly(
        study, storage, config.storage, objective_for(config, outage), 3, poll_seconds=0.0
    )
    assert done is False
    trials = study.get_trials()
    lost = trials[1]
    assert lost.state == TrialState.FAIL
    assert lost.user_attrs[LOST].startswith(
        "the storage was unreachable for longer than the 60 s retry window (OperationalError: "
        "connection to server at 127.0.0.1 failed)"
    )
    assert "max length" not in lost.user_attrs["fail_reason"]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.user_attrs["strategy"] for t in complete) == sorted(STRATEGIES)
    retry = next(t for t in complete if RETRY_OF in t.user_attrs)
    assert retry.user_attrs[RETRY_OF]["trial"] == 1 and retry.params == lost.params
    assert counted_trials(study) == 3


def test_a_strategy_whose_every_attempt_failed_is_queued_again_on_resume(
    tmp_path: Path,
) -> None:
    config, storage, study = created(tmp_path)

    def fails(trial: optuna.Trial) -> None:
        if trial.user_attrs.get("strategy") == "feature extraction":
            raise RuntimeError("out of memory")

    optimize_exactly(study, storage, config.storage, objective_for(config, fails), 4)
    labels = [t.user_attrs.get("strategy") for t in study.get_trials()]
    assert labels.count("feature extraction") == 1  # a plain failure: not retried at once
    assert requeue_failed_strategies(study) == ["feature extraction"]
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs["strategy"] for t in waiting] == ["feature extraction"]
    assert requeue_failed_strategies(study) == []  # queued already: not twice

    # every attempt fails again: queued up to 3 attempts in all, then left failed
    for _ in range(3):
        optimize_exactly(
            study, storage, config.storage, objective_for(config, fails), counted_trials(study) + 1
        )
        requeue_failed_strategies(study)
    attempts = [
        t for t in study.get_trials() if t.user_attrs.get("strategy") == "feature extraction"
    ]
    assert len(attempts) == 3 and all(t.state == TrialState.FAIL for t in attempts)

    # once it succeeds, nothing is missing
    optimize_exactly(study, storage, config.storage, objective_for(config, lambda t: None), 10)
    assert requeue_failed_strategies(study) == []


@pytest.mark.slow
def test_a_half_created_study_measures_its_domain_shift_when_completed(
    tmp_path: Path,
    tiny_cnn: Callable[..., Any],
    tiny_arrays: Callable[..., dict[str, np.ndarray]],
    thaw: Callable[..., CliResult],
) -> None:
    tiny_cnn().save(tmp_path / "tiny.keras")
    np.savez(tmp_path / "data.npz", **tiny_arrays())
    study_file = tmp_path / "study.yaml"
    study = {
        "name": "half",
        "n_trials": 1,
        "storage": "sqlite:///half.db",
        "model": {"source": "file", "path": "tiny.keras", "cut_at": "features"},
        "data": {"source": "npz", "path": "data.npz", "class_names": ["a", "b", "c"]},
        "search_space": {"unfrozen_layers": [0, "all"], "batchnorm": ["frozen"]},
        "train": {"epochs": 1, "batch_size": 8},
        "sampler": {"name": "random"},
        "reference_trials": False,
    }
    study_file.write_text(yaml.safe_dump(study), encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'half.db'}"
    # killed right after creating the study: no attrs, no trial
    optuna.create_study(study_name="half", storage=url).set_user_attr("thaw:version", "0")

    result = thaw("run", study_file, "--no-progress")
    assert result.rc == 0, result.err
    completed = optuna.load_study(study_name="half", storage=url)
    assert CONFIG_HASH in completed.user_attrs
    shift = completed.user_attrs[DOMAIN_SHIFT]
    assert np.isfinite(shift["overall"])


@pytest.mark.parametrize(
    ("exc", "elsewhere"),
    [
        (optuna.exceptions.UpdateFinishedTrialError("Trial#3 has already finished"), True),
        (ValueError("Cannot tell a FAIL trial."), True),
        (ValueError("Cannot tell a COMPLETE trial."), True),
        (ValueError("learning_rate must be > 0"), False),
        (RuntimeError("Cannot tell a FAIL trial."), False),
    ],
)
def test_a_trial_finished_by_another_worker_after_an_outage_is_told_apart(
    exc: Exception, elsewhere: bool
) -> None:
    from thaw.search._run import finished_elsewhere

    assert finished_elsewhere(exc) is elsewhere


@pytest.mark.parametrize(
    ("state", "expected"),
    [("absent", True), ("half-created", True), ("created", False), ("foreign", False)],
)
def test_needs_creation_tells_a_half_created_study_from_the_others(
    tmp_path: Path, state: str, expected: bool
) -> None:
    from thaw.search._study import needs_creation

    url = f"sqlite:///{tmp_path / 's.db'}"
    storage = open_storage(url)
    if state == "created":
        created(tmp_path)
    elif state == "half-created":  # killed after create_study and one queued strategy
        study = optuna.create_study(study_name="s", storage=storage)
        study.enqueue_trial({"unfrozen_layers": 5}, user_attrs={"strategy": "full fine-tuning"})
    elif state == "foreign":
        study = optuna.create_study(study_name="s", storage=storage)
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert needs_creation(open_storage(url), "s") is expected
