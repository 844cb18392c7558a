"""thaw.run(model=..., data=...): the README's notebook example, run as written, on a tiny
pretrained keras.Model with arrays and then with a tf.data.Dataset; the in-memory data forms;
bad keywords refused with one line."""

from __future__ import annotations

import contextlib
import io
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SHAPE = (8, 8, 3)
CLASSES = 3


def readme_notebook_blocks() -> list[str]:
    """The python blocks of the README's "Your own model and data" section, in order."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("### Your own model and data")
    end = text.index("\n### ", start + 1)
    blocks = re.findall(r"```python\n(.*?)```", text[start:end], re.S)
    assert len(blocks) == 2, "the README's notebook example (and its head example) is gone"
    return blocks


def colour_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images whose class is the brightest channel (learnable by a tiny CNN)."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % CLASSES).astype("int32")
    x = rng.integers(0, 120, size=(n, *SHAPE))
    x[np.arange(n), :, :, y] += 120
    return x.astype("uint8"), y


def pretrained_tiny_cnn(build_tiny_cnn: Any) -> Any:
    """A tiny CNN "pretrained" by a quick fit on source images of the same kind."""
    import keras

    model = build_tiny_cnn(SHAPE, CLASSES, seed=3)
    x, y = colour_images(60, seed=11)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=3, batch_size=12, verbose=0)
    return model


def run_block(code: str, where: Path, namespace: dict[str, Any], monkeypatch: Any) -> str:
    monkeypatch.chdir(where)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's code
    return out.getvalue()


@pytest.mark.slow
def test_the_readme_notebook_example_runs_on_arrays_then_on_a_tf_data_dataset(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tiny_cnn: Any,
) -> None:
    import optuna
    import tensorflow as tf

    import thaw
    from thaw._keys import CONFIG_HASH
    from thaw.search._faults import counted_trials

    example, head_example = readme_notebook_blocks()
    model = pretrained_tiny_cnn(tiny_cnn)
    x, y = colour_images(48, seed=1)
    x_val, y_val = colour_images(24, seed=2)
    chance = math.log(CLASSES)

    arrays_dir = tmp_path / "arrays"
    arrays_dir.mkdir()
    ns: dict[str, Any] = {"model": model, "train": (x, y), "val": (x_val, y_val)}
    printed = run_block(example, arrays_dir, ns, monkeypatch)
    study = ns["study"]
    assert isinstance(study, optuna.Study)
    assert counted_trials(study) == 6
    assert study.best_value < chance  # the labels reached the model with their images
    assert f"{len(study.trials)} trials; best val_loss {round(study.best_value, 4)}" in printed
    assert (arrays_dir / "my-model.db").is_file()
    assert (arrays_dir / "thaw-report" / "my-model" / "report.html").is_file()
    best = ns["best"]
    assert best.predict(x_val[:2], verbose=0).shape == (2, CLASSES)
    # the top classifier was cut: the best model's head is thaw's, not the source one
    assert "old_head" not in {layer.name for layer in best.layers}
    arrays_hash = study.user_attrs[CONFIG_HASH]
    with capsys.disabled():
        print(
            f"\nREADME notebook example, arrays: {len(study.trials)} trials "
            f"({counted_trials(study)} counted), best val_loss {study.best_value:.4f} "
            f"(chance {chance:.4f})"
        )

    # The same call again resumes the study: nothing more to run.
    before = len(study.trials)
    run_block(example, arrays_dir, ns, monkeypatch)
    assert len(ns["study"].trials) == before

    # The head example, after the main one (it uses its model, train and val).
    run_block(head_example, arrays_dir, ns, monkeypatch)
    headed = ns["study"]
    assert counted_trials(headed) == 4
    kept = thaw.load_best(headed)
    assert 32 in {getattr(layer, "units", None) for layer in kept.layers}  # head's Dense(32)

    # A tf.data.Dataset of the same images: the same data fingerprint, so the same config hash.
    dataset_dir = tmp_path / "dataset"
    dataset_dir.mkdir()
    ns = {
        "model": model,
        "train": tf.data.Dataset.from_tensor_slices((x, y)).batch(8),
        "val": tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(8),
    }
    run_block(example, dataset_dir, ns, monkeypatch)
    study = ns["study"]
    assert counted_trials(study) == 6
    assert study.best_value < chance
    assert study.user_attrs[CONFIG_HASH] == arrays_hash
    with capsys.disabled():
        print(
            f"README notebook example, tf.data.Dataset: {len(study.trials)} trials "
            f"({counted_trials(study)} counted), best val_loss {study.best_value:.4f}"
        )


def _keras() -> Any:
    import keras

    return keras


class _Batches:
    """A keras.utils.PyDataset of (x, y) batches, built on first use (Keras imported late)."""

    def __new__(cls, x: np.ndarray, y: np.ndarray, size: int) -> Any:
        keras = _keras()

        class Batches(keras.utils.PyDataset):  # type: ignore[misc, name-defined]
            def __len__(self) -> int:
                return -(-len(x) // size)

            def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
                return x[i * size : (i + 1) * size], y[i * size : (i + 1) * size]

        return Batches()


@pytest.mark.parametrize(
    "form",
    ["arrays", "one-hot", "column labels", "batched dataset", "unbatched dataset", "pydataset"],
)
def test_every_data_form_reads_as_the_same_arrays(form: str) -> None:
    import tensorflow as tf

    from thaw.objectives._memory import to_arrays

    x, y = colour_images(10, seed=0)
    data: Any = {
        "arrays": (x, y),
        "one-hot": (x, np.eye(CLASSES, dtype="float32")[y]),
        "column labels": (x, y[:, None]),
        "batched dataset": tf.data.Dataset.from_tensor_slices((x, y)).batch(4),
        "unbatched dataset": tf.data.Dataset.from_tensor_slices((x, y)),
        "pydataset": _Batches(x, y, 4),
    }[form]
    got_x, got_y = to_arrays(data)
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)
    assert got_y.dtype == np.int32


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("images.npz", "must be (x, y) arrays, a tf.data.Dataset or a keras.utils.PyDataset"),
        ((np.zeros((4, 8, 8)), np.zeros(4, "int32")), "add a channel axis"),
        ((np.zeros((4, *SHAPE)), np.zeros(3, "int32")), "4 images but 3 labels"),
        (
            (np.zeros((4, *SHAPE)), np.full((4, 2), 0.5)),
            "y of data has labels of shape (4, 2) with values other than 0 and 1 (such as 0.5)",
        ),
        ((np.zeros((4, *SHAPE)), np.array([0, 1, -1, 0])), "negative labels [-1]"),
    ],
)
def test_data_that_cannot_be_read_is_refused_with_one_line(data: Any, message: str) -> None:
    from thaw.objectives import DataSourceError
    from thaw.objectives._memory import to_arrays

    with pytest.raises(DataSourceError) as info:
        to_arrays(data)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_without_validation_data_a_fraction_of_each_class_is_held_out() -> None:
    from thaw.objectives._memory import memory_data_source

    x, y = colour_images(30, seed=0)
    source = memory_data_source((x, y), val_fraction=0.2, seed=4)
    assert source.instance is not None
    arrays = source.instance.value
    assert arrays.counts(arrays.y_val) == [2, 2, 2]
    assert arrays.counts(arrays.y_train) == [8, 8, 8]
    again = memory_data_source((x, y), val_fraction=0.2, seed=4)
    assert again.instance is not None and again.instance.fingerprint == source.instance.fingerprint


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epoch": 3}, "unknown keyword 'epoch'; expected one of:"),
        ({"epochs": 0}, "train.epochs must be >= 1, got 0"),
        ({"objective": "auc"}, "objective is 'auc'; expected one of: val_loss, val_accuracy"),
        ({"space": {"dropout": [0.9, 0.1]}}, "search_space.dropout: low=0.9 > high=0.1"),
        ({"model": None}, "thaw.run(model=..., data=...) needs both; model is missing"),
        ({"data": None}, "thaw.run(model=..., data=...) needs both; data is missing"),
        ({"head": "dense"}, "head must be a function head(x, *, dropout, weight_decay"),
        (
            {"head": lambda x, **_: x},
            "study 'bad': head() cannot be built on the base's output (None, 6): ValueError: "
            "head() returned shape (None, 6); it must return the class probabilities, shape "
            "(batch, 3)",
        ),
        ({"class_names": ["a"]}, "the labels go up to 2 but class_names names 1 classes"),
        ({"unfreeze_by": "block"}, "unfreeze_by is 'block'; expected one of: layers, blocks"),
    ],
)
def test_bad_keywords_are_refused_with_one_line_before_any_storage(
    kwargs: dict[str, Any],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny_cnn: Any,
) -> None:
    import thaw

    monkeypatch.chdir(tmp_path)
    x, y = colour_images(12, seed=0)
    call: dict[str, Any] = {
        "model": tiny_cnn(SHAPE, CLASSES),
        "data": (x, y),
        "validation_data": (x, y),
        "study_name": "bad",
        **kwargs,
    }
    with pytest.raises(thaw.RunError) as info:
        thaw.run(**call)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_study_file_keyword_without_a_model_is_refused() -> None:
    import thaw

    with pytest.raises(thaw.RunError, match="these keywords go with model= and data="):
        thaw.run(REPO / "studies" / "demo.yaml", epochs=3)
    with pytest.raises(thaw.RunError, match="needs a study file .* or your model and data"):
        thaw.run()


def test_keywords_override_a_study_file_whose_model_and_data_are_replaced(
    tiny_cnn: Any, tmp_path: Path
) -> None:
    import yaml

    from thaw.search._notebook import notebook_config
    from thaw.search._run import load_config

    path = tmp_path / "mine.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "mine",
                "seed": 7,
                "train": {"epochs": 9, "batch_size": 4},
                "search_space": {"dropout": [0.1, 0.2]},
                "data": {"source": "demo"},
            }
        )
    )
    base = load_config(path)
    x, y = colour_images(12, seed=0)
    config = notebook_config(
        tiny_cnn(SHAPE, CLASSES), (x, y), (x, y), base=base, epochs=3, class_weight="balanced"
    )
    assert (config.name, config.seed, config.path) == ("mine", 7, base.path)
    assert (config.train.epochs, config.train.batch_size) == (3, 4)  # keyword, file
    assert config.train.class_weight == "balanced"
    assert (config.space.dropout.low, config.space.dropout.high) == (0.1, 0.2)
    assert (config.model.kind, config.data.kind) == ("memory", "memory")
    assert config.storage == f"sqlite:///{tmp_path / 'mine.db'}"
    # the weights are in the config hash: other weights, another study
    other = tiny_cnn(SHAPE, CLASSES, seed=5)
    changed = notebook_config(other, (x, y), (x, y), base=base, epochs=3, class_weight="balanced")
    assert changed.config_hash() != config.config_hash()
    same = notebook_config(
        tiny_cnn(SHAPE, CLASSES), (x, y), (x, y), base=base, epochs=3, class_weight="balanced"
    )
    assert same.config_hash() == config.config_hash()


def test_a_model_in_memory_is_not_handed_to_worker_processes(tiny_cnn: Any, tmp_path: Path) -> None:
    from thaw.search._notebook import notebook_config
    from thaw.search._run import RunError, RunOptions, run_study

    x, y = colour_images(12, seed=0)
    config = notebook_config(
        tiny_cnn(SHAPE, CLASSES),
        (x, y),
        (x, y),
        study_name="w",
        storage="postgresql://thaw@127.0.0.1:1/none",
    )
    with pytest.raises(RunError, match="--workers 2: a model or data held in memory cannot be"):
        run_study(config, options=RunOptions(workers=2))
