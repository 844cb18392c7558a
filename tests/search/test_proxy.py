"""``thaw storage-proxy`` and the grpc:// and journal:/// storages of workers.

A real proxy process on a free port serves real SQLite storage (and PostgreSQL when
``THAW_TEST_POSTGRES_URL`` is set); a real ``thaw run`` reaches it with ``--storage grpc://``.
The trial-slot lock and the heartbeat that these storages lack are checked on a real journal
file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
import pytest
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from thaw._keys import HEARTBEAT, LOST, RETRY_OF, WORKER
from thaw.search._faults import GRACE_PERIOD, recover_lost_trials
from thaw.search._proxy import LOCK_PREFIX, StorageLock, open_journal_storage

if TYPE_CHECKING:
    from conftest import CliResult  # tests/search/conftest.py, a fixture module

optuna.logging.set_verbosity(optuna.logging.WARNING)

POSTGRES_ENV = "THAW_TEST_POSTGRES_URL"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_study(name: str) -> dict[str, object]:
    """The demo model and data, 2 epochs per trial, 2 trials, nothing pruned."""
    return {
        "name": name,
        "seed": 0,
        "n_trials": 2,
        "model": {"source": "demo"},
        "data": {"source": "demo"},
        "train": {"epochs": 2, "batch_size": 32},
        "sampler": {"name": "random"},
        "pruner": {"compare": "none", "patience": 5, "n_warmup_steps": 0},
        "reference_trials": False,
        "lr_range_test": False,
    }


def write_study(folder: Path, name: str) -> Path:
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(demo_study(name), sort_keys=False), encoding="utf-8")
    return path


@contextlib.contextmanager
def proxy_process(storage: str, *extra: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``thaw storage-proxy`` on a free port; yields its grpc:// URL once it answers."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "thaw.search._cli",
            "storage-proxy",
            "--storage",
            storage,
            "--port",
            str(port),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"grpc://127.0.0.1:{port}"
    try:
        from thaw.search._proxy import open_grpc_storage

        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                open_grpc_storage(url, timeout=2).close()  # type: ignore[attr-defined]
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
        yield url, proc
    finally:
        if proc.poll() is None:
            # SIGTERM, as kill or Kubernetes stops it (a shell's background job ignores SIGINT)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _storages() -> list[object]:
    params: list[object] = ["sqlite"]
    params.append(
        pytest.param(
            "postgresql",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(
                    not os.environ.get(POSTGRES_ENV), reason=f"{POSTGRES_ENV} unset"
                ),
            ],
        )
    )
    return params


@pytest.mark.slow
@pytest.mark.parametrize("backend", _storages())
def test_a_worker_runs_a_study_through_the_proxy(
    backend: str,
    demo_model_path: Path,
    tmp_path: Path,
    thaw: Callable[..., CliResult],
) -> None:
    name = f"thaw-test-proxy-{uuid.uuid4().hex[:10]}"
    database = (
        f"sqlite:///{tmp_path / 'behind.db'}"
        if backend == "sqlite"
        else os.environ[POSTGRES_ENV].strip()
    )
    study_file = write_study(tmp_path, name)
    try:
        with proxy_process(database) as (url, proc):
            result = thaw("run", study_file, "--storage", url, "--no-progress")
            assert result.rc == 0, result.err
            assert f"Created study '{name}' in {url}" in result.out
            assert "2 completed, 0 pruned, 0 failed" in result.out
            # resumed through the proxy: nothing more to run
            again = thaw("run", study_file, "--storage", url, "--no-progress")
            assert again.rc == 0, again.err
            assert "Resuming study" in again.out and "running 0 more" in again.out
        out, err = proc.communicate()
        assert proc.returncode == 0, err
        assert f"workers pass --storage {url}" in out
        assert out.rstrip().endswith("Storage proxy stopped.")
        # what the worker wrote is in the database behind the proxy
        study = optuna.load_study(study_name=name, storage=database)
        trials = study.get_trials()
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
        for t in trials:
            assert len(t.intermediate_values) == 2
            assert isinstance(t.system_attrs[HEARTBEAT], float)  # thaw's own heartbeat
            assert t.user_attrs[WORKER].endswith(f":{os.getpid()}")
        # no lock left behind
        assert not [
            s for s in study._storage.get_all_studies() if s.study_name.startswith(LOCK_PREFIX)
        ]
    finally:
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=name, storage=database)


@pytest.mark.slow
def test_a_worker_runs_a_study_on_a_journal_file(
    demo_model_path: Path, tmp_path: Path, thaw: Callable[..., CliResult]
) -> None:
    study_file = write_study(tmp_path, "journal-demo")
    url = f"journal:///{tmp_path / 'shared' / 'demo.journal'}"  # journal:////abs/path
    result = thaw("run", study_file, "--storage", url, "--no-progress")
    assert result.rc == 2, result.out  # the folder does not exist yet
    assert "folder" in result.error_line and "does not exist" in result.error_line
    assert not (tmp_path / "shared").exists()

    (tmp_path / "shared").mkdir()
    result = thaw("run", study_file, "--storage", url, "--no-progress")
    assert result.rc == 0, result.err
    assert "2 completed, 0 pruned, 0 failed" in result.out
    journal = tmp_path / "shared" / "demo.journal"
    storage = JournalStorage(JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name="journal-demo", storage=storage)
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 2
    assert [s.study_name for s in storage.get_all_studies()] == ["journal-demo"]

    report = thaw("report", study_file, "--storage", url, "--out", tmp_path / "r")
    assert report.rc == 0, report.err
    assert (tmp_path / "r" / "report.html").exists()


# ------------------------------------------------------------------------------ bad inputs


@pytest.mark.parametrize(
    ("storage", "expected"),
    [
        ("grpc://proxy-host", "is not a proxy address; use grpc://HOST:PORT"),
        ("grpc://proxy-host:port", "is not a proxy address"),
        ("grpc://proxy-host:13000/path", "is not a proxy address"),
        ("grpc://127.0.0.1:70000", "port 70000 is not between 1 and 65535"),
        ("journal:///", "is a folder; give a file such as"),
        ("journal:///no/such/folder/x.journal", "folder"),
    ],
)
def test_a_bad_grpc_or_journal_url_is_one_line(
    storage: str, expected: str, tmp_path: Path, thaw: Callable[..., CliResult]
) -> None:
    study_file = write_study(tmp_path, "bad-url")
    before = sorted(tmp_path.rglob("*"))
    result = thaw("run", study_file, "--storage", storage, "--no-progress")
    assert result.rc == 2
    assert expected in result.error_line
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_a_journal_storage_that_is_another_file_is_refused(
    tmp_path: Path, thaw: Callable[..., CliResult]
) -> None:
    study_file = write_study(tmp_path, "bad-journal")
    other = tmp_path / "notes.txt"
    other.write_text("my notes\n", encoding="utf-8")
    result = thaw("run", study_file, "--storage", f"journal:///{other}", "--no-progress")
    assert result.rc == 2
    assert "is not an Optuna journal" in result.error_line
    assert other.read_text(encoding="utf-8") == "my notes\n"
    folder = thaw("run", study_file, "--storage", f"journal:///{tmp_path}", "--no-progress")
    assert folder.rc == 2
    assert "is a folder" in folder.error_line


@pytest.mark.slow
def test_an_unreachable_proxy_is_one_line(
    demo_model_path: Path, tmp_path: Path, thaw: Callable[..., CliResult]
) -> None:
    study_file = write_study(tmp_path, "no-proxy")
    url = f"grpc://127.0.0.1:{free_port()}"  # nothing listens there
    result = thaw("run", study_file, "--storage", url, "--no-progress")
    assert result.rc == 2
    assert f"cannot reach the storage proxy at {url}" in result.error_line
    assert "thaw storage-proxy" in result.error_line


def _proxy_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "thaw.search._cli", "storage-proxy", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--storage", "grpc://127.0.0.1:13000"], "give the database behind it"),
        (["--storage", "journal:///x.journal"], "a journal file is shared directly"),
        (["--storage", "sqlite:////no/such/folder/x.db"], "folder /no/such/folder does not exist"),
        (["--storage", "not a url"], "is not a database URL"),
        (["--storage", "sqlite:///x.db", "--port", "0"], "--port must be between 1 and 65535"),
        (["--storage", "sqlite:///x.db", "--threads", "0"], "--threads must be between 1"),
        (
            ["--storage", "sqlite:///x.db", "--host", "192.0.2.1"],
            "cannot listen on 192.0.2.1:13000",
        ),
    ],
)
def test_bad_proxy_arguments_are_one_line(
    args: list[str], expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = _proxy_cli(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("thaw: error: "), lines
    assert expected in lines[0]
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_taken_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _proxy_cli("--storage", f"sqlite:///{tmp_path / 'x.db'}", "--port", str(port))
    assert result.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.postgres
def test_the_proxy_never_prints_the_database_password(tmp_path: Path) -> None:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"{POSTGRES_ENV} is not set: no PostgreSQL server")
    from sqlalchemy.engine import make_url

    parsed = make_url(url.strip())
    wrong = parsed.set(password="wrong-secret-pw").render_as_string(hide_password=False)
    refused = _proxy_cli("--storage", wrong, "--port", str(free_port()))
    assert refused.returncode == 2
    assert "wrong-secret-pw" not in refused.stdout + refused.stderr
    assert ":***@" in refused.stderr and refused.stderr.count("\n") == 1
    with proxy_process(url.strip(), "--host", "0.0.0.0") as (_, proc):
        pass
    out, err = proc.communicate()
    assert parsed.password not in out + err
    assert ":***@" in out
    # bound to every interface: the dashboard's warning
    assert "thaw: warning: listening on 0.0.0.0: the storage proxy has no login" in err


def test_the_proxy_binds_this_machine_only_by_default(tmp_path: Path) -> None:
    with proxy_process(f"sqlite:///{tmp_path / 'x.db'}") as (url, proc):
        port = int(url.rsplit(":", 1)[1])
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) == 0
    out, err = proc.communicate()
    assert f"on 127.0.0.1:{port}" in out
    assert "warning" not in err


# ---------------------------------------------------------------- lock and heartbeat, journal


@pytest.fixture
def journal(tmp_path: Path) -> optuna.storages.BaseStorage:
    return open_journal_storage(f"journal:///{tmp_path / 'lock.journal'}")


def test_the_storage_lock_lets_one_holder_in_at_a_time(
    journal: optuna.storages.BaseStorage, tmp_path: Path
) -> None:
    first = StorageLock(journal, "s")
    # another process's view of the same file
    second = StorageLock(open_journal_storage(f"journal:///{tmp_path / 'lock.journal'}"), "s")
    first.acquire()
    got = threading.Event()

    def take() -> None:
        second.acquire()
        got.set()

    thread = threading.Thread(target=take)
    thread.start()
    assert not got.wait(1.0)  # held by the first
    first.release()
    assert got.wait(10.0)
    second.release()
    thread.join()
    assert [s.study_name for s in journal.get_all_studies()] == []


def test_the_lock_of_a_dead_worker_is_taken_over(journal: optuna.storages.BaseStorage) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    study_id = journal.create_new_study([optuna.study.StudyDirection.MINIMIZE], f"{LOCK_PREFIX}s")
    journal.set_study_system_attr(study_id, "holder", f"{socket.gethostname()}:{dead.pid}")
    lock = StorageLock(journal, "s", stale_after=600)
    start = time.monotonic()
    lock.acquire()
    assert time.monotonic() - start < 5
    lock.release()


@pytest.mark.parametrize(
    ("age", "worker", "lost"),
    [
        (GRACE_PERIOD + 5, "other-host:123", True),  # silent past the grace period
        (1, "other-host:123", False),  # beating
        (None, "other-host:123", False),  # no heartbeat yet: not judged
    ],
)
def test_a_running_trial_with_a_stale_heartbeat_is_queued_again(
    journal: optuna.storages.BaseStorage, age: float | None, worker: str, lost: bool
) -> None:
    study = optuna.create_study(study_name="hb", storage=journal)
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    trial.set_user_attr(WORKER, worker)
    if age is not None:
        journal.set_trial_system_attr(trial._trial_id, HEARTBEAT, time.time() - age)
    retried = recover_lost_trials(study, journal)
    trials = study.get_trials()
    if lost:
        assert retried == [0]
        assert trials[0].state == TrialState.FAIL
        assert "no heartbeat" in trials[0].user_attrs[LOST]
        assert trials[1].state == TrialState.WAITING
        assert trials[1].user_attrs[RETRY_OF]["trial"] == 0
        assert trials[1].system_attrs["fixed_params"] == trials[0].params
    else:
        assert retried == []
        assert [t.state for t in trials] == [TrialState.RUNNING]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("journal:///demo.journal", "journal:////studies/demo.journal"),  # beside the study file
        ("journal:///runs/demo.journal", "journal:////studies/runs/demo.journal"),
        ("journal:////shared/demo.journal", "journal:////shared/demo.journal"),  # absolute
        ("grpc://proxy-host:13000", "grpc://proxy-host:13000"),
    ],
)
def test_a_journal_path_is_relative_to_the_study_file(url: str, expected: str) -> None:
    from thaw.search._config import resolve_storage_url

    assert resolve_storage_url(url, Path("/studies")) == expected
