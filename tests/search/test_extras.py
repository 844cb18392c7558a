"""A study file whose settings need a package that is not installed is refused at load.

The package is made unimportable for the test (``sys.modules[name] = None``, as Python does
for a module that failed to import), so the refusal is checked on a machine that has it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import yaml

if TYPE_CHECKING:
    from conftest import CliResult  # tests/search/conftest.py, a fixture module

STUDY: dict[str, Any] = {
    "name": "extras",
    "n_trials": 1,
    "storage": "sqlite:///extras.db",
    "model": {"source": "demo"},
    "data": {"source": "npz", "path": "data.npz", "class_names": ["a", "b"]},
    "train": {"epochs": 1},
}


def write_data(folder: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(
        folder / "data.npz",
        x_train=rng.integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8),
        y_train=np.arange(8) % 2,
        x_val=rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8),
        y_val=np.arange(4) % 2,
    )


@pytest.mark.parametrize(
    ("changes", "module", "fragment"),
    [
        (
            {"train": {"epochs": 1, "tensorboard": True}},
            "tensorboard",
            "train.tensorboard: true needs the tensorboard package, which is not installed; "
            "pip install 'thaw-keras[tensorboard]'",
        ),
        (
            {"model": {"source": "kerashub", "preset": "backbones/tiny"}},
            "keras_hub",
            "model.source: kerashub needs the keras-hub package, which is not installed; "
            "pip install 'thaw-keras[kerashub]'",
        ),
    ],
    ids=["tensorboard", "kerashub"],
)
def test_a_missing_extra_is_one_line_naming_it_and_nothing_is_written(
    changes: dict[str, Any],
    module: str,
    fragment: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    thaw: Callable[..., CliResult],
) -> None:
    write_data(tmp_path)
    (tmp_path / "study.yaml").write_text(yaml.safe_dump({**STUDY, **changes}), encoding="utf-8")
    listing = sorted(p.name for p in tmp_path.iterdir())
    monkeypatch.setitem(sys.modules, module, None)

    result = thaw("run", tmp_path / "study.yaml", "--no-progress")

    assert result.rc == 2, result.err
    assert fragment in result.error_line
    assert sorted(p.name for p in tmp_path.iterdir()) == listing


def test_an_installed_extra_passes_the_check(tmp_path: Path) -> None:
    from thaw.search import load_study_file
    from thaw.search._run import check_extras

    pytest.importorskip("tensorboard")
    write_data(tmp_path)
    (tmp_path / "study.yaml").write_text(
        yaml.safe_dump({**STUDY, "train": {"epochs": 1, "tensorboard": True}}), encoding="utf-8"
    )
    check_extras(load_study_file(tmp_path / "study.yaml"))  # tensorboard is installed here
