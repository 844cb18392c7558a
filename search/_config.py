"""Study files: parsed once, at the edge, into typed dataclasses.

Every error names the key, the value received and the fix, in one line.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from thaw.objectives import (
    APPLICATION_NAMES,
    BATCHNORM_MODES,
    MAX_LORA_RANK,
    OBJECTIVE_METRICS,
    DataSource,
    FloatRange,
    IntRange,
    ModelSource,
    SearchSpace,
    TrainSettings,
)
from thaw.reports._format import mask_url
from thaw.search._schema import (
    DataSection,
    ModelSection,
    PrunerSection,
    SamplerSection,
    SpaceSection,
    StudyFileError,
    unknown_key_message,
    validate_study_file,
)

ALL = "all"


def _default(section: type[BaseModel], key: str) -> Any:
    """The schema's default of ``key``: each default is written once, in the schema."""
    return section.model_fields[key].default


@dataclass(frozen=True)
class SamplerConfig:
    name: str = _default(SamplerSection, "name")
    n_startup_trials: int = _default(SamplerSection, "n_startup_trials")


@dataclass(frozen=True)
class PrunerConfig:
    """``compare`` is the comparative pruner wrapped by the climbing pruner."""

    compare: str = _default(PrunerSection, "compare")
    patience: int = _default(PrunerSection, "patience")
    min_delta: float = _default(PrunerSection, "min_delta")
    n_startup_trials: int = _default(PrunerSection, "n_startup_trials")
    n_warmup_steps: int = _default(PrunerSection, "n_warmup_steps")
    reduction_factor: int = _default(PrunerSection, "reduction_factor")


@dataclass(frozen=True)
class SpaceConfig:
    """Search-space bounds as written; ``unfrozen_high`` may be ``"all"``."""

    unfrozen_low: int
    unfrozen_high: int | str
    learning_rate: FloatRange
    dropout: FloatRange
    weight_decay: FloatRange
    batchnorm: tuple[str, ...] = BATCHNORM_MODES
    #: Optional methods (None: not searched): L2-SP strength, layer-wise rate decay factor,
    #: augmentation strength.
    l2sp: FloatRange | None = None
    lr_decay: FloatRange | None = None
    augment: FloatRange | None = None
    #: Surgical fine-tuning: (low, high) of the unfrozen block's lowest layer counted from the
    #: bottom, ``high`` may be ``"all"`` (None: the unfrozen layers are the top ones).
    block_start: tuple[int, int | str] | None = None
    #: LoRA ranks to choose from (0: off; None: not searched).
    lora_rank: tuple[int, ...] | None = None

    def resolve(self, num_layers: int, unit: str = "layers") -> SearchSpace:
        """The search space for a base with ``num_layers`` weighted layers (or blocks)."""
        high = num_layers if self.unfrozen_high == ALL else int(self.unfrozen_high)
        if high > num_layers:
            raise StudyFileError(
                f"search_space.unfrozen_layers: high={high} but the model has only {num_layers} "
                f"{unit} with weights (BatchNorm excluded); use at most {num_layers} or 'all'"
            )
        if self.unfrozen_low > high:
            raise StudyFileError(
                f"search_space.unfrozen_layers: low={self.unfrozen_low} > high={high}"
            )
        block = None
        if self.block_start is not None:
            block_low, block_high = self.block_start
            top = num_layers if block_high == ALL else int(block_high)
            if top > num_layers or block_low > top:
                raise StudyFileError(
                    f"search_space.block_start: [{block_low}, {block_high}] is beyond the "
                    f"model's depth: it has {num_layers} {unit} with weights (BatchNorm "
                    f"excluded), counted from 0 at the bottom; use a range inside 0..{num_layers} "
                    "or high: all"
                )
            block = IntRange(int(block_low), top)
        return SearchSpace(
            unfrozen_layers=IntRange(self.unfrozen_low, high),
            learning_rate=self.learning_rate,
            dropout=self.dropout,
            weight_decay=self.weight_decay,
            batchnorm=self.batchnorm,
            l2sp=self.l2sp,
            lr_decay=self.lr_decay,
            augment=self.augment,
            block_start=block,
            lora_rank=self.lora_rank,
        )


@dataclass(frozen=True)
class StudyConfig:
    name: str
    path: Path
    seed: int
    n_trials: int
    model: ModelSource
    data: DataSource
    space: SpaceConfig
    train: TrainSettings
    sampler: SamplerConfig
    pruner: PrunerConfig
    storage: str
    reference_trials: bool = True
    budget_epochs: int | None = None
    #: The closed loop: each finished trial's diagnosis proposes the next trials (``loop``).
    loop: bool = True
    #: A learning-rate range test per BatchNorm mode before the informed start.
    lr_range_test: bool = True
    #: The screen's rate guard (``rate_guard``): a faster-rate configuration goes on beside the
    #: screen's survivors (``search._budget.rate_guard``).
    rate_guard: bool = False
    thresholds: Any = None  # reports.Thresholds: verdict thresholds of the diagnosis
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    #: Keep the top 3 trials' best-epoch models as .keras files beside the storage.
    keep_best: bool = True
    #: One TensorBoard run per trial under the study folder (``train.tensorboard``).
    tensorboard: bool = False
    #: Extra Keras callbacks by import path (``train.callbacks``).
    callbacks: tuple[str, ...] = ()
    #: One CSV file of epoch metrics per trial under the study folder (``train.csv_log``).
    csv_log: bool = False
    #: False for ``thaw.run(model=...)`` without a study file (``path`` is then the working
    #: folder joined with the study name, which relative paths resolve against).
    from_file: bool = True

    @property
    def where(self) -> str:
        """How error lines name the study: its file, or its name."""
        return str(self.path) if self.from_file else f"study {self.name!r}"

    #: The folder every worker writes the dashboard artifacts (``artifacts/``) and the kept
    #: models (``models/<study>``) to (``artifacts``); None: beside the SQLite file, else the
    #: study file.
    artifacts: Path | None = None

    @property
    def direction(self) -> str:
        return OBJECTIVE_METRICS[self.train.metric]

    def search_relevant(self) -> dict[str, Any]:
        """What must not change when a study is resumed: model, data, space, training."""

        def plain(obj: Any) -> Any:
            return json.loads(json.dumps(asdict(obj), default=str, sort_keys=True))

        space = plain(self.space)
        for method in (*OPTIONAL_METHODS, "block_start", "lora_rank"):  # off: older files hash so
            if space.get(method) is None:
                space.pop(method, None)
        train = plain(self.train)
        if train.get("precise_batchnorm") is False:  # the hash of a file written before it
            train.pop("precise_batchnorm")
        if train.get("schedule") == "constant":  # the hash of a file written before it
            train.pop("schedule")
        data = plain(self.data)
        if data.get("task") == "auto":  # the hash of a study file written before data.task
            data.pop("task")
        return {
            "model": plain(self.model),
            "data": data,
            "search_space": space,
            "train": train,
        }

    def identity(self) -> dict[str, Any]:
        """:meth:`search_relevant` without where the files sit: the model file's and the data's
        paths are left out (their content fingerprints, stored on the study, stand for them),
        so a study folder copied or moved, or joined from another machine, is the same study."""
        return without_paths(self.search_relevant())

    def config_hash(self) -> str:
        """The hash of :meth:`identity` (no paths)."""
        blob = json.dumps(self.identity(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    def legacy_config_hash(self) -> str:
        """The hash thaw 0.2.0 and earlier stored: :meth:`search_relevant`, absolute paths
        included. A study stored with it resumes; its hash is then replaced by
        :meth:`config_hash`."""
        blob = json.dumps(self.search_relevant(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form stored on the study (storage password masked)."""
        return {
            "name": self.name,
            "seed": self.seed,
            "n_trials": self.n_trials,
            **self.search_relevant(),
            "sampler": asdict(self.sampler),
            "pruner": asdict(self.pruner),
            "storage": mask_url(self.storage),
            "reference_trials": self.reference_trials,
            "loop": self.loop,
            "lr_range_test": self.lr_range_test,
            "rate_guard": self.rate_guard,
            "budget_epochs": self.budget_epochs,
            "diagnosis": dict(self.raw.get("diagnosis") or {}),
        }


#: Settings that say where a file sits: not part of a study's identity.
PATH_KEYS: dict[str, tuple[str, ...]] = {"model": ("path",), "data": ("path", "val_path")}
#: Settings that are a local file or folder when they name an absolute path (else a name).
LOCAL_FILE_KEYS: dict[str, tuple[str, ...]] = {"model": ("name", "weights")}
LOCAL_FILE = "<local file>"


def without_paths(relevant: Mapping[str, Any]) -> dict[str, Any]:
    """``relevant`` (:meth:`StudyConfig.search_relevant`, or the stored copy of it) with the
    paths of files replaced by None, and local files named in ``model.name`` or
    ``model.weights`` by ``"<local file>"``."""
    out = json.loads(json.dumps(dict(relevant), default=str))
    for section, keys in PATH_KEYS.items():
        block = out.get(section)
        if isinstance(block, dict):
            for key in keys:
                if key in block:
                    block[key] = None
    for section, keys in LOCAL_FILE_KEYS.items():
        block = out.get(section)
        if isinstance(block, dict):
            for key in keys:
                value = block.get(key)
                if isinstance(value, str) and Path(value).is_absolute():
                    block[key] = LOCAL_FILE
    return out


# --------------------------------------------------------------------------- parsing helpers
# The schema (:mod:`thaw.search._schema`) has checked every key's type, range and default; what
# follows checks what needs several values or the file system.


def _bounds(where: str, value: Any) -> tuple[Any, Any, bool | None]:
    """``[low, high]`` or ``{low: .., high: .., log: ..}``."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise StudyFileError(f"{where} must be [low, high], got {value!r}")
        return value[0], value[1], None
    if not isinstance(value, Mapping):
        raise StudyFileError(
            f"{where} must be a mapping of keys, got {type(value).__name__} {value!r}"
        )
    unknown = sorted(set(map(str, value)) - {"low", "high", "log"})
    if unknown:
        raise StudyFileError(unknown_key_message(where, unknown[0], ("low", "high", "log")))
    if "low" not in value or "high" not in value:
        raise StudyFileError(f"{where} needs both 'low' and 'high', got {dict(value)!r}")
    log = value.get("log")
    if log is not None and not isinstance(log, bool):
        raise StudyFileError(f"{where}.log must be true or false, got {log!r}")
    return value["low"], value["high"], log


def _float_range(where: str, value: Any, log_default: bool, minimum: float) -> FloatRange:
    low, high, log = _bounds(where, value)
    for label, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise StudyFileError(f"{where}.{label} must be a finite number, got {v!r}")
    if low > high:
        raise StudyFileError(f"{where}: low={low} > high={high}; swap them")
    if low < minimum:
        raise StudyFileError(f"{where}: low={low} is below {minimum}")
    use_log = log_default if log is None else log
    if use_log and low <= 0:
        raise StudyFileError(
            f"{where}: low={low} must be > 0 on a log scale; use a small positive value "
            "such as 1e-6, or set log: false"
        )
    return FloatRange(float(low), float(high), log=use_log)


#: The optional methods of ``search_space``: (range allowed, log scale by default).
OPTIONAL_METHODS: dict[str, tuple[tuple[float, float], bool]] = {
    "l2sp": ((0.0, 1.0), True),
    "lr_decay": ((0.5, 1.0), False),
    "augment": ((0.0, 1.0), False),
}


def _method_range(where: str, value: Any, name: str) -> FloatRange | None:
    """The range of an optional method, inside what it allows; None when absent."""
    if value is None:
        return None
    (least, most), log = OPTIONAL_METHODS[name]
    bounds = _float_range(f"{where}.{name}", value, log, least)
    if bounds.high > most:
        raise StudyFileError(
            f"{where}.{name}: high={bounds.high} is above {most}; use a range inside "
            f"[{least}, {most}]"
        )
    if name == "l2sp" and bounds.low <= 0:
        raise StudyFileError(
            f"{where}.l2sp: low={bounds.low} must be > 0 (remove l2sp to turn it off); "
            "use a small positive strength such as 1e-4"
        )
    return bounds


def _lora_ranks(where: str, value: Any) -> tuple[int, ...] | None:
    """``search_space.lora_rank``: a rank or a list of ranks in ``0..MAX_LORA_RANK`` (sorted,
    each once); None when absent."""
    if value is None:
        return None
    ranks = value if isinstance(value, list) else [value]
    if not ranks:
        raise StudyFileError(
            f"{where}.lora_rank is an empty list; give the ranks to choose from, e.g. "
            "[0, 4, 8, 16] (0: off), or remove it"
        )
    for rank in ranks:
        if isinstance(rank, bool) or not isinstance(rank, int):
            raise StudyFileError(
                f"{where}.lora_rank: {rank!r} is not a whole number; use ranks from 0 (off) to "
                f"{MAX_LORA_RANK}, e.g. [0, 4, 8, 16]"
            )
        if not 0 <= rank <= MAX_LORA_RANK:
            raise StudyFileError(
                f"{where}.lora_rank: {rank} is outside 0..{MAX_LORA_RANK}; use ranks from 0 (off) "
                f"to {MAX_LORA_RANK}, e.g. [0, 4, 8, 16]"
            )
    return tuple(sorted(set(ranks)))


def _given(section: BaseModel, key: str) -> Any:
    """``section.key``; a key written as null gets the schema's default."""
    value = getattr(section, key)
    return _default(type(section), key) if value is None else value


def _space(space: SpaceSection) -> SpaceConfig:
    where = "search_space"
    low, high, log = _bounds(f"{where}.unfrozen_layers", _given(space, "unfrozen_layers"))
    if log:
        raise StudyFileError(f"{where}.unfrozen_layers cannot be log-scaled; remove 'log'")
    if isinstance(low, bool) or not isinstance(low, int) or low < 0:
        raise StudyFileError(f"{where}.unfrozen_layers.low must be an integer >= 0, got {low!r}")
    if high != ALL and (isinstance(high, bool) or not isinstance(high, int)):
        raise StudyFileError(
            f"{where}.unfrozen_layers.high must be an integer or 'all', got {high!r}"
        )
    if isinstance(high, int) and low > high:
        raise StudyFileError(f"{where}.unfrozen_layers: low={low} > high={high}; swap them")
    dropout = _float_range(f"{where}.dropout", _given(space, "dropout"), False, 0.0)
    if dropout.high >= 1.0:
        raise StudyFileError(f"{where}.dropout: high={dropout.high} must be < 1")
    batchnorm = _given(space, "batchnorm")
    batchnorm = [batchnorm] if isinstance(batchnorm, str) else batchnorm
    if not batchnorm or any(b not in BATCHNORM_MODES for b in batchnorm):
        raise StudyFileError(
            f"{where}.batchnorm must be a list drawn from {list(BATCHNORM_MODES)}, got "
            f"{batchnorm!r}"
        )
    return SpaceConfig(
        unfrozen_low=int(low),
        unfrozen_high=high if high == ALL else int(high),
        learning_rate=_float_range(
            f"{where}.learning_rate", _given(space, "learning_rate"), True, 0.0
        ),
        dropout=dropout,
        weight_decay=_float_range(
            f"{where}.weight_decay", _given(space, "weight_decay"), True, 0.0
        ),
        batchnorm=tuple(dict.fromkeys(batchnorm)),
        **{name: _method_range(where, getattr(space, name), name) for name in OPTIONAL_METHODS},
        block_start=_block_start(where, space.block_start),
        lora_rank=_lora_ranks(where, space.lora_rank),
    )


def _block_start(where: str, value: Any) -> tuple[int, int | str] | None:
    """``search_space.block_start``: integer bounds >= 0 (``high`` may be ``all``); None when
    absent. The model's depth is checked once it is loaded (``SpaceConfig.resolve``)."""
    if value is None:
        return None
    low, high, log = _bounds(f"{where}.block_start", value)
    if log:
        raise StudyFileError(f"{where}.block_start cannot be log-scaled; remove 'log'")
    for label, v in (("low", low), ("high", high)):
        if label == "high" and v == ALL:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise StudyFileError(
                f"{where}.block_start.{label} must be an integer >= 0 (0 is the bottom layer)"
                + (" or 'all'" if label == "high" else "")
                + f", got {v!r}"
            )
    if isinstance(high, int) and low > high:
        raise StudyFileError(f"{where}.block_start: low={low} > high={high}; swap them")
    return int(low), high if high == ALL else int(high)


def _resolve_path(base_dir: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base_dir / p).resolve()


def _model(model: ModelSection, base_dir: Path) -> ModelSource:
    kind = model.source
    path = None
    if kind == "file":
        if not model.path:
            raise StudyFileError(
                "model.path is required when model.source is 'file' (a .keras or .h5 file)"
            )
        path = _resolve_path(base_dir, model.path)
        if not path.exists():
            raise StudyFileError(f"model.path {str(path)!r} does not exist; check the path")
    elif model.path is not None:
        raise StudyFileError("model.path is only used with model.source: file; remove it")
    name = model.name
    if kind == "application":
        if name not in APPLICATION_NAMES:
            raise StudyFileError(
                f"model.name is {name!r}; expected a keras.applications network: "
                f"{', '.join(APPLICATION_NAMES)}"
            )
    elif name is not None:
        raise StudyFileError("model.name is only used with model.source: application; remove it")
    preset = model.preset
    if kind == "kerashub":
        if not preset:
            raise StudyFileError(
                "model.preset is required when model.source is 'kerashub' (a folder saved with "
                "save_to_preset, or a preset name)"
            )
        local = _resolve_path(base_dir, preset)
        # A local folder is stored resolved; anything else is a preset name (needs a download).
        name = str(local) if local.exists() or "/" in preset or preset.startswith(".") else preset
    elif preset is not None:
        raise StudyFileError("model.preset is only used with model.source: kerashub; remove it")
    weights = model.weights
    if weights is not None and weights != "imagenet":
        resolved = _resolve_path(base_dir, weights)
        if not resolved.exists():
            raise StudyFileError(f"model.weights file {str(resolved)!r} does not exist")
        weights = str(resolved)
    input_shape = None
    if model.input_shape is not None:
        if len(model.input_shape) != 3 or not all(d > 0 for d in model.input_shape):
            raise StudyFileError(
                f"model.input_shape must be [height, width, channels], got {model.input_shape!r}"
            )
        height, width, channels = model.input_shape
        input_shape = (height, width, channels)
    return ModelSource(
        kind=kind,
        path=path,
        cut_at=model.cut_at,
        seed=model.seed,
        safe_mode=model.safe_mode,
        name=name,
        weights=weights,
        input_shape=input_shape,
        alpha=None if model.alpha is None else float(model.alpha),
        unfreeze_by=model.unfreeze_by or ("blocks" if kind == "kerashub" else "layers"),
    )


def _data(data: DataSection, base_dir: Path) -> DataSource:
    kind = data.source
    path = None
    if kind in ("npz", "directory"):
        if not data.path:
            raise StudyFileError(
                f"data.path is required when data.source is {kind!r}"
                + (" (a folder with one subfolder per class)" if kind == "directory" else "")
            )
        resolved = _resolve_path(base_dir, data.path)
        if not resolved.exists():
            raise StudyFileError(f"data.path {str(resolved)!r} does not exist; check the path")
        path = str(resolved)
    elif data.path is not None:
        raise StudyFileError(f"data.path is not used with data.source: {kind}; remove it")
    if data.task == "multilabel" and kind != "npz":
        from thaw.objectives._data import MULTILABEL_FOLDER

        raise StudyFileError(
            MULTILABEL_FOLDER
            if kind == "directory"
            else f"data.task: multilabel needs npz arrays; data.source: {kind} is single-label"
        )
    val_path = data.val_path
    if val_path is not None:
        if kind != "directory":
            raise StudyFileError(
                "data.val_path (a folder) is only used with data.source: directory"
            )
        resolved = _resolve_path(base_dir, val_path)
        if not resolved.exists():
            raise StudyFileError(f"data.val_path {str(resolved)!r} does not exist")
        val_path = str(resolved)
    return DataSource(
        kind=kind,
        path=path,
        seed=data.seed,
        class_names=tuple(data.class_names),
        val_path=val_path,
        val_fraction=data.val_fraction,
        max_skipped_fraction=data.max_skipped_fraction,
        max_memory_mb=data.max_memory_mb,
        task=data.task,
    )


def _storage(value: str | None, base_dir: Path, name: str) -> str:
    """The study's storage URL (the schema checked it is one), a relative SQLite path taken
    relative to the study file; default ``sqlite:///<study folder>/<name>.db``."""
    if value is None:
        return f"sqlite:///{(base_dir / f'{name}.db').resolve()}"
    return resolve_storage_url(value, base_dir)


def resolve_storage_url(url: str, base_dir: Path) -> str:
    """Make a relative SQLite (or journal file) path relative to the study file's folder."""
    for prefix in ("sqlite:///", "journal:///"):
        if (
            url.startswith(prefix)
            and not url.startswith(prefix + "/")
            and url != prefix + ":memory:"
        ):
            return prefix + str((base_dir / url[len(prefix) :]).resolve())
    return url


def parse_study(raw: Any, path: Path) -> StudyConfig:
    """Validate a loaded study file; raise :class:`StudyFileError` with one line on a problem.

    Keys, types, ranges and defaults come from the schema (:mod:`thaw.search._schema`); the
    checks that need several values or the file system are made here.
    """
    study = validate_study_file(raw)
    base_dir = path.parent.resolve()
    name = study.name or path.stem
    train = study.train
    if train.warmup_epochs >= train.epochs:
        raise StudyFileError(
            f"train.warmup_epochs={train.warmup_epochs} must be below train.epochs="
            f"{train.epochs} (epochs is the total, warm-up included)"
        )
    try:
        from thaw.reports import Thresholds

        thresholds = Thresholds.from_dict(study.diagnosis)
    except ValueError as exc:
        raise StudyFileError(f"diagnosis: {exc}") from None
    settings = {f.name for f in fields(TrainSettings)}
    train_values = {k: v for k, v in train.model_dump().items() if k in settings}
    if isinstance(train_values.get("class_weight"), Mapping):
        train_values["class_weight"] = tuple(train_values["class_weight"].items())
    if study.data.task == "multilabel" and train_values.get("class_weight") is not None:
        raise StudyFileError(
            "train.class_weight is not defined for a multi-label target (Keras weighs each image "
            "by one class); remove it"
        )

    return StudyConfig(
        name=name,
        path=path,
        seed=study.seed,
        n_trials=study.n_trials,
        model=_model(study.model, base_dir),
        data=_data(study.data, base_dir),
        space=_space(study.search_space),
        train=TrainSettings(
            metric=study.objective, metrics=tuple(dict.fromkeys(study.metrics)), **train_values
        ),
        sampler=SamplerConfig(**study.sampler.model_dump()),
        pruner=PrunerConfig(**study.pruner.model_dump()),
        storage=_storage(study.storage, base_dir, name),
        reference_trials=study.reference_trials,
        loop=study.loop,
        lr_range_test=study.lr_range_test,
        rate_guard=study.rate_guard,
        budget_epochs=study.budget_epochs,
        thresholds=thresholds,
        raw=dict(raw),
        keep_best=study.keep_best,
        tensorboard=train.tensorboard,
        callbacks=tuple(train.callbacks),
        csv_log=train.csv_log,
        artifacts=None if study.artifacts is None else _resolve_path(base_dir, study.artifacts),
    )


def __getattr__(name: str) -> Any:
    if name == "TOP_KEYS":  # the study file's top-level keys, from the schema
        from thaw.search._schema import StudyFile

        return tuple(StudyFile.model_fields)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def parse_budget_epochs(value: Any, where: str = "budget_epochs") -> int | None:
    """A budget of training epochs: a whole number >= 1, or None for no budget."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            raise StudyFileError(
                f"{where} must be a whole number of epochs >= 1, such as 200, got {text!r}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise StudyFileError(
            f"{where} must be a whole number of epochs >= 1, such as 200, got {value!r}"
        )
    if value < 1:
        raise StudyFileError(
            f"{where} must be >= 1 (training epochs for the whole study), got {value}"
        )
    return int(value)


class DuplicateKeyError(ValueError):
    """A YAML mapping gives the same key twice (YAML itself would keep the last silently)."""


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping, naming both lines."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: SafeLoader refuses it with its own message
            if first is not None:
                raise DuplicateKeyError(
                    f"key {key!r} is given twice (lines {first} and {line}); keep one"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_study_file(path: str | Path) -> StudyConfig:
    path = Path(path)
    if not path.exists():
        raise StudyFileError(f"study file {str(path)!r} does not exist")
    if path.is_dir():
        raise StudyFileError(
            f"{str(path)!r} is a folder; give a study file such as studies/demo.yaml"
        )
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader)  # noqa: S506
    except DuplicateKeyError as exc:
        raise StudyFileError(f"{path}: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StudyFileError(f"cannot read study file {str(path)!r}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise StudyFileError(
            f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}"
        ) from None
    if raw is None:
        raise StudyFileError(
            f"{path}: the study file is empty; write at least 'name:' and 'model:' (see "
            "studies/demo.yaml)"
        )
    if not isinstance(raw, Mapping):
        raise StudyFileError(
            f"{path}: the study file must be a mapping of keys (name: ..., model: ...), got "
            f"{type(raw).__name__} {str(raw)[:80]!r}"
        )
    try:
        return parse_study(raw, path)
    except StudyFileError as exc:
        raise StudyFileError(f"{path}: {exc}") from None
