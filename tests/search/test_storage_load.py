"""The short version of bench/storage_load.py: 8 stub workers through ``thaw storage-proxy`` on
a PostgreSQL server of the test's own, one worker killed by SIGKILL while its trial runs and
one restart of the database. No trial lost or duplicated, exactly ``n_trials`` completed, and
the proxy holds no more database connections than its threads allow.

The server is started with ``initdb`` on a free port (bench/storage_load.py's PrivatePostgres),
so restarting it touches no other user of the machine's PostgreSQL; the test is skipped when
PostgreSQL is not installed.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def _bench() -> Any:
    path = REPO / "bench" / "storage_load.py"
    spec = importlib.util.spec_from_file_location("storage_load", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["storage_load"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[Any]:
    bench = _bench()
    try:
        pg = bench.PrivatePostgres(max_connections=50)
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"no PostgreSQL server of the test's own: {exc}")
    except Exception as exc:  # noqa: BLE001 - initdb/pg_ctl failed (CalledProcessError)
        pytest.skip(f"PostgreSQL did not start: {exc}")
    yield pg
    pg.stop()


@pytest.mark.slow
@pytest.mark.postgres
def test_eight_stub_workers_through_the_proxy_survive_a_kill_and_a_restart(
    private_postgres: Any, tmp_path: Path
) -> None:
    bench = _bench()
    threads = 3
    result = bench.run_scenario(
        private_postgres,
        "proxy",
        8,
        40,
        epochs=20,
        epoch_sleep=0.02,
        kills=1,
        restarts=1,
        proxy_threads=threads,
        timeout=400,
        folder=tmp_path,
    )
    assert result.notes == []
    assert result.kills == 1
    assert result.restarts == 1
    assert result.completed == 40, result.line()
    assert result.lost == 0
    assert result.duplicates == 0
    assert result.running_left == 0
    # The killed worker's trial ran again, unless it finished between the pick and the kill;
    # no trial of a live worker was taken for lost.
    assert result.retried <= result.kills
    assert result.failed_workers == 0
    # The proxy's connections: one per thread, the bench's own reader, and a few more while
    # the pool replaces its connections after the restart; fewer than one per worker.
    assert 1 <= result.conn_max <= threads + 4 < 8, result.line()
