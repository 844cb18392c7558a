"""Target data held in memory for the objective."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from thaw.objectives._specs import InMemory

if TYPE_CHECKING:
    from thaw.objectives._images import StreamedImages


@dataclass(frozen=True)
class ArrayData:
    """Training and validation images (uint8 or float, NHWC) with integer labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    class_names: tuple[str, ...]
    source: str = ""
    skipped_files: tuple[str, ...] = field(default=())
    #: Fingerprint computed while loading (hash of the files used); None: hash the arrays.
    digest: str | None = None
    #: Files in the class folders that are not images (README.txt, .DS_Store): not used.
    ignored_files: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if len(self.x_train) != len(self.y_train):
            raise ValueError(
                f"x_train has {len(self.x_train)} images but y_train {len(self.y_train)} labels"
            )
        if len(self.x_val) != len(self.y_val):
            raise ValueError(
                f"x_val has {len(self.x_val)} images but y_val {len(self.y_val)} labels"
            )
        if len(self.class_names) < 2:
            raise ValueError(
                f"need at least two classes, got {len(self.class_names)}: {list(self.class_names)}"
            )
        for name, x in (("x_train", self.x_train), ("x_val", self.x_val)):
            if x.ndim != 4:
                raise ValueError(
                    f"{name} must hold images as (count, height, width, channels), got shape "
                    f"{tuple(x.shape)}; add a channel axis for grayscale images"
                )
            if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
                raise ValueError(f"{name} must hold numbers, got dtype {x.dtype}")
            check_finite(name, x)
        if self.x_train.shape[1:] != self.x_val.shape[1:]:
            raise ValueError(
                f"training images have shape {tuple(self.x_train.shape[1:])} but validation "
                f"images {tuple(self.x_val.shape[1:])}; they must match"
            )
        check_labels(self.y_train, self.y_val, self.class_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    def counts(self, labels: np.ndarray) -> list[int]:
        return [int(c) for c in np.bincount(labels, minlength=self.num_classes)]

    def fingerprint(self) -> str:
        """sha256 of the exact files (or arrays) and class names used."""
        if self.digest is not None:
            return self.digest
        h = hashlib.sha256()
        for name in self.class_names:
            h.update(name.encode() + b"\0")
        for arr in (self.x_train, self.y_train, self.x_val, self.y_val):
            a = np.ascontiguousarray(arr)
            h.update(str(a.dtype).encode() + str(a.shape).encode())
            h.update(a.tobytes())
        return h.hexdigest()

    def summary(self) -> dict[str, object]:
        return {
            "fingerprint": self.fingerprint(),
            "source": self.source,
            "class_names": list(self.class_names),
            "train_counts": self.counts(self.y_train),
            "val_counts": self.counts(self.y_val),
            "skipped_files": list(self.skipped_files),
            "ignored_files": list(self.ignored_files),
        }


def check_finite(name: str, x: np.ndarray) -> None:
    """Refuse images holding NaN or infinite values: every trial on them diverges at once."""
    if not np.issubdtype(x.dtype, np.floating) or len(x) == 0:
        return
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    count = int(bad.sum())
    if count:
        first = int(np.argmax(bad))
        which = "all" if count == len(x) else f"{count} of {len(x)}"
        raise ValueError(
            f"{name} holds NaN or infinite values in {which} images (the first: image {first}); "
            "replace them with finite pixel values or drop those images"
        )


#: How a ``.npz`` file begins (a zip archive), or a lone ``.npy`` array.
_NPZ_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")


class DataSourceError(ValueError):
    """The target data cannot be loaded as configured."""


def check_labels(y_train: np.ndarray, y_val: np.ndarray, class_names: tuple[str, ...]) -> None:
    """Integer labels ``0..len(class_names)-1``; every class has training images, and validation
    has no label that training lacks. Raises ``ValueError`` naming the labels received."""
    n = len(class_names)
    for name, y in (("y_train", y_train), ("y_val", y_val)):
        if y.ndim != 1:
            raise ValueError(
                f"{name} must be one integer label per image (1-D), got shape {tuple(y.shape)}"
            )
        if len(y) == 0:
            raise ValueError(f"{name} is empty; training and validation both need images")
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{name} must hold integer class labels, got dtype {y.dtype}")
        bad = sorted({int(v) for v in np.unique(y[(y < 0) | (y >= n)])})
        if bad:
            raise ValueError(
                f"{name} has labels {bad[:5]} outside 0..{n - 1} ({n} classes: "
                f"{', '.join(class_names[:5])}{', ...' if n > 5 else ''}); labels must be class "
                "indices from 0"
            )
    missing = sorted(set(range(n)) - {int(v) for v in np.unique(y_train)})
    val_only = sorted({int(v) for v in np.unique(y_val)} & set(missing))
    if val_only:
        raise ValueError(
            f"validation labels {val_only[:5]} do not occur in the training labels; every "
            "validation class needs training images"
        )
    if missing:
        raise ValueError(
            f"class {class_names[missing[0]]!r} (label {missing[0]}) has no training images"
            f"{f' (and {len(missing) - 1} more classes)' if len(missing) > 1 else ''}; add "
            "images or remove the class"
        )


@dataclass(frozen=True)
class DataSource:
    """Target data: the embedded demo domain, ``.npz`` arrays, an image folder, or arrays held
    in memory (``instance``: their :class:`ArrayData`, from ``thaw.run(data=...)``)."""

    kind: str  # "demo" | "glyphs" | "npz" | "directory" | "memory"
    path: str | None = None
    seed: int = 0
    class_names: tuple[str, ...] = ()
    val_path: str | None = None
    val_fraction: float = 0.2
    max_skipped_fraction: float = 0.05
    #: Above this estimate (decoded images plus their float copy), stream batches from files.
    max_memory_mb: int = 2048
    instance: InMemory | None = None


def load_npz(path: str, class_names: tuple[str, ...] = ()) -> ArrayData:
    """Arrays ``x_train``, ``y_train``, ``x_val``, ``y_val`` (NHWC images, integer labels)."""
    import os

    if not os.path.exists(path):
        raise DataSourceError(f"data file {path} does not exist; check 'data.path'")
    if os.path.isfile(path):
        with open(path, "rb") as f:
            head = f.read(6)
        if not head.startswith(_NPZ_MAGIC):
            raise DataSourceError(
                f"data file {path} is not a .npz archive (it begins with {head!r}); save the "
                "arrays x_train, y_train, x_val, y_val with numpy.savez"
            )
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ("x_train", "y_train", "x_val", "y_val") if k not in npz]
            if missing:
                raise DataSourceError(
                    f"{path} lacks arrays {missing}; it needs x_train, y_train, x_val, y_val"
                )
            arrays = {k: npz[k] for k in ("x_train", "y_train", "x_val", "y_val")}
    except (OSError, ValueError) as exc:
        if isinstance(exc, DataSourceError):
            raise
        raise DataSourceError(f"cannot read {path} as .npz arrays: {exc}") from None
    try:
        labels = {k: _integer_labels(k, arrays[k]) for k in ("y_train", "y_val")}
        top = max((int(y.max()) for y in labels.values() if y.size), default=0)
        if class_names and top >= len(class_names):
            raise ValueError(
                f"the labels go up to {top} but data.class_names names {len(class_names)} "
                f"classes ({', '.join(class_names)}); give one name per label 0..{top}"
            )
        names = class_names or tuple(f"class_{i}" for i in range(top + 1))
        return ArrayData(
            x_train=arrays["x_train"],
            y_train=labels["y_train"],
            x_val=arrays["x_val"],
            y_val=labels["y_val"],
            class_names=names,
            source=str(path),
        )
    except ValueError as exc:
        raise DataSourceError(f"{path}: {exc}") from None


def _integer_labels(name: str, y: np.ndarray) -> np.ndarray:
    """Labels as int32; refuses non-numbers, fractions and negatives with the values seen."""
    if y.ndim != 1:
        raise ValueError(
            f"{name} must be one integer label per image (1-D), got shape {tuple(y.shape)}"
        )
    if y.dtype == bool or not (
        np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)
    ):
        raise ValueError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if np.issubdtype(y.dtype, np.floating) and (
        not np.all(np.isfinite(y)) or not np.all(y == np.round(y))
    ):
        bad = [v for v in y.tolist() if not (np.isfinite(v) and v == round(v))][:3]
        raise ValueError(f"{name} must hold integer class labels, got values such as {bad}")
    negative = sorted({int(v) for v in np.unique(y[y < 0])})
    if negative:
        raise ValueError(
            f"{name} has negative labels {negative[:5]}; labels must be class indices 0, 1, 2, ..."
        )
    return y.astype("int32")


def load_data(
    source: DataSource, image_shape: tuple[int, ...] | None = None
) -> ArrayData | StreamedImages:
    """Load the target data; image folders are resized to ``image_shape`` (the model's input)."""
    if source.kind == "directory":
        from pathlib import Path

        from thaw.objectives._images import estimated_bytes, load_image_folder, stream_image_folder

        if not source.path:
            raise DataSourceError("data.path is required for an image folder")
        if image_shape is None or len(image_shape) != 3 or None in image_shape:
            raise DataSourceError(
                f"the model's input shape {image_shape} has no fixed height and width; set "
                "'model.input_shape' so images can be resized to it"
            )
        size = (int(image_shape[0]), int(image_shape[1]))
        need = estimated_bytes(Path(source.path), size, int(image_shape[2]))
        if source.val_path:
            need += estimated_bytes(Path(source.val_path), size, int(image_shape[2]))
        loader = stream_image_folder if need > source.max_memory_mb * 2**20 else load_image_folder
        return loader(
            Path(source.path),
            image_size=size,
            val_path=Path(source.val_path) if source.val_path else None,
            val_fraction=source.val_fraction,
            seed=source.seed,
            channels=int(image_shape[2]),
            max_skipped_fraction=source.max_skipped_fraction,
        )
    if source.kind == "demo":
        from thaw.objectives._demo import demo_target_data

        return demo_target_data(seed=source.seed)
    if source.kind == "glyphs":
        from thaw.objectives._glyphs import glyphs_target_data

        return glyphs_target_data(seed=source.seed)
    if source.kind == "memory":
        if source.instance is None or not isinstance(source.instance.value, ArrayData):
            raise DataSourceError("in-memory data needs its arrays (thaw.run(data=...))")
        return source.instance.value
    if source.kind == "npz":
        if not source.path:
            raise DataSourceError("data.path is required for npz data")
        return load_npz(source.path, source.class_names)
    raise DataSourceError(f"unknown data kind {source.kind!r}")


def class_weights(
    setting: str | tuple[tuple[str | int, float], ...] | None,
    y_train: np.ndarray,
    class_names: tuple[str, ...],
) -> dict[int, float] | None:
    """Keras' ``class_weight`` for ``fit``: ``"balanced"`` gives class c the weight
    n / (classes * count_c) (so the weights average 1 over the training images), pairs give
    their classes (by name or index) their weights and the others 1. Raises ``ValueError``
    naming a class that is not one."""
    if setting is None:
        return None
    k = len(class_names)
    if setting == "balanced":
        counts = np.bincount(np.asarray(y_train, dtype="int64"), minlength=k)
        n = int(counts.sum())
        return {c: float(n / (k * counts[c])) if counts[c] else 1.0 for c in range(k)}
    if isinstance(setting, str):
        raise ValueError(f"class_weight={setting!r}; expected balanced or a mapping")
    weights = {c: 1.0 for c in range(k)}
    for key, weight in setting:
        if isinstance(key, int) and not isinstance(key, bool) and 0 <= key < k:
            weights[key] = float(weight)
        elif isinstance(key, str) and key in class_names:
            weights[class_names.index(key)] = float(weight)
        elif isinstance(key, str) and key.isdigit() and int(key) < k:
            weights[int(key)] = float(weight)
        else:
            raise ValueError(
                f"class_weight names class {key!r}, which is not one of the {k} classes "
                f"({', '.join(class_names[:5])}{', ...' if k > 5 else ''}); use a class name or "
                f"an index 0..{k - 1}"
            )
    return weights
