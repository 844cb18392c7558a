"""Image folders (the ``image_dataset_from_directory`` layout), decoded with Pillow.

No TensorFlow: the same data path serves the JAX backend. Images are decoded once, resized to
the model's input, and kept in memory as uint8.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from thaw.objectives._data import ArrayData, DataSourceError

_logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class ImageFile:
    path: Path
    label: int


def list_class_folders(root: Path) -> list[str]:
    if not root.exists():
        raise DataSourceError(f"image folder {root} does not exist; check 'data.path'")
    if not root.is_dir():
        raise DataSourceError(f"{root} is not a folder; 'data.path' must be a folder of classes")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataSourceError(
            f"{root} has no class subfolders; put each class's images in its own subfolder "
            "(root/cat/*.jpg, root/dog/*.jpg)"
        )
    if len(classes) < 2:
        raise DataSourceError(
            f"{root} has one class subfolder ({classes[0]!r}); a classifier needs at least two"
        )
    return classes


#: Files that class folders often hold besides images: skipped and listed, never decoded.
NON_IMAGE_NAMES = frozenset({"thumbs.db", "desktop.ini", "ehthumbs.db"})


def is_image_name(path: Path) -> bool:
    """Whether a file in a class folder is meant as an image (by its name; content checked later).

    Hidden files (``.DS_Store``, ``._x.jpg``), ``Thumbs.db``, ``desktop.ini`` and any suffix not
    in :data:`IMAGE_SUFFIXES` (``README.txt``, ``labels.csv``) are not images.
    """
    name = path.name
    return (
        not name.startswith(".")
        and name.lower() not in NON_IMAGE_NAMES
        and path.suffix.lower() in IMAGE_SUFFIXES
    )


def list_files(root: Path, classes: list[str], ignored: list[str] | None = None) -> list[ImageFile]:
    """Image files of each class folder; other files go to ``ignored`` (relative paths)."""
    files: list[ImageFile] = []
    for label, name in enumerate(classes):
        entries: list[Path] = []
        others: list[Path] = []
        for p in sorted((root / name).rglob("*")):
            if not p.is_file() or any(
                part.startswith(".") for part in p.relative_to(root).parts[:-1]
            ):
                continue
            (entries if is_image_name(p) else others).append(p)
        if ignored is not None:
            ignored.extend(p.relative_to(root).as_posix() for p in others)
        if not entries:
            hint = f" (it holds only non-image files: {others[0].name}, ...)" if others else ""
            raise DataSourceError(
                f"class folder {root / name} has no images{hint}; add images "
                f"({', '.join(IMAGE_SUFFIXES)}) or remove the folder"
            )
        files.extend(ImageFile(p, label) for p in entries)
    return files


def decode_image(path: Path, size: tuple[int, int], channels: int = 3) -> tuple[np.ndarray, bytes]:
    """Decode and resize one image to ``(height, width, channels)`` uint8; raise on failure."""
    import io

    from PIL import Image

    raw = path.read_bytes()
    with Image.open(io.BytesIO(raw)) as opened:
        img = opened.convert("RGB" if channels == 3 else "L")
        if img.size != (size[1], size[0]):
            img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[..., None]
    return arr, raw


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int, class_names: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of train and validation images, ``fraction`` of each class in validation."""
    rng = np.random.default_rng(seed)
    train_idx: list[int] = []
    val_idx: list[int] = []
    for label, name in enumerate(class_names):
        idx = np.flatnonzero(labels == label)
        rng.shuffle(idx)
        n_val = int(round(len(idx) * fraction))
        if n_val == 0 or n_val == len(idx):
            raise DataSourceError(
                f"class {name!r} has {len(idx)} usable images; a validation fraction of "
                f"{fraction} leaves it without {'validation' if n_val == 0 else 'training'} "
                "images. Add images, change 'data.val_fraction', or give 'data.val_path'"
            )
        val_idx.extend(idx[:n_val].tolist())
        train_idx.extend(idx[n_val:].tolist())
    return np.sort(np.asarray(train_idx)), np.sort(np.asarray(val_idx))


@dataclass
class _Scan:
    """Readable files of a folder (decoded or only checked), hashed in order."""

    files: list[ImageFile]
    images: list[np.ndarray]
    skipped: list[str]

    @property
    def labels(self) -> np.ndarray:
        return np.asarray([f.label for f in self.files], dtype=np.int32)


def _scan(
    files: list[ImageFile],
    root: Path,
    hasher: hashlib._Hash,
    size: tuple[int, int],
    channels: int,
    decode: bool,
) -> _Scan:
    """Read every file once: decode it (``decode``) or only check it opens as an image."""
    import io

    from PIL import Image

    scan = _Scan([], [], [])
    for f in files:
        rel = f.path.relative_to(root).as_posix()
        try:
            if decode:
                arr, raw = decode_image(f.path, size, channels)
            else:
                raw = f.path.read_bytes()
                with Image.open(io.BytesIO(raw)) as img:
                    img.verify()
        except Exception as exc:  # noqa: BLE001 - any decoder error means "skip this file"
            scan.skipped.append(f"{rel} ({type(exc).__name__})")
            continue
        hasher.update(rel.encode() + b"\0" + hashlib.sha256(raw).digest())
        scan.files.append(f)
        if decode:
            scan.images.append(arr)
    return scan


@dataclass
class _Folder:
    """A scanned class-per-subfolder folder, with its validation part, checked."""

    classes: list[str]
    train: _Scan
    val: _Scan | None
    skipped: list[str]
    hasher: hashlib._Hash
    ignored: list[str]


def _scan_folder(
    path: Path,
    image_size: tuple[int, int],
    val_path: Path | None,
    channels: int,
    max_skipped_fraction: float,
    decode: bool,
) -> _Folder:
    classes = list_class_folders(path)
    hasher = hashlib.sha256()
    hasher.update(("\0".join(classes)).encode())
    hasher.update(f"{image_size}{channels}".encode())
    ignored: list[str] = []
    train = _scan(list_files(path, classes, ignored), path, hasher, image_size, channels, decode)
    skipped = list(train.skipped)
    val = None
    if val_path is not None:
        val_classes = list_class_folders(val_path)
        if val_classes != classes:
            raise DataSourceError(
                f"validation folder {val_path} has classes {val_classes} but the training "
                f"folder has {classes}; they must match"
            )
        hasher.update(b"\0validation\0")
        val_ignored: list[str] = []
        val_files = list_files(val_path, classes, val_ignored)
        ignored += [f"validation/{s}" for s in val_ignored]
        val = _scan(val_files, val_path, hasher, image_size, channels, decode)
        skipped += [f"validation/{s}" for s in val.skipped]
    total = len(train.files) + len(train.skipped)
    if val is not None:
        total += len(val.files) + len(val.skipped)
    if total and len(skipped) / total > max_skipped_fraction:
        raise DataSourceError(
            f"{len(skipped)} of {total} files could not be read as images (more than "
            f"{max_skipped_fraction:.0%}), e.g. {skipped[:3]}; remove them or raise "
            "'data.max_skipped_fraction'"
        )
    for scanned, folder in ((train, path), (val, val_path)):
        if scanned is None:
            continue
        labels = scanned.labels
        for label, name in enumerate(classes):
            if not np.any(labels == label):
                raise DataSourceError(f"class {name!r} has no readable image in {folder}")
    if skipped:
        _logger.info("Skipped %d unreadable files: %s", len(skipped), ", ".join(skipped[:10]))
    if ignored:
        _logger.info("Ignored %d non-image files: %s", len(ignored), ", ".join(ignored[:10]))
    return _Folder(classes, train, val, skipped, hasher, ignored)


def _split(folder: _Folder, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified training and validation indices into ``folder.train``; part of the hash."""
    folder.hasher.update(f"split {val_fraction} {seed}".encode())
    return stratified_split(folder.train.labels, val_fraction, seed, folder.classes)


def load_image_folder(
    path: Path,
    image_size: tuple[int, int],
    val_path: Path | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    channels: int = 3,
    max_skipped_fraction: float = 0.05,
) -> ArrayData:
    """Load a class-per-subfolder image folder into memory as uint8.

    Corrupt or non-image files are skipped and listed; more than ``max_skipped_fraction`` of them
    is an error. The fingerprint hashes the relative path and bytes of every file used.
    """
    folder = _scan_folder(path, image_size, val_path, channels, max_skipped_fraction, decode=True)
    x = np.stack(folder.train.images)
    y = folder.train.labels
    if folder.val is not None:
        x_train, y_train = x, y
        x_val, y_val = np.stack(folder.val.images), folder.val.labels
    else:
        train_idx, val_idx = _split(folder, val_fraction, seed)
        x_train, y_train, x_val, y_val = x[train_idx], y[train_idx], x[val_idx], y[val_idx]
    return ArrayData(
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        class_names=tuple(folder.classes),
        source=str(path),
        skipped_files=tuple(folder.skipped),
        digest=folder.hasher.hexdigest(),
        ignored_files=tuple(folder.ignored),
    )


@dataclass(frozen=True)
class StreamedImages:
    """An image folder too large to hold in memory: files are decoded batch by batch.

    Offers what the objective needs of :class:`ArrayData` (labels, class names, counts,
    fingerprint); :meth:`batches` gives a ``keras.utils.PyDataset`` over the files.
    """

    train_files: tuple[Path, ...]
    y_train: np.ndarray
    val_files: tuple[Path, ...]
    y_val: np.ndarray
    class_names: tuple[str, ...]
    image_size: tuple[int, int]
    channels: int
    source: str
    skipped_files: tuple[str, ...]
    digest: str
    #: Files in the class folders that are not images (README.txt, .DS_Store): not used.
    ignored_files: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return (self.image_size[0], self.image_size[1], self.channels)

    def counts(self, labels: np.ndarray) -> list[int]:
        return [int(c) for c in np.bincount(labels, minlength=self.num_classes)]

    def fingerprint(self) -> str:
        return self.digest

    def summary(self) -> dict[str, object]:
        return {
            "fingerprint": self.digest,
            "source": self.source,
            "class_names": list(self.class_names),
            "train_counts": self.counts(self.y_train),
            "val_counts": self.counts(self.y_val),
            "skipped_files": list(self.skipped_files),
            "ignored_files": list(self.ignored_files),
            "streamed": True,
        }

    def decode(self, files: tuple[Path, ...]) -> np.ndarray:
        out = np.empty((len(files), *self.image_shape), dtype=np.uint8)
        for i, path in enumerate(files):
            out[i] = decode_image(path, self.image_size, self.channels)[0]
        return out

    def sample_train(self, n: int) -> np.ndarray:
        """The first ``n`` training images, decoded (for BatchNorm statistics)."""
        return self.decode(self.train_files[:n])


def stream_image_folder(
    path: Path,
    image_size: tuple[int, int],
    val_path: Path | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    channels: int = 3,
    max_skipped_fraction: float = 0.05,
) -> StreamedImages:
    """Like :func:`load_image_folder`, without decoding: for folders larger than memory."""
    folder = _scan_folder(path, image_size, val_path, channels, max_skipped_fraction, decode=False)
    files = folder.train.files
    if folder.val is not None:
        train, val = files, folder.val.files
    else:
        train_idx, val_idx = _split(folder, val_fraction, seed)
        train, val = [files[i] for i in train_idx], [files[i] for i in val_idx]
    return StreamedImages(
        train_files=tuple(f.path for f in train),
        y_train=np.asarray([f.label for f in train], dtype=np.int32),
        val_files=tuple(f.path for f in val),
        y_val=np.asarray([f.label for f in val], dtype=np.int32),
        class_names=tuple(folder.classes),
        image_size=image_size,
        channels=channels,
        source=str(path),
        skipped_files=tuple(folder.skipped),
        digest=folder.hasher.hexdigest(),
        ignored_files=tuple(folder.ignored),
    )


def estimated_bytes(path: Path, image_size: tuple[int, int], channels: int) -> int:
    """Memory the decoded folder would take in the objective (uint8 plus a float32 copy)."""
    n = sum(1 for p in path.rglob("*") if p.is_file() and is_image_name(p))
    return n * image_size[0] * image_size[1] * channels * 5
