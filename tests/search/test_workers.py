"""``thaw run --workers N``: several worker processes sharing one study on PostgreSQL.

The PostgreSQL tests need a server: ``THAW_TEST_POSTGRES_URL`` (e.g.
``postgresql://thaw:PASSWORD@127.0.0.1:5432/thaw_test``); without it they are skipped. Every test
uses its own study name and deletes its study afterwards. SQLite refusals need no server.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from thaw.search._config import mask_url

if TYPE_CHECKING:
    from conftest import CliResult  # tests/search/conftest.py, a fixture module

optuna.logging.set_verbosity(optuna.logging.WARNING)

POSTGRES_ENV = "THAW_TEST_POSTGRES_URL"


def demo_study(name: str, **changes: Any) -> dict[str, Any]:
    """The demo model and data, 2 epochs per trial, nothing pruned."""
    return {
        "name": name,
        "seed": 0,
        "n_trials": 4,
        "model": {"source": "demo"},
        "data": {"source": "demo"},
        "search_space": {
            "unfrozen_layers": {"low": 0, "high": "all"},
            "learning_rate": {"low": 1e-3, "high": 1e-2, "log": True},
            "dropout": {"low": 0.0, "high": 0.3},
            "weight_decay": {"low": 1e-6, "high": 1e-3, "log": True},
        },
        "train": {"epochs": 2, "batch_size": 32},
        "sampler": {"name": "random"},
        "pruner": {"compare": "none", "patience": 5, "n_warmup_steps": 0},
        "reference_trials": False,
        **changes,
    }


def write_study(folder: Path, study: dict[str, Any]) -> Path:
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False), encoding="utf-8")
    return path


# ------------------------------------------------------------------ SQLite: one process only


@pytest.mark.parametrize(
    "args",
    [
        ["--workers", "2"],
        ["--workers", "3", "--storage", "sqlite:///elsewhere.db"],
        ["--gpus", "0,1"],
    ],
    ids=["workers", "workers with --storage", "gpus"],
)
def test_several_workers_on_sqlite_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], thaw: Callable[..., CliResult]
) -> None:
    monkeypatch.chdir(tmp_path)
    study_file = write_study(tmp_path, demo_study("sqlite-workers"))
    result = thaw("run", study_file, *args, "--no-progress")
    assert result.rc == 2
    n = 2 if "--gpus" in args else int(args[1])
    assert result.error_line.startswith(
        f"thaw: error: --workers {n} needs a storage several processes can share; "
        "SQLite is for one process."
    )
    assert "PostgreSQL URL" in result.error_line
    assert result.out == ""
    assert not (tmp_path / "sqlite-workers.db").exists()
    assert not (tmp_path / "elsewhere.db").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "--workers must be >= 1, got 0"),
        (["--gpus", "0,x"], "--gpus must be GPU indices such as 0,1, got '0,x'"),
    ],
)
def test_bad_worker_arguments(
    tmp_path: Path, args: list[str], message: str, thaw: Callable[..., CliResult]
) -> None:
    study_file = write_study(tmp_path, demo_study("bad-workers"))
    result = thaw("run", study_file, *args, "--no-progress")
    assert result.rc == 2
    assert result.error_line == f"thaw: error: {message}"
    assert not (tmp_path / "bad-workers.db").exists()


# ---------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """Session-scoped so the skip comes before the session's demo pretraining."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"{POSTGRES_ENV} is not set: no PostgreSQL server for the multi-worker tests")
    url = url.strip()
    if "\n" in url or not url.startswith("postgresql"):
        pytest.fail(f"{POSTGRES_ENV} must be one postgresql:// URL, got {mask_url(url)!r}")
    return url


@pytest.fixture
def study_name(postgres_url: str) -> Iterator[str]:
    """A name no other test (or earlier run) uses; the study is deleted afterwards."""
    name = f"thaw-test-workers-{uuid.uuid4().hex[:12]}"
    yield name
    with contextlib.suppress(KeyError):
        optuna.delete_study(study_name=name, storage=postgres_url)


def password_of(url: str) -> str | None:
    return make_url(url).password


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # heartbeat
def test_two_workers_share_a_postgres_study(
    postgres_url: str,
    demo_model_path: Path,
    tmp_path: Path,
    study_name: str,
    thaw: Callable[..., CliResult],
) -> None:
    study_file = write_study(tmp_path, demo_study(study_name))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "thaw.search._cli",
            "run",
            str(study_file),
            "--workers",
            "2",
            "--storage",
            postgres_url,
            "--n-trials",
            "4",
            "--no-progress",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=500,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"^Started 2 workers on CPU, \d+ threads? each\.$", proc.stdout, re.M), (
        proc.stdout
    )
    assert f"Created study '{study_name}' in {mask_url(postgres_url)}" in proc.stdout
    assert "running 4 more on 2 workers" in proc.stdout
    assert "workers exited with an error" not in proc.stderr  # both worker processes exited 0
    password = password_of(postgres_url)
    if password:
        assert password not in proc.stdout
        assert password not in proc.stderr

    study = optuna.load_study(study_name=study_name, storage=postgres_url)
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) >= 4, [(t.number, t.state) for t in trials]  # a runaway may be pruned
    assert finished == trials
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    for t in complete:
        assert len(t.user_attrs["history"]["val_loss"]) == 2
    determinism = study.user_attrs["thaw:determinism"]
    assert determinism["deterministic"] is False
    assert "2 workers sample in parallel" in determinism["reason"]
    if password:
        assert password not in str(study.user_attrs["thaw:config"])

    # the report of a PostgreSQL study names its storage without the password
    out = tmp_path / "report"
    report = thaw("report", study_file, "--storage", postgres_url, "--out", out)
    assert report.rc == 0, report.err
    for name in ("report.md", "report.html", "trials.csv", "summary.json"):
        text = (out / name).read_text(encoding="utf-8")
        if password:
            assert password not in text, name
    if password:
        assert password not in report.out + report.err


@pytest.mark.postgres
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # heartbeat
def test_wrong_postgres_password_is_one_masked_line(
    tmp_path: Path, postgres_url: str, study_name: str, thaw: Callable[..., CliResult]
) -> None:
    wrong = make_url(postgres_url).set(password="not-the-password-7731")
    url = wrong.render_as_string(hide_password=False)
    study_file = write_study(tmp_path, demo_study(study_name))
    result = thaw("run", study_file, "--workers", "2", "--storage", url, "--no-progress")
    assert result.rc == 2
    assert result.error_line.startswith(f"thaw: error: cannot open storage {mask_url(url)}: ")
    assert "not-the-password-7731" not in result.out + result.err
    assert study_name not in optuna.get_all_study_names(postgres_url)
