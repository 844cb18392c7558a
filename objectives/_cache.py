"""Frozen-prefix caching: compute the activations at the frozen/trainable boundary once.

When the bottom of a trial's network is frozen (no trainable weights, BatchNorm in inference mode,
nothing random such as Dropout or random augmentation), its output does not change during the
trial. :func:`split_frozen_prefix` cuts the trial model at the highest such boundary into

* a *prefix* (images -> boundary activations), run once over the training and validation images,
* a *suffix* (boundary activations -> predictions) made of the very same layer objects as the top
  of the full model, so training the suffix trains the full model's variables: when the trial
  ends, the full model (prefix + trained suffix) holds the result, nothing is copied.

:class:`FeatureCache` keeps the activations in memory up to a bound and on disk beyond it, keyed by
the data fingerprint, the model fingerprint, the boundary and the BatchNorm mode, so trials with
the same boundary reuse them.

A boundary is a tensor every path from the input to the output passes through (Keras builds a
model from an intermediate tensor only then); a skip connection that crosses a candidate boundary
moves it down to the nearest valid one, or caching is off for the trial (logged at debug level).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import logging
import os
import weakref
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from thaw.objectives._model import is_batchnorm

_logger = logging.getLogger(__name__)

#: BatchNorm modes whose frozen part runs in inference mode with fixed statistics.
CACHEABLE_BATCHNORM: tuple[str, ...] = ("frozen", "adapt")
CACHE_FROZEN: tuple[str, ...] = ("auto", "off")
#: Activations kept in memory by default (beyond it, on disk).
DEFAULT_MEMORY_BYTES = 1 << 30


#: Whether a layer holds a SeedGenerator, by layer (fixed when it is built; a deep base's layers
#: are looked at in every trial).
_RANDOM: weakref.WeakKeyDictionary[keras.layers.Layer, bool] = weakref.WeakKeyDictionary()


def _has_randomness(layer: keras.layers.Layer) -> bool:
    try:
        return _RANDOM[layer]
    except (KeyError, TypeError):
        pass
    found = any(isinstance(v, keras.random.SeedGenerator) for v in vars(layer).values())
    with contextlib.suppress(TypeError):
        _RANDOM[layer] = found
    return found


@functools.lru_cache(maxsize=1024)
def _takes_training(call: Callable[..., Any]) -> bool:
    try:
        return "training" in inspect.signature(call).parameters
    except (TypeError, ValueError):
        return True


def _call_takes_training(layer: keras.layers.Layer) -> bool:
    """Whether ``layer.call`` has a ``training`` argument (unknown: True); worked out once per
    class for a method of the layer's class."""
    call = layer.call
    function = getattr(call, "__func__", None)
    if function is not None and function is getattr(type(layer), "call", None):
        return _takes_training(function)
    return _takes_training.__wrapped__(call)


def is_frozen(layer: keras.layers.Layer) -> bool:
    """True when ``layer`` computes the same function during ``fit`` as in inference.

    No trainable weights, no randomness (Dropout, noise, random augmentation), BatchNorm not
    trainable (so in inference mode), and no other layer whose ``call`` depends on ``training``
    (unknown behaviour counts as not frozen). Nested models are frozen when all their layers are.
    """
    if isinstance(layer, keras.Model) or getattr(layer, "layers", None):
        return all(is_frozen(sub) for sub in layer.layers)
    if layer.trainable_weights or _has_randomness(layer):
        return False
    if is_batchnorm(layer):
        return not layer.trainable
    return not _call_takes_training(layer)


class Split:
    """A trial model cut at a frozen boundary; ``suffix`` shares its layers with the full model.

    ``prefix`` (images -> boundary activations) is built on first use: a trial whose activations
    are cached already never runs it, and on a deep network building it takes a while.
    """

    def __init__(
        self,
        prefix: keras.Model | tuple[list[keras.KerasTensor], keras.KerasTensor],
        suffix: keras.Model,
        boundary: str,
    ) -> None:
        """``prefix``: the model, or its inputs and its output tensor."""
        if isinstance(prefix, keras.Model):
            self._prefix: keras.Model | None = prefix
            self._inputs, self._tensor = list(prefix.inputs), prefix.outputs[0]
        else:
            self._prefix = None
            self._inputs, self._tensor = prefix
        self.suffix = suffix
        self.boundary = boundary

    @property
    def prefix(self) -> keras.Model:
        if self._prefix is None:
            self._prefix = keras.Model(self._inputs, self._tensor, name="thaw_prefix")
        return self._prefix

    @property
    def feature_dtype(self) -> str:
        """The dtype of the boundary activations."""
        return str(self._tensor.dtype)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self._tensor.shape[1:])


def _output_in_graph(
    layers: list[keras.layers.Layer], i: int, output: keras.KerasTensor
) -> keras.KerasTensor | None:
    """The tensor layer ``i`` produces in this graph (None: several tensors).

    A nested model's ``output`` is that of its own graph, so its tensor here is read off the next
    layer's input; any tensor below layer ``i + 1`` is computed by frozen layers only, which is all
    a cut needs.
    """
    layer = layers[i]
    if i == len(layers) - 1:
        return output
    if isinstance(layer, keras.Model):
        tensor = layers[i + 1].input
    else:
        try:
            tensor = layer.output
        except (AttributeError, ValueError):
            return None
    return tensor if isinstance(tensor, keras.KerasTensor) else None


def _highest_cut(
    layers: list[keras.layers.Layer], output: keras.KerasTensor, where: str
) -> tuple[int, keras.KerasTensor, keras.Model | None] | None:
    """The highest layer of the frozen bottom of ``layers`` whose output separates the graph.

    Returns its index, its output and the model from there to ``output`` (None when the cut is the
    output itself); None when no layer above the input qualifies.
    """
    first_live = next((i for i, layer in enumerate(layers) if not is_frozen(layer)), len(layers))
    for i in range(first_live - 1, 0, -1):
        tensor = _output_in_graph(layers, i, output)
        if tensor is None:
            _logger.debug("%s: no cut after '%s' (not a single output)", where, layers[i].name)
            continue
        if tensor is output:
            return i, tensor, None
        try:
            tail = keras.Model(tensor, output, name=f"thaw_tail_{layers[i].name}")
        except ValueError as exc:
            _logger.debug(
                "%s: no cut after '%s' (a connection crosses it: %s)", where, layers[i].name, exc
            )
            continue
        return i, tensor, tail
    return None


def split_frozen_prefix(model: keras.Model, base: keras.Model) -> Split | None:
    """Cut ``model`` (``build_model(base, ...)``) at the highest boundary below which all is frozen.

    If the whole base is frozen, the cut may also pass frozen head layers (global pooling) and
    stops below the first random or trainable one (Dropout). Otherwise it lies inside ``base``,
    at the nearest valid boundary below its lowest trainable layer. None when nothing above the
    input can be cut (the reason is logged at debug level).
    """
    outer = list(model.layers)
    if len(outer) < 3 or outer[1] is not base or len(model.inputs) != 1:
        _logger.debug("no frozen-prefix cache: '%s' is not input -> base -> head", model.name)
        return None
    try:
        if is_frozen(base):
            cut = _highest_cut(outer, model.outputs[0], model.name)
            if cut is None:
                _logger.debug("no frozen-prefix cache: no valid cut in '%s'", model.name)
                return None
            i, tensor, suffix = cut
            if suffix is None:
                _logger.debug("no frozen-prefix cache: the whole of '%s' is frozen", model.name)
                return None
            return Split((list(model.inputs), tensor), suffix, f"{model.name}/{outer[i].name}")
        inner = list(base.layers)
        cut = _highest_cut(inner, base.outputs[0], base.name)
        if cut is None:
            _logger.debug("no frozen-prefix cache: the bottom of '%s' is not frozen", base.name)
            return None
        i, tensor, tail = cut
        head_input = outer[2].input
        if not isinstance(head_input, keras.KerasTensor):
            _logger.debug("no frozen-prefix cache: the head of '%s' has several inputs", model.name)
            return None
        head = keras.Model(head_input, model.outputs[0], name="thaw_head")
        features = keras.Input(shape=tensor.shape[1:], dtype=tensor.dtype, name="features")
        x = features if tail is None else tail(features)
        suffix = keras.Model(features, head(x), name="thaw_suffix")
        return Split((list(base.inputs), tensor), suffix, f"{base.name}/{inner[i].name}")
    except Exception as exc:  # noqa: BLE001 - an unusual graph means "no cache", never a failure
        _logger.debug(
            "no frozen-prefix cache for '%s': %s: %s", model.name, type(exc).__name__, exc
        )
        return None


def cache_key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


class FeatureCache:
    """Activations by key: in memory (least recently used first out) up to a bound, then on disk.

    Entries evicted from memory, or larger than the bound, are written as ``.npy`` files under
    ``directory`` (atomically, so concurrent workers may share it) and read back memory-mapped.
    Without a directory they are dropped and recomputed when needed.
    """

    def __init__(
        self, directory: Path | None = None, max_memory_bytes: int = DEFAULT_MEMORY_BYTES
    ) -> None:
        if max_memory_bytes < 0:
            raise ValueError(f"max_memory_bytes={max_memory_bytes}; expected >= 0")
        self.directory = directory
        self.max_memory_bytes = max_memory_bytes
        self._memory: OrderedDict[str, tuple[np.ndarray, ...]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def memory_bytes(self) -> int:
        return sum(a.nbytes for arrays in self._memory.values() for a in arrays)

    def __contains__(self, key: str) -> bool:
        return key in self._memory or self._on_disk(key) is not None

    def get(self, key: str, count: bool = True) -> tuple[np.ndarray, ...] | None:
        """The arrays under ``key`` (None: not there); ``count``: in ``hits`` and ``misses``."""
        if key in self._memory:
            self._memory.move_to_end(key)
            self.hits += count
            return self._memory[key]
        paths = self._on_disk(key)
        if paths is None:
            self.misses += count
            return None
        self.hits += count
        return tuple(np.load(p, mmap_mode="r") for p in paths)

    def put(self, key: str, arrays: tuple[np.ndarray, ...], to_disk: bool = False) -> None:
        """Keep ``arrays`` under ``key``; ``to_disk``: written to the directory now too (small
        results that other processes, later runs, should find)."""
        size = sum(a.nbytes for a in arrays)
        if size > self.max_memory_bytes:
            self._spill(key, arrays)
            return
        if to_disk:
            self._spill(key, arrays)
        self._memory[key] = arrays
        self._memory.move_to_end(key)
        while self.memory_bytes > self.max_memory_bytes:
            old_key, old = self._memory.popitem(last=False)
            self._spill(old_key, old)

    def clear(self) -> None:
        """Forget what is in memory (files on disk stay)."""
        self._memory.clear()

    def _paths(self, key: str, count: int) -> list[Path]:
        assert self.directory is not None
        return [self.directory / f"{key}-{i}.npy" for i in range(count)]

    def _on_disk(self, key: str) -> list[Path] | None:
        if self.directory is None:
            return None
        count_file = self.directory / f"{key}.count"
        try:
            count = int(count_file.read_text())
        except (OSError, ValueError):
            return None
        paths = self._paths(key, count)
        return paths if all(p.is_file() for p in paths) else None

    def _spill(self, key: str, arrays: tuple[np.ndarray, ...]) -> None:
        if self.directory is None:
            _logger.debug("feature cache: dropping %s (over the memory bound, no directory)", key)
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        for path, array in zip(self._paths(key, len(arrays)), arrays, strict=True):
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
            np.save(tmp, np.ascontiguousarray(array))
            os.replace(tmp, path)
        count_tmp = self.directory / f"{key}.{os.getpid()}.count.tmp"
        count_tmp.write_text(str(len(arrays)))
        os.replace(count_tmp, self.directory / f"{key}.count")
        _logger.debug("feature cache: %s written to %s", key, self.directory)
