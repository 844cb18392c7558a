"""Storages for workers on many machines: Optuna's gRPC storage proxy and journal files.

- ``thaw storage-proxy --storage URL --port P`` serves a database (PostgreSQL, MySQL or SQLite)
  with :func:`optuna.storages.run_grpc_proxy_server`; workers pass ``--storage grpc://HOST:P``
  and hold no database connection of their own. Binds 127.0.0.1 unless told otherwise.
- ``journal:///study.journal`` (relative to the study file's folder, as with SQLite) or
  ``journal:////shared/study.journal`` (absolute): Optuna's ``JournalStorage`` on one file that
  every worker reaches on a shared file system, for clusters without a database server.

Neither of these two storages has Optuna's heartbeats or a PostgreSQL advisory lock, so thaw
brings its own, through the storage alone: :class:`StorageLock` (the trial-slot lock behind
exact trial counts) and :class:`AttrHeartbeat` (a running trial's heartbeat, which lets any
worker queue again a trial whose machine died).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import DuplicatedStudyError
from optuna.study import StudyDirection

from thaw._keys import HEARTBEAT
from thaw.reports._format import mask_url

_logger = logging.getLogger(__name__)

GRPC_PREFIX = "grpc://"
JOURNAL_PREFIX = "journal:///"
DEFAULT_HOST = "127.0.0.1"
#: Optuna's own default port for the gRPC proxy.
DEFAULT_PORT = 13000
#: Seconds a worker waits for the proxy before giving up with one line.
CONNECT_SECONDS = 10.0
#: Name prefix of the short-lived study that is the trial-slot lock of a study.
LOCK_PREFIX = "thaw-lock:"

_GRPC_URL = re.compile(r"^grpc://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-_]+):(?P<port>\d+)/?$")


class ProxyError(RuntimeError):
    """The storage proxy cannot start, or a grpc:// / journal:// URL is wrong. One line."""


def is_grpc_url(url: str) -> bool:
    return url.startswith(GRPC_PREFIX)


def is_journal_url(url: str) -> bool:
    return url.startswith(JOURNAL_PREFIX)


def parse_grpc_url(url: str) -> tuple[str, int]:
    """``grpc://host:port`` as ``(host, port)``; one-line :class:`ProxyError` otherwise."""
    match = _GRPC_URL.match(url)
    if match is None:
        raise ProxyError(
            f"storage {mask_url(url)} is not a proxy address; use grpc://HOST:PORT, e.g. "
            f"grpc://127.0.0.1:{DEFAULT_PORT} (start the proxy with thaw storage-proxy)"
        )
    port = int(match["port"])
    if not 0 < port < 65536:
        raise ProxyError(f"storage {mask_url(url)}: port {port} is not between 1 and 65535")
    return match["host"].strip("[]"), port


def journal_path(url: str) -> Path:
    """The file of a ``journal:///`` URL (made absolute by the study file's loading)."""
    return Path(url[len(JOURNAL_PREFIX) :].split("?", 1)[0])


def check_url(url: str) -> None:
    """Check a grpc:// or journal:// URL without connecting or writing anything."""
    if is_grpc_url(url):
        parse_grpc_url(url)
        return
    path = journal_path(url)
    if not str(path) or str(path) == ".":
        raise ProxyError(
            f"storage {url}: give a file, e.g. journal:///study.journal (beside the study file) "
            "or journal:////shared/study.journal"
        )
    if path.is_dir():
        raise ProxyError(f"storage {url} is a folder; give a file such as {path}/study.journal")
    if not path.parent.is_dir():
        raise ProxyError(
            f"cannot open storage {url}: folder {path.parent} does not exist; create it or "
            "change 'storage'"
        )
    if path.exists() and path.stat().st_size > 0:
        with path.open("rb") as f:
            first = f.read(1)
        if first != b"{":
            raise ProxyError(
                f"storage {url}: {path} exists and is not an Optuna journal (one JSON object a "
                "line); give another file"
            )


def open_grpc_storage(url: str, timeout: float = CONNECT_SECONDS) -> optuna.storages.BaseStorage:
    """A :class:`optuna.storages.GrpcStorageProxy` for ``grpc://host:port``, once the proxy
    answers; one-line :class:`ProxyError` when it does not within ``timeout`` seconds."""
    host, port = parse_grpc_url(url)
    try:
        import grpc  # noqa: F401 - the proxy's client needs grpcio
    except ImportError:
        raise ProxyError(f"storage {url} needs grpcio: pip install 'thaw-keras[cluster]'") from None
    from optuna.storages import GrpcStorageProxy

    with _quiet():
        storage = GrpcStorageProxy(host=host, port=port)
    try:
        storage.wait_server_ready(timeout=timeout)
    except ConnectionError:
        storage.close()
        raise ProxyError(
            f"cannot reach the storage proxy at {url} within {timeout:.0f} s; start it with "
            f"'thaw storage-proxy --storage URL --port {port}' or check the host and port"
        ) from None
    return storage


def open_journal_storage(url: str) -> optuna.storages.BaseStorage:
    """Optuna's ``JournalStorage`` on the file of a ``journal:///`` URL."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    check_url(url)
    path = journal_path(url)
    try:
        # The open(O_EXCL) lock works on NFS too, where symbolic links may not.
        backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
        return JournalStorage(backend)
    except OSError as exc:
        raise ProxyError(f"cannot open storage {url}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def _quiet() -> Any:
    from thaw.search._faults import quiet_experimental

    with quiet_experimental():
        yield


# ------------------------------------------------------------------------ lock and heartbeat


def _pid_dead_here(worker: str) -> bool:
    from thaw.search._faults import _pid_alive

    name, _, pid = worker.rpartition(":")
    return name == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid))


class StorageLock:
    """The trial-slot lock of a study, shared by every worker through the storage alone.

    Held while a study named ``thaw-lock:<study>`` exists: creating a study whose name is taken
    fails in every Optuna storage, so only one worker creates it. Released by deleting it. A lock
    whose holder died (its process is gone from this host, or the lock is older than
    ``stale_after`` seconds) is taken over.
    """

    def __init__(
        self, storage: optuna.storages.BaseStorage, study_name: str, stale_after: float = 60.0
    ) -> None:
        from thaw.search._faults import worker_id

        self._storage = storage
        self._name = f"{LOCK_PREFIX}{study_name}"
        self._stale_after = stale_after
        self._me = worker_id()
        self._held: int | None = None
        self._seen: dict[int, float] = {}

    def acquire(self) -> None:
        wait = 0.005
        while True:
            try:
                study_id = self._storage.create_new_study([StudyDirection.MINIMIZE], self._name)
            except DuplicatedStudyError:
                pass
            else:
                self._held = study_id
                with contextlib.suppress(KeyError):
                    self._storage.set_study_system_attr(study_id, "holder", self._me)
                return
            if self._take_over_stale():
                continue
            time.sleep(wait)
            wait = min(wait * 2, 0.1)

    def _take_over_stale(self) -> bool:
        try:
            study_id = self._storage.get_study_id_from_name(self._name)
            holder = str(self._storage.get_study_system_attrs(study_id).get("holder", ""))
        except KeyError:
            return True  # released meanwhile
        first_seen = self._seen.setdefault(study_id, time.monotonic())
        if not _pid_dead_here(holder) and time.monotonic() - first_seen < self._stale_after:
            return False
        _logger.warning("Trial-slot lock of a dead worker (%s) taken over", holder or "unknown")
        with contextlib.suppress(KeyError):
            self._storage.delete_study(study_id)
        self._seen.pop(study_id, None)
        return True

    def release(self) -> None:
        if self._held is None:
            return
        study_id, self._held = self._held, None
        with contextlib.suppress(KeyError):
            self._storage.delete_study(study_id)


def has_optuna_heartbeat(storage: optuna.storages.BaseStorage) -> bool:
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(storage)


class AttrHeartbeat:
    """A running trial's heartbeat on storages without Optuna's: the trial's ``thaw:heartbeat``
    system attr is set to the time every ``interval`` seconds from a thread."""

    def __init__(
        self, storage: optuna.storages.BaseStorage, trial_id: int, interval: float
    ) -> None:
        self._storage = storage
        self._trial_id = trial_id
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="thaw-heartbeat", daemon=True)

    def __enter__(self) -> AttrHeartbeat:
        self._storage.set_trial_system_attr(self._trial_id, HEARTBEAT, time.time())
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._storage.set_trial_system_attr(self._trial_id, HEARTBEAT, time.time())
            except optuna.exceptions.UpdateFinishedTrialError:
                return
            except Exception as exc:  # noqa: BLE001 - one log line; the trial finds out itself
                _logger.warning("Heartbeat of trial id %d not recorded: %s", self._trial_id, exc)


def stale_by_attr(trial: optuna.trial.FrozenTrial, grace_period: float) -> bool:
    """Whether a running trial's ``thaw:heartbeat`` is older than ``grace_period`` seconds."""
    beat = trial.system_attrs.get(HEARTBEAT)
    return isinstance(beat, (int, float)) and time.time() - float(beat) > grace_period


# ----------------------------------------------------------------------------------- server


def open_backing_storage(url: str) -> optuna.storages.BaseStorage:
    """The database the proxy serves: thaw's retrying RDB storage (a restart of the database
    is ridden out) in Optuna's cache, as Optuna recommends for the proxy."""
    from thaw.search._faults import RetryingRDBStorage
    from thaw.search._study import StorageError, check_storage_url

    if is_grpc_url(url) or is_journal_url(url):
        why = (
            "a journal file is shared directly, without a proxy"
            if is_journal_url(url)
            else "give the database behind it, not another proxy"
        )
        raise ProxyError(
            f"--storage {mask_url(url)}: the proxy serves a database (postgresql://, mysql:// or "
            f"sqlite:///); {why}"
        )
    try:
        check_storage_url(url)
    except StorageError as exc:
        raise ProxyError(str(exc)) from None
    try:
        rdb = RetryingRDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    except Exception as exc:  # noqa: BLE001 - sqlalchemy raises many kinds; all mean "cannot open"
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        detail = detail.replace(url, mask_url(url))
        raise ProxyError(
            f"cannot open storage {mask_url(url)}: {type(exc).__name__}: {detail[:300]}"
        ) from None
    return optuna.storages.get_storage(rdb)


def check_listen(host: str, port: int) -> None:
    """One-line :class:`ProxyError` when ``host:port`` cannot be listened on."""
    if not 0 < port < 65536:
        raise ProxyError(f"--port must be between 1 and 65535, got {port}")
    from thaw.search._dashboard import DashboardError, _address

    try:
        family, sockaddr = _address(host, port)
    except DashboardError as exc:
        raise ProxyError(str(exc)) from None
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            if exc.errno == 98:  # EADDRINUSE
                raise ProxyError(
                    f"port {port} on {host} is already in use (another proxy?); choose another "
                    "with --port"
                ) from None
            raise ProxyError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def add_proxy_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``thaw storage-proxy`` on the CLI's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "storage-proxy",
        help="serve a database to many workers through Optuna's gRPC storage proxy",
        description=(
            "Serve the storage to workers that pass --storage grpc://HOST:PORT; they hold no "
            "database connection of their own. Ctrl-C stops it."
        ),
    )
    parser.add_argument(
        "--storage", required=True, help="the database, e.g. postgresql://user@host/db"
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default {DEFAULT_HOST}: this machine only; 0.0.0.0: all)",
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=10,
        help="requests served at once, and so the most database connections held (default 10)",
    )
    parser.set_defaults(func=cmd_storage_proxy)
    return parser


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops the proxy as Ctrl-C does."""
    raise KeyboardInterrupt


def cmd_storage_proxy(args: argparse.Namespace) -> int:
    """``thaw storage-proxy --storage URL``: serve until Ctrl-C or SIGTERM (``kill``, a
    Kubernetes pod stopping); exit status 0 then, 2 (one line) on bad input."""
    from thaw.search._dashboard import is_loopback

    url = str(args.storage)
    host = str(args.host)
    port = int(args.port)
    try:
        if not 1 <= int(args.threads) <= 1000:
            raise ProxyError(f"--threads must be between 1 and 1000, got {args.threads}")
        check_listen(host, port)
        storage = open_backing_storage(url)
    except ProxyError as exc:
        # Printed here, not raised as the CLI's UserError: ``python -m thaw.search._cli`` has
        # its own copy of that class.
        print(f"thaw: error: {exc}", file=sys.stderr)
        return 2
    if not is_loopback(host):
        print(
            f"thaw: warning: listening on {host}: the storage proxy has no login and no "
            "encryption, anyone who reaches this port can read and edit every study in "
            f"{mask_url(url)}",
            file=sys.stderr,
        )
    shown = socket.gethostname() if host in ("", "0.0.0.0", "::") else host
    print(
        f"Storage proxy for {mask_url(url)} on {host}:{port}, {args.threads} threads; workers "
        f"pass --storage grpc://{shown}:{port}",
        flush=True,
    )
    print("Press Ctrl-C to stop.", flush=True)
    from concurrent.futures import ThreadPoolExecutor

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with _quiet():
            optuna.storages.run_grpc_proxy_server(
                storage,
                host=host,
                port=port,
                thread_pool=ThreadPoolExecutor(max_workers=int(args.threads)),
            )
    except KeyboardInterrupt:
        pass
    print("Storage proxy stopped.", flush=True)
    return 0


__all__ = [
    "AttrHeartbeat",
    "ProxyError",
    "StorageLock",
    "add_proxy_parser",
    "check_url",
    "is_grpc_url",
    "is_journal_url",
    "open_grpc_storage",
    "open_journal_storage",
]
