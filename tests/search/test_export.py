"""``thaw export``: the trial's best-epoch model, kept or retrained, matches its stored val loss."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import yaml

from thaw.search._export import default_models_dir

pytestmark = pytest.mark.slow


def _study_file(folder: Path, tiny_cnn: Any, tiny_arrays: Any, **extra: Any) -> Path:
    tiny_cnn().save(folder / "tiny.keras")
    np.savez(folder / "data.npz", **tiny_arrays())
    study = {
        "name": "tiny",
        "n_trials": 2,
        "reference_trials": False,  # 2 sampled trials, no informed start left waiting
        "model": {"source": "file", "path": "tiny.keras", "cut_at": "features"},
        "data": {"source": "npz", "path": "data.npz", "class_names": ["a", "b", "c"]},
        "search_space": {"learning_rate": [1e-3, 3e-2]},
        "train": {"epochs": 4, "batch_size": 8},
        "sampler": {"name": "random"},
        "pruner": {"compare": "none"},
        **extra,
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def _difference(out: str) -> float:
    match = re.search(r"difference ([0-9.e+-]+)\.", out)
    assert match, out
    return float(match.group(1))


def test_export_copies_the_kept_model_of_the_best_trial(
    tmp_path: Path, tiny_cnn: Any, tiny_arrays: Any, thaw: Callable[..., Any]
) -> None:
    path = _study_file(tmp_path, tiny_cnn, tiny_arrays)
    assert thaw("run", path, "--no-progress").rc == 0
    storage = f"sqlite:///{tmp_path / 'tiny.db'}"
    study = optuna.load_study(study_name="tiny", storage=storage)
    best = min(study.trials, key=lambda t: t.user_attrs["best_val_loss"])
    folder = default_models_dir(storage, tmp_path, "tiny")
    assert study.user_attrs["thaw:models_dir"] == str(folder)
    assert (folder / f"trial-{best.number}.keras").is_file()

    out = tmp_path / "best.keras"
    result = thaw("export", path, "--out", out)
    assert result.rc == 0, result.err
    assert f"Trial {best.number}'s best-epoch model (kept) written to {out}" in result.out
    assert _difference(result.out) <= 1e-4
    print(f"export round trip (kept): |difference| = {_difference(result.out):.2e}")
    import keras

    model = keras.saving.load_model(out, safe_mode=True)
    assert model.output_shape == (None, 3)


def test_export_retrains_a_trial_whose_model_was_not_kept(
    tmp_path: Path, tiny_cnn: Any, tiny_arrays: Any, thaw: Callable[..., Any]
) -> None:
    path = _study_file(
        tmp_path,
        tiny_cnn,
        tiny_arrays,
        keep_best=False,
        train={"epochs": 4, "batch_size": 8, "warmup_epochs": 1},
    )
    assert thaw("run", path, "--no-progress").rc == 0
    assert not (tmp_path / "models").exists()
    out = tmp_path / "t1.keras"
    result = thaw("export", path, "--trial", "1", "--out", out)
    assert result.rc == 0, result.out + result.err
    assert "Trial 1's best-epoch model (retrained)" in result.out
    print(f"export round trip (retrained): |difference| = {_difference(result.out):.2e}")
    assert _difference(result.out) <= 1e-4
    assert out.is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--out", "model.h5"), "--out must name a .keras file, got"),
        (("--trial", "7", "--out", "m.keras"), "study 'tiny' has no trial 7; trials are 0..1"),
    ],
)
def test_export_refuses_bad_arguments_with_one_line(
    tmp_path: Path,
    tiny_cnn: Any,
    tiny_arrays: Any,
    thaw: Callable[..., Any],
    args: tuple[str, ...],
    message: str,
) -> None:
    path = _study_file(tmp_path, tiny_cnn, tiny_arrays, train={"epochs": 1, "batch_size": 8})
    assert thaw("run", path, "--no-progress").rc == 0
    result = thaw("export", path, *args)
    assert result.rc == 2
    assert message in result.error_line
