"""Multi-label targets: how labels are read (rows of 0/1 against integer labels and one-hot
rows), what is refused, the chance levels, and the sigmoid head with binary cross-entropy."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from thaw.objectives import (
    ArrayData,
    DataSourceError,
    load_npz,
    multilabel_chance,
    resolve_labels,
)
from thaw.objectives._data import binary_entropy, class_weights

MULTI_HOT = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]], dtype="float32")
ONE_HOT = np.eye(3, dtype="float32")[[0, 1, 2, 1]]


@pytest.mark.parametrize(
    ("task", "y_train", "y_val", "multilabel"),
    [
        ("auto", np.array([0, 1, 2, 1]), np.array([2, 0]), False),
        ("auto", ONE_HOT, ONE_HOT[:2], False),
        ("auto", np.array([[0], [1], [2], [1]]), np.array([[1], [0]]), False),
        ("auto", MULTI_HOT, MULTI_HOT[:2], True),
        ("auto", MULTI_HOT.astype(bool), ONE_HOT[:2], True),  # one split not one-hot: all are
        ("auto", MULTI_HOT.astype("int64"), MULTI_HOT[:2].astype("int64"), True),
        ("multilabel", ONE_HOT, ONE_HOT[:2], True),  # asked for: one-hot rows stay rows
        ("multiclass", ONE_HOT, ONE_HOT[:2], False),
    ],
)
def test_labels_are_read_as_the_task_says(
    task: str, y_train: np.ndarray, y_val: np.ndarray, multilabel: bool
) -> None:
    labels, got = resolve_labels({"y_train": y_train, "y_val": y_val}, task)
    assert got is multilabel
    if multilabel:
        assert labels["y_train"].dtype == np.float32 and labels["y_train"].shape == y_train.shape
        np.testing.assert_array_equal(labels["y_val"], np.asarray(y_val, dtype="float32"))
    else:
        assert labels["y_train"].ndim == 1 and labels["y_train"].dtype == np.int32
        expected = y_train.argmax(axis=1) if y_train.ndim == 2 and y_train.shape[1] > 1 else y_train
        np.testing.assert_array_equal(labels["y_train"], np.asarray(expected).reshape(-1))


@pytest.mark.parametrize(
    ("task", "y_train", "y_val", "message"),
    [
        (
            "auto",
            np.array([[1, 0.5], [0, 1]]),
            np.array([[1, 0], [0, 1]]),
            "y_train has labels of shape (2, 2) with values other than 0 and 1 (such as 0.5)",
        ),
        (
            "multilabel",
            MULTI_HOT,
            np.array([[2, 0, 1]]),
            "y_val has labels of shape (1, 3) with values other than 0 and 1 (such as 2)",
        ),
        (
            "auto",
            MULTI_HOT,
            np.array([[1, 0, 0, 1]]),
            "y_train has 3 label columns but y_val has 4",
        ),
        (
            "multilabel",
            MULTI_HOT,
            np.array([[1, 0]]),
            "y_train has 3 label columns but y_val has 2",
        ),
        ("auto", MULTI_HOT, np.array([0, 1]), "give both splits labels of the same form"),
        ("multilabel", np.array([0, 1, 1, 0]), np.array([0, 1]), "must be rows of 0/1"),
        ("multilabel", np.array([[0], [1]]), np.array([[1]]), "at least two label columns"),
        ("multiclass", MULTI_HOT, MULTI_HOT[:2], "are not one-hot rows"),
        ("sometimes", MULTI_HOT, MULTI_HOT[:2], "expected one of: auto, multiclass, multilabel"),
    ],
)
def test_labels_that_do_not_fit_are_refused_in_one_line(
    task: str, y_train: np.ndarray, y_val: np.ndarray, message: str
) -> None:
    with pytest.raises(ValueError) as info:
        resolve_labels({"y_train": y_train, "y_val": y_val}, task)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def _images(n: int) -> np.ndarray:
    return np.zeros((n, 4, 4, 3), dtype="uint8")


def test_a_label_no_training_image_has_is_refused() -> None:
    y = MULTI_HOT.copy()
    y[:, 1] = 0
    with pytest.raises(ValueError, match=r"label 'b' \(column 1\) is 0 for every training image"):
        ArrayData(_images(4), y, _images(2), MULTI_HOT[:2], ("a", "b", "c"), multilabel=True)


def test_a_multilabel_npz_loads_with_label_names_and_counts(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, x_train=_images(4), y_train=MULTI_HOT, x_val=_images(2), y_val=MULTI_HOT[:2])
    data = load_npz(str(path), ("cat", "dog", "car"))
    assert data.multilabel and data.num_classes == 3
    summary = data.summary()
    assert summary["task"] == "multilabel"
    assert summary["train_counts"] == [2, 2, 2]  # images that have each label
    assert summary["val_counts"] == [1, 1, 1]
    with pytest.raises(DataSourceError, match="the labels have 3 columns but data.class_names"):
        load_npz(str(path), ("cat", "dog"))
    # the same arrays as integer labels are another data set
    single = tmp_path / "single.npz"
    np.savez(
        single,
        x_train=_images(4),
        y_train=np.array([0, 1, 2, 1]),
        x_val=_images(2),
        y_val=np.array([0, 1]),
    )
    assert not load_npz(str(single)).multilabel
    assert load_npz(str(single)).fingerprint() != data.fingerprint()


@pytest.mark.parametrize(
    "frequencies",
    [(0.5, 0.5), (0.25, 0.75, 0.1), (0.05, 0.5, 0.95, 0.3)],
)
def test_the_chance_loss_is_what_guessing_the_label_frequencies_scores(
    frequencies: tuple[float, ...],
) -> None:
    """The chance level is the binary cross-entropy of a model that learnt only each label's
    training frequency, as Keras measures it, and its binary accuracy."""
    import keras

    n = 40
    y = np.zeros((n, len(frequencies)), dtype="float32")
    for j, p in enumerate(frequencies):
        y[: round(p * n), j] = 1
    p = y.mean(axis=0)
    guess = np.tile(p, (n, 1))
    chance = multilabel_chance(y)
    keras_bce = float(
        np.mean(keras.ops.convert_to_numpy(keras.losses.binary_crossentropy(y, guess)))
    )
    assert chance["loss"] == pytest.approx(keras_bce, rel=1e-4)
    assert chance["loss"] == pytest.approx(float(np.mean(binary_entropy(p))))
    # the constant guess rounded: each label right for the majority of images
    accuracy = keras.metrics.BinaryAccuracy()
    accuracy.update_state(y, np.tile(np.where(p > 0.5, 0.9, 0.1), (n, 1)))
    assert chance["accuracy"] == pytest.approx(float(accuracy.result()), rel=1e-5)
    # never more than a coin flip's ln 2
    assert chance["loss"] <= math.log(2) + 1e-12


def test_without_labels_the_chance_level_is_a_coin_flip() -> None:
    assert multilabel_chance(None) == {"loss": math.log(2), "accuracy": 0.5}


def test_binary_entropy_is_zero_at_the_ends() -> None:
    assert binary_entropy(np.array([0.0, 1.0, 0.5])).tolist() == [0.0, 0.0, math.log(2)]


@pytest.mark.parametrize("setting", ["balanced", (("a", 2.0),)])
def test_class_weight_is_refused_for_a_multilabel_target(setting: Any) -> None:
    with pytest.raises(ValueError, match="not defined for a multi-label target"):
        class_weights(setting, MULTI_HOT, ("a", "b", "c"))
    assert class_weights(None, MULTI_HOT, ("a", "b", "c")) is None


def test_the_multilabel_head_is_a_sigmoid_per_label_trained_on_binary_cross_entropy(
    tiny_cnn: Any,
) -> None:
    from thaw.objectives import build_model, compile_model, cut_base
    from thaw.objectives._probes import _accuracy, _cross_entropy

    base = cut_base(tiny_cnn(), "features")
    model = build_model(base, 3, 0.0, multilabel=True)
    compile_model(model, 1e-2, 0.0, metrics=("auc", "f1"), multilabel=True)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(16, 8, 8, 3)).astype("uint8")
    y = (rng.random((16, 3)) < 0.5).astype("float32")
    y[0] = 1  # every label present
    history = model.fit(x, y, validation_data=(x, y), epochs=2, batch_size=8, verbose=0).history
    assert {"loss", "accuracy", "auc", "f1", "val_loss", "val_auc", "val_f1"} <= set(history)
    probs = model.predict(x, verbose=0)
    assert probs.shape == (16, 3)
    assert np.all((probs > 0) & (probs < 1))
    assert not np.allclose(probs.sum(axis=1), 1.0)  # independent sigmoids, not a softmax
    # the probes' loss and accuracy are those the fit logs for the same weights
    evaluated = model.evaluate(x, y, verbose=0, return_dict=True)
    assert _cross_entropy(probs, y) == pytest.approx(evaluated["loss"], rel=1e-4)
    assert _accuracy(probs, y) == pytest.approx(evaluated["accuracy"], rel=1e-5)
