"""No trial lost: heartbeats, lost-trial retries, exact trial counts and database retries.

- :class:`RetryingRDBStorage`: Optuna's ``RDBStorage`` whose calls survive a dropped database
  connection (a restart, a network blip): retried with backoff for up to about a minute.
- :class:`RetryLostTrial`: the heartbeat-stale callback (Optuna's
  ``RetryHeartbeatStaleTrialCallback``) that re-enqueues a lost trial with the same parameters and
  the same ``strategy`` label, so a reference strategy never disappears from a study.
- :func:`recover_lost_trials`: at start-up and between trials, fails the trials whose worker is
  gone (its process is dead on this host, or its heartbeat is stale) with the reason, and retries
  them and any trial interrupted by Ctrl-C.
- :func:`counted_trials` and :class:`TrialSlots`: ``n_trials`` counts completed and pruned trials
  of the whole study; a new trial is created only while the count plus the running trials (one
  read of the storage: :func:`slot_counts`) is below the target, checked and created under one
  lock shared by every worker.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from thaw._keys import (
    GRADUAL_UNFREEZING,
    LOST,
    PROPOSED_BY,
    RETRY_OF,
    SCREEN,
    SCREEN_WINNER,
    WORKER,
)

_logger = logging.getLogger(__name__)

#: Seconds between two heartbeats of a running trial.
HEARTBEAT_INTERVAL = 10
#: A running trial without a heartbeat for this long is stale: its worker is gone.
GRACE_PERIOD = 40
#: A dropped database connection is retried for up to this many seconds.
RETRY_SECONDS = 60.0

#: Trials counted towards ``n_trials``; failed and interrupted trials do not count.
COUNTED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)

INTERRUPTED = "interrupted by the user (Ctrl-C)"
#: How long a trial that lost the storage waits for it to come back, to record that it was lost
#: (then it is queued again); past that, its stale heartbeat gets it queued again later.
OUTAGE_WAIT_SECONDS = 900.0

T = TypeVar("T")


@contextlib.contextmanager
def quiet_experimental() -> Iterator[None]:
    """Optuna's ExperimentalWarning (heartbeats, retry callback) never reaches thaw's output."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ExperimentalWarning)
        yield


# ------------------------------------------------------------------------- database retries


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` means the database connection dropped (worth retrying)."""
    from sqlalchemy import exc as sa_exc

    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return False
        if isinstance(seen, (sa_exc.OperationalError, sa_exc.InterfaceError)):
            return True
        if isinstance(seen, sa_exc.DBAPIError) and seen.connection_invalidated:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def with_retries(
    call: Callable[[], T], what: str, seconds: float = RETRY_SECONDS, first_wait: float = 0.5
) -> T:
    """Run ``call``; on a dropped connection wait (0.5 s, doubling, at most 8 s) and try again
    until ``seconds`` have passed, then raise the last error."""
    deadline = time.monotonic() + seconds
    wait = first_wait
    attempt = 0
    while True:
        try:
            return call()
        except Exception as exc:
            if not is_connection_error(exc) or time.monotonic() + wait > deadline:
                raise
            attempt += 1
            if attempt == 1:
                _logger.warning(
                    "Database connection lost during %s; retrying for up to %.0f s", what, seconds
                )
            time.sleep(wait)
            wait = min(wait * 2, 8.0)


#: BaseStorage methods (and the heartbeat's) that RetryingRDBStorage retries.
_RETRIED = (
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
    "create_new_trial",
    "set_trial_param",
    "get_trial_id_from_study_id_trial_number",
    "get_trial_number_from_id",
    "get_trial_param",
    "set_trial_state_values",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial",
    "get_all_trials",
    "get_n_trials",
    "get_best_trial",
    "get_trial_params",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "record_heartbeat",
    # Optuna's _CachedStorage (what optuna.load_study puts around an RDBStorage) reaches the
    # database through these; without them a restart would still fail the running trial.
    "_create_new_trial",
    "_set_trial_param",
    "_get_best_trial_id",
    "_get_trials",
    "_get_stale_trial_ids",
)


class RetryingRDBStorage(RDBStorage):
    """``RDBStorage`` whose calls are retried with backoff when the connection drops.

    Connections are checked before use (``pool_pre_ping``), so after a database restart the pool
    reconnects instead of failing the running trial.
    """


def _retrying(name: str) -> Callable[..., Any]:
    method = getattr(RDBStorage, name)

    def call(self: RDBStorage, *args: Any, **kwargs: Any) -> Any:
        return with_retries(lambda: method(self, *args, **kwargs), name)

    call.__name__ = name
    call.__doc__ = method.__doc__
    return call


for _name in _RETRIED:
    if hasattr(RDBStorage, _name):
        setattr(RetryingRDBStorage, _name, _retrying(_name))


def _record_heartbeat_quietly(self: RDBStorage, trial_id: int) -> None:
    # The heartbeat runs in its own thread: a failure after the retries is one log line, not a
    # thread traceback; the trial itself finds out at its next storage call.
    try:
        with_retries(lambda: RDBStorage.record_heartbeat(self, trial_id), "heartbeat")
    except Exception as exc:  # noqa: BLE001
        _logger.warning("Heartbeat of trial id %d not recorded: %s", trial_id, exc)


RetryingRDBStorage.record_heartbeat = _record_heartbeat_quietly  # type: ignore[method-assign]


def make_rdb_storage(url: str) -> RetryingRDBStorage:
    """Heartbeats on (every RDB, SQLite included), lost trials retried, connections retried."""
    callback = RetryLostTrial()
    with quiet_experimental():
        storage = RetryingRDBStorage(
            url,
            engine_kwargs={"pool_pre_ping": True},
            heartbeat_interval=HEARTBEAT_INTERVAL,
            grace_period=GRACE_PERIOD,
            heartbeat_stale_trial_callback=callback,
        )
    return storage


def storage_lost_reason(exc: BaseException) -> str:
    """Why a trial was lost when the storage went away: the first line of the database's own
    error, not Optuna's wrapper (which blames "invalid data ... exceeding max length")."""
    inner: BaseException = exc
    for _ in range(4):
        nxt = inner.__cause__ or inner.__context__
        if nxt is None:
            break
        inner = nxt
    detail = (str(getattr(inner, "orig", None) or inner).strip().splitlines() or [""])[0]
    return (
        f"the storage was unreachable for longer than the {RETRY_SECONDS:.0f} s retry window "
        f"({type(inner).__name__}: {detail[:200]})"
    )


def mark_storage_lost(
    trial: optuna.Trial, exc: BaseException, wait_seconds: float = OUTAGE_WAIT_SECONDS
) -> bool:
    """Record on ``trial`` that it failed because the storage went away, waiting up to
    ``wait_seconds`` for the storage to come back: the trial then ends FAIL with the reason,
    and :func:`recover_lost_trials` queues it again like a killed one. False when the storage
    did not come back in time (the trial's stale heartbeat gets it queued again later)."""
    reason = storage_lost_reason(exc)

    def mark() -> None:
        trial.set_user_attr(LOST, reason)
        trial.set_user_attr("fail_reason", reason)

    try:
        with_retries(mark, "recording a trial lost to a storage outage", seconds=wait_seconds)
    except Exception as again:  # noqa: BLE001 - still unreachable: one log line, no traceback
        _logger.warning(
            "Trial %d lost the storage and could not record it: %s", trial.number, again
        )
        return False
    _logger.warning("Trial %d failed because %s; it is queued again", trial.number, reason)
    return True


def wait_for_storage(
    storage: optuna.storages.BaseStorage, seconds: float = OUTAGE_WAIT_SECONDS
) -> None:
    """Wait up to ``seconds`` for an unreachable storage to answer again (an outage longer than
    the retry window); raise the last connection error when it does not."""
    _logger.warning("The storage is unreachable; waiting up to %.0f s for it to come back", seconds)
    with_retries(storage.get_all_studies, "waiting for the storage", seconds=seconds)


# --------------------------------------------------------------------------- lost trials


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet reaped by its parent) is dead too.
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat", encoding="ascii") as f:
        if f.read().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def retried_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of the trials some other trial is a retry of."""
    out: set[int] = set()
    for t in trials:
        out.update(t.system_attrs.get("retry_history", ()))
    return out


def enqueue_retry(study: optuna.Study, trial: FrozenTrial, reason: str) -> bool:
    """Queue ``trial`` again: same parameters, same strategy label (and screen round, and who
    proposed it). False if nothing to retry."""
    params = dict(trial.system_attrs.get("fixed_params") or {})
    params.update(trial.params)
    if not params:
        return False  # lost before sampling: a new sampled trial takes its place
    # The keys RetryHeartbeatStaleTrialCallback.retried_trial_number/retry_history read.
    history = [*trial.system_attrs.get("retry_history", ()), trial.number]
    user_attrs: dict[str, Any] = {RETRY_OF: {"trial": trial.number, "reason": reason}}
    # What the trial is and why it runs: its strategy label, its screen round, who proposed it.
    for key in ("strategy", SCREEN, SCREEN_WINNER, PROPOSED_BY, GRADUAL_UNFREEZING):
        if key in trial.user_attrs:
            user_attrs[key] = trial.user_attrs[key]
    study.add_trial(
        optuna.create_trial(
            state=TrialState.WAITING,
            user_attrs=user_attrs,
            system_attrs={
                "fixed_params": params,
                "failed_trial": history[0],
                "retry_history": history,
            },
        )
    )
    _logger.info("Trial %d was lost (%s); queued again as it was", trial.number, reason)
    return True


class RetryLostTrial(RetryHeartbeatStaleTrialCallback):
    """Heartbeat-stale callback: re-enqueue the trial with its parameters and strategy label.

    Unlike Optuna's, it copies only the ``strategy`` label (not the lost trial's history, verdicts
    or failure reason) and records on the retry why the trial was lost.
    """

    def __init__(self) -> None:
        with quiet_experimental():
            super().__init__(max_retry=None)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        reason = trial.user_attrs.get(LOST) or (
            f"no heartbeat for {GRACE_PERIOD} s: its worker was killed or lost the database"
        )
        with quiet_experimental():
            enqueue_retry(study, trial, str(reason))


def recover_lost_trials(study: optuna.Study, storage: optuna.storages.BaseStorage) -> list[int]:
    """Fail the trials whose worker is gone, with the reason, and queue them again.

    - RUNNING trials of a process of this host that no longer exists: failed at once.
    - RUNNING trials whose heartbeat is stale (any host): failed by Optuna's heartbeat, or on
      storages without it (gRPC proxy, journal file) by thaw's ``thaw:heartbeat`` attr.
    - FAILED trials marked lost (Ctrl-C, a dead worker) that were not retried yet.

    Returns the numbers of the trials queued again.
    """
    from thaw.search._proxy import stale_by_attr

    host = socket.gethostname()
    mine = os.getpid()
    # SQLite serves one process: a running trial no process of thaw owns was left by a run that
    # died before thaw recorded workers (or heartbeats) on trials.
    single_process = str(getattr(storage, "url", "")).startswith("sqlite")
    retried: list[int] = []
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = str(t.user_attrs.get(WORKER, ""))
        name, _, pid = owner.rpartition(":")
        if not owner and single_process:
            reason = "left running by an earlier run that ended without finishing it"
        elif name == host and pid.isdigit() and int(pid) != mine and not _pid_alive(int(pid)):
            reason = f"its worker (pid {pid} on {host}) died while the trial ran"
        elif stale_by_attr(t, GRACE_PERIOD):
            reason = (
                f"no heartbeat for {GRACE_PERIOD} s: its worker ({owner or 'unknown'}) was "
                "killed or lost the storage"
            )
        else:
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        try:
            storage.set_trial_user_attr(trial_id, LOST, reason)
            if not storage.set_trial_state_values(trial_id, TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        retried.append(t.number)
    with quiet_experimental():
        optuna.storages.fail_stale_trials(study)  # heartbeat-stale trials, retried by callback
    trials = study.get_trials(deepcopy=False)
    done = retried_numbers(trials)
    for t in trials:
        if t.state != TrialState.FAIL or t.number in done:
            continue
        why = t.user_attrs.get(LOST)
        if why is None and t.user_attrs.get("fail_reason") == INTERRUPTED:
            why = INTERRUPTED
        if why is not None and enqueue_retry(study, t, str(why)):
            done.add(t.number)
            if t.number not in retried:
                retried.append(t.number)
    return retried


#: A textbook strategy whose every attempt failed is queued again on resume up to this many
#: attempts in all (a strategy that fails for a reason of its own is not retried forever).
MAX_STRATEGY_ATTEMPTS = 3


def requeue_failed_strategies(study: optuna.Study) -> list[str]:
    """Queue again each strategy of the informed start whose every attempt failed (lost to a
    storage outage before thaw could tell, say): its last attempt, with the same parameters
    and labels. Returns the strategies queued again. Run under the study's slot lock."""
    from thaw.search._budget import start_label

    attempts: dict[str, list[FrozenTrial]] = {}
    for t in study.get_trials(deepcopy=False):
        label = start_label(t)
        if label is not None:
            attempts.setdefault(label, []).append(t)
    queued: list[str] = []
    for label, trials in attempts.items():
        if any(t.state != TrialState.FAIL for t in trials):
            continue
        if len(trials) >= MAX_STRATEGY_ATTEMPTS:
            _logger.warning(
                "Strategy %r failed %d times; not queued again (see its trials' fail_reason)",
                label,
                len(trials),
            )
            continue
        last = trials[-1]
        why = f"every attempt of strategy {label!r} failed; queued again on resume"
        with quiet_experimental():
            if enqueue_retry(study, last, why):
                queued.append(label)
    return queued


# ---------------------------------------------------------------------------- exact counts


def counted_trials(study: optuna.Study) -> int:
    """Completed and pruned trials of the whole study: what ``n_trials`` counts. The rounds of
    the screened informed start (``thaw:screen``: a few epochs each, stopped by design) do not
    take a searched trial's place; its survivor, at full length, counts."""
    return slot_counts(study)[0]


def running_trials(study: optuna.Study) -> int:
    """Running trials that will count once they finish (screen rounds do not)."""
    return slot_counts(study)[1]


def slot_counts(study: optuna.Study) -> tuple[int, int]:
    """``(counted, running)``: :func:`counted_trials` and :func:`running_trials` from one read
    of the storage.

    The slot decision needs both from the same moment: read one after the other, a trial that
    finishes in between is in neither count, and the worker takes a slot that is not free (one
    trial over ``n_trials`` at the end of a run).
    """
    counted = running = 0
    for t in study.get_trials(deepcopy=False, states=(*COUNTED_STATES, TrialState.RUNNING)):
        if SCREEN in t.user_attrs:
            continue
        if t.state == TrialState.RUNNING:
            running += 1
        else:
            counted += 1
    return counted, running


class TrialSlots:
    """One lock for the whole study, across workers, held while a worker checks the count and
    creates its next trial, so that two workers never both take the last slot.

    PostgreSQL: a session advisory lock keyed by the study name (released by the server if the
    worker dies). SQLite serves one process: a thread lock.
    """

    def __init__(
        self, url: str, study_name: str, storage: optuna.storages.BaseStorage | None = None
    ) -> None:
        self._local = threading.Lock()
        self._engine: Any = None
        self._conn: Any = None
        self._shared: Any = None
        from thaw.search._proxy import StorageLock, is_grpc_url, is_journal_url

        if storage is not None and (is_grpc_url(url) or is_journal_url(url)):
            # No database to lock: the lock lives in the storage (search/_proxy.py).
            self._shared = StorageLock(storage, study_name)
        self._key = int.from_bytes(
            hashlib.sha256(f"thaw:{study_name}".encode()).digest()[:8], "big", signed=True
        )
        if url.startswith("postgresql"):
            import sqlalchemy

            self._engine = sqlalchemy.create_engine(url, pool_pre_ping=True)

    def acquire(self) -> None:
        self._local.acquire()
        if self._shared is not None:
            try:
                self._shared.acquire()
            except BaseException:
                self._local.release()
                raise
            return
        if self._engine is None:
            return
        try:
            with_retries(self._lock, "the trial-slot lock")
        except BaseException:
            self._local.release()
            raise

    def _lock(self) -> None:
        import sqlalchemy

        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        conn = self._engine.connect()
        conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self._key})
        conn.commit()
        self._conn = conn

    def release(self) -> None:
        if not self._local.locked():
            return
        try:
            if self._shared is not None:
                self._shared.release()
            if self._conn is not None:
                import sqlalchemy

                try:
                    self._conn.execute(
                        sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self._key}
                    )
                    self._conn.commit()
                except Exception:  # noqa: BLE001 - a dropped connection released the lock
                    with contextlib.suppress(Exception):
                        self._conn.close()
                    self._conn = None
        finally:
            self._local.release()

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        if self._engine is not None:
            self._engine.dispose()
