"""Target data held in memory for the objective."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from thaw.objectives._specs import InMemory

if TYPE_CHECKING:
    from thaw.objectives._images import StreamedImages


#: What ``data.task`` accepts: ``auto`` reads the labels' shape (see :func:`resolve_labels`).
TASKS: tuple[str, ...] = ("auto", "multiclass", "multilabel")


@dataclass(frozen=True)
class ArrayData:
    """Training and validation images (uint8 or float, NHWC) with integer labels, or with
    ``multilabel``, rows of 0/1 (float32, one column per label in ``class_names``)."""

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
    #: Each image has any number of the labels (a sigmoid head, binary cross-entropy).
    multilabel: bool = False

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
        if self.multilabel:
            check_multilabel(self.y_train, self.y_val, self.class_names)
        else:
            check_labels(self.y_train, self.y_val, self.class_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    def counts(self, labels: np.ndarray) -> list[int]:
        """Images per class; for a multi-label target, images that have each label."""
        if self.multilabel:
            return [int(c) for c in np.asarray(labels).sum(axis=0)]
        return [int(c) for c in np.bincount(labels, minlength=self.num_classes)]

    def fingerprint(self) -> str:
        """sha256 of the exact files (or arrays) and class names used."""
        if self.digest is not None:
            return self.digest
        h = hashlib.sha256()
        if self.multilabel:
            h.update(b"multilabel\0")
        for name in self.class_names:
            h.update(name.encode() + b"\0")
        for arr in (self.x_train, self.y_train, self.x_val, self.y_val):
            a = np.ascontiguousarray(arr)
            h.update(str(a.dtype).encode() + str(a.shape).encode())
            h.update(a.tobytes())
        return h.hexdigest()

    def summary(self) -> dict[str, object]:
        task = {"task": "multilabel"} if self.multilabel else {}
        return {
            **task,
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


def check_multilabel(y_train: np.ndarray, y_val: np.ndarray, label_names: tuple[str, ...]) -> None:
    """Rows of 0/1, one column per name in ``label_names``, in both splits; every label has
    training images that have it. Raises ``ValueError`` naming what is wrong."""
    k = len(label_names)
    for name, y in (("y_train", y_train), ("y_val", y_val)):
        if y.ndim != 2 or y.shape[1] != k:
            raise ValueError(
                f"{name} must be rows of 0/1 with one column per label ({k}), got shape "
                f"{tuple(y.shape)}"
            )
        if len(y) == 0:
            raise ValueError(f"{name} is empty; training and validation both need images")
        _zero_one(name, y)
    never = [int(j) for j in np.flatnonzero(np.asarray(y_train).sum(axis=0) == 0)]
    if never:
        raise ValueError(
            f"label {label_names[never[0]]!r} (column {never[0]}) is 0 for every training image"
            f"{f' (and {len(never) - 1} more labels)' if len(never) > 1 else ''}; add images "
            "that have it or drop the column"
        )


def _zero_one(name: str, y: np.ndarray) -> None:
    """Refuse a label array that holds anything but 0 and 1, with the values seen."""
    if y.dtype == bool:
        return
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise ValueError(f"{name} must hold numbers, got dtype {y.dtype}")
    bad = y[(y != 0) & (y != 1)]
    if bad.size:
        seen = list(dict.fromkeys(float(v) for v in bad.ravel()[:50].tolist()))
        shown = ", ".join(f"{v:g}" for v in seen[:3])
        raise ValueError(
            f"{name} has labels of shape {tuple(y.shape)} with values other than 0 and 1 "
            f"(such as {shown}); give one integer class label per image, one-hot rows, or for "
            "a multi-label target rows of 0/1, one column per label"
        )


def resolve_labels(
    labels: dict[str, np.ndarray], task: str = "auto"
) -> tuple[dict[str, np.ndarray], bool]:
    """The labels of each split (name -> array) as the fit takes them, and whether the target
    is multi-label.

    ``multiclass``: one integer label per image (a column ``(n, 1)`` is read as one; one-hot
    rows become their index). ``multilabel``: 2-D rows of 0/1 with the same number of columns in
    every split, as float32. ``auto``: multi-label when the labels are 2-D rows of 0/1 of which
    some row does not hold exactly one 1 (so one-hot rows stay single-label), else
    ``multiclass``. Raises ``ValueError`` naming the split and the values received.
    """
    if task not in TASKS:
        raise ValueError(f"task={task!r}; expected one of: {', '.join(TASKS)}")
    arrays = {name: np.asarray(y) for name, y in labels.items()}
    wide = {name: y for name, y in arrays.items() if y.ndim == 2 and y.shape[1] > 1}
    if task == "auto" and wide:
        for name, y in wide.items():
            _zero_one(name, y)
        if len(wide) < len(arrays):
            narrow = next(name for name in arrays if name not in wide)
            raise ValueError(
                f"{next(iter(wide))} has rows of 0/1 labels of shape "
                f"{tuple(next(iter(wide.values())).shape)} but {narrow} has shape "
                f"{tuple(arrays[narrow].shape)}; give both splits labels of the same form"
            )
        one_hot = all(np.all(y.sum(axis=1) == 1) for y in wide.values())
        task = "multiclass" if one_hot else "multilabel"
    if task == "multilabel":
        columns: dict[str, int] = {}
        for name, y in arrays.items():
            if y.ndim != 2:
                raise ValueError(
                    f"{name} must be rows of 0/1, one column per label, for a multi-label "
                    f"target; got shape {tuple(y.shape)}"
                )
            _zero_one(name, y)
            columns[name] = int(y.shape[1])
        if len(set(columns.values())) > 1:
            (a, ka), (b, kb) = list(columns.items())[:2]
            raise ValueError(
                f"{a} has {ka} label columns but {b} has {kb}; every split needs one column "
                "per label, in the same order"
            )
        if min(columns.values(), default=2) < 2:
            raise ValueError(
                "a multi-label target needs at least two label columns; a single 0/1 label is "
                "two classes: give it as integer labels 0 and 1"
            )
        return {name: y.astype("float32") for name, y in arrays.items()}, True
    out = {}
    for name, y in arrays.items():
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        elif y.ndim == 2:
            _zero_one(name, y)
            if not np.all(y.sum(axis=1) == 1):
                raise ValueError(
                    f"{name} labels of shape {tuple(y.shape)} are not one-hot rows; give one "
                    "integer class label per image (or data.task: multilabel for rows of 0/1)"
                )
            y = y.argmax(axis=1)
        out[name] = _integer_labels(name, y)
    return out, False


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """H(p) = -p ln p - (1 - p) ln(1 - p) in nats, 0 at p = 0 and p = 1."""
    p = np.asarray(p, dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = -(p * np.log(p)) - (1.0 - p) * np.log(1.0 - p)
    return np.where((p <= 0.0) | (p >= 1.0), 0.0, terms)


def multilabel_chance(y_train: np.ndarray | None) -> dict[str, float]:
    """Chance levels of a multi-label target: those of the best constant guess, each label's
    training frequency p. Loss: the mean over labels of H(p) (the binary cross-entropy of that
    guess); accuracy: the mean over labels of max(p, 1 - p). Without labels: ln 2 and 0.5."""
    if y_train is None or len(y_train) == 0:
        return {"loss": math.log(2.0), "accuracy": 0.5}
    p = np.asarray(y_train, dtype="float64").mean(axis=0)
    return {
        "loss": float(binary_entropy(p).mean()),
        "accuracy": float(np.maximum(p, 1.0 - p).mean()),
    }


def chance_levels(data: Any) -> dict[str, Any]:
    """The study's ``thaw:task`` and ``thaw:chance`` of ``data`` (an :class:`ArrayData` or
    streamed images): multi-label, from its training labels (:func:`multilabel_chance`);
    otherwise ln K and 1/K."""
    if getattr(data, "multilabel", False):
        return {"task": "multilabel", **multilabel_chance(data.y_train)}
    k = int(data.num_classes)
    return {"task": "multiclass", "loss": math.log(k), "accuracy": 1.0 / k}


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
    #: ``auto`` | ``multiclass`` | ``multilabel`` (:func:`resolve_labels`); an image folder is
    #: single-label.
    task: str = "auto"


#: Why an image folder cannot be a multi-label target.
MULTILABEL_FOLDER = (
    "data.task: multilabel needs npz arrays or thaw.run(data=...) arrays: an image folder has "
    "one class per image (its subfolder); save the images with rows of 0/1 labels as .npz"
)


def load_npz(path: str, class_names: tuple[str, ...] = (), task: str = "auto") -> ArrayData:
    """Arrays ``x_train``, ``y_train``, ``x_val``, ``y_val``: NHWC images, and integer labels or
    (multi-label) rows of 0/1, as :func:`resolve_labels` reads them for ``task``."""
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
        labels, multilabel = resolve_labels({k: arrays[k] for k in ("y_train", "y_val")}, task)
        if multilabel:
            k = int(labels["y_train"].shape[1])
            if class_names and len(class_names) != k:
                raise ValueError(
                    f"the labels have {k} columns but data.class_names names "
                    f"{len(class_names)} ({', '.join(class_names)}); give one name per column"
                )
            return ArrayData(
                x_train=arrays["x_train"],
                y_train=labels["y_train"],
                x_val=arrays["x_val"],
                y_val=labels["y_val"],
                class_names=class_names or tuple(f"label_{i}" for i in range(k)),
                source=str(path),
                multilabel=True,
            )
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

        if source.task == "multilabel":
            raise DataSourceError(MULTILABEL_FOLDER)
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
        return load_npz(source.path, source.class_names, source.task)
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
    if np.asarray(y_train).ndim == 2:
        raise ValueError(
            "train.class_weight is not defined for a multi-label target (Keras weighs each image "
            "by one class); remove it"
        )
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
