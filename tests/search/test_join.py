"""Joining a study from anywhere: a study is identified by what it holds, not where it sits.

Two folders hold copies of the same study file, model file and data; ``thaw run`` from each,
against one SQLite file, works on one study: the second joins (it is not refused), and
``n_trials`` holds for the study as a whole. A changed search space, model or data is refused
in one line naming the difference; a worker that cannot write the ``artifacts`` folder is
refused before any trial.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import pytest
import yaml
from optuna.trial import TrialState

from thaw._keys import MODEL_FINGERPRINT, MODELS_DIR
from thaw.search._study import sqlite_run_lock

if TYPE_CHECKING:
    from conftest import CliResult  # tests/search/conftest.py, a fixture module

STUDY: dict[str, Any] = {
    "name": "joined",
    "n_trials": 3,
    "storage": "sqlite:///local.db",  # each folder's own; the runs pass the shared one
    "model": {"source": "file", "path": "tiny.keras", "cut_at": "features"},
    "data": {"source": "npz", "path": "data.npz", "class_names": ["a", "b", "c"]},
    "search_space": {"unfrozen_layers": [0, "all"], "batchnorm": ["frozen"]},
    "train": {"epochs": 2, "batch_size": 8},
    "sampler": {"name": "random"},
    "pruner": {"compare": "none"},
    "reference_trials": False,
    "artifacts": "../shared-artifacts",
}


def write_folder(
    folder: Path, tiny_cnn: Callable[..., Any], arrays: dict[str, np.ndarray], **changes: Any
) -> Path:
    folder.mkdir(parents=True)
    tiny_cnn().save(folder / "tiny.keras")
    np.savez(folder / "data.npz", **arrays)
    study = {**STUDY, **changes}
    (folder / "study.yaml").write_text(yaml.safe_dump(study), encoding="utf-8")
    return folder / "study.yaml"


@pytest.mark.slow
def test_a_copy_in_another_folder_joins_and_n_trials_holds_for_the_study(
    tmp_path: Path,
    tiny_cnn: Callable[..., Any],
    tiny_arrays: Callable[..., dict[str, np.ndarray]],
    thaw: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = write_folder(tmp_path / "machine-a" / "work", tiny_cnn, tiny_arrays())
    second = tmp_path / "machine-b" / "elsewhere" / "deeper" / "work"
    shutil.copytree(first.parent, second)
    shared = f"sqlite:///{tmp_path / 'shared.db'}"

    monkeypatch.chdir(first.parent)
    one = thaw("run", "study.yaml", "--storage", shared, "--n-trials", "1", "--no-progress")
    assert one.rc == 0, one.err
    assert "Created study 'joined'" in one.out

    monkeypatch.chdir(second)
    two = thaw("run", "study.yaml", "--storage", shared, "--no-progress")
    assert two.rc == 0, two.err
    assert "Resuming study 'joined'" in two.out
    assert "1 trials finished, running 2 more" in two.out

    monkeypatch.chdir(first.parent)
    three = thaw("run", "study.yaml", "--storage", shared, "--no-progress")
    assert three.rc == 0, three.err
    assert "3 trials finished, running 0 more" in three.out

    study = optuna.load_study(study_name="joined", storage=shared)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert len(study.user_attrs[MODEL_FINGERPRINT]) == 64
    # the artifacts folder the study file names, relative to each copy: each run's own here
    assert study.user_attrs[MODELS_DIR].endswith("shared-artifacts/models/joined")
    for work in (first.parent, second):
        shared_dir = work.parent / "shared-artifacts"
        assert any((shared_dir / "artifacts").iterdir())  # each trial's dashboard artifacts
        assert (shared_dir / "models" / "joined").is_dir()
    assert not (first.parent / "local.db").exists() and not (second / "local.db").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            "space",
            "study 'joined' was created with a different search space (learning_rate.high "
            "0.01 -> 0.03); use a new study name or restore the file",
        ),
        ("data", "study 'joined' was run on different data (fingerprint "),
        ("model", "study 'joined' was created with a different model (fingerprint "),
    ],
)
def test_a_copy_that_differs_is_refused_in_one_line_naming_the_difference(
    tmp_path: Path,
    tiny_cnn: Callable[..., Any],
    tiny_arrays: Callable[..., dict[str, np.ndarray]],
    thaw: Callable[..., CliResult],
    change: str,
    message: str,
) -> None:
    space = {"unfrozen_layers": [0, "all"], "batchnorm": ["frozen"]}
    first = write_folder(
        tmp_path / "a",
        tiny_cnn,
        tiny_arrays(),
        search_space={**space, "learning_rate": [1e-4, 1e-2]},
    )
    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    assert thaw("run", first, "--storage", shared, "--n-trials", "1", "--no-progress").rc == 0
    other = {
        "space": {"search_space": {**space, "learning_rate": [1e-4, 3e-2]}},
        "data": {},
        "model": {},
    }[change]
    second = write_folder(
        tmp_path / "b",
        lambda: tiny_cnn(seed=1) if change == "model" else tiny_cnn(),
        tiny_arrays(seed=1) if change == "data" else tiny_arrays(),
        **({"search_space": {**space, "learning_rate": [1e-4, 1e-2]}} | other),
    )
    before = (tmp_path / "shared.db").read_bytes()
    refused = thaw("run", second, "--storage", shared, "--no-progress")
    assert refused.rc == 2
    assert refused.error_line.startswith(f"thaw: error: {message}")
    assert (tmp_path / "shared.db").read_bytes() == before


def test_a_worker_that_cannot_write_the_artifacts_folder_is_refused(
    tmp_path: Path,
    tiny_cnn: Callable[..., Any],
    tiny_arrays: Callable[..., dict[str, np.ndarray]],
    thaw: Callable[..., CliResult],
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the artifacts folder should be")
    study_file = write_folder(
        tmp_path / "a", tiny_cnn, tiny_arrays(), artifacts=str(blocker / "shared")
    )
    refused = thaw("run", study_file, "--no-progress")
    assert refused.rc == 2
    assert refused.error_line == (
        f"thaw: error: artifacts folder {blocker} (to create {blocker / 'shared' / 'artifacts'}) "
        "is not a folder; set 'artifacts' in the study file (or --artifact-dir) to a folder "
        "every worker can write"
    )
    assert sorted(p.name for p in study_file.parent.iterdir()) == [
        "data.npz",
        "study.yaml",
        "tiny.keras",
    ]


def running_trials_in(db: Path) -> int:
    """Running trials in a SQLite file, read without writing to it (0 before it has them)."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return int(
                conn.execute("SELECT count(*) FROM trials WHERE state = 'RUNNING'").fetchone()[0]
            )
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_a_second_run_on_a_sqlite_file_in_use_is_refused_in_one_line(
    tmp_path: Path,
    tiny_cnn: Callable[..., Any],
    tiny_arrays: Callable[..., dict[str, np.ndarray]],
    thaw: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The first run's one trial trains until it is killed (no pruning, many epochs).
    first = write_folder(
        tmp_path / "a",
        tiny_cnn,
        tiny_arrays(),
        n_trials=1,
        train={"epochs": 100000, "batch_size": 8},
        pruner={"compare": "none", "patience": 100000},
    )
    second = tmp_path / "b"
    shutil.copytree(first.parent, second)
    db = tmp_path / "shared.db"
    shared = f"sqlite:///{db}"
    running = subprocess.Popen(
        [sys.executable, "-m", "thaw.search._cli", "run", "study.yaml", "--storage", shared],
        cwd=first.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # Until its trial runs (read-only: the test writes nothing to the file).
        while running_trials_in(db) == 0:
            assert running.poll() is None, running.communicate()[0]
            time.sleep(0.5)
        before = [
            (t.number, t.state)
            for t in optuna.load_study(study_name="joined", storage=shared).trials
        ]

        monkeypatch.chdir(second)
        refused = thaw("run", "study.yaml", "--storage", shared, "--no-progress")
        assert refused.rc == 2
        assert refused.error_line == (
            f"thaw: error: storage {shared}: another thaw run is using {db} right now, and "
            "SQLite serves one process; wait for it to end (a rerun then resumes the study), or "
            "share the study through PostgreSQL to run workers side by side (docs/cluster.md)"
        )
        assert refused.out.splitlines() == ["Loading model and data for study 'joined' ..."]
        assert [
            (t.number, t.state)
            for t in optuna.load_study(study_name="joined", storage=shared).trials
        ] == before
        assert running.poll() is None  # the first run goes on
    finally:
        running.kill()
        running.communicate()
    # The lock went with the killed process: the file is free for the next run.
    with sqlite_run_lock(shared):
        pass
