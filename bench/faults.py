"""Faults bench: no trial lost when workers are killed and the database restarts.

PostgreSQL: starts the machine's PostgreSQL (``.ci/start-postgres.sh``), runs ``thaw run --workers
4`` on a tiny saved CNN with ``.npz`` data and the three reference strategies, and in the middle of
trials sends SIGKILL to a worker that is running a trial (3 times) and restarts the database once
(``pg_ctlcluster ... restart``). SQLite: one process, killed in the middle of a trial, then
``thaw run`` again to resume. For each it prints:

- completed (complete + pruned) trials against ``n_trials``: the target is exact;
- trials lost: trials seen completed during the run that are not completed at the end (target 0);
- trials retried: trials queued again after their worker died (``thaw:retry_of``);
- duplicated trial numbers (target 0), trials left RUNNING (target 0);
- the reference strategies among the completed trials (target: all 3);
- ``thaw run``'s exit status and the lines naming the killed workers.

Run it (as root, on a machine with PostgreSQL 15 installed; a few minutes on 2 cores)::

    nice -n 10 python bench/faults.py [--n-trials 12] [--epochs 4] [--kills 3] [--restarts 1]

``run_postgres_scenario`` and ``run_sqlite_scenario`` also serve tests/search/test_faults_e2e.py.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml
from optuna.trial import TrialState

from thaw.search._budget import start_label
from thaw.search._faults import counted_trials

REPO = Path(__file__).resolve().parents[1]
STRATEGIES = ("full fine-tuning", "partial fine-tuning", "feature extraction")
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)
LOST = "thaw:lost"


def write_inputs(folder: Path, name: str, n_trials: int, epochs: int, storage: str) -> Path:
    """A tiny CNN (2 weighted layers below the cut), random 8x8 images, and the study file."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same", name="conv1")(inputs)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.Conv2D(6, 3, padding="same", name="conv2")(x)
    x = layers.GlobalAveragePooling2D(name="features")(x)
    outputs = layers.Dense(3, activation="softmax", name="old_head")(x)
    keras.Model(inputs, outputs, name="tiny").save(folder / "tiny.keras")
    rng = np.random.default_rng(0)
    np.savez(
        folder / "data.npz",
        x_train=rng.integers(0, 256, (96, 8, 8, 3), dtype=np.uint8),
        y_train=np.arange(96) % 3,
        x_val=rng.integers(0, 256, (48, 8, 8, 3), dtype=np.uint8),
        y_val=np.arange(48) % 3,
    )
    study = {
        "name": name,
        "n_trials": n_trials,
        "storage": storage,
        "reference_trials": True,
        "model": {"source": "file", "path": "tiny.keras", "cut_at": "features"},
        "data": {"source": "npz", "path": "data.npz", "class_names": ["a", "b", "c"]},
        # BatchNorm pinned: the informed start is then exactly the 3 textbook strategies.
        "search_space": {"unfrozen_layers": [0, "all"], "batchnorm": ["frozen"]},
        "train": {"epochs": epochs, "batch_size": 8},
        "sampler": {"name": "random"},
        "pruner": {"compare": "none"},
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class Outcome:
    storage: str
    n_trials: int
    counted: int = 0
    lost: int = 0
    retried: int = 0
    duplicated: int = 0
    running: int = 0
    strategies: list[str] = field(default_factory=list)
    kills: int = 0
    restarts: int = 0
    exit_codes: list[int] = field(default_factory=list)
    worker_lines: list[str] = field(default_factory=list)
    seconds: float = 0.0
    tracebacks: int = 0
    warnings: int = 0

    def lines(self) -> list[str]:
        ok = (
            self.counted == self.n_trials
            and self.lost == 0
            and self.duplicated == 0
            and self.running == 0
            and set(STRATEGIES) <= set(self.strategies)
        )
        return [
            f"[{self.storage}] {self.kills} SIGKILLs, {self.restarts} database restarts, "
            f"{self.seconds:.0f} s, thaw run exit {self.exit_codes}",
            f"  completed trials      {self.counted} / n_trials {self.n_trials}",
            f"  trials lost           {self.lost}",
            f"  trials retried        {self.retried}",
            f"  duplicated numbers    {self.duplicated}",
            f"  left RUNNING          {self.running}",
            f"  tracebacks on stderr  {self.tracebacks}, Optuna warnings {self.warnings}",
            f"  reference strategies  {sum(s in self.strategies for s in STRATEGIES)} of 3 "
            f"completed",
            *(f"  {line}" for line in self.worker_lines),
            f"  targets met: {'yes' if ok else 'NO'}",
        ]

    @property
    def ok(self) -> bool:
        return self.lines()[-1].endswith("yes")


class Watcher:
    """Reads the study while thaw runs: which trials were seen completed, and who runs what."""

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name
        self.seen_complete: set[int] = set()

    def trials(self) -> list[optuna.trial.FrozenTrial]:
        try:
            study = optuna.load_study(study_name=self.name, storage=self.url)
            trials = study.get_trials(deepcopy=False)
        except Exception:  # noqa: BLE001 - not created yet, or the database is restarting
            return []
        self.seen_complete |= {t.number for t in trials if t.state == TrialState.COMPLETE}
        return trials

    def counted(self) -> int:
        return sum(t.state in COUNTED for t in self.trials())

    def running_worker(self, among: set[int]) -> tuple[int, int] | None:
        """(pid, trial number) of a live worker (of ``among``) in the middle of a trial."""
        for t in self.trials():
            if t.state == TrialState.RUNNING and t.intermediate_values:
                pid = str(t.user_attrs.get("thaw:worker", "")).rpartition(":")[2]
                if pid.isdigit() and int(pid) in among:
                    return int(pid), t.number
        return None

    def still_running(self, number: int) -> bool:
        return any(t.number == number and t.state == TrialState.RUNNING for t in self.trials())

    def kill_mid_trial(
        self, among: Callable[[], set[int]], proc: subprocess.Popen[Any], seconds: float
    ) -> tuple[int, int] | None:
        """SIGKILL a worker in the middle of a trial; (pid, trial number), or None if none was.

        A trial of the tiny model lasts a second or so, so a worker seen mid-trial may have
        finished it by the time the signal lands. The worker is frozen first (SIGSTOP), its trial
        read again, and killed only if the trial still runs; otherwise it goes on (SIGCONT) and
        the next one is tried.
        """
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and proc.poll() is None:
            found = self.running_worker(among())
            if found is None:
                time.sleep(0.2)
                continue
            pid, number = found
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                continue
            if self.still_running(number):
                os.kill(pid, signal.SIGKILL)
                return found
            os.kill(pid, signal.SIGCONT)
        return None


def wait_for(condition: Callable[[], bool], timeout: float, proc: subprocess.Popen[str]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.5)
    return False


def child_pids(pid: int) -> set[int]:
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.add(int(stat.parent.name))
    return out


def restart_postgres() -> None:
    version = sorted(os.listdir("/usr/lib/postgresql"), key=float)[-1]
    subprocess.run(
        ["pg_ctlcluster", version, "main", "restart", "-m", "fast"],
        check=True,
        capture_output=True,
        timeout=120,
    )


def final_outcome(outcome: Outcome, watcher: Watcher) -> Outcome:
    study = optuna.load_study(study_name=watcher.name, storage=watcher.url)
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    complete = {t.number for t in trials if t.state == TrialState.COMPLETE}
    # what n_trials counts (thaw's own count: the informed start's screening rounds aside)
    outcome.counted = counted_trials(study)
    outcome.lost = len(watcher.seen_complete - complete)
    outcome.retried = sum("thaw:retry_of" in t.user_attrs for t in trials)
    outcome.duplicated = len(numbers) - len(set(numbers))
    outcome.running = sum(t.state == TrialState.RUNNING for t in trials)
    outcome.strategies = sorted(
        {str(start_label(t)) for t in trials if t.state in COUNTED and start_label(t) is not None}
    )
    return outcome


def count_noise(outcome: Outcome, stderr: str) -> None:
    outcome.tracebacks += stderr.count("Traceback (most recent call last)")
    outcome.warnings += stderr.count("ExperimentalWarning")


def thaw_command(study_file: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "thaw.search._cli",
        "run",
        str(study_file),
        "--no-progress",
        *args,
    ]


def run_postgres_scenario(
    url: str,
    folder: Path,
    *,
    n_trials: int = 12,
    epochs: int = 4,
    workers: int = 4,
    kills: int = 3,
    restarts: int = 1,
    timeout: float = 1500,
    say: Callable[[str], None] = print,
) -> Outcome:
    """``thaw run --workers`` on PostgreSQL with ``kills`` SIGKILLs and ``restarts`` restarts."""
    name = f"thaw-faults-{uuid.uuid4().hex[:8]}"
    study_file = write_inputs(folder, name, n_trials, epochs, url)
    outcome = Outcome("postgresql", n_trials)
    watcher = Watcher(url, name)
    start = time.monotonic()
    proc = subprocess.Popen(
        thaw_command(study_file, "--workers", str(workers)),
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # events spread over the run: kill, restart, kill, kill ... each after 1-2 more trials
        events = ["kill"] * kills
        for i in range(restarts):
            events.insert(min(1 + 2 * i, len(events)), "restart")
        done_before = 0
        for event in events:
            step = max(1, (n_trials - 3) // (len(events) + 1))
            if not wait_for(
                lambda d=done_before, s=step: watcher.counted() >= d + s, timeout, proc
            ):
                say(f"  the run ended or stalled before the {event}")
                break
            done_before = watcher.counted()
            if event == "restart":
                say(f"  restarting PostgreSQL after {done_before} completed trials")
                restart_postgres()
                outcome.restarts += 1
                continue
            found = watcher.kill_mid_trial(lambda: child_pids(proc.pid), proc, 300)
            if found is None:
                say("  no worker in the middle of a trial to kill")
                continue
            say(
                f"  SIGKILL to worker pid {found[0]} in the middle of trial {found[1]}, "
                f"after {done_before} completed trials"
            )
            outcome.kills += 1
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    outcome.exit_codes.append(proc.returncode)
    outcome.worker_lines = [line for line in err.splitlines() if line.startswith("thaw: worker")]
    count_noise(outcome, err)
    outcome.seconds = time.monotonic() - start
    final_outcome(outcome, watcher)
    optuna.delete_study(study_name=name, storage=url)
    return outcome


def run_sqlite_scenario(
    folder: Path,
    *,
    n_trials: int = 6,
    epochs: int = 4,
    timeout: float = 900,
    say: Callable[[str], None] = print,
) -> Outcome:
    """One process on SQLite, SIGKILLed in the middle of a trial, then ``thaw run`` again."""
    name = "thaw-faults-sqlite"
    url = f"sqlite:///{folder / 'faults.db'}"
    study_file = write_inputs(folder, name, n_trials, epochs, url)
    outcome = Outcome("sqlite", n_trials)
    watcher = Watcher(url, name)
    start = time.monotonic()
    proc = subprocess.Popen(
        thaw_command(study_file), cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        if wait_for(lambda: watcher.counted() >= 1, timeout, proc):
            counted = watcher.counted()
            found = watcher.kill_mid_trial(lambda: {proc.pid}, proc, timeout)
            if found is not None:
                say(f"  SIGKILL to thaw run (pid {proc.pid}) in trial {found[1]}, after {counted}")
                outcome.kills += 1
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    outcome.exit_codes.append(proc.returncode)
    again = subprocess.run(
        thaw_command(study_file), cwd=folder, capture_output=True, text=True, timeout=timeout
    )
    outcome.exit_codes.append(again.returncode)
    count_noise(outcome, again.stderr)
    outcome.worker_lines = [
        line for line in again.stdout.splitlines() if line.startswith("Queued again")
    ]
    outcome.seconds = time.monotonic() - start
    return final_outcome(outcome, watcher)


# ------------------------------------------------------------- a long outage, a private server


class PrivatePostgres:
    """A PostgreSQL server of its own (``initdb`` in a temp folder, its own port), so that
    stopping it for longer than the retry window disturbs no other user of the machine's."""

    def __init__(self, port: int = 55433) -> None:
        version = sorted(os.listdir("/usr/lib/postgresql"), key=float)[-1]
        self.bin = Path("/usr/lib/postgresql") / version / "bin"
        self.folder = Path(tempfile.mkdtemp(prefix="thaw-pg-"))  # postgres must reach it
        shutil.chown(self.folder, "postgres")
        self.data = self.folder / "pgdata"
        self.port = port
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        self._as_postgres(f"{self.bin}/initdb -D {self.data} --auth=trust -U postgres")
        self.start()

    def _as_postgres(self, command: str) -> None:
        subprocess.run(
            ["su", "postgres", "-c", command], check=True, capture_output=True, timeout=120
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1"
        self._as_postgres(
            f"{self.bin}/pg_ctl -D {self.data} -l {self.data}/log -w -o '{options}' start"
        )

    def stop(self) -> None:
        self._as_postgres(f"{self.bin}/pg_ctl -D {self.data} -m fast -w stop")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def run_outage_scenario(
    folder: Path,
    *,
    outage_seconds: float = 75,
    n_trials: int = 8,
    epochs: int = 4,
    workers: int = 2,
    timeout: float = 1500,
    say: Callable[[str], None] = print,
) -> Outcome:
    """``thaw run --workers`` on a PostgreSQL stopped for ``outage_seconds`` (longer than the
    60 s retry window) in the middle of a trial, then started again."""
    server = PrivatePostgres()
    name = f"thaw-outage-{uuid.uuid4().hex[:8]}"
    study_file = write_inputs(folder, name, n_trials, epochs, server.url)
    outcome = Outcome(f"postgresql, {outage_seconds:.0f} s outage", n_trials)
    watcher = Watcher(server.url, name)
    start = time.monotonic()
    err = ""
    proc = subprocess.Popen(
        thaw_command(study_file, "--workers", str(workers)),
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if wait_for(lambda: watcher.counted() >= 1, timeout, proc) and wait_for(
            lambda: watcher.running_worker(child_pids(proc.pid)) is not None, 120, proc
        ):
            running = watcher.running_worker(child_pids(proc.pid))
            say(
                f"  stopping PostgreSQL for {outage_seconds:.0f} s in the middle of trial "
                f"{running[1] if running else '?'}, after {watcher.counted()} completed"
            )
            server.stop()
            time.sleep(outage_seconds)
            server.start()
            outcome.restarts += 1
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        outcome.exit_codes.append(proc.returncode)
    try:
        count_noise(outcome, err)
        if "Traceback" in err:
            log = Path(tempfile.gettempdir()) / f"{name}.stderr"
            log.write_text(err, encoding="utf-8")
            say(f"  thaw run's stderr, with its tracebacks: {log}")
        outcome.worker_lines = [
            line for line in err.splitlines() if line.startswith("thaw: worker")
        ][:4]
        final_outcome(outcome, watcher)
        study = optuna.load_study(study_name=name, storage=server.url)
        lost = [t for t in study.trials if "storage was unreachable" in str(t.user_attrs.get(LOST))]
        outcome.worker_lines.append(f"trials lost to the outage and queued again: {len(lost)}")
        outcome.seconds = time.monotonic() - start
    finally:
        server.close()
    return outcome


# ------------------------------------------------------------------ a kill during creation


def creation_state(db: Path, name: str) -> str:
    """``"absent"``, ``"half"`` (created, no ``thaw:config_hash`` yet) or ``"done"``."""
    import sqlite3

    if not db.exists():
        return "absent"
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.05)
        try:
            row = conn.execute("SELECT study_id FROM studies WHERE study_name = ?", (name,))
            found = row.fetchone()
            if found is None:
                return "absent"
            keys = conn.execute(
                "SELECT key FROM study_user_attributes WHERE study_id = ?", (found[0],)
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return "absent"
    return "done" if ("thaw:config_hash",) in keys else "half"


def run_creation_kill_scenario(
    folder: Path,
    *,
    n_trials: int = 5,
    epochs: int = 2,
    attempts: int = 6,
    timeout: float = 900,
    say: Callable[[str], None] = print,
) -> Outcome:
    """``thaw run`` SIGKILLed while it creates the study (the study there, its attrs and
    informed start not all written), then ``thaw run`` again: the study is completed, with its
    domain shift, and runs exactly ``n_trials``."""
    outcome = Outcome("sqlite, killed during creation", n_trials)
    start = time.monotonic()
    for attempt in range(1, attempts + 1):
        name = f"thaw-creation-{attempt}"
        db = folder / f"creation-{attempt}.db"
        study_file = write_inputs(folder, name, n_trials, epochs, f"sqlite:///{db}")
        proc = subprocess.Popen(
            thaw_command(study_file),
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        caught = False
        while proc.poll() is None:
            state = creation_state(db, name)
            if state == "done":
                break
            if state == "half":
                os.kill(proc.pid, signal.SIGSTOP)
                if creation_state(db, name) == "half":
                    os.kill(proc.pid, signal.SIGKILL)
                    caught = True
                    break
                os.kill(proc.pid, signal.SIGCONT)
                break
            time.sleep(0.005)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if not caught:
            say(f"  attempt {attempt}: creation finished before the kill landed")
            continue
        outcome.kills += 1
        outcome.exit_codes.append(proc.returncode)
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
        say(
            f"  attempt {attempt}: SIGKILL during creation ({len(study.user_attrs)} study attrs, "
            f"{len(study.trials)} trials queued of the informed start)"
        )
        again = subprocess.run(
            thaw_command(study_file), cwd=folder, capture_output=True, text=True, timeout=timeout
        )
        outcome.exit_codes.append(again.returncode)
        count_noise(outcome, again.stderr)
        watcher = Watcher(f"sqlite:///{db}", name)
        final_outcome(outcome, watcher)
        done = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
        shift = done.user_attrs.get("thaw:domain_shift")
        outcome.worker_lines = [
            f"domain shift measured on completion: {'yes' if shift else 'NO'}"
            + (f" (overall {shift['overall']:.3g})" if shift else "")
        ]
        break
    outcome.seconds = time.monotonic() - start
    return outcome


# ------------------------------------------------------------- a study opened from elsewhere


def run_moved_scenario(
    folder: Path,
    *,
    n_trials: int = 6,
    epochs: int = 2,
    timeout: float = 900,
    say: Callable[[str], None] = print,
) -> Outcome:
    """A study run part-way in one folder, then resumed from a copy of the folder elsewhere
    (its SQLite file along), and joined from a third folder with a copy of the study file and
    data through ``--storage`` pointing at the first folder's file."""
    name = "thaw-moved"
    first = folder / "a"
    first.mkdir()
    study_file = write_inputs(first, name, n_trials, epochs, "sqlite:///moved.db")
    outcome = Outcome("sqlite, opened from other paths", n_trials)
    start = time.monotonic()
    part = subprocess.run(
        thaw_command(study_file, "--n-trials", "2"),
        cwd=first,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    outcome.exit_codes.append(part.returncode)
    moved = folder / "b" / "moved" / "deeper"
    shutil.copytree(first, moved)
    resumed = subprocess.run(
        thaw_command(moved / "study.yaml"),
        cwd=moved,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    outcome.exit_codes.append(resumed.returncode)
    count_noise(outcome, resumed.stderr)
    joined_from = folder / "c" / "elsewhere"
    shutil.copytree(
        first, joined_from, ignore=shutil.ignore_patterns("*.db", "artifacts", "models")
    )
    joined = subprocess.run(
        thaw_command(joined_from / "study.yaml", "--storage", f"sqlite:///{first / 'moved.db'}"),
        cwd=joined_from,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    outcome.exit_codes.append(joined.returncode)
    count_noise(outcome, joined.stderr)
    refused = [r.stderr.strip() for r in (resumed, joined) if r.returncode == 2]
    outcome.worker_lines = [
        f"copy in another folder: {first_line(resumed.stdout, 'Resuming')}",
        f"joined through --storage: {first_line(joined.stdout, 'Resuming')}",
        *refused,
    ]
    final_outcome(outcome, Watcher(f"sqlite:///{moved / 'moved.db'}", name))
    joined_outcome = final_outcome(
        Outcome("", n_trials), Watcher(f"sqlite:///{first / 'moved.db'}", name)
    )
    outcome.worker_lines.append(
        f"the first folder's study after the join: {joined_outcome.counted} / {n_trials} completed"
    )
    outcome.seconds = time.monotonic() - start
    say(f"  moved and joined in {outcome.seconds:.0f} s")
    return outcome


def first_line(text: str, prefix: str) -> str:
    """``"Resuming: 2 trials finished, running 4 more"``, or ``"NO"`` when the run did not."""
    import re

    line = next((x for x in text.splitlines() if x.startswith(prefix)), None)
    found = re.search(r"\d+ trials finished, running \d+ more", line or "")
    return f"{prefix}: {found.group(0)}" if line and found else "NO"


def start_postgres() -> str:
    proc = subprocess.run(
        ["bash", str(REPO / ".ci" / "start-postgres.sh")],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return proc.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--restarts", type=int, default=1)
    parser.add_argument("--sqlite-trials", type=int, default=6)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument(
        "--outage",
        type=float,
        default=75,
        help="seconds a private PostgreSQL is stopped mid-trial (0: no outage scenario)",
    )
    parser.add_argument(
        "--only",
        choices=("outage", "creation", "moved"),
        action="append",
        help="run only these of the newer scenarios (and not the kill/restart ones)",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    results: list[Outcome] = []
    tmp = Path(tempfile.mkdtemp(prefix="thaw-faults-"))
    only = set(args.only or ())
    try:
        if "outage" in only or (not only and not args.skip_postgres and args.outage > 0):
            print(f"PostgreSQL stopped for {args.outage:.0f} s mid-trial", flush=True)
            (tmp / "outage").mkdir()
            results.append(run_outage_scenario(tmp / "outage", outage_seconds=args.outage))
        if "creation" in only or not only:
            print("SQLite: killed during creation, then run again", flush=True)
            (tmp / "creation").mkdir()
            results.append(run_creation_kill_scenario(tmp / "creation"))
        if "moved" in only or not only:
            print("SQLite: a study opened from other paths", flush=True)
            (tmp / "moved").mkdir()
            results.append(run_moved_scenario(tmp / "moved"))
        if not only and not args.skip_postgres:
            url = start_postgres()
            print(f"PostgreSQL: {args.workers} workers, n_trials {args.n_trials}", flush=True)
            (tmp / "pg").mkdir()
            results.append(
                run_postgres_scenario(
                    url,
                    tmp / "pg",
                    n_trials=args.n_trials,
                    epochs=args.epochs,
                    workers=args.workers,
                    kills=args.kills,
                    restarts=args.restarts,
                )
            )
        if not only:
            print(f"SQLite: one process, n_trials {args.sqlite_trials}", flush=True)
            (tmp / "sqlite").mkdir()
            results.append(
                run_sqlite_scenario(tmp / "sqlite", n_trials=args.sqlite_trials, epochs=args.epochs)
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    for outcome in results:
        print("\n".join(outcome.lines()))
    return 0 if all(o.ok for o in results) else 1


if __name__ == "__main__":
    sys.exit(main())


__all__: list[Any] = ["run_postgres_scenario", "run_sqlite_scenario", "Outcome"]
