"""TensorBoard runs per trial, user callbacks by import path, and the trial table formats."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

CALLBACK_MODULE = """
import os

import keras


class EpochLog(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seen = 0

    def on_epoch_end(self, epoch, logs=None):
        self.seen += 1
        with open(os.environ["THAW_TEST_EPOCH_LOG"], "a") as f:
            f.write(f"{id(self)} {epoch} {sorted(logs)}\\n")


NOT_A_CALLBACK = 3
"""


def _study(folder: Path, tiny_cnn: Any, tiny_arrays: Any, **train: Any) -> Path:
    tiny_cnn().save(folder / "tiny.keras")
    np.savez(folder / "data.npz", **tiny_arrays())
    study = {
        "name": "tiny",
        "n_trials": 2,
        "model": {"source": "file", "path": "tiny.keras", "cut_at": "features"},
        "data": {"source": "npz", "path": "data.npz"},
        "train": {"epochs": 2, "batch_size": 8, **train},
        "sampler": {"name": "random"},
        "pruner": {"compare": "none"},
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


@pytest.fixture
def callback_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "thaw_test_cbs.py").write_text(CALLBACK_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    log = tmp_path / "epochs.log"
    monkeypatch.setenv("THAW_TEST_EPOCH_LOG", str(log))
    return log


@pytest.mark.slow
def test_tensorboard_run_per_trial_and_user_callbacks(
    tmp_path: Path,
    tiny_cnn: Any,
    tiny_arrays: Any,
    thaw: Callable[..., Any],
    callback_module: Path,
) -> None:
    path = _study(
        tmp_path,
        tiny_cnn,
        tiny_arrays,
        tensorboard=True,
        csv_log=True,
        warmup_epochs=1,
        callbacks=["thaw_test_cbs.EpochLog"],
    )
    result = thaw("run", path, "--no-progress")
    assert result.rc == 0, result.err
    for trial in (0, 1):
        run = tmp_path / "tensorboard" / "tiny" / f"trial-{trial}"
        for split in ("train", "validation"):
            events = list((run / split).glob("events.out.tfevents.*"))
            assert events and events[0].stat().st_size > 0, (run, split)
        rows = (tmp_path / "logs" / "tiny" / f"trial-{trial}.csv").read_text().splitlines()
        assert rows[0].split(",")[0] == "epoch" and "val_loss" in rows[0]
        assert [r.split(",")[0] for r in rows[1:]] == ["0", "1"]  # both phases, one file
    lines = callback_module.read_text().splitlines()
    assert len(lines) == 4  # 2 trials x 2 epochs
    instances = {line.split()[0] for line in lines}
    assert len(instances) == 2  # a fresh callback per trial, kept across its two fit phases
    assert all("'val_loss'" in line for line in lines)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("thaw_test_nowhere.Cb", "cannot import 'thaw_test_nowhere' for 'thaw_test_nowhere.Cb'"),
        ("thaw_test_cbs.Missing", "module 'thaw_test_cbs' has no 'Missing'"),
        ("thaw_test_cbs.NOT_A_CALLBACK", "is not a keras.callbacks.Callback subclass"),
    ],
)
def test_bad_callback_path_is_one_line_before_storage(
    tmp_path: Path,
    tiny_cnn: Any,
    tiny_arrays: Any,
    thaw: Callable[..., Any],
    callback_module: Path,
    entry: str,
    message: str,
) -> None:
    path = _study(tmp_path, tiny_cnn, tiny_arrays, callbacks=[entry])
    result = thaw("run", path, "--no-progress")
    assert result.rc == 2
    assert message in result.error_line
    assert not (tmp_path / "tiny.db").exists()


@pytest.mark.slow
def test_report_format_parquet(
    tmp_path: Path, tiny_cnn: Any, tiny_arrays: Any, thaw: Callable[..., Any]
) -> None:
    path = _study(tmp_path, tiny_cnn, tiny_arrays, epochs=1)
    assert thaw("run", path, "--no-progress").rc == 0
    out = tmp_path / "report"
    result = thaw("report", path, "--out", out, "--format", "parquet")
    if importlib.util.find_spec("pyarrow") is None:
        assert result.rc == 2
        assert "--format parquet needs pyarrow: pip install 'thaw-keras[parquet]'" in (
            result.error_line
        )
        assert not out.exists()
        return
    import pandas

    assert result.rc == 0, result.err
    frame = pandas.read_parquet(out / "trials.parquet")
    assert sorted(frame["number"]) == [0, 1]


RETRACING = (
    "5 out of the last 5 calls to <function f at 0x7f> triggered tf.function retracing. "
    "Tracing is expensive and the excessive number of tracings could be due to (1) creating "
    "@tf.function repeatedly in a loop"
)


@pytest.mark.parametrize(("verbosity", "shown"), [(0, False), (1, False), (2, True)])
def test_tensorflow_retracing_warnings_stay_out_of_the_terminal(
    verbosity: int, shown: bool
) -> None:
    code = (
        "import logging\n"
        "from thaw.search._cli import _configure_logging\n"
        f"_configure_logging({verbosity})\n"
        f"logging.getLogger('tensorflow').warning({RETRACING!r})\n"
        "logging.getLogger('tensorflow').warning('a warning that matters')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "a warning that matters" in done.stderr
    assert ("triggered tf.function retracing" in done.stderr) is shown
