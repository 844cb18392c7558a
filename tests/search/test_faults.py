"""No trial lost: lost-trial recovery, exact counts, half-created studies, database retries.

Real SQLite storage and real processes; the objective is a plain function, so no Keras here.
"""

from __future__ import annotations

import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import exc as sa_exc

from thaw.search import create_or_resume, open_storage, parse_study
from thaw.search._faults import (
    INTERRUPTED,
    LOST,
    RETRY_OF,
    WORKER,
    counted_trials,
    is_connection_error,
    recover_lost_trials,
    with_retries,
    worker_id,
)
from thaw.search._run import optimize_exactly

optuna.logging.set_verbosity(optuna.logging.WARNING)
# the tests play a worker by hand with study.ask(); thaw itself runs trials through optimize
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")

NUM_LAYERS = 5
DATA = {"fingerprint": "f" * 64, "class_names": ["a", "b"], "train_counts": [4, 4]}
STRATEGIES = ["full fine-tuning", "partial fine-tuning", "feature extraction"]


def config_in(folder: Path, **changes: Any) -> Any:
    raw = {
        "name": "s",
        "storage": "sqlite:///s.db",
        # BatchNorm pinned: the informed start is then exactly the 3 textbook strategies, and
        # with 1 epoch per trial they are not screened (each runs at full length, labelled).
        "search_space": {"unfrozen_layers": [0, "all"], "batchnorm": ["frozen"]},
        "train": {"epochs": 1},
        "sampler": {"name": "random"},
        "reference_trials": True,
        **changes,
    }
    return parse_study(raw, folder / "s.yaml")


def objective_for(config: Any, fail_numbers: set[int] = frozenset()):  # type: ignore[no-untyped-def,assignment]
    space = config.space.resolve(NUM_LAYERS)

    def objective(trial: optuna.Trial) -> float:
        params = space.suggest(trial)
        if trial.number in fail_numbers:
            raise RuntimeError("boom")
        return params.learning_rate

    return objective


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def created(tmp_path: Path) -> tuple[Any, Any, optuna.Study]:
    config = config_in(tmp_path)
    storage = open_storage(config.storage)
    study, resumed = create_or_resume(config, storage, NUM_LAYERS, DATA)
    assert not resumed
    return config, storage, study


# ----------------------------------------------------------------------------- lost trials


def start_trial_of(study: optuna.Study, worker: str) -> optuna.Trial:
    """What a worker does before it is killed: take the next trial, suggest, record itself."""
    config = config_in(Path("/unused"))
    trial = study.ask()
    config.space.resolve(NUM_LAYERS).suggest(trial)
    trial.set_user_attr(WORKER, worker)
    return trial


def test_a_trial_of_a_dead_worker_is_failed_with_the_reason_and_queued_again(
    created: tuple[Any, Any, optuna.Study],
) -> None:
    config, storage, study = created
    pid = dead_pid()
    host = worker_id().rpartition(":")[0]
    lost = start_trial_of(study, f"{host}:{pid}")  # trial 0: full fine-tuning
    alive = start_trial_of(study, worker_id())  # trial 1: this process, alive

    assert recover_lost_trials(study, storage) == [lost.number]
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL
    assert (
        trials[0].user_attrs[LOST] == f"its worker (pid {pid} on {host}) died while the trial ran"
    )
    assert trials[1].state == TrialState.RUNNING  # its worker is alive
    retry = trials[-1]
    assert retry.state == TrialState.WAITING
    assert retry.user_attrs["strategy"] == "full fine-tuning"
    assert retry.user_attrs[RETRY_OF] == {"trial": 0, "reason": trials[0].user_attrs[LOST]}
    assert retry.system_attrs["fixed_params"] == trials[0].params
    assert retry.system_attrs["retry_history"] == [0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == 0

    # a second pass retries nothing twice
    assert recover_lost_trials(study, storage) == []
    study.tell(alive, 0.5)


def test_a_running_trial_of_an_older_run_on_sqlite_is_recovered(
    created: tuple[Any, Any, optuna.Study],
) -> None:
    config, storage, study = created
    trial = study.ask()  # no worker recorded: left RUNNING by a thaw without heartbeats
    config.space.resolve(NUM_LAYERS).suggest(trial)
    assert recover_lost_trials(study, storage) == [0]
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs[LOST].startswith("left running by an earlier run")
    assert trials[-1].user_attrs["strategy"] == "full fine-tuning"


def test_the_retry_runs_with_the_same_params_and_every_strategy_completes(
    created: tuple[Any, Any, optuna.Study],
) -> None:
    config, storage, study = created
    start_trial_of(study, f"{worker_id().rpartition(':')[0]}:{dead_pid()}")
    params0 = study.get_trials()[0].params
    interrupted = optimize_exactly(
        study, storage, config.storage, objective_for(config), 5, poll_seconds=0.0
    )
    assert not interrupted
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 5  # exactly n_trials, the lost one not counted
    assert [t.state for t in trials].count(TrialState.FAIL) == 1
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert sorted(
        t.user_attrs["strategy"] for t in complete if "strategy" in t.user_attrs
    ) == sorted(STRATEGIES)
    retried = [t for t in complete if RETRY_OF in t.user_attrs]
    assert len(retried) == 1 and retried[0].params == params0


def test_a_trial_interrupted_by_ctrl_c_is_queued_again_and_does_not_count(
    created: tuple[Any, Any, optuna.Study],
) -> None:
    config, storage, study = created
    inner = objective_for(config)

    def objective(trial: optuna.Trial) -> float:
        if trial.number == 1:
            inner(trial)
            trial.set_user_attr("fail_reason", INTERRUPTED)
            raise KeyboardInterrupt
        return inner(trial)

    assert optimize_exactly(study, storage, config.storage, objective, 3) is True
    trials = study.get_trials()
    assert [t.state for t in trials] == [
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.WAITING,
        TrialState.WAITING,
    ]
    assert trials[1].user_attrs[LOST] == INTERRUPTED
    retry = trials[3]
    assert retry.user_attrs["strategy"] == "partial fine-tuning"
    assert retry.user_attrs[RETRY_OF]["trial"] == 1
    assert counted_trials(study) == 1

    # the next run finishes the study: the interrupted strategy runs again, 3 counted in all
    assert optimize_exactly(study, storage, config.storage, inner, 3) is False
    complete = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert len(complete) == 3
    assert sorted(t.user_attrs["strategy"] for t in complete) == sorted(STRATEGIES)


def test_stale_heartbeat_fails_and_retries_the_trial(tmp_path: Path) -> None:
    from thaw.search._faults import RetryingRDBStorage, RetryLostTrial

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        storage = RetryingRDBStorage(
            f"sqlite:///{tmp_path}/hb.db",
            heartbeat_interval=1,
            grace_period=1,
            heartbeat_stale_trial_callback=RetryLostTrial(),
        )
    study = optuna.create_study(study_name="hb", storage=storage)
    study.enqueue_trial({"x": 0.25}, user_attrs={"strategy": "feature extraction"})
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    trial.set_user_attr(WORKER, "another-host:4242")  # only its heartbeat can tell it is gone
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name("hb"), trial.number
    )
    storage.record_heartbeat(trial_id)
    time.sleep(2.5)
    recover_lost_trials(study, storage)
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL
    assert trials[1].state == TrialState.WAITING
    assert trials[1].user_attrs["strategy"] == "feature extraction"
    assert "no heartbeat for" in trials[1].user_attrs[RETRY_OF]["reason"]
    assert trials[1].system_attrs["fixed_params"] == {"x": 0.25}


# ---------------------------------------------------------------------------- exact counts


@pytest.mark.parametrize(
    ("fail_numbers", "target", "complete", "failed"),
    [
        (set(), 4, 4, 0),
        ({4}, 6, 6, 1),  # a failed trial does not count: one more runs
        ({3, 5}, 5, 5, 2),
    ],
)
def test_failed_trials_do_not_count_and_the_target_is_exact(
    created: tuple[Any, Any, optuna.Study],
    fail_numbers: set[int],
    target: int,
    complete: int,
    failed: int,
) -> None:
    config, storage, study = created
    optimize_exactly(study, storage, config.storage, objective_for(config, fail_numbers), target)
    states = [t.state for t in study.get_trials()]
    assert states.count(TrialState.COMPLETE) == complete
    assert states.count(TrialState.FAIL) == failed
    assert len(states) == complete + failed


def test_an_objective_that_always_fails_stops(created: tuple[Any, Any, optuna.Study]) -> None:
    config, storage, study = created
    optimize_exactly(study, storage, config.storage, objective_for(config, set(range(99))), 3)
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL] * 3


def test_a_worker_waits_while_running_trials_fill_the_slots(
    created: tuple[Any, Any, optuna.Study],
) -> None:
    config, storage, study = created
    running = start_trial_of(study, worker_id())  # another live worker's trial
    # target 1: the running trial holds the only slot; without it finishing, nothing starts
    optimize_exactly(study, storage, config.storage, objective_for(config), 1, timeout=1.0)
    assert len(study.get_trials()) == 3 + 0  # the 3 queued references, no new trial
    study.tell(running, 0.1)
    optimize_exactly(study, storage, config.storage, objective_for(config), 1, timeout=1.0)
    assert counted_trials(study) == 1


def test_a_trial_that_finishes_while_a_worker_decides_takes_no_second_slot(
    created: tuple[Any, Any, optuna.Study],
) -> None:
    config, storage, study = created
    running = start_trial_of(study, worker_id())  # another live worker's trial
    waiting = len(study.get_trials(states=(TrialState.WAITING,)))
    finished: list[int] = []

    def other_worker_finishes(s: optuna.Study) -> bool:
        # Called while the worker decides whether a slot is free: the other worker's trial
        # finishes at that moment. It holds the only slot, finished or running.
        if not finished:
            study.tell(running, 0.1)
            finished.append(running.number)
        return False

    optimize_exactly(
        study,
        storage,
        config.storage,
        objective_for(config),
        1,
        timeout=30.0,
        poll_seconds=0.1,
        stop_when=other_worker_finishes,
    )
    assert finished == [running.number]
    assert counted_trials(study) == 1
    assert len(study.get_trials(states=(TrialState.WAITING,))) == waiting  # none started


# --------------------------------------------------------------------- half-created studies


def test_a_half_created_study_is_completed_not_refused(tmp_path: Path) -> None:
    config = config_in(tmp_path)
    storage = open_storage(config.storage)
    # killed after create_study and one of the three reference trials
    study = optuna.create_study(study_name="s", storage=storage)
    study.set_user_attr("thaw:version", "0")
    study.enqueue_trial({"unfrozen_layers": 5}, user_attrs={"strategy": "full fine-tuning"})
    again, resumed = create_or_resume(config, open_storage(config.storage), NUM_LAYERS, DATA)
    assert resumed is False
    assert again.user_attrs["thaw:config_hash"] == config.config_hash()
    trials = again.get_trials()
    assert [t.user_attrs["strategy"] for t in trials] == STRATEGIES  # none twice, none missing
    _, resumed = create_or_resume(config, open_storage(config.storage), NUM_LAYERS, DATA)
    assert resumed is True


def test_a_foreign_study_with_trials_is_still_refused(tmp_path: Path) -> None:
    from thaw.search import StudyMismatchError

    config = config_in(tmp_path)
    study = optuna.create_study(study_name="s", storage=config.storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    with pytest.raises(StudyMismatchError, match="was not created by thaw"):
        create_or_resume(config, open_storage(config.storage), NUM_LAYERS, DATA)


# ------------------------------------------------------------------------ database retries


def test_connection_errors_are_retried_then_raised() -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise sa_exc.OperationalError("SELECT 1", {}, Exception("server closed"))
        return "ok"

    assert with_retries(flaky, "test", seconds=5, first_wait=0.01) == "ok"
    assert len(calls) == 3
    with pytest.raises(sa_exc.OperationalError):
        with_retries(
            lambda: (_ for _ in ()).throw(sa_exc.OperationalError("x", {}, Exception("down"))),
            "test",
            seconds=0.05,
            first_wait=0.02,
        )
    other = []

    def wrong() -> None:
        other.append(1)
        raise ValueError("not a connection problem")

    with pytest.raises(ValueError):
        with_retries(wrong, "test", seconds=5, first_wait=0.01)
    assert other == [1]  # not retried


def test_storage_internal_error_caused_by_a_dropped_connection_counts() -> None:
    inner = sa_exc.OperationalError("x", {}, Exception("terminating connection"))
    try:
        raise optuna.exceptions.StorageInternalError("commit failed") from inner
    except optuna.exceptions.StorageInternalError as exc:
        assert is_connection_error(exc)
    assert not is_connection_error(optuna.exceptions.StorageInternalError("too long"))


def test_opening_storage_shows_no_experimental_warning(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        open_storage(f"sqlite:///{tmp_path}/w.db")
    assert not [w for w in caught if "experimental" in str(w.message).lower()]


def test_the_progress_bar_shows_the_best_value_so_far(
    created: tuple[Any, Any, optuna.Study], capsys: pytest.CaptureFixture[str]
) -> None:
    config, storage, study = created
    optimize_exactly(
        study, storage, config.storage, objective_for(config), 4, show_progress_bar=True
    )
    complete = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert len(complete) == 4
    best = min(complete, key=lambda t: t.value)  # the objective minimises the learning rate
    final = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "4/4" in final
    assert f"best={best.value:.4g}, trial={best.number}" in final
