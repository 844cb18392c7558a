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

from thaw.objectives import (
    BATCHNORM_MODES,
    OBJECTIVE_METRICS,
    DataSource,
    FloatRange,
    IntRange,
    ModelSource,
    SearchSpace,
    TrainSettings,
)
from thaw.reports._format import mask_url
from thaw.search._schema import StudyFileError, unknown_key_message, validate_study_file

SAMPLERS: tuple[str, ...] = ("tpe", "random")
COMPARATIVE_PRUNERS: tuple[str, ...] = ("median", "hyperband", "successive_halving", "none")
ALL = "all"


@dataclass(frozen=True)
class SamplerConfig:
    name: str = "tpe"
    n_startup_trials: int = 5


@dataclass(frozen=True)
class PrunerConfig:
    """``compare`` is the comparative pruner wrapped by the climbing pruner."""

    compare: str = "hyperband"
    patience: int = 3
    min_delta: float = 0.03
    n_startup_trials: int = 8
    n_warmup_steps: int = 2
    reduction_factor: int = 3


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
        return SearchSpace(
            unfrozen_layers=IntRange(self.unfrozen_low, high),
            learning_rate=self.learning_rate,
            dropout=self.dropout,
            weight_decay=self.weight_decay,
            batchnorm=self.batchnorm,
            l2sp=self.l2sp,
            lr_decay=self.lr_decay,
            augment=self.augment,
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

    @property
    def direction(self) -> str:
        return OBJECTIVE_METRICS[self.train.metric]

    def search_relevant(self) -> dict[str, Any]:
        """What must not change when a study is resumed: model, data, space, training."""

        def plain(obj: Any) -> Any:
            return json.loads(json.dumps(asdict(obj), default=str, sort_keys=True))

        space = plain(self.space)
        for method in OPTIONAL_METHODS:  # off: the hash of a study file written before them
            if space.get(method) is None:
                space.pop(method, None)
        return {
            "model": plain(self.model),
            "data": plain(self.data),
            "search_space": space,
            "train": plain(self.train),
        }

    def config_hash(self) -> str:
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
            "budget_epochs": self.budget_epochs,
            "diagnosis": dict(self.raw.get("diagnosis") or {}),
        }


# --------------------------------------------------------------------------- parsing helpers


class _Section:
    """A mapping being read; remembers its dotted name and refuses unknown keys."""

    def __init__(self, where: str, data: Any, allowed: tuple[str, ...]) -> None:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise StudyFileError(
                f"{where or 'the study file'} must be a mapping of keys, got "
                f"{type(data).__name__} {data!r}"
            )
        unknown = sorted(set(map(str, data)) - set(allowed))
        if unknown:
            raise StudyFileError(unknown_key_message(where, unknown[0], allowed))
        self.where = where
        self.data = data

    @staticmethod
    def key(where: str, name: str) -> str:
        return f"{where}.{name}" if where else name

    def name(self, key: str) -> str:
        return self.key(self.where, key)

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def get_int(self, key: str, default: int | None = None, minimum: int | None = None) -> int:
        value = self.data.get(key, default)
        if value is None:
            raise StudyFileError(f"{self.name(key)} is required (an integer)")
        if isinstance(value, bool) or not isinstance(value, int):
            raise StudyFileError(f"{self.name(key)} must be an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise StudyFileError(f"{self.name(key)} must be >= {minimum}, got {value}")
        return int(value)

    def get_float(
        self, key: str, default: float | None = None, minimum: float | None = None
    ) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise StudyFileError(f"{self.name(key)} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise StudyFileError(f"{self.name(key)} must be finite, got {value!r}")
        if minimum is not None and value < minimum:
            raise StudyFileError(f"{self.name(key)} must be >= {minimum}, got {value}")
        return float(value)

    def get_str(self, key: str, default: str | None = None, choices: tuple[str, ...] = ()) -> str:
        value = self.data.get(key, default)
        if not isinstance(value, str) or not value:
            raise StudyFileError(f"{self.name(key)} must be a non-empty string, got {value!r}")
        if choices and value not in choices:
            raise StudyFileError(
                f"{self.name(key)} is {value!r}; expected one of: {', '.join(choices)}"
            )
        return value

    def get_bool(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise StudyFileError(f"{self.name(key)} must be true or false, got {value!r}")
        return value


def _bounds(where: str, value: Any) -> tuple[Any, Any, bool | None]:
    """``[low, high]`` or ``{low: .., high: .., log: ..}``."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise StudyFileError(f"{where} must be [low, high], got {value!r}")
        return value[0], value[1], None
    section = _Section(where, value, ("low", "high", "log"))
    if "low" not in section.data or "high" not in section.data:
        raise StudyFileError(f"{where} needs both 'low' and 'high', got {dict(section.data)!r}")
    log = section.get("log")
    if log is not None and not isinstance(log, bool):
        raise StudyFileError(f"{where}.log must be true or false, got {log!r}")
    return section.get("low"), section.get("high"), log


def _float_range(
    where: str, value: Any, default: tuple[float, float], log_default: bool, minimum: float
) -> FloatRange:
    low, high, log = _bounds(where, value) if value is not None else (*default, None)
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
    bounds = _float_range(f"{where}.{name}", value, (least, most), log, least)
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


def _space(section: _Section) -> SpaceConfig:
    where = section.where
    raw_unfrozen = section.get("unfrozen_layers", [0, ALL])
    low, high, log = _bounds(f"{where}.unfrozen_layers", raw_unfrozen)
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
    dropout = _float_range(f"{where}.dropout", section.get("dropout"), (0.0, 0.6), False, 0.0)
    if dropout.high >= 1.0:
        raise StudyFileError(f"{where}.dropout: high={dropout.high} must be < 1")
    batchnorm = section.get("batchnorm", list(BATCHNORM_MODES))
    if isinstance(batchnorm, str):
        batchnorm = [batchnorm]
    if (
        not isinstance(batchnorm, list)
        or not batchnorm
        or any(b not in BATCHNORM_MODES for b in batchnorm)
    ):
        raise StudyFileError(
            f"{where}.batchnorm must be a list drawn from {list(BATCHNORM_MODES)}, got "
            f"{batchnorm!r}"
        )
    return SpaceConfig(
        unfrozen_low=int(low),
        unfrozen_high=high if high == ALL else int(high),
        learning_rate=_float_range(
            f"{where}.learning_rate", section.get("learning_rate"), (1e-5, 1e-2), True, 0.0
        ),
        dropout=dropout,
        weight_decay=_float_range(
            f"{where}.weight_decay", section.get("weight_decay"), (1e-6, 1e-1), True, 0.0
        ),
        batchnorm=tuple(dict.fromkeys(batchnorm)),
        **{name: _method_range(where, section.get(name), name) for name in OPTIONAL_METHODS},
    )


def _resolve_path(base_dir: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base_dir / p).resolve()


def _model(section: _Section, base_dir: Path, seed: int) -> ModelSource:
    kind = section.get_str(
        "source", "demo", choices=("demo", "file", "application", "glyphs", "kerashub")
    )
    path = None
    if kind == "file":
        raw_path = section.get("path")
        if not isinstance(raw_path, str) or not raw_path:
            raise StudyFileError(
                "model.path is required when model.source is 'file' (a .keras or .h5 file)"
            )
        path = _resolve_path(base_dir, raw_path)
        if not path.exists():
            raise StudyFileError(f"model.path {str(path)!r} does not exist; check the path")
    elif section.get("path") is not None:
        raise StudyFileError("model.path is only used with model.source: file; remove it")
    name = section.get("name")
    if kind == "application":
        from thaw.objectives._specs import APPLICATION_NAMES

        if name not in APPLICATION_NAMES:
            raise StudyFileError(
                f"model.name is {name!r}; expected a keras.applications network: "
                f"{', '.join(APPLICATION_NAMES)}"
            )
    elif name is not None:
        raise StudyFileError("model.name is only used with model.source: application; remove it")
    preset = section.get("preset")
    if kind == "kerashub":
        if not isinstance(preset, str) or not preset:
            raise StudyFileError(
                "model.preset is required when model.source is 'kerashub' (a folder saved with "
                "save_to_preset, or a preset name)"
            )
        local = _resolve_path(base_dir, preset)
        # A local folder is stored resolved; anything else is a preset name (needs a download).
        name = str(local) if local.exists() or "/" in preset or preset.startswith(".") else preset
    elif preset is not None:
        raise StudyFileError("model.preset is only used with model.source: kerashub; remove it")
    weights = section.get("weights", "imagenet")
    if weights is not None and not isinstance(weights, str):
        raise StudyFileError(
            f"model.weights must be 'imagenet', null or a weights file path, got {weights!r}"
        )
    if isinstance(weights, str) and weights != "imagenet":
        resolved = _resolve_path(base_dir, weights)
        if not resolved.exists():
            raise StudyFileError(f"model.weights file {str(resolved)!r} does not exist")
        weights = str(resolved)
    input_shape = section.get("input_shape")
    if input_shape is not None:
        if (
            not isinstance(input_shape, list)
            or len(input_shape) != 3
            or not all(
                isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in input_shape
            )
        ):
            raise StudyFileError(
                f"model.input_shape must be [height, width, channels], got {input_shape!r}"
            )
        input_shape = tuple(input_shape)
    alpha = section.get("alpha")
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float))):
        raise StudyFileError(f"model.alpha must be a number such as 0.35, got {alpha!r}")
    cut_at = section.get("cut_at")
    if cut_at is not None and not isinstance(cut_at, str):
        raise StudyFileError(f"model.cut_at must be a layer name, got {cut_at!r}")
    return ModelSource(
        kind=kind,  # type: ignore[arg-type]
        path=path,
        cut_at=cut_at,
        seed=section.get_int("seed", 0),
        safe_mode=section.get_bool("safe_mode", True),
        name=name,
        weights=weights,
        input_shape=input_shape,
        alpha=float(alpha) if alpha is not None else None,
        unfreeze_by=section.get("unfreeze_by") or ("blocks" if kind == "kerashub" else "layers"),
    )


def _data(section: _Section, base_dir: Path) -> DataSource:
    kind = section.get_str("source", "demo", choices=("demo", "npz", "directory", "glyphs"))
    path = None
    if kind in ("npz", "directory"):
        raw_path = section.get("path")
        if not isinstance(raw_path, str) or not raw_path:
            raise StudyFileError(
                f"data.path is required when data.source is {kind!r}"
                + (" (a folder with one subfolder per class)" if kind == "directory" else "")
            )
        resolved = _resolve_path(base_dir, raw_path)
        if not resolved.exists():
            raise StudyFileError(f"data.path {str(resolved)!r} does not exist; check the path")
        path = str(resolved)
    elif section.get("path") is not None:
        raise StudyFileError(f"data.path is not used with data.source: {kind}; remove it")
    val_path = section.get("val_path")
    if val_path is not None:
        if kind != "directory" or not isinstance(val_path, str):
            raise StudyFileError(
                "data.val_path (a folder) is only used with data.source: directory"
            )
        resolved = _resolve_path(base_dir, val_path)
        if not resolved.exists():
            raise StudyFileError(f"data.val_path {str(resolved)!r} does not exist")
        val_path = str(resolved)
    val_fraction = section.get_float("val_fraction", 0.2)
    if not 0.0 < val_fraction < 1.0:
        raise StudyFileError(f"data.val_fraction must be between 0 and 1, got {val_fraction}")
    max_memory_mb = section.get_int("max_memory_mb", 2048, minimum=1)
    max_skipped = section.get_float("max_skipped_fraction", 0.05)
    if not 0.0 <= max_skipped <= 1.0:
        raise StudyFileError(f"data.max_skipped_fraction must be in [0, 1], got {max_skipped}")
    names = section.get("class_names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise StudyFileError(f"data.class_names must be a list of strings, got {names!r}")
    return DataSource(
        kind=kind,
        path=path,
        seed=section.get_int("seed", 0),
        class_names=tuple(names),
        val_path=val_path,
        val_fraction=val_fraction,
        max_skipped_fraction=max_skipped,
        max_memory_mb=max_memory_mb,
    )


def _storage(value: Any, base_dir: Path, name: str) -> str:
    if value is None:
        return f"sqlite:///{(base_dir / f'{name}.db').resolve()}"
    if not isinstance(value, str) or "://" not in value:
        raise StudyFileError(
            f"storage must be a database URL such as 'sqlite:///demo.db' or "
            f"'postgresql://user@host/db', got {value!r}"
        )
    return resolve_storage_url(value, base_dir)


def resolve_storage_url(url: str, base_dir: Path) -> str:
    """Make a relative SQLite path relative to the study file's folder."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
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

    def section(where: str) -> _Section:
        model = getattr(study, where)
        return _Section(where, model.model_dump(), tuple(type(model).model_fields))

    return StudyConfig(
        name=name,
        path=path,
        seed=study.seed,
        n_trials=study.n_trials,
        model=_model(section("model"), base_dir, study.seed),
        data=_data(section("data"), base_dir),
        space=_space(section("search_space")),
        train=TrainSettings(metric=study.objective, **train_values),
        sampler=SamplerConfig(**study.sampler.model_dump()),
        pruner=PrunerConfig(**study.pruner.model_dump()),
        storage=_storage(study.storage, base_dir, name),
        reference_trials=study.reference_trials,
        loop=study.loop,
        lr_range_test=study.lr_range_test,
        budget_epochs=study.budget_epochs,
        thresholds=thresholds,
        raw=dict(raw),
        keep_best=study.keep_best,
        tensorboard=train.tensorboard,
        callbacks=tuple(train.callbacks),
        csv_log=train.csv_log,
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


def load_study_file(path: str | Path) -> StudyConfig:
    path = Path(path)
    if not path.exists():
        raise StudyFileError(f"study file {str(path)!r} does not exist")
    if path.is_dir():
        raise StudyFileError(
            f"{str(path)!r} is a folder; give a study file such as studies/demo.yaml"
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
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
