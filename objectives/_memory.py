"""A model, data and head handed over in memory (``thaw.run(model=..., data=...)``).

The model is described as a :class:`ModelSource` of kind ``memory`` and searched like a model
file (its top classifier cut, the same surgery); the data, whether ``(x, y)`` arrays, a
``tf.data.Dataset`` or a ``keras.utils.PyDataset``, is read once into arrays (an
:class:`ArrayData`), so every trial, the frozen-prefix cache and the probes see the same images.
Each carries a content fingerprint, which is what the study's config hash records.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from thaw.objectives._data import ArrayData, DataSource, DataSourceError, resolve_labels
from thaw.objectives._specs import InMemory, ModelSource, ModelSourceError

#: Most batches read from a dataset that does not end (``repeat()``) before giving up.
MAX_BATCHES = 100_000


def model_fingerprint(model: keras.Model) -> str:
    """sha256 of the architecture and the weights."""
    h = hashlib.sha256(model.to_json().encode())
    for w in model.get_weights():
        a = np.ascontiguousarray(w)
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def head_fingerprint(head: Callable[..., Any]) -> str:
    """sha256 of the head function's name and source code (its name alone without source)."""
    name = f"{getattr(head, '__module__', '')}.{getattr(head, '__qualname__', repr(head))}"
    try:
        text = inspect.getsource(head)
    except (OSError, TypeError):
        text = ""
    return hashlib.sha256(f"{name}\0{text}".encode()).hexdigest()


def memory_model_source(
    model: Any,
    head: Callable[..., Any] | None = None,
    *,
    cut_at: str | None = None,
    input_shape: tuple[int, int, int] | None = None,
    unfreeze_by: str = "layers",
) -> ModelSource:
    """A :class:`ModelSource` for a ``keras.Model`` in memory (and an optional head function)."""
    if not isinstance(model, keras.Model):
        raise ModelSourceError(
            f"model must be a keras.Model (your pretrained network), got {type(model).__name__}"
        )
    if head is not None and not callable(head):
        raise ModelSourceError(
            "head must be a function head(x, *, dropout, weight_decay, num_classes) -> outputs, "
            f"got {type(head).__name__}"
        )
    return ModelSource(
        kind="memory",
        cut_at=cut_at,
        input_shape=input_shape,
        unfreeze_by=unfreeze_by,
        instance=InMemory(model, model_fingerprint(model), f"keras.Model {model.name!r}"),
        head=(
            InMemory(head, head_fingerprint(head), f"head {getattr(head, '__name__', head)!r}")
            if head is not None
            else None
        ),
    )


def _batches(data: Any, what: str) -> list[tuple[Any, Any]]:
    """The (x, y) pairs of a tf.data.Dataset or a keras.utils.PyDataset, as numpy."""
    pairs: list[tuple[Any, Any]] = []
    if isinstance(data, keras.utils.PyDataset):
        count = data.num_batches
        if count is None:
            raise DataSourceError(f"{what}: the PyDataset has no length; give it __len__")
        items = (data[i] for i in range(count))
    elif hasattr(data, "as_numpy_iterator") and hasattr(data, "element_spec"):
        items = data.as_numpy_iterator()
    else:
        raise DataSourceError(
            f"{what} must be (x, y) arrays, a tf.data.Dataset or a keras.utils.PyDataset, got "
            f"{type(data).__name__}"
        )
    for i, item in enumerate(items):
        if i >= MAX_BATCHES:
            raise DataSourceError(
                f"{what}: more than {MAX_BATCHES} batches; a repeated dataset does not end, "
                "drop .repeat()"
            )
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise DataSourceError(
                f"{what} must give (images, labels) pairs, got {type(item).__name__}"
            )
        pairs.append((item[0], item[1]))  # sample weights, if any, are not used
    if not pairs:
        raise DataSourceError(f"{what} is empty")
    return pairs


def _raw_arrays(data: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` numpy arrays from arrays or a dataset, the labels as given."""
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise DataSourceError(f"{what} must be a pair (x, y), got {len(data)} items")
        x, y = np.asarray(data[0]), np.asarray(data[1])
    else:
        pairs = _batches(data, what)
        xs = [np.asarray(x) for x, _ in pairs]
        ys = [np.asarray(y) for _, y in pairs]
        batched = xs[0].ndim == 4  # batches of images, or one image per element
        x = np.concatenate(xs) if batched else np.stack(xs)
        y = np.concatenate(ys) if batched else np.stack(ys)
    if x.ndim != 4:
        raise DataSourceError(
            f"{what}: images must be (count, height, width, channels), got shape "
            f"{tuple(x.shape)}; add a channel axis for grayscale images"
        )
    if len(x) != len(y):
        raise DataSourceError(f"{what}: {len(x)} images but {len(y)} labels")
    return x, y


def _resolved(labels: dict[str, np.ndarray], task: str) -> tuple[dict[str, np.ndarray], bool]:
    try:
        return resolve_labels(labels, task)
    except ValueError as exc:
        raise DataSourceError(str(exc)) from None


def to_arrays(data: Any, what: str = "data", task: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` numpy arrays of images and labels from arrays or a dataset: integer labels
    (one-hot rows become their index), or for a multi-label target rows of 0/1 (float32), as
    :func:`~thaw.objectives._data.resolve_labels` reads them for ``task``."""
    x, y = _raw_arrays(data, what)
    labels, _ = _resolved({f"y of {what}": y}, task)
    return x, labels[f"y of {what}"]


def _split(
    x: np.ndarray, y: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A stratified split: ``fraction`` of each class (at least one image) for validation.
    Multi-label rows (2-D ``y``): ``fraction`` of the images, drawn at random (seeded)."""
    rng = np.random.default_rng(seed)
    val: list[int] = []
    if y.ndim == 2:
        val = rng.permutation(len(y))[: max(1, round(len(y) * fraction))].tolist()
    for label in np.unique(y) if y.ndim == 1 else ():
        index = rng.permutation(np.flatnonzero(y == label))
        if len(index) > 1:
            val.extend(index[: max(1, round(len(index) * fraction))].tolist())
    mask = np.zeros(len(y), dtype=bool)
    mask[val] = True
    return x[~mask], y[~mask], x[mask], y[mask]


def memory_data_source(
    data: Any,
    validation_data: Any = None,
    *,
    class_names: tuple[str, ...] = (),
    val_fraction: float = 0.2,
    seed: int = 0,
    task: str = "auto",
) -> DataSource:
    """A :class:`DataSource` holding ``data`` (and ``validation_data``) read into arrays.

    Without ``validation_data``, ``val_fraction`` of each class is held out (seeded; of a
    multi-label target, that fraction of the images). ``task``: ``auto``, ``multiclass`` or
    ``multilabel`` (:func:`~thaw.objectives._data.resolve_labels`), read from both splits'
    labels together.
    """
    x, y = _raw_arrays(data, "data")
    if validation_data is None:
        if not 0.0 < val_fraction < 1.0:
            raise DataSourceError(f"val_fraction must be between 0 and 1, got {val_fraction}")
        labels, multilabel = _resolved({"y of data": y}, task)
        x, y, x_val, y_val = _split(x, labels["y of data"], val_fraction, seed)
    else:
        x_val, y_val = _raw_arrays(validation_data, "validation_data")
        labels, multilabel = _resolved({"y of data": y, "y of validation_data": y_val}, task)
        y, y_val = labels["y of data"], labels["y of validation_data"]
    if multilabel:
        return _multilabel_source(x, y, x_val, y_val, class_names, val_fraction, seed)
    top = int(max(y.max(), y_val.max()))
    if class_names and top >= len(class_names):
        raise DataSourceError(
            f"the labels go up to {top} but class_names names {len(class_names)} classes; give "
            f"one name per label 0..{top}"
        )
    names = tuple(class_names) or tuple(f"class_{i}" for i in range(top + 1))
    described = f"{len(y)} training and {len(y_val)} validation images"
    return _source((x, y, x_val, y_val), names, val_fraction, seed, described, multilabel=False)


def _multilabel_source(
    x: np.ndarray,
    y: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    class_names: tuple[str, ...],
    val_fraction: float,
    seed: int,
) -> DataSource:
    k = int(y.shape[1])
    if class_names and len(class_names) != k:
        raise DataSourceError(
            f"the labels have {k} columns but class_names names {len(class_names)}; give one "
            "name per column"
        )
    names = tuple(class_names) or tuple(f"label_{i}" for i in range(k))
    described = f"{len(y)} training and {len(y_val)} validation images, {k} labels each 0 or 1"
    return _source((x, y, x_val, y_val), names, val_fraction, seed, described, multilabel=True)


def _source(
    splits: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    names: tuple[str, ...],
    val_fraction: float,
    seed: int,
    described: str,
    *,
    multilabel: bool,
) -> DataSource:
    try:
        arrays = ArrayData(*splits, names, source="in-memory arrays", multilabel=multilabel)
    except ValueError as exc:
        raise DataSourceError(str(exc)) from None
    return DataSource(
        kind="memory",
        seed=seed,
        class_names=names,
        val_fraction=val_fraction,
        instance=InMemory(arrays, arrays.fingerprint(), described),
        task="multilabel" if multilabel else "auto",
    )
