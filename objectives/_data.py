"""Target data held in memory for the objective."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

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
        }


class DataSourceError(ValueError):
    """The target data cannot be loaded as configured."""


@dataclass(frozen=True)
class DataSource:
    """Target data: the embedded demo domain, ``.npz`` arrays, or an image folder."""

    kind: str  # "demo" | "glyphs" | "npz" | "directory"
    path: str | None = None
    seed: int = 0
    class_names: tuple[str, ...] = ()
    val_path: str | None = None
    val_fraction: float = 0.2
    max_skipped_fraction: float = 0.05
    #: Above this estimate (decoded images plus their float copy), stream batches from files.
    max_memory_mb: int = 2048


def load_npz(path: str, class_names: tuple[str, ...] = ()) -> ArrayData:
    """Arrays ``x_train``, ``y_train``, ``x_val``, ``y_val`` (NHWC images, integer labels)."""
    import os

    if not os.path.exists(path):
        raise DataSourceError(f"data file {path} does not exist; check 'data.path'")
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
    num_classes = int(max(arrays["y_train"].max(), arrays["y_val"].max())) + 1
    names = class_names or tuple(f"class_{i}" for i in range(num_classes))
    try:
        return ArrayData(
            x_train=arrays["x_train"],
            y_train=arrays["y_train"].astype("int32"),
            x_val=arrays["x_val"],
            y_val=arrays["y_val"].astype("int32"),
            class_names=names,
            source=str(path),
        )
    except ValueError as exc:
        raise DataSourceError(f"{path}: {exc}") from None


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
    if source.kind == "npz":
        if not source.path:
            raise DataSourceError("data.path is required for npz data")
        return load_npz(source.path, source.class_names)
    raise DataSourceError(f"unknown data kind {source.kind!r}")
