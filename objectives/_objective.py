"""The Optuna objective: fine-tune a fresh copy of the pretrained base with one configuration."""

from __future__ import annotations

import contextlib
import gc
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import optuna

from thaw._keys import CONTINUES, TRIAL_EPOCHS, UNFROZEN_BLOCK
from thaw.objectives._cache import (
    CACHE_FROZEN,
    CACHEABLE_BATCHNORM,
    FeatureCache,
    Split,
    cache_key,
    split_frozen_prefix,
)
from thaw.objectives._callbacks import (
    BestEpoch,
    HistoryRecorder,
    PreciseBatchNorm,
    RateSchedule,
    RestoreBestWeights,
    TrialHistory,
    TrialReporter,
)
from thaw.objectives._data import ArrayData
from thaw.objectives._finetune import (
    FineTuneAdamW,
    augmentation,
    model_base,
    variable_plan,
    without_augmentation,
)
from thaw.objectives._images import StreamedImages
from thaw.objectives._lora import check_lora_space, enable_lora
from thaw.objectives._model import (
    adapt_batchnorm,
    adapt_images_per_pass,
    batchnorm_layers,
    block_name,
    build_model,
    domain_shift_scores,
    freeze,
    head_pooling,
    layer_groups,
    shift_profile,
    unfrozen_span,
)
from thaw.objectives._probes import BatchStatsRunner, probe_sample
from thaw.objectives._release import released_custom_gradients, settle_heap
from thaw.objectives._sources import PretrainedBase
from thaw.objectives._space import SearchSpace, TrialParams
from thaw.objectives._specs import OBJECTIVE_METRICS, TrainSettings
from thaw.objectives._weights import assign_weights

_logger = logging.getLogger(__name__)

#: User attr of a trial that could have trained on cached activations but did not, and why.
CACHE_OFF_ATTR = "cache_off"
CACHE_OFF_AUGMENT = (
    "augmented images change every epoch: the whole network trained, without cached activations"
)

#: Target images the BatchNorm statistics are estimated on (``adapt``, the domain shift).
ADAPT_IMAGES = 512


def _take(values: np.ndarray, index: np.ndarray | None) -> np.ndarray:
    """``values`` at ``index`` (all of them for ``None``)."""
    return values if index is None else values[index]


class DivergedError(RuntimeError):
    """Training produced a non-finite loss."""


@dataclass(frozen=True)
class TrialOutcome:
    """What a finished fit reached, as stored on the trial."""

    best_epoch: int
    best_val_loss: float | None
    final_val_loss: float | None
    val_accuracy_at_best: float | None
    epochs_run: int
    best_value: float

    def user_attrs(self) -> dict[str, float | int | None]:
        return {
            "best_epoch": self.best_epoch,
            "best_val_loss": self.best_val_loss,
            "final_val_loss": self.final_val_loss,
            "val_accuracy_at_best": self.val_accuracy_at_best,
            "epochs_run": self.epochs_run,
            "best_value": self.best_value,
        }


def summarise_history(history: dict[str, list[float | None]], metric: str) -> TrialOutcome:
    """Best epoch (1-based) and the values there; non-finite epochs never count as best."""
    values = history[metric]
    maximize = OBJECTIVE_METRICS[metric] == "maximize"
    finite = [(i, v) for i, v in enumerate(values) if v is not None]
    if not finite:
        raise DivergedError(f"{metric} was never finite in {len(values)} epochs")
    best_i, best_value = (max if maximize else min)(finite, key=lambda iv: iv[1])
    val_loss = history["val_loss"]
    val_acc = history["val_accuracy"]
    return TrialOutcome(
        best_epoch=best_i + 1,
        best_val_loss=val_loss[best_i],
        final_val_loss=val_loss[-1] if val_loss else None,
        val_accuracy_at_best=val_acc[best_i] if best_i < len(val_acc) else None,
        epochs_run=len(values),
        best_value=float(best_value),
    )


def compile_model(
    model: keras.Model,
    learning_rate: float,
    weight_decay: float,
    jit_compile: bool | str = False,
    metrics: tuple[str, ...] = (),
    optimizer: keras.optimizers.Optimizer | None = None,
    multilabel: bool = False,
) -> None:
    """Compile with AdamW (or ``optimizer``); must run after every change of ``trainable``.
    ``metrics``: extra metrics by name (``objectives._metrics``: ``auc``, ``f1``) beside the
    accuracy. ``multilabel``: rows of 0/1 labels, binary cross-entropy and binary accuracy
    (logged as ``accuracy``: the fraction of the image-label pairs right at threshold 0.5);
    otherwise integer labels, sparse categorical cross-entropy and accuracy."""
    from thaw.objectives._metrics import extra_metrics

    accuracy: str | keras.metrics.Metric = (
        keras.metrics.BinaryAccuracy(name="accuracy") if multilabel else "accuracy"
    )
    model.compile(
        optimizer=optimizer
        or keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay),
        loss="binary_crossentropy" if multilabel else "sparse_categorical_crossentropy",
        metrics=[accuracy, *extra_metrics(metrics, multilabel=multilabel)],
        jit_compile=jit_compile,
    )


def build_training_state(model: keras.Model, y: np.ndarray) -> None:
    """Create the variables of a compiled model's optimizer, loss and metrics now, eagerly.

    On the TensorFlow backend Keras defers them to the first trace of the train step; a trace
    that creates variables is thrown away and the step traced again, so every fit of a new
    model traces its train step twice (on the demo CNN about a second of a 5-epoch trial). Built
    here, the step is traced once. The results are the same: nothing random is drawn, and the
    metrics are reset. ``y``: labels of the data the model will fit (one is used).
    """
    y_true = np.asarray(y[:1])
    outputs = model.outputs[0] if getattr(model, "outputs", None) else None
    if outputs is None or len(y_true) == 0:
        return  # a subclassed model, or no labels: Keras builds them in the trace as before
    classes = int(outputs.shape[-1])
    y_pred = keras.ops.full((1, classes), 1.0 / classes, dtype="float32")
    model.compute_loss(y=y_true, y_pred=y_pred, training=False)
    model.compute_metrics(None, y_true, y_pred, sample_weight=None)
    model.reset_metrics()
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


def _compiled(model: keras.Model) -> bool:
    return bool(getattr(model, "compiled", False))


def trial_epochs(trial: optuna.Trial, default: int) -> int:
    """The epochs ``trial`` trains: its own length when it was queued with one
    (``thaw:epochs``, a longer trial the closed loop asked for), else ``default``."""
    value = trial.user_attrs.get(TRIAL_EPOCHS)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return default


def continues(trial: optuna.Trial) -> tuple[int, int] | None:
    """(trial number, epochs) a "train longer" trial continues from (``thaw:continues``)."""
    value = trial.user_attrs.get(CONTINUES)
    if not isinstance(value, dict):
        return None
    number, epochs = value.get("trial"), value.get("epochs")
    if isinstance(number, bool) or isinstance(epochs, bool):
        return None
    if not isinstance(number, int) or not isinstance(epochs, int):
        return None
    return number, epochs


#: How many ended trials' weights a worker keeps for a "train longer" trial to continue from.
KEPT_FOR_CONTINUING = 2


class FineTuneObjective:
    """Callable objective holding the pretrained base and the data, loaded once.

    For each trial: the base with its pretrained weights restored, the top ``unfrozen_layers``
    unfrozen, a new head, AdamW, a fit reporting the metric every epoch. Returns the best value.

    With ``settings.cache_frozen == "auto"`` and in-memory data, the activations at the top of the
    frozen bottom (BatchNorm ``frozen`` or ``adapt``) are computed once and kept in
    ``feature_cache``; each epoch then trains only the top of the network on them
    (:mod:`thaw.objectives._cache`). The results are those of an uncached trial; callbacks then
    see the top part as ``self.model``, and the full model shares its trained variables.
    """

    def __init__(
        self,
        pretrained: PretrainedBase,
        data: ArrayData | StreamedImages,
        space: SearchSpace,
        settings: TrainSettings,
        seed: int = 0,
        feature_cache: FeatureCache | None = None,
    ) -> None:
        if settings.metric not in OBJECTIVE_METRICS:
            raise ValueError(
                f"objective metric {settings.metric!r}; expected one of {list(OBJECTIVE_METRICS)}"
            )
        if data.image_shape != pretrained.input_shape:
            raise ValueError(
                f"images have shape {data.image_shape} but the model expects "
                f"{pretrained.input_shape}; resize the images or cut another model"
            )
        if pretrained.head is not None:
            # A head that cannot be built fails here, before the study exists, not every trial.
            try:
                build_model(
                    pretrained.model,
                    data.num_classes,
                    space.dropout.low,
                    name="thaw_head_check",
                    head=pretrained.head,
                    weight_decay=space.weight_decay.low,
                    multilabel=getattr(data, "multilabel", False),
                )
            except Exception as exc:  # noqa: BLE001 - the user's code: any error is theirs
                raise ValueError(
                    f"head() cannot be built on the base's output "
                    f"{tuple(pretrained.model.output.shape)}: {type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}"
                ) from None
        else:
            head_pooling(pretrained.model)  # a base thaw's head cannot pool fails here
        check_lora_space(
            pretrained.model, space.lora_rank, space.unfrozen_layers.high, pretrained.unfreeze_by
        )
        from thaw.objectives._data import class_weights

        #: Extra metrics every fit logs: those asked for, and the objective's own.
        extra = tuple(settings.metrics)
        if settings.metric.startswith("val_") and settings.metric[4:] in ("auc", "f1"):
            extra = tuple(dict.fromkeys((*extra, settings.metric[4:])))
        self.metrics: tuple[str, ...] = extra
        #: Keras' class_weight of every fit (None: unweighted).
        self.class_weight = class_weights(settings.class_weight, data.y_train, data.class_names)
        #: Rows of 0/1 labels: a sigmoid head and binary cross-entropy.
        self.multilabel: bool = bool(getattr(data, "multilabel", False))
        self.pretrained = pretrained
        self.data = data
        self.space = space
        self.settings = settings
        self.seed = seed
        self._preprocess = pretrained.preprocess or (lambda x: np.asarray(x, dtype="float32"))
        self._streamed = isinstance(data, StreamedImages)
        if isinstance(data, StreamedImages):
            # Too large for memory: decode batch by batch; BatchNorm statistics use a sample.
            self._x_train = self._preprocess(data.sample_train(512))
            self._x_val = None
        else:
            self._x_train = self._preprocess(data.x_train)
            self._x_val = self._preprocess(data.x_val)
        self._adapted_weights: list[np.ndarray] | None = None
        self._precise_index: np.ndarray | None = None
        #: The lowest and highest preprocessed training value (augmentation's contrast range).
        self._value_range: tuple[float, float] | None = None
        #: User attrs the last fit set on its trial besides its results (``cache_off``).
        self.trial_notes: dict[str, str] = {}
        cache_frozen = settings.cache_frozen
        if cache_frozen not in CACHE_FROZEN:
            raise ValueError(f"cache_frozen={cache_frozen!r}; expected one of {CACHE_FROZEN}")
        self._cache_frozen = cache_frozen == "auto" and not self._streamed
        if self._cache_frozen and feature_cache is None:
            from thaw.objectives._demo import default_cache_dir

            feature_cache = FeatureCache(default_cache_dir() / "features")
        self.feature_cache = feature_cache
        self._data_fingerprint: str | None = None
        #: The last phase's cut, BatchNorm mode and features when it trained on cached features:
        #: the end-of-trial probes run the top on them.
        self._cached_phase: tuple[Split, str, tuple[np.ndarray, ...]] | None = None
        #: The epoch (1-based) whose weights the last trial's model holds at its end.
        self._restored_epoch: int | None = None
        #: How the last trial ended: the last epoch it trained, that epoch's weights (None when
        #: the model holds them) and the best epoch's (put back after the probes), and
        #: the model whose weights those are (the whole model, or the top a cached phase fits).
        self._ended: tuple[int, list[Any] | None, list[Any] | None, keras.Model] | None = None
        #: The weights the latest completed trials ended with at their best epoch, when that was
        #: their last (trial number -> params, epochs, weights): a "train longer" trial of the
        #: same configuration continues from them (at most ``KEPT_FOR_CONTINUING``).
        #: The weights are those of the model whose variables the trial trained (positions in
        #: the trial model's ``weights``, or None: all of them); the rest are the base's as reset.
        self._continuable: dict[
            int, tuple[TrialParams, int, tuple[list[int] | None, list[np.ndarray]]]
        ] = {}
        #: The model whose variables the last trial's fits could change (the top a cached phase
        #: fits, or the whole model).
        self._trained: keras.Model | None = None
        #: The last trial's model and parameters when its fits left it uncompiled.
        self._deferred: tuple[keras.Model, TrialParams] | None = None
        #: Epochs of the last trial's history its recorder stored (with ``epochs_run``).
        self._history_stored: int | None = None
        #: Epochs the current trial continues from (0: it trains from the start).
        self._resumed = 0
        #: Whether the working copy of the base holds what ``build`` reset it to (nothing else
        #: has assigned its variables since); then :meth:`fit` records in ``_base_changed`` the
        #: variables its fits could change (those of the models it fitted), and the next
        #: ``build`` resets only those (None: it compares them all).
        self._base_reset = False
        self._base_changed: list[Any] | None = None
        #: Runs the batch-statistics probe through one traced function per architecture.
        self._batch_stats_runner = BatchStatsRunner()
        if settings.probe_images < 0:
            raise ValueError(
                f"probe_images={settings.probe_images}; expected >= 0 (0: no image probes)"
            )
        #: The images the end-of-trial probes see (``probe_sample``; None: all), every trial,
        #: and those images with their labels, taken once: (x_train, y_train, x_val, y_val).
        self._probe_train = self._probe_val = None
        self._probed: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        if self._x_val is not None:
            self._probe_train = probe_sample(data.y_train, settings.probe_images, seed)
            self._probe_val = probe_sample(data.y_val, settings.probe_images, seed)
            self._probed = (
                _take(self._x_train, self._probe_train),
                _take(data.y_train, self._probe_train),
                _take(self._x_val, self._probe_val),
                _take(data.y_val, self._probe_val),
            )
        #: Boundary of each phase of the last trial ("" when that phase trained uncached).
        self.last_boundaries: list[str] = []
        #: Called with (trial, model at its best epoch, best value) when a trial's training
        #: ends, pruned or not (``keep_best`` saves the top models through it).
        self.on_trial_model: Callable[[optuna.Trial, keras.Model, float], None] | None = None
        #: Extra Keras callbacks for every fit (TensorBoard, the user's own).
        self.extra_callbacks: Callable[[optuna.Trial], list[keras.callbacks.Callback]] | None = None
        #: Called with a line naming each step that may take a while before a trial's first
        #: epoch (re-estimating BatchNorm statistics, caching frozen activations, the domain
        #: shift); None: the line is logged at info level.
        self.on_step: Callable[[str], None] | None = None
        #: Called at the start of each trial: the most epochs the trial may train (None: no
        #: limit). An epoch budget sets it so the last trial stops when the budget is spent.
        self.epoch_cap: Callable[[], int | None] | None = None

    @classmethod
    def from_config(cls, config: Any) -> FineTuneObjective:
        """The objective of a parsed study file (``thaw.load_config(path)``).

        Loads the pretrained model and the data once; pass the result to your own
        ``optuna.create_study(...).optimize(objective, n_trials=...)``.
        """
        from thaw.objectives._data import load_data
        from thaw.objectives._sources import load_pretrained

        pretrained = load_pretrained(config.model)
        data = load_data(config.data, pretrained.input_shape)
        space = config.space.resolve(pretrained.num_layers, pretrained.unfreeze_by)
        return cls(pretrained, data, space, config.train, seed=config.seed)

    def __call__(self, trial: optuna.Trial) -> float:
        params = self.space.suggest(trial)
        try:
            return self.run(trial, params)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted by the user (Ctrl-C)")
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            trial.set_user_attr("fail_reason", reason[:2000])
            _logger.warning("Trial %d failed: %s", trial.number, reason)
            raise

    def build(self, params: TrialParams) -> keras.Model:
        """The base (pretrained weights restored from memory) with a new head, frozen for the
        first phase and compiled. Valid until the next call: the base is reused by the next trial.
        """
        model = self._assemble(params)
        self._compile(model, params)
        return model

    def _assemble(self, params: TrialParams) -> keras.Model:
        """:meth:`build` without compiling: a trial's :meth:`fit` compiles the whole model only
        for a phase that fits it (a phase that trains the top on cached activations compiles
        the top alone), and :meth:`compile_if_deferred` before it is saved."""
        adapted = params.batchnorm == "adapt" and self._adapted_weights is not None
        changed, self._base_changed = self._base_changed, None
        base = self.pretrained.working_copy(
            seed=int(np.random.randint(2**30)),
            # The adapted statistics do not depend on the trial: computed once, then the base is
            # reset to them as to the pretrained weights (only what differs is assigned).
            weights=self._adapted_weights if adapted else None,
            changed=changed,
        )
        if params.lora_rank > 0:
            # LoRA adds variables to the base's layers for good: the next trial gets a new copy.
            self.pretrained.release_working_copy()
        self._base_reset = True
        if params.batchnorm == "adapt" and self._adapted_weights is None:
            self._adapt(base)
            self._adapted_weights = base.get_weights()
            self.pretrained.holds(self._adapted_weights)  # what the next adapt trial resets to
        warmup = self.settings.warmup_epochs > 0
        self._freeze(base, params, warmup=warmup)
        augment = None
        if params.augment > 0:
            if self._value_range is None:
                self._value_range = (float(np.min(self._x_train)), float(np.max(self._x_train)))
            augment = augmentation(params.augment, self._value_range)
        return build_model(
            base,
            self.data.num_classes,
            params.dropout,
            head=self.pretrained.head,
            weight_decay=params.weight_decay,
            augment=augment,
            multilabel=self.multilabel,
        )

    def _freeze(self, base: keras.Model, params: TrialParams, *, warmup: bool = False) -> None:
        """Freeze ``base`` for ``params``: all of it for a warm-up, else all but its unfrozen
        layers (the top ones, or the block from ``params.block_start``)."""
        freeze(
            base,
            0 if warmup else params.unfrozen_layers,
            params.batchnorm,
            self.pretrained.unfreeze_by,
            params.block_start,
        )

    def compile_if_deferred(self, model: keras.Model) -> None:
        """Compile the last trial's model as :meth:`build` compiles it, when that trial's fits
        left it uncompiled (they trained its top on cached activations): a model that is saved
        (``keep_best``, an export) keeps its compile settings, as compiled for the trainable
        layers of its last phase. Any other model is left as is."""
        deferred, self._deferred = self._deferred, None
        if deferred is not None and deferred[0] is model:
            self._compile(model, deferred[1])

    def _step(self, message: str) -> None:
        """Announce a step that may take a while before the first epoch."""
        if self.on_step is not None:
            self.on_step(message)
        else:
            _logger.info(message)

    def _adapt(self, base: keras.Model) -> None:
        """``adapt_batchnorm`` on the working copy, or its statistics from the feature cache
        (another objective of the same model and data computed them: a worker, an earlier run)."""
        layers = batchnorm_layers(base)
        if not layers:
            return
        images = min(len(self._x_train), ADAPT_IMAGES)
        per_pass = adapt_images_per_pass(base, images, minimum=self.settings.batch_size)
        key = None
        if self.feature_cache is not None and isinstance(self.data, ArrayData):
            if self._data_fingerprint is None:
                self._data_fingerprint = self.data.fingerprint()
            key = cache_key(
                self._data_fingerprint,
                self.pretrained.fingerprint(),
                "adapt",
                str(images),
                str(per_pass),
            )
            found = self.feature_cache.get(key, count=False)  # the counts are activations'
            if found is not None and len(found) == 2 * len(layers):
                for i, layer in enumerate(layers):
                    layer.moving_mean.assign(np.asarray(found[2 * i], dtype="float32"))
                    layer.moving_variance.assign(np.asarray(found[2 * i + 1], dtype="float32"))
                return
        passes = -(-images // per_pass)
        self._step(
            f"Re-estimating BatchNorm statistics on {images} images ({len(layers)} layers"
            + (f", {passes} passes" if passes > 1 else "")
            + ") ..."
        )
        adapt_batchnorm(
            base, self._x_train, self.settings.batch_size, ADAPT_IMAGES, images_per_pass=per_pass
        )
        if key is not None and self.feature_cache is not None:
            stats = []
            for layer in layers:
                stats += [
                    np.asarray(keras.ops.convert_to_numpy(layer.moving_mean)),
                    np.asarray(keras.ops.convert_to_numpy(layer.moving_variance)),
                ]
            self.feature_cache.put(key, tuple(stats), to_disk=True)

    def unfrozen_block(self, params: TrialParams) -> dict[str, object]:
        """The layers (or blocks) ``params`` unfreezes, as stored on its trial
        (``thaw:unfrozen_block``): ``start`` and ``stop`` counted from the bottom (0-based,
        ``stop`` excluded), the names of the lowest and highest, and whether it is the top."""
        groups = layer_groups(self.pretrained.model, self.pretrained.unfreeze_by)
        span = unfrozen_span(len(groups), params.unfrozen_layers, params.block_start)
        names = [
            block_name(g[0].name) if self.pretrained.unfreeze_by == "blocks" else g[0].name
            for g in groups
        ]
        return {
            "start": span.start,
            "stop": span.stop,
            "first": names[span.start] if len(span) else None,
            "last": names[span.stop - 1] if len(span) else None,
            "top": span.stop == len(groups),
            "depth": len(groups),
        }

    def shift_profile(self, scores: dict[str, float]) -> list[dict[str, object]]:
        """``objectives._model.shift_profile`` of the pretrained base for ``scores`` (the
        ``layers`` of :meth:`domain_shift`)."""
        return shift_profile(self.pretrained.model, scores, self.pretrained.unfreeze_by)

    def domain_shift(self) -> dict[str, object]:
        """The pretrained base's BatchNorm statistics against the target training images."""
        count = len(batchnorm_layers(self.pretrained.model))
        if count:
            self._step(
                f"Measuring the domain shift on {min(len(self._x_train), ADAPT_IMAGES)} images "
                f"({count} BatchNorm layers) ..."
            )
        layers = domain_shift_scores(
            self.pretrained.model, self._x_train, self.settings.batch_size, ADAPT_IMAGES
        )
        overall = float(np.mean(list(layers.values()))) if layers else float("nan")
        return {"overall": overall, "layers": layers}

    def _compile(
        self, model: keras.Model, params: TrialParams, base: keras.Model | None = None
    ) -> None:
        """Compile ``model`` (the whole model, or the top a cached phase fits of the model whose
        base is ``base``); with L2-SP or layer-wise rate decay, with ``FineTuneAdamW``. With a
        LoRA rank, the base's trainable Dense, EinsumDense and Conv layers get LoRA first."""
        if params.lora_rank > 0:
            enable_lora(model_base(model) if base is None else base, params.lora_rank)
        optimizer = None
        if params.l2sp > 0 or params.lr_decay != 1.0:
            scales, anchored = variable_plan(
                model_base(model) if base is None else base,
                params.unfrozen_layers,
                self.pretrained.unfreeze_by,
                params.lr_decay,
                params.block_start,
            )
            optimizer = FineTuneAdamW(
                learning_rate=params.learning_rate,
                weight_decay=params.weight_decay,
                rate_scales=scales,
                anchored=anchored,
                l2sp=params.l2sp,
            )
        compile_model(
            model,
            params.learning_rate,
            params.weight_decay,
            jit_compile=self.settings.jit_compile,
            metrics=self.metrics,
            optimizer=optimizer,
            multilabel=self.multilabel,
        )
        build_training_state(model, self.data.y_train)

    def fit(
        self,
        trial: optuna.Trial,
        model: keras.Model,
        params: TrialParams,
        history: TrialHistory,
    ) -> TrialReporter:
        """Train; with warm-up, head only first, then the unfrozen layers (epochs continue)."""
        reporter = TrialReporter(trial, monitor=self.settings.metric)
        total = trial_epochs(trial, self.settings.epochs) - self._resumed
        cap = self.epoch_cap() if self.epoch_cap is not None else None
        if cap is not None and cap < total:
            total = max(1, cap)
            trial.set_user_attr("epoch_cap", total)
        best = BestEpoch(maximize=OBJECTIVE_METRICS[self.settings.metric] == "maximize")
        # The best epoch's weights are kept and restored: of the whole model when a trial has
        # two phases (one may fit only its top on cached features, the other more), otherwise
        # of the model its one fit trains, the only weights that can change (with a cached
        # bottom, the top: on a deep base a few variables, not hundreds, copied each time).
        # The last epoch's weights are kept too: the probes measure the model as it ended.
        restorer = RestoreBestWeights(
            best, total, monitor=self.settings.metric, model_to_keep=model, keep_last=True
        )
        recorder = HistoryRecorder(trial, history)
        callbacks: list[keras.callbacks.Callback] = [recorder, reporter]
        if self.settings.precise_batchnorm and params.batchnorm == "train":
            callbacks.insert(0, PreciseBatchNorm(model_base(model), self._precise_images()))
        if self.settings.schedule != "constant":
            # Over the trial's own epochs (a continued trial: the epochs it adds).
            callbacks.insert(0, RateSchedule(self.settings.schedule, params.learning_rate, total))
        if self.extra_callbacks is not None:
            callbacks += self.extra_callbacks(trial)
        callbacks.append(restorer)  # last: the others see the epoch's own weights
        phases = [(0, total)]
        warmup = 0 if self._resumed else min(self.settings.warmup_epochs, total)
        if warmup > 0:
            trial.set_user_attr("warmup_epochs", warmup)
            phases = [(0, warmup), (warmup, total)]
        self.last_boundaries = []
        self.trial_notes = {}
        self._cached_phase = None
        self._restored_epoch = None
        self._trained = None
        self._history_stored = None
        self._deferred = None
        # A model from build() is compiled; one from _assemble() is compiled here, only for a
        # phase that fits it (not for one that trains the top on cached activations).
        compiled = _compiled(model)
        fitted: list[keras.Model] = []
        for i, (initial_epoch, epochs) in enumerate(phases):
            if i == 1:
                if reporter.pruned_at is not None or reporter.diverged_at is not None:
                    break
                base = model_base(model)
                self._freeze(base, params)
                compiled = False  # the trainable flags changed: compiled again if it is fitted
            if epochs <= initial_epoch:
                continue
            fit_model, fit_data = self._phase_model(model, params, trial.number)
            if fit_model is model and not compiled:
                self._compile(model, params)
                compiled = True
            for key, note in self.trial_notes.items():
                trial.set_user_attr(key, note)
            if len(phases) == 1:
                restorer.model_to_keep = fit_model  # the top of a cached phase shares them
            fitted.append(fit_model)
            # The same random state for the fit whether or not the features came from the cache.
            keras.utils.set_random_seed((self.seed * 100_003 + trial.number * 7 + i) % (2**31))
            try:
                fit_model.fit(
                    **fit_data,
                    initial_epoch=initial_epoch,
                    epochs=epochs,
                    callbacks=callbacks,
                    verbose=0,
                )
            except BaseException:
                # A fit that raised never reached on_train_end: keep the epochs it trained.
                with contextlib.suppress(Exception):
                    recorder.store()
                raise
        self._restored_epoch = restorer.restored_epoch
        self._history_stored = recorder.stored
        self._trained = restorer.model_to_keep or model
        if self._base_reset and all(fit_model is not model for fit_model in fitted):
            # Only the tops the phases fitted on cached activations can have changed: the
            # bottom below them is frozen (the probes and the restored weights leave it as is).
            self._base_changed = [v for fit_model in fitted for v in fit_model.weights]
        self._base_reset = False
        if not compiled:
            self._deferred = (model, params)
        self._ended = (
            restorer.last_epoch,
            restorer.last_weights,
            best.weights,
            restorer.model_to_keep or model,
        )
        return reporter

    def _precise_images(self) -> np.ndarray:
        """The training images precise BatchNorm re-estimates on: all of them up to
        ``ADAPT_IMAGES``, else that many as a seeded stratified sample (``probe_sample``)."""
        x = self._x_train
        if len(x) <= ADAPT_IMAGES:
            return x
        if self._precise_index is None:
            self._precise_index = probe_sample(self.data.y_train, ADAPT_IMAGES, self.seed)
        return x if self._precise_index is None else x[self._precise_index]

    def _phase_model(
        self, model: keras.Model, params: TrialParams, seed: int
    ) -> tuple[keras.Model, dict[str, Any]]:
        """What to fit this phase: the top of the network on cached features, or the model."""
        split = None
        if self._cache_frozen and params.batchnorm in CACHEABLE_BATCHNORM and params.augment > 0:
            # Augmented images change every epoch: no activations of them can be cached.
            self.trial_notes[CACHE_OFF_ATTR] = CACHE_OFF_AUGMENT
        elif self._cache_frozen and params.batchnorm in CACHEABLE_BATCHNORM:
            split = split_frozen_prefix(model, model_base(model))
        if split is None:
            self.last_boundaries.append("")
            self._cached_phase = None
            return model, self._fit_data(seed)
        features = self._features(split, params.batchnorm)
        self._cached_phase = (split, params.batchnorm, features)
        self._compile(split.suffix, params, base=model_base(model))
        self.last_boundaries.append(split.boundary)
        _logger.debug("training on cached features at %s %s", split.boundary, split.feature_shape)
        return split.suffix, {
            "x": features[0],
            "y": self.data.y_train,
            "validation_data": (features[1], self.data.y_val),
            "batch_size": self.settings.batch_size,
            "class_weight": self.class_weight,
        }

    def _feature_key(self, split: Split, batchnorm: str, *extra: str) -> str:
        assert isinstance(self.data, ArrayData)
        if self._data_fingerprint is None:
            self._data_fingerprint = self.data.fingerprint()
        return cache_key(
            self._data_fingerprint,
            self.pretrained.fingerprint(),
            split.boundary,
            batchnorm,
            split.feature_dtype,
            *extra,
        )

    def _features(self, split: Split, batchnorm: str) -> tuple[np.ndarray, ...]:
        """Boundary activations of the training and validation images, from the cache if there."""
        assert self.feature_cache is not None and isinstance(self.data, ArrayData)
        key = self._feature_key(split, batchnorm)
        found = self.feature_cache.get(key)
        if found is not None:
            return found
        assert self._x_val is not None
        self._step(
            f"Caching frozen activations of {len(self._x_train) + len(self._x_val)} images at "
            f"{split.boundary} ..."
        )
        size = max(self.settings.batch_size, 64)
        features = (
            np.asarray(split.prefix.predict(self._x_train, batch_size=size, verbose=0)),
            np.asarray(split.prefix.predict(self._x_val, batch_size=size, verbose=0)),
        )
        self.feature_cache.put(key, features)
        return features

    def _batch_stats_features(self, split: Split, batchnorm: str) -> np.ndarray:
        """Boundary activations of the probed validation images with the frozen bottom's
        BatchNorm on batch statistics, in batches of the trial's batch size (the batches of the
        uncached batch-statistics probe: the statistics depend on them). The same for every
        trial with this bottom: from the cache if there."""
        from thaw.objectives._probes import batch_statistics_predict

        assert self.feature_cache is not None and self._probed is not None
        size = self.settings.batch_size
        sample = "all" if self._probe_val is None else f"sample{self.settings.probe_images}"
        key = self._feature_key(split, batchnorm, "batch-stats", str(size), sample)
        found = self.feature_cache.get(key)
        if found is not None:
            return found[0]
        features = batch_statistics_predict(split.prefix, self._probed[2], size)
        self.feature_cache.put(key, (features,))
        return features

    def probe(
        self,
        trial: optuna.Trial,
        model: keras.Model,
        params: TrialParams,
        history: TrialHistory | None = None,
    ) -> None:
        """End-of-trial probes (``objectives._probes``) stored as user attr ``probes``, on the
        same sample of each split in every trial (``settings.probe_images``); a probe that fails
        is logged and skipped, never failing the trial.

        The probes measure the model as the trial ended (the last epoch it trained, stored as
        ``epoch``): where the validation loss rose, that is where the training set was memorised
        or the BatchNorm statistics went stale. The model then gets its best epoch's weights
        back. ``history``: the trial's epochs, whose logged validation loss of that epoch is the
        moving-statistics probe (otherwise measured)."""
        from thaw.objectives._probes import PROBES_ATTR, _has_batchnorm, run_probes

        phase, self._cached_phase = self._cached_phase, None
        ended, self._ended = self._ended, None
        epoch, last_weights, best_weights, kept = (
            ended if ended is not None else (None, None, None, model)
        )
        train, val = self._probe_train, self._probe_val
        cached_top = None
        if phase is not None:
            cached_top = (phase[0].suffix, _take(phase[2][0], train), _take(phase[2][1], val))
        x_train, y_train, x_val, y_val = self._probed or (None, None, None, None)
        try:
            if last_weights is not None:
                assign_weights(kept, last_weights)  # the top of a cached phase shares them
            batch_stats = None
            if phase is not None and _has_batchnorm(model) and x_val is not None and len(x_val):
                # (probe_images: 0 probes no image: nothing to run the bottom on)
                batch_stats = self._batch_stats_features(phase[0], phase[1])
            probes = run_probes(
                without_augmentation(model),
                self.pretrained.model,
                x_train=x_train,
                y_train=y_train,
                x_val=x_val,
                y_val=y_val,
                batch_size=self.settings.batch_size,
                unfreeze_by=self.pretrained.unfreeze_by,
                cached_top=cached_top,
                val_loss=None if history is None else self._final_val_loss(history, epoch),
                batch_stats_features=batch_stats,
                runner=self._batch_stats_runner,
                # Every trial's model is build_model on the same base (trainable flags and
                # dropout rates aside), every cached top the part above its boundary.
                architecture="model" if phase is None else f"top:{phase[0].boundary}",
            )
        except Exception as exc:  # noqa: BLE001 - probes are evidence, not the result
            _logger.warning("Trial %d: end-of-trial probes failed: %s", trial.number, exc)
            return
        finally:
            if last_weights is not None and best_weights is not None:
                assign_weights(kept, best_weights)
        if epoch:
            probes["epoch"] = epoch
        if self.settings.probe_images and (train is not None or val is not None):
            probes["sample_images"] = self.settings.probe_images
        trial.set_user_attr(PROBES_ATTR, probes)

    def _fit_data(self, seed: int) -> dict[str, Any]:
        """The data arguments of ``fit``: in-memory arrays, or batches decoded from files."""
        data = self.data
        size = self.settings.batch_size
        if isinstance(data, StreamedImages):
            from thaw.objectives._batches import FileBatches

            return {
                "x": FileBatches(
                    data, data.train_files, data.y_train, size, self._preprocess, seed
                ),
                "validation_data": FileBatches(
                    data, data.val_files, data.y_val, size, self._preprocess
                ),
                "class_weight": self.class_weight,
            }
        return {
            "x": self._x_train,
            "y": data.y_train,
            "validation_data": (self._x_val, data.y_val),
            "batch_size": size,
            "class_weight": self.class_weight,
        }

    def trial_seed(self, number: int) -> int:
        """The random seed trial ``number`` trains with (stored on the trial as ``seed``)."""
        return (self.seed * 100_003 + number) % (2**31)

    def train(
        self, trial: optuna.Trial, params: TrialParams, seed: int | None = None
    ) -> tuple[keras.Model, TrialHistory, TrialReporter]:
        """Build and fit one configuration; the model comes back at its best epoch, compiled."""
        model, history, reporter = self._train(trial, params, seed)
        self.compile_if_deferred(model)
        return model, history, reporter

    def _train(
        self, trial: optuna.Trial, params: TrialParams, seed: int | None = None
    ) -> tuple[keras.Model, TrialHistory, TrialReporter]:
        """:meth:`train`, the model left uncompiled when its fits did not need it compiled."""
        # clear_session resets the global dtype policy too: keep mixed precision on.
        policy = keras.config.dtype_policy()
        keras.backend.clear_session(free_memory=False)
        keras.config.set_dtype_policy(policy)
        seed = self.trial_seed(trial.number) if seed is None else seed
        trial.set_user_attr("seed", seed)
        keras.utils.set_random_seed(seed)
        self._deferred = None
        model = self._assemble(params)  # fit compiles what it fits
        if params.block_start is not None:
            trial.set_user_attr(UNFROZEN_BLOCK, self.unfrozen_block(params))
        self._resumed = self._continue(trial, params, model)
        history = TrialHistory(self.metrics)
        reporter = self.fit(trial, model, params, history)
        return model, history, reporter

    def _continue(self, trial: optuna.Trial, params: TrialParams, model: keras.Model) -> int:
        """For a "train longer" trial (``thaw:continues``) whose weights this objective kept:
        puts them into ``model`` and returns the epochs they had trained (recorded as the
        trial's ``continued_from``); 0 otherwise (the trial trains from the start)."""
        source = continues(trial)
        if source is None:
            return 0
        number, epochs = source
        kept = self._continuable.get(number)
        if kept is None or kept[0] != params or kept[1] != epochs:
            _logger.info(
                "Trial %d: the weights of trial %d are not held here; training from the start.",
                trial.number,
                number,
            )
            return 0
        if epochs >= trial_epochs(trial, self.settings.epochs):
            return 0
        if self.settings.warmup_epochs > 0:
            # build() froze the base for a warm-up that a continued trial has had already.
            base = model_base(model)
            self._freeze(base, params)
        self._compile(model, params)
        # After compiling: what compiling copies (L2-SP's anchors) stays the pretrained weights.
        self._base_reset = False
        positions, weights = kept[2]
        variables = model.weights
        for i, value in zip(positions or range(len(variables)), weights, strict=True):
            variables[i].assign(value)
        trial.set_user_attr("continued_from", {"trial": number, "epochs": epochs})
        return epochs

    def _keep_for_continuing(
        self, trial: optuna.Trial, params: TrialParams, model: keras.Model, outcome: TrialOutcome
    ) -> None:
        """Keep the weights of a trial whose best epoch was its last: a longer trial of the same
        configuration may continue from them."""
        if outcome.best_epoch != outcome.epochs_run:
            return
        epochs = outcome.epochs_run + self._resumed
        trained = self._trained
        if trained is None or trained is model:
            kept: tuple[list[int] | None, list[np.ndarray]] = (None, model.get_weights())
        else:
            # The top a cached phase trained: the rest is the base as every trial of this
            # configuration starts (on a deep base, a few variables kept, not hundreds).
            position = {id(v): i for i, v in enumerate(model.weights)}
            at = [position.get(id(v)) for v in trained.weights]
            if any(i is None for i in at):
                kept = (None, model.get_weights())
            else:
                kept = ([i for i in at if i is not None], trained.get_weights())
        self._continuable[trial.number] = (params, epochs, kept)
        while len(self._continuable) > KEPT_FOR_CONTINUING:
            del self._continuable[min(self._continuable)]

    def run(self, trial: optuna.Trial, params: TrialParams) -> float:
        """One trial; then what it traced is released (``objectives._release``) and collected."""
        try:
            with released_custom_gradients():
                return self._run(trial, params)
        finally:
            gc.collect()
            settle_heap()  # inside frozen_heap (thaw run): later collections skip what lives on

    def _final_val_loss(self, history: TrialHistory, epoch: int | None) -> float | None:
        """The validation loss the fit logged for epoch ``epoch`` (1-based)."""
        losses = history.epochs["val_loss"]
        if epoch is None or not 1 <= epoch <= len(losses):
            return None
        return losses[epoch - 1]

    def _run(self, trial: optuna.Trial, params: TrialParams) -> float:
        # Left uncompiled when only its top was fitted: a keeper that saves it compiles it
        # first (compile_if_deferred), one that does not saves the time.
        model, history, reporter = self._train(trial, params)
        try:
            outcome = summarise_history(history.to_dict(), self.settings.metric)
        except DivergedError:
            if reporter.pruned_at is not None:  # the pruner recorded why (diverged)
                raise optuna.TrialPruned(f"diverged at epoch {reporter.pruned_at}") from None
            raise
        attrs = outcome.user_attrs()
        if self._history_stored == outcome.epochs_run:
            del attrs["epochs_run"]  # stored with the history already: one storage write less
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        if self.on_trial_model is not None and math.isfinite(outcome.best_value):
            try:
                # kept as a user calls it: model(x) would augment in its augmentation layers
                self.on_trial_model(trial, without_augmentation(model), outcome.best_value)
            except OSError as exc:  # a full disk must not fail the trial
                _logger.warning("Trial %d: best model not kept: %s", trial.number, exc)
        if reporter.diverged_at is None:
            self.probe(trial, model, params, history)
        if reporter.pruned_at is not None:
            raise optuna.TrialPruned(f"pruned at epoch {reporter.pruned_at}")
        if reporter.diverged_at is not None:
            raise DivergedError(
                f"{self.settings.metric} became non-finite at epoch {reporter.diverged_at}"
            )
        if not math.isfinite(outcome.best_value):
            raise DivergedError(f"best {self.settings.metric} is not finite")
        self._keep_for_continuing(trial, params, model, outcome)
        return outcome.best_value
