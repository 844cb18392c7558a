"""The study file's schema: one pydantic model per section, the single list of accepted keys.

Each field is declared once, with its type, default, range and description; from these come
the validation (unknown keys refused, with "did you mean"), the defaults, the JSON Schema
(``thaw schema``) and the check that the README documents only accepted keys. Checks that need
more than one value or the file system (paths exist, low <= high, resolving ``all``) happen when
:func:`thaw.search._config.parse_study` builds the typed dataclasses from the validated model.

Adding a key: add a field to the section's model here; a ``train`` field that names a
:class:`~thaw.objectives.TrainSettings` field is passed on to it automatically.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from thaw.objectives._specs import APPLICATION_NAMES, BATCHNORM_MODES


class StudyFileError(ValueError):
    """A study file is invalid. The message is one line: what is wrong and how to fix it."""


@dataclass(frozen=True)
class Expect:
    """Field metadata: any wrong value of this field is reported as ``<key> must be <what>``."""

    what: str


def unknown_key_message(where: str, key: str, allowed: Sequence[str]) -> str:
    """``unknown key 'train.epoch'; expected one of: ...; did you mean 'epochs'?``"""
    name = f"{where}.{key}" if where else key
    message = f"unknown key {name!r}; expected one of: {', '.join(allowed)}"
    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    return message + (f"; did you mean {close[0]!r}?" if close else "")


class _Section(BaseModel):
    """A mapping of the study file: strict types, unknown keys refused; ``key:`` alone is {}."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_is_default(cls, data: Any) -> Any:
        return {} if data is None else data


#: ``[low, high]`` or ``{low: .., high: .., log: ..}`` (validated when the config is built).
Bounds = Annotated[
    Any,
    Field(
        description="[low, high] or {low: .., high: .., log: true|false}",
        json_schema_extra={
            "anyOf": [
                {"type": "array", "items": {"type": ["number", "string"]}, "minItems": 2},
                {
                    "type": "object",
                    "properties": {
                        "low": {"type": ["number", "string"]},
                        "high": {"type": ["number", "string"]},
                        "log": {"type": "boolean"},
                    },
                    "additionalProperties": False,
                },
            ]
        },
    ),
]

ModelKindName = Literal["demo", "file", "application", "kerashub", "glyphs"]
DataKindName = Literal["demo", "npz", "directory", "glyphs"]


def _check_callbacks(value: Any) -> Any:
    if value is None:
        return []
    if not isinstance(value, list) or not all(
        isinstance(v, str) and re.fullmatch(r"[A-Za-z_][\w.]*\.[A-Za-z_]\w*", v) for v in value
    ):
        raise StudyFileError(
            "train.callbacks must be a list of import paths such as "
            f"['mypkg.callbacks.MyCallback'], got {value!r}"
        )
    return value


class ModelSection(_Section):
    """``model``: the pretrained model."""

    source: ModelKindName = Field(
        "demo", description="demo | file | application | kerashub | glyphs"
    )
    path: str | None = Field(None, description="file: a .keras (or legacy .h5) model file")
    preset: str | None = Field(None, description="kerashub: a preset directory (or name)")
    name: Annotated[str | None, Expect("a keras.applications name")] = Field(
        None, description=f"application: one of {', '.join(APPLICATION_NAMES)}"
    )
    weights: Annotated[str | None, Expect("'imagenet', null or a weights file path")] = Field(
        "imagenet", description="application: imagenet | null | path/to/weights.h5"
    )
    input_shape: Annotated[list[int] | None, Expect("[height, width, channels]")] = Field(
        None, description="[height, width, channels]"
    )
    alpha: Annotated[float | None, Expect("a number such as 0.35")] = Field(
        None, description="MobileNet width multiplier"
    )
    cut_at: Annotated[str | None, Expect("a layer name")] = Field(
        None, description="layer whose output feeds the new head"
    )
    unfreeze_by: Literal["layers", "blocks"] | None = Field(
        None,
        description="layers | blocks: never split a residual block (default: blocks for "
        "kerashub, else layers)",
    )
    seed: int = Field(0, description="demo, glyphs: the seed of the pretrained model")
    safe_mode: bool = Field(True, description="false only for model files you trust")


class DataSection(_Section):
    """``data``: the target data."""

    source: DataKindName = Field("demo", description="demo | npz | directory | glyphs")
    path: str | None = Field(None, description="directory: one subfolder per class; npz: arrays")
    val_path: str | None = Field(None, description="directory: a validation folder")
    val_fraction: Annotated[float, Expect("a number between 0 and 1")] = Field(
        0.2, gt=0.0, lt=1.0, allow_inf_nan=False, description="seeded stratified split"
    )
    max_skipped_fraction: Annotated[float, Expect("a number in [0, 1]")] = Field(
        0.05, ge=0.0, le=1.0, allow_inf_nan=False, description="unreadable files allowed"
    )
    max_memory_mb: int = Field(
        2048, ge=1, description="above it, images are decoded batch by batch from files"
    )
    seed: int = Field(0, description="seed of the validation split")
    class_names: Annotated[list[str], Expect("a list of strings")] = Field(
        default_factory=list, description="names of the classes (npz); multilabel: of the labels"
    )
    task: Literal["auto", "multiclass", "multilabel"] = Field(
        "auto",
        description="multilabel: y rows of 0/1, one column per label (a sigmoid head, binary "
        "cross-entropy; npz or arrays only); auto: multilabel when y is 2-D 0/1 and not one-hot",
    )


class SpaceSection(_Section):
    """``search_space``: the searched ranges."""

    unfrozen_layers: Bounds = Field(
        {"low": 0, "high": "all"}, description="layers with weights, from the top ('all')"
    )
    learning_rate: Bounds = Field({"low": 1e-5, "high": 1e-2, "log": True})
    dropout: Bounds = Field({"low": 0.0, "high": 0.6, "log": False})
    weight_decay: Bounds = Field({"low": 1e-6, "high": 1e-1, "log": True})
    batchnorm: Annotated[list[str] | str, Expect(f"a list drawn from {list(BATCHNORM_MODES)}")] = (
        Field(
            list(BATCHNORM_MODES), description="frozen | adapt | train, searched when more than one"
        )
    )
    l2sp: Bounds | None = Field(
        None,
        description="L2-SP strength in (0, 1]: the base decays toward its pretrained weights "
        "instead of toward zero (not searched when absent)",
    )
    lr_decay: Bounds | None = Field(
        None,
        description="layer-wise learning-rate decay factor in [0.5, 1] per unfrozen layer or "
        "block below the top (not searched when absent)",
    )
    augment: Bounds | None = Field(
        None,
        description="augmentation strength in [0, 1]: flips, rotations, zooms, contrast "
        "(not searched when absent)",
    )
    block_start: Bounds | None = Field(
        None,
        description="surgical fine-tuning: the lowest unfrozen layer (or block), counted from "
        "the bottom (0) up to 'all'; the unfrozen layers are then a block starting there, not "
        "the top ones (not searched when absent)",
    )
    lora_rank: Any = Field(
        None,
        description="LoRA ranks to choose from, e.g. [0, 4, 8, 16] (0: off): the unfrozen Dense, "
        "EinsumDense and Conv layers train a low-rank update instead of their kernels "
        "(not searched when absent)",
        json_schema_extra={
            "anyOf": [
                {"type": "integer"},
                {"type": "array", "items": {"type": "integer"}, "minItems": 1},
            ]
        },
    )


def _switch(key: str, on: str | None) -> Any:
    """A key of a few words, one of them "off": YAML's false (an unquoted off/no) reads as "off",
    YAML's true (an unquoted on/yes) as ``on``, or is refused where the key has no "on"."""

    def check(value: Any) -> Any:
        if value is False:
            return "off"
        if isinstance(value, str):
            value = value.strip().lower()
        if value is True or value == "on":
            if on is None:
                raise StudyFileError(
                    f"{key} is on; expected one of: auto, off (auto caches wherever it can; "
                    "caching cannot be forced)"
                )
            return on
        return value

    return check


def _switch_schema(*words: str) -> dict[str, Any]:
    """The JSON Schema of a :func:`_switch` key: its words, or a boolean YAML reads them as."""
    boolean: dict[str, Any] = {"type": "boolean"} if "on" in words else {"const": False}
    return {"anyOf": [{"enum": list(words)}, boolean]}


def _check_class_weight(value: Any) -> Any:
    """``balanced``, or a mapping of class names (or indices) to positive weights."""
    if value is None or value == "balanced":
        return value
    if isinstance(value, dict) and value:
        for key, weight in value.items():
            if isinstance(key, bool) or not isinstance(key, (str, int)):
                break
            if (
                isinstance(weight, bool)
                or not isinstance(weight, (int, float))
                or not weight > 0
                or weight == float("inf")
            ):
                raise StudyFileError(
                    f"train.class_weight: the weight of class {key!r} must be a number > 0, "
                    f"got {weight!r}"
                )
        else:
            return {k: float(w) for k, w in value.items()}
    raise StudyFileError(
        "train.class_weight must be balanced or a mapping {class name or index: weight}, got "
        f"{value!r}"
    )


class TrainSection(_Section):
    """``train``: how each trial trains."""

    epochs: int = Field(15, ge=1, description="total epochs per trial")
    batch_size: int = Field(16, ge=1)
    warmup_epochs: int = Field(0, ge=0, description="head-only epochs before unfreezing")
    mixed_precision: Annotated[
        Literal["auto", "on", "off"],
        BeforeValidator(_switch("train.mixed_precision", on="on")),
        WithJsonSchema(_switch_schema("auto", "on", "off")),
    ] = Field("auto", description="auto (on with a GPU) | on | off")
    jit_compile: bool = Field(False, description="compile the train step with XLA")
    precise_batchnorm: bool = Field(
        False,
        description="re-estimate the statistics of BatchNorm layers that train before each "
        "validation (precise BatchNorm), so the validation loss does not trail the weights",
    )
    schedule: Literal["constant", "linear", "cosine"] = Field(
        "constant",
        description="the learning rate over each trial: constant | linear (falls linearly to "
        "zero over the trial's epochs) | cosine (a half cosine to zero)",
    )
    cache_frozen: Annotated[
        Literal["auto", "off"],
        BeforeValidator(_switch("train.cache_frozen", on=None)),
        WithJsonSchema(_switch_schema("auto", "off")),
    ] = Field(
        "auto",
        description="auto | off: train on cached frozen-prefix activations wherever the data is "
        "in memory and the BatchNorm mode allows it (auto); there is no 'on', as caching cannot "
        "be forced",
    )
    probe_images: int = Field(
        64, ge=0, description="images per split the end-of-trial probes see (0: none)"
    )
    class_weight: Annotated[
        Literal["balanced"] | dict[str | int, float] | None,
        BeforeValidator(_check_class_weight),
        WithJsonSchema(
            {
                "anyOf": [
                    {"const": "balanced"},
                    {"type": "object", "additionalProperties": {"type": "number"}},
                    {"type": "null"},
                ]
            }
        ),
    ] = Field(
        None,
        description="balanced (n / (classes * count) per class) or {class name or index: "
        "weight}; the training loss only, the validation loss stays unweighted",
    )
    tensorboard: bool = Field(False, description="one TensorBoard run per trial")
    csv_log: bool = Field(False, description="one CSV file of epoch metrics per trial")
    callbacks: Annotated[list[str], BeforeValidator(_check_callbacks)] = Field(
        default_factory=list, description="Keras callbacks by import path"
    )


class SamplerSection(_Section):
    name: Literal["tpe", "random"] = "tpe"
    # Informed-start trials count: with them, TPE needs few random trials before it models.
    n_startup_trials: int = Field(5, ge=0)


class PrunerSection(_Section):
    compare: Literal["median", "hyperband", "successive_halving", "none"] = "hyperband"
    patience: int = Field(3, ge=1)
    min_delta: float = Field(0.03, ge=0.0, allow_inf_nan=False)
    n_startup_trials: int = Field(8, ge=0)
    n_warmup_steps: int = Field(2, ge=0, description="first rung; no climbing decision before")
    reduction_factor: int = Field(3, ge=2, description="hyperband / successive halving")


def _check_budget_epochs(value: Any) -> Any:
    from thaw.search._config import parse_budget_epochs

    return parse_budget_epochs(value)


def _check_storage(value: Any) -> Any:
    if value is not None and (not isinstance(value, str) or "://" not in value):
        raise StudyFileError(
            f"storage must be a database URL such as 'sqlite:///demo.db' or "
            f"'postgresql://user@host/db', got {value!r}"
        )
    return value


#: A switch in the JSON Schema: true/false, or "on"/"off" (an editor reading YAML 1.2 sees an
#: unquoted on/off as a string).
_ON_OFF_SCHEMA: dict[str, Any] = {"anyOf": [{"type": "boolean"}, {"enum": ["on", "off"]}]}


def _on_off(key: str) -> Any:
    """A switch: YAML's true/false (which is what an unquoted on/off/yes/no reads as) or the
    strings "on"/"off"."""

    def check(value: Any) -> Any:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("on", "off"):
            return value.strip().lower() == "on"
        raise StudyFileError(f"{key} must be on or off, got {value!r}")

    return check


class StudyFile(_Section):
    """A thaw study file (YAML)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, title="thaw study file")

    name: str | None = Field(None, min_length=1, description="default: the file name")
    seed: int = Field(0, ge=0, description="trial t trains with seed (seed*100003 + t)")
    n_trials: int = Field(20, ge=1, description="finished trials the study should hold")
    objective: Literal["val_loss", "val_accuracy", "val_auc", "val_f1"] = Field(
        "val_loss",
        description="val_loss (minimised), or val_accuracy, val_auc, val_f1 (maximised; the "
        "metric is logged whether or not metrics lists it)",
    )
    metrics: Annotated[list[Literal["auc", "f1"]], Expect("a list drawn from ['auc', 'f1']")] = (
        Field(
            default_factory=list,
            description="extra metrics logged per epoch and reported: auc (ROC, micro), f1 (macro)",
        )
    )
    storage: Annotated[str | None, BeforeValidator(_check_storage)] = Field(
        None, description="database URL; default sqlite:///<study folder>/<name>.db"
    )
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    search_space: SpaceSection = Field(default_factory=SpaceSection)
    train: TrainSection = Field(default_factory=TrainSection)
    sampler: SamplerSection = Field(default_factory=SamplerSection)
    pruner: PrunerSection = Field(default_factory=PrunerSection)
    reference_trials: bool = Field(
        True, description="informed start: textbook strategies and BatchNorm variants first"
    )
    loop: Annotated[bool, BeforeValidator(_on_off("loop")), WithJsonSchema(_ON_OFF_SCHEMA)] = Field(
        True,
        description="closed loop: each finished trial's diagnosis proposes the next trials "
        "(on | off)",
    )
    lr_range_test: Annotated[
        bool, BeforeValidator(_on_off("lr_range_test")), WithJsonSchema(_ON_OFF_SCHEMA)
    ] = Field(
        True,
        description="a learning-rate range test per BatchNorm mode before the informed start, "
        "counted in the epoch budget (on | off)",
    )
    rate_guard: Annotated[
        bool, BeforeValidator(_on_off("rate_guard")), WithJsonSchema(_ON_OFF_SCHEMA)
    ] = Field(
        False,
        description="the informed start's screen also keeps the best configuration that trains "
        "layers at 3x the survivors' learning rate or more, and trains it at full length beside "
        "the survivor until it falls behind (on | off)",
    )
    budget_epochs: Annotated[int | None, BeforeValidator(_check_budget_epochs)] = Field(
        None, description="stop once this many training epochs (all trials) are spent"
    )
    diagnosis: dict[str, Any] = Field(
        default_factory=dict, description="verdict thresholds (see thaw.reports.Thresholds)"
    )
    keep_best: bool = Field(True, description="keep the top 3 trials' best-epoch models")
    artifacts: Annotated[str, StringConstraints(min_length=1)] | None = Field(
        None,
        description="folder every worker can write, for the dashboard artifacts and the kept "
        "models (relative to the study file); default: beside the SQLite file, else the study "
        "file",
    )

    @field_validator("diagnosis", mode="before")
    @classmethod
    def _diagnosis_mapping(cls, value: Any) -> Any:
        return {} if value is None else value


def study_file_schema() -> dict[str, Any]:
    """The JSON Schema of a study file (for editor completion: ``thaw schema``)."""
    schema = StudyFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


# ------------------------------------------------------------------------- one-line errors


def validate_study_file(raw: Any) -> StudyFile:
    """Validate a loaded study file; raise :class:`StudyFileError` with one line."""
    if not isinstance(raw, dict):
        raise StudyFileError(
            f"the study file must be a mapping of keys, got {type(raw).__name__} {raw!r}"
        )
    try:
        return StudyFile.model_validate(raw)
    except ValidationError as exc:
        raise StudyFileError(_one_line(exc, raw)) from None


def _one_line(exc: ValidationError, raw: Any) -> str:
    errors = exc.errors(include_url=False)
    unknown = sorted(
        (e for e in errors if e["type"] == "extra_forbidden"),
        key=lambda e: (len(e["loc"]), [str(p) for p in e["loc"]]),
    )
    error = unknown[0] if unknown else errors[0]
    return _message(error, raw)


def _walk(loc: Sequence[Any]) -> tuple[list[str], Any, Any]:
    """Follow ``loc`` through the models: the dotted key path, the field's info, its model."""
    model: Any = StudyFile
    path: list[str] = []
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            break
        if not isinstance(part, str) or part not in model.model_fields:
            return path + ([str(part)] if isinstance(part, str) else []), None, model
        info = model.model_fields[part]
        path.append(part)
        expect = next((m for m in info.metadata if isinstance(m, Expect)), None)
        if expect is not None:
            return path, info, expect
        annotation = info.annotation
        model = annotation if isinstance(annotation, type) else None
    return path, None, model


def _value_at(raw: Any, path: Sequence[str]) -> Any:
    for key in path:
        raw = raw.get(key) if isinstance(raw, dict) else None
    return raw


def _message(error: Any, raw: Any) -> str:
    kind, loc, value = error["type"], tuple(error["loc"]), error.get("input")
    ctx = error.get("ctx") or {}
    path, _, found = _walk(loc)
    where = ".".join(path)
    if kind == "extra_forbidden":
        parent = path[:-1]
        _, _, model = _walk(tuple(parent))
        allowed = list(model.model_fields) if model is not None else []
        return unknown_key_message(".".join(parent), path[-1], allowed)
    if kind == "value_error" and isinstance(ctx.get("error"), StudyFileError):
        return str(ctx["error"])
    if isinstance(found, Expect):
        return f"{where} must be {found.what}, got {_value_at(raw, path)!r}"
    if kind in ("model_type", "dict_type"):
        return f"{where} must be a mapping of keys, got {type(value).__name__} {value!r}"
    if kind == "int_type" or kind == "int_parsing":
        return f"{where} must be an integer, got {value!r}"
    if kind in ("float_type", "float_parsing"):
        return f"{where} must be a number, got {value!r}"
    if kind == "finite_number":
        return f"{where} must be finite, got {value!r}"
    if kind == "bool_type":
        return f"{where} must be true or false, got {value!r}"
    if kind in ("string_type", "string_too_short"):
        return f"{where} must be a non-empty string, got {value!r}"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"{where} is {value!r}; expected one of: {', '.join(choices)}"
    bounds = {
        "greater_than_equal": ">=",
        "greater_than": ">",
        "less_than_equal": "<=",
        "less_than": "<",
    }
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"{where} must be {bounds[kind]} {limit}, got {value}"
    if kind == "value_error":
        return f"{where}: {ctx.get('error', error['msg'])}"
    return f"{where}: {error['msg']}, got {value!r}"
