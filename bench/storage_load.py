"""Storage load bench: a cluster of thaw workers simulated with processes, on PostgreSQL directly
and through the gRPC storage proxy (``thaw storage-proxy``).

Each worker process runs thaw's own loop (``optimize_exactly``: the trial-slot lock, exact
counts, lost trials queued again, heartbeats) on a stub objective that reports ``--epochs``
epochs (``trial.report`` and ``trial.should_prune`` each epoch, a short sleep for the training)
without Keras. In the middle of the run ``--kills`` workers get SIGKILL (while a trial runs) and
PostgreSQL restarts once. For each worker count and mode it prints:

- trials/s the storage sustained (completed trials between 10% and 90% of ``n_trials``, over
  the time between them; up to the timeout when a run does not reach 90%);
- database connections in use (``pg_stat_activity``, median and most, sampled every 0.5 s);
- storage time per trial: a worker's time per trial outside the stub's sleeps (the lock, the
  trial's creation, 20 reports and prune checks, the heartbeat, finishing it), median and p90,
  and the median as a share of a demo trial's wall time (``--demo-trial-seconds``, default
  14.13 s: the demo CNN's 20-epoch trial, ``bench/speed.py`` in BENCHMARKS.md);
- completed trials against ``n_trials`` (target: exact), lost trials (seen complete, later not),
  duplicated trial numbers, trials left running.

PostgreSQL runs as a private server on a free port in a temporary folder (``initdb``; as root
it runs as the ``postgres`` user), so the restart and the connection counts touch nothing else.

Run it (a few minutes on 2 cores)::

    nice -n 10 python bench/storage_load.py [--workers 8,32,64] [--modes direct,proxy]
        [--n-trials 200] [--epochs 20] [--epoch-sleep 0.01] [--kills 3] [--restarts 1]

``run_scenario`` and ``PrivatePostgres`` also serve tests/search/test_storage_load.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEMO_TRIAL_SECONDS = 14.13


# ------------------------------------------------------------------------------- PostgreSQL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: p.parts)
    return versions[-1].parent if versions else None


class PrivatePostgres:
    """A PostgreSQL server of its own: ``initdb`` in a temporary folder, a free port, trust
    authentication on 127.0.0.1 for the ``thaw`` role. ``restart()`` stops it fast and starts
    it again. Raises RuntimeError when PostgreSQL is not installed."""

    def __init__(self, max_connections: int = 100) -> None:
        bindir = _pg_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (no pg_ctl)")
        self.bindir = bindir
        self.folder = Path(tempfile.mkdtemp(prefix="thaw-pg-"))
        self.port = free_port()
        self._root = os.geteuid() == 0
        if self._root:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run(
            "initdb", "-D", str(self.folder / "data"), "-U", "thaw", "-A", "trust", "-E", "UTF8"
        )
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
            f"-c max_connections={max_connections} -c fsync=off"
        )
        self._ctl = [
            "-D",
            str(self.folder / "data"),
            "-o",
            options,
            "-l",
            str(self.folder / "log"),
            "-w",
            "-t",
            "60",
        ]
        self._run("pg_ctl", *self._ctl, "start")
        self.url = f"postgresql://thaw@127.0.0.1:{self.port}/postgres"
        version = subprocess.run(
            [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=False
        )
        self.version = version.stdout.strip() or "PostgreSQL"

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bindir / tool), *args]
        if self._root:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def restart(self) -> None:
        self._run("pg_ctl", *self._ctl, "-m", "fast", "restart")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "immediate", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


def connections(url: str) -> int | None:
    """Connections to the database other than this query's (None while it is down)."""
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        with engine.connect() as conn:
            n = conn.execute(
                sqlalchemy.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid()"
                )
            ).scalar()
        engine.dispose()
        return int(n or 0)
    except Exception:  # noqa: BLE001 - down during the restart
        return None


# ----------------------------------------------------------------------------------- worker


def worker_main(args: argparse.Namespace) -> int:
    """One worker: thaw's loop on the stub objective; writes its per-trial times as JSON."""
    import optuna

    from thaw.search._run import optimize_exactly
    from thaw.search._study import open_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(args.storage)
    study = optuna.load_study(
        study_name=args.study, storage=storage, pruner=optuna.pruners.NopPruner()
    )
    sleeps: list[float] = []
    loop_times: list[float] = []
    last = [time.perf_counter()]

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -1.0, 1.0)
        slept = 0.0
        for epoch in range(args.epochs):
            # The sleep as it happened: on a loaded machine a sleep wakes late, and that is not
            # the storage's time.
            before = time.perf_counter()
            time.sleep(args.epoch_sleep)
            slept += time.perf_counter() - before
            trial.report(x * x + 1.0 / (epoch + 1), epoch)
            trial.should_prune()
        sleeps.append(slept)
        return x * x

    def timed(study: optuna.Study, trial: Any) -> None:
        now = time.perf_counter()
        loop_times.append(now - last[0])
        last[0] = now
        Path(args.out).write_text(
            json.dumps({"loop": loop_times, "sleep": sleeps}), encoding="utf-8"
        )

    optimize_exactly(
        study, storage, args.storage, objective, args.target, callbacks=[timed], poll_seconds=1.0
    )
    return 0


# --------------------------------------------------------------------------------- scenario


@dataclass
class LoadResult:
    mode: str
    workers: int
    n_trials: int
    completed: int = 0
    lost: int = 0
    duplicates: int = 0
    running_left: int = 0
    retried: int = 0
    trials_per_s: float = 0.0
    conn_median: float = 0.0
    conn_max: int = 0
    storage_median_s: float = 0.0
    storage_p90_s: float = 0.0
    wall_s: float = 0.0
    kills: int = 0
    restarts: int = 0
    failed_workers: int = 0
    notes: list[str] = field(default_factory=list)

    def line(self, demo_seconds: float = DEMO_TRIAL_SECONDS) -> str:
        share = 100 * self.storage_median_s / demo_seconds
        return (
            f"[storage-load] {self.mode:6s} {self.workers:3d} workers: {self.completed}/"
            f"{self.n_trials} completed (exact: {self.completed == self.n_trials}), lost "
            f"{self.lost}, duplicates {self.duplicates}, left running {self.running_left}, "
            f"retried {self.retried}; {self.trials_per_s:.1f} trials/s; DB connections median "
            f"{self.conn_median:g}, max {self.conn_max}; storage time per trial median "
            f"{self.storage_median_s * 1000:.0f} ms, p90 {self.storage_p90_s * 1000:.0f} ms "
            f"({share:.2f}% of a {demo_seconds:.2f} s demo trial); {self.kills} kills, "
            f"{self.restarts} restarts, wall {self.wall_s:.0f} s"
        )


def _spawn(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    with log.open("ab") as f:
        return subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, env=env)


def run_scenario(
    pg: PrivatePostgres,
    mode: str,
    workers: int,
    n_trials: int,
    *,
    epochs: int = 20,
    epoch_sleep: float = 0.01,
    kills: int = 3,
    restarts: int = 1,
    proxy_threads: int = 10,
    timeout: float = 900.0,
    folder: Path | None = None,
) -> LoadResult:
    """``workers`` stub workers on one study until ``n_trials`` complete, with kills and
    restarts of PostgreSQL in the middle (25%-75% of the trials)."""
    import optuna
    from optuna.trial import TrialState

    folder = folder or Path(tempfile.mkdtemp(prefix="thaw-load-"))
    name = f"load-{mode}-{workers}-{uuid.uuid4().hex[:6]}"
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    optuna.create_study(study_name=name, storage=pg.url)
    result = LoadResult(mode, workers, n_trials)
    proxy = None
    url = pg.url
    if mode == "proxy":
        port = free_port()
        proxy = _spawn(
            [
                sys.executable,
                "-m",
                "thaw.search._cli",
                "storage-proxy",
                "--storage",
                pg.url,
                "--port",
                str(port),
                "--threads",
                str(proxy_threads),
            ],
            folder / "proxy.log",
        )
        url = f"grpc://127.0.0.1:{port}"
    procs = [
        _spawn(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--worker",
                "--storage",
                url,
                "--study",
                name,
                "--target",
                str(n_trials),
                "--epochs",
                str(epochs),
                "--epoch-sleep",
                str(epoch_sleep),
                "--out",
                str(folder / f"w{i}.json"),
            ],
            folder / f"w{i}.log",
        )
        for i in range(workers)
    ]
    events = sorted(
        [(0.25 + 0.5 * (k + 1) / (kills + 1), "kill") for k in range(kills)]
        + [(0.6 + 0.1 * r, "restart") for r in range(restarts)]
    )
    reader = optuna.storages.RDBStorage(pg.url, engine_kwargs={"pool_pre_ping": True})
    samples: list[int] = []
    seen_complete: set[int] = set()
    marks: dict[str, float] = {}
    start = time.monotonic()
    killed: set[int] = set()
    rng = random.Random(0)
    try:
        while any(p.poll() is None for p in procs) and time.monotonic() - start < timeout:
            time.sleep(0.5)
            n = connections(pg.url)
            if n is not None:
                samples.append(n)
            try:
                study_id = reader.get_study_id_from_name(name)
                trials = reader.get_all_trials(study_id, deepcopy=False)
            except Exception:  # noqa: BLE001 - the database is restarting
                continue
            done = {t.number for t in trials if t.state == TrialState.COMPLETE}
            seen_complete |= done
            fraction = len(done) / n_trials
            for mark in (0.1, 0.9):
                if fraction >= mark and str(mark) not in marks:
                    marks[str(mark)] = time.monotonic() - start
                    marks[f"n{mark}"] = len(done)
            marks["last"], marks["nlast"] = time.monotonic() - start, len(done)
            while events and fraction >= events[0][0]:
                _, what = events.pop(0)
                if what == "restart":
                    pg.restart()
                    result.restarts += 1
                    continue
                running = [
                    int(str(t.user_attrs.get("thaw:worker", ":")).rpartition(":")[2] or 0)
                    for t in trials
                    if t.state == TrialState.RUNNING
                ]
                alive = [
                    p
                    for p in procs
                    if p.poll() is None and p.pid in running and p.pid not in killed
                ]
                if alive:
                    victim = rng.choice(alive)
                    victim.send_signal(signal.SIGKILL)
                    killed.add(victim.pid)
                    result.kills += 1
    finally:
        for p in procs:
            if p.poll() is None:
                result.notes.append(f"worker {p.pid} still running at the timeout")
                p.kill()
            p.wait()
        if proxy is not None:
            proxy.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proxy.wait(timeout=10)
            if proxy.poll() is None:
                proxy.kill()
    result.wall_s = time.monotonic() - start
    result.failed_workers = sum(p.returncode not in (0, -signal.SIGKILL) for p in procs)
    study_id = reader.get_study_id_from_name(name)
    trials = reader.get_all_trials(study_id, deepcopy=False)
    reader.engine.dispose()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    result.completed = len(complete)
    numbers = [t.number for t in trials]
    result.duplicates = len(numbers) - len(set(numbers))
    result.lost = len(seen_complete - {t.number for t in complete})
    result.running_left = sum(t.state == TrialState.RUNNING for t in trials)
    result.retried = sum("thaw:retry_of" in t.user_attrs for t in trials)
    # Past 10% of the trials, up to 90% (or up to the timeout when the run did not get there).
    end = "0.9" if "0.9" in marks else "last"
    if "0.1" in marks and end in marks and marks[end] > marks["0.1"]:
        result.trials_per_s = (marks[f"n{end}"] - marks["n0.1"]) / (marks[end] - marks["0.1"])
    if samples:
        result.conn_median = statistics.median(samples)
        result.conn_max = max(samples)
    per_trial: list[float] = []
    for i in range(workers):
        path = folder / f"w{i}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        # A worker's first loop includes its start-up: left out. The others include waiting
        # for the trial-slot lock, which is the storage's cost too.
        per_trial += [
            loop - sleep for loop, sleep in zip(data["loop"][1:], data["sleep"][1:], strict=False)
        ]
    if per_trial:
        per_trial.sort()
        result.storage_median_s = statistics.median(per_trial)
        result.storage_p90_s = per_trial[int(0.9 * (len(per_trial) - 1))]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--storage", help=argparse.SUPPRESS)
    parser.add_argument("--study", help=argparse.SUPPRESS)
    parser.add_argument("--target", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--workers", default="8,32,64", help="worker counts, e.g. 8,32,64")
    parser.add_argument("--modes", default="direct,proxy", help="direct, proxy or both")
    parser.add_argument("--n-trials", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--epoch-sleep", type=float, default=0.01, help="seconds per epoch")
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--restarts", type=int, default=1)
    parser.add_argument("--proxy-threads", type=int, default=10)
    parser.add_argument("--max-connections", type=int, default=100)
    parser.add_argument(
        "--overhead",
        action="store_true",
        help="instead: 4 workers whose trials last as long as a demo trial (20 epochs of "
        "--demo-trial-seconds / 20), 8 trials, no faults: the storage time per trial",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per scenario")
    parser.add_argument("--demo-trial-seconds", type=float, default=DEMO_TRIAL_SECONDS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args)
    pg = PrivatePostgres(max_connections=args.max_connections)
    try:
        print(
            f"{pg.version} (private, max_connections "
            f"{args.max_connections}); {os.cpu_count()} CPU cores; n_trials {args.n_trials}, "
            f"{args.epochs} epochs of {args.epoch_sleep} s; proxy threads {args.proxy_threads}",
            flush=True,
        )
        if args.overhead:
            for mode in args.modes.split(","):
                result = run_scenario(
                    pg,
                    mode,
                    4,
                    8,
                    epochs=20,
                    epoch_sleep=args.demo_trial_seconds / 20,
                    kills=0,
                    restarts=0,
                    proxy_threads=args.proxy_threads,
                    timeout=args.timeout,
                )
                share = 100 * result.storage_median_s / args.demo_trial_seconds
                print(
                    f"[storage-overhead] {mode:6s} 4 workers, trials of {args.demo_trial_seconds}"
                    f" s: storage time per trial median {result.storage_median_s * 1000:.0f} ms "
                    f"(p90 {result.storage_p90_s * 1000:.0f} ms) = {share:.2f}% of the trial "
                    f"(target <= 5%); {result.completed}/8 completed, DB connections max "
                    f"{result.conn_max}",
                    flush=True,
                )
            return 0
        for workers in (int(w) for w in args.workers.split(",")):
            for mode in args.modes.split(","):
                result = run_scenario(
                    pg,
                    mode,
                    workers,
                    args.n_trials,
                    epochs=args.epochs,
                    epoch_sleep=args.epoch_sleep,
                    kills=args.kills,
                    restarts=args.restarts,
                    proxy_threads=args.proxy_threads,
                    timeout=args.timeout,
                )
                print(result.line(args.demo_trial_seconds), flush=True)
                for note in result.notes:
                    print(f"  note: {note}", flush=True)
    finally:
        pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
