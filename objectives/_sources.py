"""Where the pretrained model comes from, loaded once and instantiated fresh for each trial."""

from __future__ import annotations

import hashlib
import logging
import zipfile
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from thaw.objectives._model import cut_base, layer_groups
from thaw.objectives._specs import ModelSource, ModelSourceError
from thaw.objectives._weights import restore_weights

_logger = logging.getLogger(__name__)

#: ``cut_at`` value that keeps a model file whole, its top classifier included.
KEEP_WHOLE = "none"
CLASSIFIER_ACTIVATIONS: tuple[str, ...] = ("softmax", "sigmoid")


def _activation_name(layer: keras.layers.Layer) -> str:
    activation = getattr(layer, "activation", None)
    return str(getattr(activation, "__name__", activation or ""))


def top_classifier(model: keras.Model) -> tuple[keras.layers.Layer, str] | None:
    """The model's source classifier and its activation, when its last layer is one.

    A classifier is a ``Dense`` layer with a softmax or sigmoid activation, or such an
    ``Activation`` layer right after a ``Dense`` (then the ``Dense`` is returned).
    """
    layers = list(getattr(model, "layers", []))
    if not layers:
        return None
    last = layers[-1]
    if isinstance(last, keras.layers.Dense) and _activation_name(last) in CLASSIFIER_ACTIVATIONS:
        return last, _activation_name(last)
    if (
        isinstance(last, (keras.layers.Activation, keras.layers.Softmax))
        and len(layers) >= 2
        and isinstance(layers[-2], keras.layers.Dense)
    ):
        name = "softmax" if isinstance(last, keras.layers.Softmax) else _activation_name(last)
        if name in CLASSIFIER_ACTIVATIONS:
            return layers[-2], name
    return None


def cut_top_classifier(model: keras.Model) -> tuple[keras.Model, str] | None:
    """``model`` without its top classifier, and a line saying what was cut (None: no classifier).

    The new head then sits on the features the classifier read, not on the source classes'
    probabilities.
    """
    found = top_classifier(model)
    if found is None:
        return None
    dense, activation = found
    try:
        features = dense.input
        base = keras.Model(model.inputs, features, name=f"{model.name}_base")
    except Exception as exc:  # noqa: BLE001 - subclassed or multi-input models cannot be cut
        _logger.warning("Could not cut the top classifier '%s': %s", dense.name, exc)
        return None
    below = next(
        (layer.name for layer in model.layers if getattr(layer, "output", None) is features),
        None,
    )
    where = f"; the new head sits on '{below}'" if below else ""
    line = (
        f"top classifier '{dense.name}' (Dense, {activation}, {dense.units} outputs) cut{where}; "
        f"'cut_at: {KEEP_WHOLE}' keeps it"
    )
    return base, line


class PretrainedBase:
    """A pretrained base held in memory, its weights kept once as numpy arrays.

    :meth:`working_copy` gives the base for the next trial: one copy built once, its pretrained
    weights restored from memory on every call (no file is read again and no graph rebuilt, which
    for a network of a few hundred layers costs seconds). :meth:`instantiate` gives an independent
    copy, for code that keeps several bases alive at once.
    """

    def __init__(
        self,
        model: keras.Model,
        description: str,
        preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
        unfreeze_by: str = "layers",
    ) -> None:
        self._model = model
        self._weights = model.get_weights()
        self._working: keras.Model | None = None
        self._node_counts: list[tuple[keras.layers.Layer, int, int]] = []
        #: The weights the working copy was last reset to (None: not reset yet).
        self._reset_to: Sequence[np.ndarray] | None = None
        #: The random layers' seed generators in the working copy (found once).
        self._generators: list[keras.random.SeedGenerator] = []
        self._fingerprint: str | None = None
        self.description = description
        self.preprocess = preprocess
        self.unfreeze_by = unfreeze_by
        self.num_layers = len(layer_groups(model, unfreeze_by))
        if self.num_layers == 0:
            raise ModelSourceError(
                f"the model '{model.name}' has no layers with weights (BatchNorm excluded) below "
                "the cut, so there is nothing to fine-tune; check 'model.path' and 'model.cut_at'"
            )
        shape = model.input_shape[1:]
        if any(d is None for d in shape):
            raise ModelSourceError(
                f"the model '{model.name}' has no fixed height and width (input {tuple(shape)}); "
                "set 'model.input_shape: [height, width, channels]' to the image size to train at"
            )
        self.input_shape: tuple[int, ...] = tuple(int(d) for d in shape)
        #: Name of the source classifier cut off a model file by default (None: nothing cut).
        self.cut_classifier: str | None = None
        #: (name, kind, weights) of that classifier, for ``thaw inspect``.
        self.cut_classifier_info: tuple[str, str, int] | None = None
        #: Builds the new head on the base's output (None: thaw's pooling, dropout, softmax).
        self.head: Callable[..., Any] | None = None

    @property
    def model(self) -> keras.Model:
        """The loaded base itself; do not train it, use :meth:`instantiate`."""
        return self._model

    @property
    def weights(self) -> list[np.ndarray]:
        """The pretrained weights, as loaded (read-only by convention)."""
        return self._weights

    def fingerprint(self) -> str:
        """sha256 of the architecture, pretrained weights and description (computed once)."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(self.description.encode() + b"\0" + self._model.to_json().encode())
            for w in self._weights:
                a = np.ascontiguousarray(w)
                h.update(str(a.dtype).encode() + str(a.shape).encode())
                h.update(a.tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def release_working_copy(self) -> None:
        """Forget the working copy (a trial changed its layers, e.g. gave them LoRA): the next
        :meth:`working_copy` builds a new one. The model the last call returned stays valid."""
        self._working = None
        self._node_counts = []

    def instantiate(self) -> keras.Model:
        """An independent copy with the pretrained weights (rebuilds the graph: seconds)."""
        clone = copy_model(self._model)
        clone.set_weights(self._weights)
        return clone

    def working_copy(
        self,
        seed: int = 0,
        weights: Sequence[np.ndarray] | None = None,
        changed: Collection[keras.Variable] | None = None,
    ) -> keras.Model:
        """The base for the next trial, with the pretrained weights restored from memory.

        Built once (the first call clones the model); every call resets its weights, BatchNorm
        statistics included, and the state of its random layers (from ``seed``), so a trial never
        depends on the trials before it. Only the variables that differ from the weights they
        are reset to are assigned (a trial changes few of a deep base's variables; reading one
        costs a fraction of assigning it). It then seeds the global random state from ``seed``
        (``keras.utils.set_random_seed``), so what follows (a new head's initial weights) is the
        same whether or not this call had to build the copy. The model returned by the previous
        call *is* this one: save or copy a trial's model before the next trial starts.

        ``weights``: what to reset it to instead of the pretrained weights (the same
        architecture's, in ``get_weights`` order: the pretrained ones with re-estimated
        BatchNorm statistics).

        ``changed``: the variables of the copy that may differ from the weights the previous
        call reset it to, when the caller knows (a trial that trained only the top of the
        network on cached activations of its frozen bottom changed none below); with the same
        ``weights`` as that call, only those are read and reset (on DenseNet121 reading all 604
        variables costs about 0.1 s a trial). None: every variable is compared.
        """
        target = self._weights if weights is None else weights
        only: list[int] | None = None
        if self._working is None:
            self._working = copy_model(self._model)
            self._node_counts = _node_counts(self._working)
            self._generators = _seed_generators(self._working)
        else:
            _forget_later_nodes(self._node_counts)
            if changed is not None and target is self._reset_to:
                ids = {id(variable) for variable in changed}
                only = [i for i, v in enumerate(self._working.weights) if id(v) in ids]
        self._reset_to = None  # until the reset below has succeeded
        restore_weights(self._working, target, only)
        self._reset_to = target
        _reseed(self._generators, seed)
        keras.utils.set_random_seed(seed)
        return self._working

    def holds(self, weights: Sequence[np.ndarray]) -> None:
        """Record that the working copy holds exactly ``weights`` now (its caller assigned them
        and read them back with ``get_weights``: re-estimated BatchNorm statistics): the next
        :meth:`working_copy` to the same ``weights`` may then reset only what changed since."""
        self._reset_to = weights


def copy_model(model: keras.Model) -> keras.Model:
    """A new model of ``model``'s architecture, its weights newly initialised (the caller sets
    them): ``keras.models.clone_model``, or where that cannot rebuild a layer from the layer's
    own config (KerasHub 0.32's ViT patch embedding), the model's class rebuilt from the
    model's config (a KerasHub backbone's config holds its constructor's arguments)."""
    try:
        return keras.models.clone_model(model)
    except Exception as clone_error:  # noqa: BLE001 - a layer's from_config fails in many ways
        try:
            copy = type(model).from_config(model.get_config())
        except Exception as exc:  # noqa: BLE001 - same: the model's own code
            raise ModelSourceError(
                f"cannot make a copy of the model '{model.name}' for a trial: "
                f"keras.models.clone_model failed ({type(clone_error).__name__}: "
                f"{str(clone_error).splitlines()[0][:200]}) and so did "
                f"{type(model).__name__}.from_config ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); load a model whose "
                "layers rebuild from their configs"
            ) from None
        if [tuple(w.shape) for w in copy.weights] != [tuple(w.shape) for w in model.weights]:
            raise ModelSourceError(
                f"cannot make a copy of the model '{model.name}' for a trial: "
                f"keras.models.clone_model failed ({type(clone_error).__name__}) and "
                f"{type(model).__name__}.from_config builds other weights"
            ) from None
        _logger.debug(
            "'%s' rebuilt from its config: clone_model failed (%s)",
            model.name,
            type(clone_error).__name__,
        )
        return copy


def _all_layers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    found = [layer]
    for sub in getattr(layer, "layers", None) or []:
        found.extend(_all_layers(sub))
    return found


def _node_counts(model: keras.Model) -> list[tuple[keras.layers.Layer, int, int]]:
    return [
        (
            layer,
            len(getattr(layer, "_inbound_nodes", ())),
            len(getattr(layer, "_outbound_nodes", ())),
        )
        for layer in _all_layers(model)
    ]


def _forget_later_nodes(counts: list[tuple[keras.layers.Layer, int, int]]) -> None:
    """Drop the graph nodes earlier trials added to the working copy's layers.

    Each trial calls the base on a new input and cuts it for the cache; Keras records every such
    call on the layers (``_inbound_nodes``/``_outbound_nodes``), which would keep every earlier
    trial's head alive. The models that made them are gone by the next trial.
    """
    for layer, inbound, outbound in counts:
        nodes = getattr(layer, "_inbound_nodes", None)
        if isinstance(nodes, list):
            del nodes[inbound:]
        nodes = getattr(layer, "_outbound_nodes", None)
        if isinstance(nodes, list):
            del nodes[outbound:]


def _reseed(generators: list[keras.random.SeedGenerator], seed: int) -> None:
    """Give every SeedGenerator (of a model's Dropout, noise, random augmentation layers) a
    fixed state from ``seed``."""
    for i, generator in enumerate(generators):
        generator.state.assign(
            np.asarray([(seed * 7919 + i) % (2**31), 0], dtype=generator.state.dtype)
        )


def _seed_generators(layer: keras.layers.Layer) -> list[keras.random.SeedGenerator]:
    found: list[keras.random.SeedGenerator] = []
    for sub in getattr(layer, "layers", None) or []:
        found.extend(_seed_generators(sub))
    for value in vars(layer).values():
        if isinstance(value, keras.random.SeedGenerator):
            found.append(value)
    return found


def _load_model_file(path: Path, safe_mode: bool) -> keras.Model:
    if not path.exists():
        raise ModelSourceError(f"model file {path} does not exist; check 'model.path'")
    if path.suffix not in (".keras", ".h5", ".hdf5"):
        raise ModelSourceError(
            f"model file {path} has suffix {path.suffix!r}; thaw loads '.keras' "
            "(model.save) or legacy '.h5' files"
        )
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        raise ModelSourceError(f"{path} is not a Keras model file (not a .keras zip archive)")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=safe_mode)
    except ValueError as exc:
        if "safe_mode" in str(exc) or "unsafe" in str(exc).lower():
            raise ModelSourceError(
                f"{path} needs unsafe deserialisation (it contains a Lambda layer or custom "
                "code); only if you trust the file, set 'model.safe_mode: false'"
            ) from None
        raise ModelSourceError(f"cannot load {path} as a Keras model: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any loader error means "not a model we can read"
        raise ModelSourceError(
            f"cannot load {path} as a Keras model: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(model, keras.Model):
        raise ModelSourceError(f"{path} holds a {type(model).__name__}, not a Keras model")
    return model


def load_pretrained(source: ModelSource, cache_dir: Path | None = None) -> PretrainedBase:
    """Load the configured pretrained model and cut its head off."""
    if source.kind == "demo":
        from thaw.objectives._demo import DEMO_FEATURE_LAYER, demo_pretrained_model_path

        path = demo_pretrained_model_path(seed=source.seed, cache_dir=cache_dir)
        model = _load_model_file(path, safe_mode=True)
        cut_at: str | None = source.cut_at or DEMO_FEATURE_LAYER
        description = f"demo CNN pretrained on the source domain (seed {source.seed})"
    elif source.kind == "glyphs":
        from thaw.objectives._glyphs import GLYPHS_FEATURE_LAYER, glyphs_pretrained_model_path

        path = glyphs_pretrained_model_path(seed=source.seed, cache_dir=cache_dir)
        model = _load_model_file(path, safe_mode=True)
        cut_at = source.cut_at or GLYPHS_FEATURE_LAYER
        description = f"residual network pretrained on source letters (seed {source.seed})"
    elif source.kind == "application":
        from thaw.objectives._applications import load_application

        if not source.name:
            raise ModelSourceError("model.name is required for a keras.applications network")
        model, preprocess = load_application(
            source.name, source.weights, source.input_shape, source.alpha
        )
        description = f"keras.applications.{source.name} (weights: {source.weights})"
        base = model
        if source.cut_at and source.cut_at != KEEP_WHOLE:
            try:
                base = cut_base(model, source.cut_at)
            except ValueError as exc:
                raise ModelSourceError(str(exc)) from None
            description += f", cut at '{source.cut_at}'"
        return PretrainedBase(base, description, preprocess, source.unfreeze_by)
    elif source.kind == "kerashub":
        from thaw.objectives._kerashub import load_kerashub_backbone

        if not source.name:
            raise ModelSourceError("model.preset is required for a KerasHub backbone")
        model, hub_preprocess = load_kerashub_backbone(source.name)
        description = f"KerasHub {type(model).__name__} ({Path(source.name).name})"
        base = cut_base_or_fail(model, source.cut_at)
        if source.input_shape is not None and tuple(base.input_shape[1:]) != source.input_shape:
            base = _fix_input_shape(base, source.input_shape)
        return PretrainedBase(base, description, hub_preprocess, source.unfreeze_by)
    elif source.kind == "file":
        if source.path is None:
            raise ModelSourceError("model.path is required for a model file")
        model = _load_model_file(source.path, safe_mode=source.safe_mode)
        cut_at = source.cut_at
        description = f"{source.path.name}"
    elif source.kind == "memory":
        if source.instance is None or not isinstance(source.instance.value, keras.Model):
            raise ModelSourceError("an in-memory model needs its keras.Model (thaw.run(model=...))")
        # Searched like a model file: its top classifier cut unless cut_at says otherwise.
        model = source.instance.value
        cut_at = source.cut_at
        description = f"keras.Model '{model.name}'"
    else:
        raise ModelSourceError(f"unknown model kind {source.kind!r}")
    cut_classifier: str | None = None
    if cut_at == KEEP_WHOLE and not _has_layer(model, KEEP_WHOLE):
        base = model
    elif cut_at is None and (cut := cut_top_classifier(model)) is not None:
        base, line = cut
        cut_classifier = top_classifier(model)[0].name  # type: ignore[index]
        _logger.info("%s: %s", description, line)
        description += f", {line.split(';')[0]}"
    else:
        try:
            base = cut_base(model, cut_at)
        except ValueError as exc:
            raise ModelSourceError(str(exc)) from None
        if cut_at:
            description += f", cut at '{cut_at}'"
    if source.input_shape is not None and tuple(base.input_shape[1:]) != source.input_shape:
        base = _fix_input_shape(base, source.input_shape)
        description += f", input {source.input_shape}"
    pretrained = PretrainedBase(base, description, None, source.unfreeze_by)
    if source.head is not None:
        pretrained.head = source.head.value
        description += f", head {getattr(source.head.value, '__name__', 'function')}()"
        pretrained.description = description
    pretrained.cut_classifier = cut_classifier
    if cut_classifier is not None:
        found = top_classifier(model)
        if found is not None:
            dense = found[0]
            pretrained.cut_classifier_info = (
                dense.name,
                f"Dense {found[1]}",
                int(sum(int(w.numpy().size) for w in dense.weights)),
            )
    return pretrained


def _has_layer(model: keras.Model, name: str) -> bool:
    return any(layer.name == name for layer in getattr(model, "layers", []))


def cut_base_or_fail(model: keras.Model, cut_at: str | None) -> keras.Model:
    try:
        return cut_base(model, cut_at)
    except ValueError as exc:
        raise ModelSourceError(str(exc)) from None


def _fix_input_shape(base: keras.Model, shape: tuple[int, int, int]) -> keras.Model:
    """Call a base that accepts any image size on a fixed-size input."""
    given = tuple(base.input_shape[1:])
    if len(given) != len(shape) or any(
        g not in (None, s) for g, s in zip(given, shape, strict=True)
    ):
        raise ModelSourceError(
            f"model.input_shape {list(shape)} does not fit the model's input {given}"
        )
    inputs = keras.Input(shape=shape, name="input")
    return keras.Model(inputs, base(inputs), name=f"{base.name}_fixed")
