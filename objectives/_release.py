"""Release what TensorFlow keeps of a finished trial's traced graphs.

``keras.backend.clear_session()`` and ``gc.collect()`` do not free everything a trial traced on
the TensorFlow backend. In graph mode (inside the ``tf.function`` Keras traces for its train
step), every op built with ``tf.custom_gradient`` registers its gradient function under a fresh
name, ``CustomGradient-<uid>``, in TensorFlow's global op-gradient registry
(``tensorflow.python.framework.ops._gradient_registry._registry``, a dict) and nothing ever
removes it. The entry's closure holds tensors of the traced ``FuncGraph``, so each trial's whole
train-step graph stays in memory: a bare Keras loop (``clear_session``, build, compile, fit,
delete, ``gc.collect``) grows about 6.5 MiB per model (``bench/memory_bare_keras.py``; upstream:
tensorflow/tensorflow#27492 and #97697, keras-team/tf-keras#898).

A ``CustomGradient-<uid>`` name is looked up only while the graph holding that op is
differentiated, which for a Keras train step happens while the step is traced; a later trace
registers a new name. So once a trial has finished and its model is no longer trained, the
entries registered during the trial can be dropped. :func:`released_custom_gradients` does that
around a trial; on another backend, or a TensorFlow without that private registry, it does
nothing (logged once at debug level).

Trials that overlap in one process (``study.optimize(..., n_jobs=2)``) are handled: entries are
dropped only when the last running trial ends, so a trace in progress never loses its entry.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import keras

_logger = logging.getLogger(__name__)

#: Prefix of the names ``tf.custom_gradient`` registers in graph mode.
CUSTOM_GRADIENT_PREFIX = "CustomGradient-"

_lock = threading.Lock()
_active = 0
_before: set[str] = set()
_unavailable_logged = False


def gradient_registry() -> dict[str, Any] | None:
    """TensorFlow's op-gradient registry (name -> entry), or None when there is none to trim:
    another Keras backend, or a TensorFlow version without the private attribute."""
    global _unavailable_logged
    if keras.backend.backend() != "tensorflow":
        return None
    try:
        from tensorflow.python.framework import ops

        registry = ops._gradient_registry._registry
    except (ImportError, AttributeError) as exc:
        registry = None
        reason = f"{type(exc).__name__}: {exc}"
    else:
        if isinstance(registry, dict):
            return registry
        reason = f"the registry is a {type(registry).__name__}, not a dict"
    if not _unavailable_logged:
        _unavailable_logged = True
        _logger.debug("TensorFlow's gradient registry is not reachable, not trimmed: %s", reason)
    return None


def custom_gradient_count() -> int:
    """How many ``CustomGradient-*`` entries the registry holds now (0 without a registry)."""
    registry = gradient_registry()
    if registry is None:
        return 0
    return sum(1 for name in list(registry) if name.startswith(CUSTOM_GRADIENT_PREFIX))


@contextmanager
def released_custom_gradients() -> Iterator[None]:
    """Around one trial: on exit, drop the ``CustomGradient-*`` registry entries it added.

    Exit only once the trial's model is no longer trained or differentiated (after its fit,
    probes and saving): a model that traces its train step again after this registers new
    names and works, but gradients of a graph traced before the exit could not be built.
    """
    global _active, _before
    registry = gradient_registry()
    if registry is None:
        yield
        return
    with _lock:
        if _active == 0:
            _before = set(registry)
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                added = [
                    name
                    for name in list(registry)
                    if name.startswith(CUSTOM_GRADIENT_PREFIX) and name not in _before
                ]
                for name in added:
                    registry.pop(name, None)
                _before = set()
                if added:
                    _logger.debug("dropped %d custom-gradient registry entries", len(added))


_frozen_lock = threading.Lock()
_frozen_depth = 0
_settled = False


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Around a run of trials, after the model and the data are loaded: what is alive then
    (the modules, the data, the pretrained model) is collected once and frozen (``gc.freeze``),
    so the collection that ends every trial scans only what trials made; the first trial's
    collection freezes too what that trial left alive for good (:func:`settle_heap`). Unfrozen
    on exit, so nothing frozen stays uncollectable after the run; nested uses freeze once.

    Frozen objects are still freed when their last reference goes; only a reference cycle among
    them waits for the exit."""
    global _frozen_depth, _settled
    with _frozen_lock:
        _frozen_depth += 1
        if _frozen_depth == 1:
            gc.collect()
            gc.freeze()
            _settled = False
    try:
        yield
    finally:
        with _frozen_lock:
            _frozen_depth -= 1
            if _frozen_depth == 0:
                gc.unfreeze()


def settle_heap() -> None:
    """Called right after a trial's ``gc.collect()``: inside :func:`frozen_heap`, the first time
    only, freeze what is alive now. The first trial builds what every later trial reuses (the
    working copy of the base, the probe's traced runner, lazily imported modules, TensorFlow's
    function machinery); without this, every later collection scans it again. Outside
    ``frozen_heap`` it does nothing."""
    global _settled
    with _frozen_lock:
        if _frozen_depth > 0 and not _settled:
            gc.freeze()
            _settled = True
