"""Target data: .npz arrays, the embedded demo domain, fingerprints."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from thaw.objectives import ArrayData, DataSource, DataSourceError, load_data, load_npz
from thaw.objectives._demo import DEMO_CLASS_NAMES, demo_target_data

Arrays = Callable[..., dict[str, np.ndarray]]


def test_load_npz_round_trip(tmp_path: Path, tiny_arrays: Arrays) -> None:
    arrays = tiny_arrays()
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    data = load_data(DataSource("npz", path=str(path), class_names=("a", "b", "c")))
    np.testing.assert_array_equal(data.x_train, arrays["x_train"])
    np.testing.assert_array_equal(data.y_val, arrays["y_val"])
    assert data.class_names == ("a", "b", "c")
    assert data.image_shape == (8, 8, 3)
    assert data.source == str(path)
    summary = data.summary()
    assert summary["train_counts"] == [8, 8, 8] and summary["val_counts"] == [4, 4, 4]


def test_load_npz_names_classes_when_not_given(tmp_path: Path, tiny_arrays: Arrays) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, **tiny_arrays(num_classes=4))
    assert load_npz(str(path)).class_names == ("class_0", "class_1", "class_2", "class_3")


def _drop_y_val(a: dict[str, np.ndarray]) -> None:
    del a["y_val"]


def _short_y_train(a: dict[str, np.ndarray]) -> None:
    a["y_train"] = a["y_train"][:-1]


def _one_class(a: dict[str, np.ndarray]) -> None:
    a["y_train"] = np.zeros_like(a["y_train"])
    a["y_val"] = np.zeros_like(a["y_val"])


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (_drop_y_val, r"lacks arrays \['y_val'\]; it needs x_train, y_train, x_val, y_val"),
        (_short_y_train, r"x_train has 24 images but y_train 23 labels"),
        (_one_class, r"need at least two classes, got 1"),
    ],
)
def test_bad_npz(
    tmp_path: Path, tiny_arrays: Arrays, mutate: Callable[[dict[str, np.ndarray]], None], match: str
) -> None:
    arrays = tiny_arrays()
    mutate(arrays)
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataSourceError, match=match):
        load_npz(str(path))


def test_not_an_npz(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    path.write_text("hello")
    with pytest.raises(DataSourceError) as caught:
        load_npz(str(path))
    assert str(caught.value) == (
        f"data file {path} is not a .npz archive (it begins with b'hello'); save the arrays "
        "x_train, y_train, x_val, y_val with numpy.savez"
    )
    assert "allow_pickle" not in str(caught.value)


@pytest.mark.parametrize(
    ("where", "pixels", "words"),
    [
        ("x_train", {"all": np.nan}, "x_train holds NaN or infinite values in all images"),
        ("x_val", {1: np.inf}, "x_val holds NaN or infinite values in 1 of 3 images (the first"),
        ("x_train", {0: -np.inf, 4: np.nan}, "in 2 of 6 images (the first: image 0)"),
    ],
)
def test_images_with_nan_or_inf_are_refused(
    tmp_path: Path, where: str, pixels: dict[Any, float], words: str
) -> None:
    arrays = {
        "x_train": np.zeros((6, 4, 4, 3), np.float32),
        "y_train": np.arange(6) % 3,
        "x_val": np.zeros((3, 4, 4, 3), np.float32),
        "y_val": np.arange(3),
    }
    for index, value in pixels.items():
        if index == "all":
            arrays[where][...] = value
        else:
            arrays[where][index, 0, 0, 0] = value
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataSourceError, match=re.escape(words)):
        load_npz(str(tmp_path / "d.npz"))


def test_missing_npz(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match=r"data file .*gone\.npz does not exist"):
        load_npz(str(tmp_path / "gone.npz"))


def test_fingerprint_tracks_every_array_and_the_class_names(tiny_arrays: Arrays) -> None:
    arrays = tiny_arrays()
    names = ("a", "b", "c")
    base = ArrayData(**arrays, class_names=names).fingerprint()
    assert ArrayData(**tiny_arrays(), class_names=names).fingerprint() == base
    for key in arrays:
        changed = {k: v.copy() for k, v in arrays.items()}
        changed[key].flat[0] = (changed[key].flat[0] + 1) % 3
        assert ArrayData(**changed, class_names=names).fingerprint() != base, key
    assert ArrayData(**arrays, class_names=("a", "b", "z")).fingerprint() != base


def test_demo_target_domain_is_small_balanced_and_deterministic() -> None:
    data = demo_target_data(seed=0, train_per_class=3, val_per_class=2)
    assert data.class_names == DEMO_CLASS_NAMES
    assert data.x_train.shape == (3 * len(DEMO_CLASS_NAMES), 32, 32, 3)
    assert data.x_train.dtype == np.uint8
    assert data.counts(data.y_train) == [3] * len(DEMO_CLASS_NAMES)
    assert data.counts(data.y_val) == [2] * len(DEMO_CLASS_NAMES)
    again = demo_target_data(seed=0, train_per_class=3, val_per_class=2)
    assert again.fingerprint() == data.fingerprint()
    other = demo_target_data(seed=1, train_per_class=3, val_per_class=2)
    assert other.fingerprint() != data.fingerprint()
