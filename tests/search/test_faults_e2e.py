"""End to end, real processes: a worker SIGKILLed and the database restarted, no trial lost.

The scenarios are bench/faults.py's, smaller: on PostgreSQL 2 workers, one SIGKILL of a worker in
the middle of a trial and one restart of the server (needs ``THAW_TEST_POSTGRES_URL`` and root
to run ``pg_ctlcluster``); on SQLite one process killed in the middle of a trial, then resumed.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def bench_faults() -> ModuleType:
    spec = importlib.util.spec_from_file_location("thaw_bench_faults", REPO / "bench" / "faults.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def check(outcome: object, kills: int, restarts: int = 0) -> None:
    lines = "\n".join(outcome.lines())  # type: ignore[attr-defined]
    assert outcome.kills == kills, lines  # type: ignore[attr-defined]
    assert outcome.restarts == restarts, lines  # type: ignore[attr-defined]
    assert outcome.counted == outcome.n_trials, lines  # type: ignore[attr-defined]
    assert outcome.lost == 0, lines  # type: ignore[attr-defined]
    assert outcome.duplicated == 0, lines  # type: ignore[attr-defined]
    assert outcome.running == 0, lines  # type: ignore[attr-defined]
    assert sorted(set(outcome.strategies)) == sorted(  # type: ignore[attr-defined]
        ["full fine-tuning", "partial fine-tuning", "feature extraction"]
    ), lines


@pytest.mark.slow
@pytest.mark.postgres
def test_a_killed_worker_and_a_database_restart_lose_no_trial(tmp_path: Path) -> None:
    url = os.environ.get("THAW_TEST_POSTGRES_URL", "").strip()
    if not url:
        pytest.skip("THAW_TEST_POSTGRES_URL is not set: no PostgreSQL server")
    if os.geteuid() != 0 or shutil.which("pg_ctlcluster") is None:
        pytest.skip("restarting the server needs root and pg_ctlcluster (Debian's postgresql)")
    outcome = bench_faults().run_postgres_scenario(
        url, tmp_path, n_trials=5, epochs=3, workers=2, kills=1, restarts=1, timeout=900
    )
    check(outcome, kills=1, restarts=1)
    assert outcome.retried >= 1
    assert outcome.exit_codes == [1]  # a worker died: thaw run says so and exits non-zero
    (line,) = outcome.worker_lines
    assert line.startswith("thaw: worker ") and line.endswith("was killed by SIGKILL")


@pytest.mark.slow
def test_sqlite_run_killed_mid_trial_resumes_without_losing_a_trial(tmp_path: Path) -> None:
    outcome = bench_faults().run_sqlite_scenario(tmp_path, n_trials=4, epochs=3, timeout=600)
    check(outcome, kills=1)
    assert outcome.exit_codes == [-9, 0]
    assert outcome.retried == 1
    assert outcome.worker_lines and outcome.worker_lines[0].startswith("Queued again 1 trials")
