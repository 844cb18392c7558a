"""End-of-trial probes: cheap measurements stored on the trial (user attr ``probes``) so the
diagnosis reads evidence, not only curve shapes.

- ``train_loss`` / ``train_accuracy``: the training set evaluated again in inference mode (no
  dropout, BatchNorm on its moving statistics): the true generalisation gap.
- ``val_loss_moving_stats`` / ``val_loss_batch_stats``: validation loss with BatchNorm on its
  moving statistics (what inference uses) and on the statistics of each batch: a large ratio is
  a direct BatchNorm-mismatch measurement. Moving statistics are restored afterwards.
- ``weight_drift``: per unfrozen block, the relative L2 distance of its weights from the
  pretrained ones, ``||w - w0|| / ||w0||``: features overwritten by the learning rate.

Each probe is one pass over its data, and less where the trial already knows the answer: the
validation loss with moving statistics of the weights the trial ended with is the one its fit
logged for that epoch (``val_loss``, over every validation image). The passes see a fixed sample
of each split (:func:`probe_sample`, ``TrainSettings.probe_images`` images at most, the same in
every trial), so their cost does not grow with the data set: an estimate of a mean loss from 64
images is well within the margins the diagnosis rules read (ratios of 1.5x and 2x). The
batch-statistics pass goes through a :class:`BatchStatsRunner`, which keeps one traced function
per architecture across trials.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import keras
import numpy as np

from thaw.objectives._lora import own_weights
from thaw.objectives._model import batchnorm_layers, block_name, weighted_layers
from thaw.objectives._weights import copy_weights

__all__ = [
    "PROBES_ATTR",
    "BatchStatsRunner",
    "batch_statistics_predict",
    "batchnorm_probe",
    "inference_metrics",
    "probe_sample",
    "run_probes",
    "weight_drift",
]

_logger = logging.getLogger(__name__)

PROBES_ATTR = "probes"
"""The trial user attr holding the probes."""


def probe_sample(y: np.ndarray, size: int, seed: int = 0) -> np.ndarray | None:
    """Indices of at most ``size`` images of a split with labels ``y`` for the probes, or
    ``None`` for all of them (``size >= len(y)``).

    Stratified: the classes take turns, each in a seeded order, so every class is there in
    proportion (as far as ``size`` allows); then shuffled, so batch-statistics batches mix the
    classes as a shuffled split does. The same ``y``, ``size`` and ``seed`` give the same
    sample: every trial of a study is probed on the same images.
    """
    if size < 0:
        raise ValueError(f"probe sample size {size}; expected >= 0")
    labels = np.asarray(y)
    if size >= len(labels):
        return None
    rng = np.random.default_rng(seed)
    if labels.ndim == 2:  # rows of 0/1 labels (multi-label): a seeded random sample
        return rng.permutation(len(labels))[:size].astype("int64")
    labels = labels.reshape(-1)
    classes = rng.permutation(np.unique(labels))  # which class goes first in each turn
    by_class = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    # Round-robin over the classes: position k of every class before position k + 1 of any.
    turns = sorted(
        (k, c, int(i)) for c, members in enumerate(by_class) for k, i in enumerate(members)
    )
    chosen = np.array([i for _, _, i in turns[:size]], dtype="int64")
    return rng.permutation(chosen)


def _cross_entropy(probs: np.ndarray, y: np.ndarray) -> float:
    """The loss the fit logs: cross-entropy of integer labels, or binary cross-entropy (mean
    over images and labels) of rows of 0/1 labels."""
    if np.ndim(y) == 2:
        p = np.clip(np.asarray(probs, dtype="float64"), 1e-7, 1.0 - 1e-7)
        t = np.asarray(y, dtype="float64")
        return float(-np.mean(t * np.log(p) + (1.0 - t) * np.log(1.0 - p)))
    p = np.clip(probs[np.arange(len(y)), y.astype(int)], 1e-7, 1.0)
    return float(-np.mean(np.log(p)))


def _accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    """Accuracy as the fit logs it: of the predicted class, or for rows of 0/1 labels the
    fraction of image-label pairs right at threshold 0.5."""
    if np.ndim(y) == 2:
        return float(np.mean((np.asarray(probs) > 0.5) == (np.asarray(y) > 0.5)))
    return float(np.mean(np.argmax(probs, axis=-1) == y))


def inference_metrics(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    runner: BatchStatsRunner | None = None,
) -> tuple[float, float]:
    """(loss, accuracy) of ``model`` on ``(x, y)`` in inference mode (one pass).

    With a ``runner``, through its clone of the architecture (traced once for all trials), in
    batches of ``4 * batch_size`` (inference does not depend on the batching). Otherwise a model
    compiled as thaw compiles it (sparse categorical cross-entropy, ``accuracy``, no
    regularisation losses) is measured with ``evaluate``: its test step was traced for the fit's
    validation, where a first ``predict`` would trace again. Others go through ``predict``.
    """
    if runner is not None and not model.losses:
        try:
            probs = np.asarray(runner.predict(model, x, 4 * batch_size, training=False), "float64")
        except Exception as exc:  # noqa: BLE001 - an unclonable model is measured as below
            _logger.debug("inference pass without a runner: %s: %s", type(exc).__name__, exc)
        else:
            return _cross_entropy(probs, y), _accuracy(probs, y)
    measured = _evaluated(model, x, y, batch_size)
    if measured is not None:
        return measured
    probs = np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype="float64")
    return _cross_entropy(probs, y), _accuracy(probs, y)


def _evaluated(
    model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int
) -> tuple[float, float] | None:
    if not getattr(model, "compiled", False):
        return None
    losses = ("sparse_categorical_crossentropy", "binary_crossentropy")
    if getattr(model, "loss", None) not in losses or model.losses:
        return None
    result = model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)
    if not isinstance(result, dict) or "loss" not in result or "accuracy" not in result:
        return None
    return float(result["loss"]), float(result["accuracy"])


class _InTrainingMode(keras.Model):
    """Runs ``inner`` with ``training=True``, so ``predict`` makes one traced pass per batch
    with BatchNorm on the batch's statistics (an eager call per batch costs twice as much)."""

    def __init__(self, inner: keras.Model) -> None:
        super().__init__(name=f"{inner.name}_training_mode")
        self.inner = inner

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        return self.inner(inputs, training=True)


def _leaves(model: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    for layer in getattr(model, "layers", []):
        if getattr(layer, "layers", None):
            yield from _leaves(layer)
        else:
            yield layer


@contextmanager
def _batch_statistics(model: keras.Model) -> Iterator[None]:
    """BatchNorm on batch statistics, dropout off; moving statistics and flags restored."""
    bns = [layer for layer in _leaves(model) if isinstance(layer, keras.layers.BatchNormalization)]
    drops = [layer for layer in _leaves(model) if isinstance(layer, keras.layers.Dropout)]
    saved = [(layer, layer.trainable, [w.numpy() for w in layer.weights]) for layer in bns]
    rates = [(layer, layer.rate) for layer in drops]
    try:
        for layer in bns:
            layer.trainable = True
        for layer in drops:
            layer.rate = 0.0
        yield
    finally:
        for layer, trainable, weights in saved:
            layer.trainable = trainable
            for var, value in zip(layer.weights, weights, strict=True):
                var.assign(value)
        for layer, rate in rates:
            layer.rate = rate


def _has_batchnorm(model: keras.Model) -> bool:
    return any(isinstance(layer, keras.layers.BatchNormalization) for layer in _leaves(model))


def _architecture(model: keras.Model) -> str:
    """What the batch-statistics pass of ``model`` computes, apart from its weights: its config
    without what it ignores (``trainable`` flags: every BatchNorm runs on batch statistics;
    dropout ``rate`` and ``seed``: dropout is off)."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("trainable", "rate", "seed")}
        if isinstance(value, list | tuple):
            return [strip(v) for v in value]
        return value

    return json.dumps(strip(model.get_config()), sort_keys=True, default=repr)


class _Clone:
    """A private copy of one architecture for the batch-statistics pass, and its traced call."""

    def __init__(self, model: keras.Model) -> None:
        clone = keras.models.clone_model(model)
        for layer in _leaves(clone):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = True
            elif isinstance(layer, keras.layers.Dropout):
                layer.rate = 0.0
        self.model = clone
        self.wrapper = _InTrainingMode(clone)
        self.steps: dict[bool, Any] = {}
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            # One traced call per batch, without predict's loop (its tf.data pipeline and
            # per-batch callbacks cost as much as the pass on a small model).
            self.steps = {
                training: tf.function(
                    lambda batch, training=training: clone(batch, training=training),
                    reduce_retracing=True,
                )
                for training in (True, False)
            }

    def predict(self, x: np.ndarray, batch_size: int, training: bool) -> np.ndarray:
        step = self.steps.get(training)
        if step is None:
            runner = self.wrapper if training else self.model
            return np.asarray(runner.predict(x, batch_size=batch_size, verbose=0))
        outputs = [
            keras.ops.convert_to_numpy(step(x[start : start + batch_size]))
            for start in range(0, len(x), batch_size)
        ]
        return np.concatenate(outputs, axis=0)


class BatchStatsRunner:
    """Runs a model with BatchNorm on batch statistics and dropout off, through one traced
    function per architecture, reused across trials.

    A trial's model is new (a new head) in every trial, so a ``predict`` on it traces the whole
    network again. The runner keeps a private clone per architecture (at most ``max_models``,
    least recently used first out), its BatchNorm layers trainable (batch statistics under
    ``training=True``) and its dropout at rate 0; each call copies the model's weights into the
    clone and runs the clone's traced call batch by batch (on the TensorFlow backend a
    ``tf.function``, elsewhere the clone's ``predict``). The model itself is not touched. A
    model that cannot be cloned runs as :func:`batch_statistics_predict` without a runner runs
    it. Calls from several threads take turns.
    """

    def __init__(self, max_models: int = 2) -> None:
        if max_models < 1:
            raise ValueError(f"max_models={max_models}; expected >= 1")
        self.max_models = max_models
        self._clones: OrderedDict[str, _Clone] = OrderedDict()
        self._lock = threading.RLock()
        self._last: tuple[weakref.ref[keras.Model], str] | None = None
        #: Inside ``steady(model)``: that model, its architecture's name, and the clone holding
        #: its weights (if any).
        self._steady: weakref.ref[keras.Model] | None = None
        self._steady_name: str | None = None
        self._loaded: _Clone | None = None
        #: Clones built (each traces its function once).
        self.built = 0
        #: Weight copies into a clone (one per pass, or one per ``steady`` block).
        self.copies = 0

    @contextmanager
    def steady(self, model: keras.Model, architecture: str | None = None) -> Iterator[None]:
        """Passes of ``model`` inside copy its weights into the clone once, not once per pass:
        the caller promises they do not change inside. (A batch-statistics pass moves the
        clone's moving statistics, so the next pass copies again.) ``architecture``: its name
        for the passes inside, as :meth:`predict` takes it. Other threads wait."""
        with self._lock:
            self._steady, self._steady_name = weakref.ref(model), architecture
            self._loaded = None
            try:
                yield
            finally:
                self._steady, self._steady_name, self._loaded = None, None, None

    def predict(
        self,
        model: keras.Model,
        x: np.ndarray,
        batch_size: int,
        training: bool = True,
        architecture: str | None = None,
    ) -> np.ndarray:
        """Outputs of ``model`` on ``x`` in batches of ``batch_size``: with ``training``,
        BatchNorm on batch statistics and dropout off; without, in inference mode.

        ``architecture``: a name for what the model computes, when the caller knows it (the
        same name must mean the same layers and connections; ``trainable`` flags and dropout
        rates may differ). Otherwise it is worked out from the model's config (tens of
        milliseconds on a large model)."""
        with self._lock:
            steady = self._steady is not None and self._steady() is model
            if architecture is None and steady:
                architecture = self._steady_name
            key = f"named:{architecture}" if architecture is not None else self._key(model)
            clone = self._clones.get(key)
            if clone is None:
                clone = _Clone(model)
                self._clones[key] = clone
                self.built += 1
                while len(self._clones) > self.max_models:
                    self._clones.popitem(last=False)
            self._clones.move_to_end(key)
            if not (steady and self._loaded is clone):
                copy_weights(model, clone.model)
                self.copies += 1
            # A batch-statistics pass moves the clone's moving statistics: copy again next time.
            self._loaded = clone if steady and not training else None
            return clone.predict(x, batch_size, training)

    def _key(self, model: keras.Model) -> str:
        """The architecture of ``model``, worked out once for the passes of one trial."""
        if self._last is not None and self._last[0]() is model:
            return self._last[1]
        key = _architecture(model)
        self._last = (weakref.ref(model), key)
        return key


def batch_statistics_predict(
    model: keras.Model, x: np.ndarray, batch_size: int, runner: BatchStatsRunner | None = None
) -> np.ndarray:
    """Outputs of ``model`` on ``x`` in batches of ``batch_size`` (in order), every BatchNorm
    layer on the statistics of its batch, dropout off; the model is left as it was."""
    if runner is not None:
        try:
            return runner.predict(model, x, batch_size)
        except Exception as exc:  # noqa: BLE001 - an unclonable model runs without the runner
            _logger.debug("batch-statistics pass without a runner: %s: %s", type(exc).__name__, exc)
    with _batch_statistics(model):
        return np.asarray(_InTrainingMode(model).predict(x, batch_size=batch_size, verbose=0))


def _batch_loss(probs: np.ndarray, y: np.ndarray, batch_size: int) -> float | None:
    """Mean cross-entropy over the batches (weighted by size), batches of one image left out."""
    all_probs = np.asarray(probs, dtype="float64")
    losses: list[float] = []
    weights: list[int] = []
    for start in range(0, len(y), batch_size):
        p, yb = all_probs[start : start + batch_size], y[start : start + batch_size]
        if len(yb) < 2:
            continue  # batch statistics of one image are degenerate
        losses.append(_cross_entropy(p, yb))
        weights.append(len(yb))
    if not losses:
        return None
    return float(np.average(losses, weights=weights))


def batchnorm_probe(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    moving: float | None = None,
    runner: BatchStatsRunner | None = None,
) -> tuple[float, float] | None:
    """(val loss with moving statistics, val loss with batch statistics), or ``None`` when the
    model has no BatchNormalization layer. Two passes (one when the caller knows ``moving``);
    the model is left as it was."""
    if not _has_batchnorm(model):
        return None
    if moving is None:
        moving, _ = inference_metrics(model, x, y, batch_size, runner)
    batch = _batch_loss(batch_statistics_predict(model, x, batch_size, runner), y, batch_size)
    if batch is None:
        return None
    return moving, batch


def weight_drift(
    base: keras.Model, pretrained: keras.Model, unfreeze_by: str = "layers"
) -> dict[str, float]:
    """Per unfrozen (trainable, BatchNorm excluded) block of ``base``: ``||w - w0|| / ||w0||``
    against the same-named layer of ``pretrained``. Blocks as ``block_name`` groups them."""
    original = {layer.name: layer for layer in weighted_layers(pretrained)}
    sums: dict[str, list[float]] = {}
    for layer in weighted_layers(base):
        if not layer.trainable or layer.name not in original:
            continue
        ref = original[layer.name]
        current = own_weights(layer)  # a LoRA layer: its kernel with the update merged in
        if len(ref.weights) != len(current):
            continue
        key = block_name(layer.name) if unfreeze_by == "blocks" else layer.name
        diff, norm = sums.setdefault(key, [0.0, 0.0])
        for w, w0 in zip(current, ref.weights, strict=True):
            a, b = np.asarray(w, "float64"), np.asarray(w0.numpy(), "float64")
            if a.shape != b.shape:
                continue
            diff += float(np.sum((a - b) ** 2))
            norm += float(np.sum(b**2))
        sums[key] = [diff, norm]
    return {
        key: round(math.sqrt(d) / max(math.sqrt(n), 1e-12), 6)
        for key, (d, n) in sums.items()
        if n > 0
    }


def run_probes(
    model: keras.Model,
    pretrained: keras.Model,
    *,
    x_train: np.ndarray | None,
    y_train: np.ndarray | None,
    x_val: np.ndarray | None,
    y_val: np.ndarray | None,
    batch_size: int,
    unfreeze_by: str = "layers",
    cached_top: tuple[keras.Model, np.ndarray, np.ndarray] | None = None,
    val_loss: float | None = None,
    batch_stats_features: np.ndarray | None = None,
    runner: BatchStatsRunner | None = None,
    architecture: str | None = None,
) -> dict[str, Any]:
    """All probes that the data allows, as the JSON-able ``probes`` user attr. The fine-tuned
    base is ``model.layers[1]`` (as ``build_model`` makes it).

    ``cached_top``: when the trial trained the top of ``model`` on cached activations of a
    frozen bottom (``objectives._cache``), that top model and the activations of ``x_train`` and
    ``x_val``. The inference-mode passes then run the top only: the same outputs, since the
    bottom is frozen with BatchNorm in inference mode. ``batch_stats_features``: with
    ``cached_top``, the bottom's activations of ``x_val`` with its BatchNorm on batch statistics,
    in batches of ``batch_size`` (the same for every trial with that bottom, so cached too): the
    batch-statistics pass then runs the top only; without them it runs the whole model.

    ``val_loss``: the validation loss of ``model`` as it stands (BatchNorm on moving statistics),
    when the caller knows it (the fit logged it for the epoch whose weights the model holds);
    otherwise it is measured.

    ``runner``: runs the passes through its traced clones, the weights copied once for them
    (:meth:`BatchStatsRunner.steady`); ``architecture``: the name of the architecture of the
    model the passes run (the top with ``cached_top``), when the caller knows it.
    """
    probes: dict[str, Any] = {}
    top, f_train, f_val = cached_top if cached_top is not None else (model, x_train, x_val)
    with runner.steady(top, architecture) if runner is not None else nullcontext():
        if x_train is not None and y_train is not None and len(x_train) and f_train is not None:
            loss, acc = inference_metrics(top, f_train, y_train, batch_size, runner)
            probes["train_loss"], probes["train_accuracy"] = loss, acc
        if x_val is not None and y_val is not None and len(x_val) and _has_batchnorm(model):
            moving = val_loss
            if moving is None:
                moving, _ = inference_metrics(
                    top, f_val if f_val is not None else x_val, y_val, batch_size, runner
                )
            if cached_top is not None and batch_stats_features is not None:
                probs = batch_statistics_predict(top, batch_stats_features, batch_size, runner)
            else:
                probs = batch_statistics_predict(model, x_val, batch_size, runner)
            batch = _batch_loss(probs, y_val, batch_size)
            if batch is not None:
                probes["val_loss_moving_stats"], probes["val_loss_batch_stats"] = moving, batch
    from thaw.objectives._finetune import model_base

    base = model_base(model) if len(model.layers) > 1 else model
    if batchnorm_layers(base) or weighted_layers(base):
        probes["weight_drift"] = weight_drift(base, pretrained, unfreeze_by)
    return {
        k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v)
        for k, v in probes.items()
        if not (isinstance(v, float) and not math.isfinite(v))
    }
