"""Joining a study from anywhere: a study is identified by what it holds, not where it sits.

Two folders hold copies of the same study file, model file and data; ``thaw run`` from each,
against one SQLite file, works on one study: the second joins (it is not refused), and
``n_trials`` holds for the study as a whole. A changed search space, model or data is refused
in one line naming the difference; a worker that cannot write the ``artifacts`` folder is
refused before any trial.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import pytest
import yaml
from optuna.trial import TrialState

from thaw._keys import MODEL_FINGERPRINT, MODELS_DIR

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
