"""Diagnose a run trained outside thaw from its Keras ``History.history`` dict.

The input (a JSON object, see ``docs/diagnose.md``)::

    {"loss": [...], "val_loss": [...], "accuracy": [...], "val_accuracy": [...],
     "params": {"learning_rate": 1e-5, "unfrozen_layers": 132, "of_layers": 132,
                "dropout": 0.2, "weight_decay": 0, "batchnorm": "frozen",
                "batch_size": 32, "train_per_class": 4650},
     "num_classes": 2}

``params`` and ``num_classes`` are optional; the series may also sit under a ``"history"``
key; the accuracy may be recorded under any of Keras' names (``accuracy``, ``acc``,
``sparse_categorical_accuracy``, ...). The run is judged alone by the same rules as a trial
(:func:`diagnose_trial`). One parser for every door: ``thaw diagnose --history``, and
``thaw.diagnose`` with a Keras ``History`` or a dict.

Whether the model has BatchNorm layers is a model fact the curves cannot tell: ``params.batchnorm``
(a mode) or ``params.batchnorm_layers`` says so, or the caller counts them (``thaw.diagnose``
does, on the ``History``'s model). With no BatchNorm layer, ``batchnorm_mismatch`` is ruled
out; without the fact, a ``batchnorm_mismatch`` verdict says it could not check.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from thaw.reports.diagnosis._features import TrialCurves
from thaw.reports.diagnosis._thresholds import Thresholds
from thaw.reports.diagnosis._verdicts import BATCHNORM_MISMATCH, Verdict, diagnose_trial

__all__ = [
    "HISTORY_PARAMS",
    "HistoryDiagnosis",
    "diagnose_history",
    "history_curves",
    "load_history",
]

HISTORY_PARAMS = (
    "learning_rate",
    "unfrozen_layers",
    "of_layers",
    "dropout",
    "weight_decay",
    "batchnorm",
    "batch_size",
    "train_per_class",
    "batchnorm_layers",
)
"""Keys ``params`` may hold."""

UNCHECKED_BATCHNORM = (
    "not checked: the history does not say whether the model has BatchNorm layers (pass the "
    "History with its model, or params.batchnorm or params.batchnorm_layers)"
)
"""What a ``batchnorm_mismatch`` verdict adds when no model fact backs it."""

_ACCURACY_KEYS = (
    "accuracy",
    "acc",
    "sparse_categorical_accuracy",
    "categorical_accuracy",
    "binary_accuracy",
)
_BATCHNORM = ("frozen", "adapt", "train")


def _series(name: str, values: Any) -> list[float | None]:
    if not isinstance(values, list):
        raise ValueError(
            f"{name!r} must be a list of numbers per epoch, got {type(values).__name__}"
        )
    out: list[float | None] = []
    for i, v in enumerate(values):
        if v is None:
            out.append(None)
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"{name!r} epoch {i + 1} is {v!r}; expected a number (or null)")
        else:
            out.append(float(v) if math.isfinite(v) else None)
    return out


def _int_param(params: Mapping[str, Any], key: str, low: int) -> int | None:
    v = params.get(key)
    if v is None:
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ValueError(f"params.{key} must be an integer >= {low}, got {v!r}")
    return v


def _float_param(
    params: Mapping[str, Any], key: str, low: float, high: float = math.inf, low_open: bool = False
) -> float | None:
    v = params.get(key)
    if v is None:
        return None
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if ok and (v <= low if low_open else v < low):
        ok = False
    if not ok or v > high:
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        raise ValueError(f"params.{key} must be a number {bound}, got {v!r}")
    return float(v)


def _params(raw: Any) -> tuple[dict[str, Any], int | None]:
    if raw is None:
        return {}, None
    if not isinstance(raw, Mapping):
        raise ValueError(f"'params' must be an object, got {type(raw).__name__}")
    unknown = sorted(str(k) for k in raw if k not in HISTORY_PARAMS)
    if unknown:
        raise ValueError(f"unknown params {', '.join(unknown)}; known: {', '.join(HISTORY_PARAMS)}")
    params: dict[str, Any] = {}
    lr = _float_param(raw, "learning_rate", 0.0, low_open=True)
    if lr is not None:
        params["learning_rate"] = lr
    for key, low in (("unfrozen_layers", 0), ("batch_size", 1), ("train_per_class", 1)):
        v = _int_param(raw, key, low)
        if v is not None:
            params[key] = v
    of_layers = _int_param(raw, "of_layers", 1)
    _int_param(raw, "batchnorm_layers", 0)  # a model fact, read by _has_batchnorm
    dropout = _float_param(raw, "dropout", 0.0, 1.0)
    if dropout is not None:
        params["dropout"] = dropout
    wd = _float_param(raw, "weight_decay", 0.0)
    if wd is not None:
        params["weight_decay"] = wd
    bn = raw.get("batchnorm")
    if bn is not None:
        if bn not in _BATCHNORM:
            raise ValueError(f"params.batchnorm must be one of {', '.join(_BATCHNORM)}, got {bn!r}")
        params["batchnorm"] = bn
    u = params.get("unfrozen_layers")
    if of_layers is not None and u is not None and u > of_layers:
        raise ValueError(f"params.unfrozen_layers={u} is more than params.of_layers={of_layers}")
    return params, of_layers


def history_curves(data: Any) -> tuple[TrialCurves, int | None]:
    """Validate a history object; return its curves and the base's layer count (``of_layers``).

    Raises:
        ValueError: One line saying what is wrong: not an object, no ``val_loss``, lists of
            different lengths, no finite value, a non-number, bad ``params`` or ``num_classes``.
    """
    if not isinstance(data, Mapping):
        raise ValueError(
            f"expected a JSON object (Keras History.history), got {type(data).__name__}"
        )
    history = data.get("history", data)
    if not isinstance(history, Mapping):
        raise ValueError(f"'history' must be an object, got {type(history).__name__}")
    if "val_loss" not in history:
        raise ValueError(
            "no 'val_loss': fit with validation_data (or validation_split) so Keras records it"
        )
    series = {"val_loss": _series("val_loss", history["val_loss"])}
    if "loss" in history:
        series["loss"] = _series("loss", history["loss"])
    acc_key = next((k for k in _ACCURACY_KEYS if k in history), None)
    if acc_key is not None:
        series["accuracy"] = _series(acc_key, history[acc_key])
    val_acc_key = next((f"val_{k}" for k in _ACCURACY_KEYS if f"val_{k}" in history), None)
    if val_acc_key is not None:
        series["val_accuracy"] = _series(val_acc_key, history[val_acc_key])
    lengths = {name: len(values) for name, values in series.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{k} {n}" for k, n in lengths.items())
        raise ValueError(
            f"the per-epoch lists have different lengths ({shown}); one value per epoch"
        )
    if not series["val_loss"]:
        raise ValueError("'val_loss' is empty: no epoch was recorded")
    for name in ("val_loss", "loss"):
        if name in series and all(v is None for v in series[name]):
            raise ValueError(
                f"'{name}' has no finite value (all NaN/inf/null): nothing to diagnose"
            )
    params, of_layers = _params(data.get("params"))
    k = data.get("num_classes")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 2):
        raise ValueError(f"num_classes must be an integer >= 2, got {k!r}")
    curves = TrialCurves(
        number=0,
        params=params,
        loss=series.get("loss", ()),
        val_loss=series["val_loss"],
        accuracy=series.get("accuracy", ()),
        val_accuracy=series.get("val_accuracy", ()),
        num_classes=k,
    )
    return curves, of_layers


def load_history(path: Path | str) -> Any:
    """The parsed JSON of ``path``.

    Raises:
        ValueError: The file cannot be read or is not JSON.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read history file {str(path)!r}: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"history file {str(path)!r} is not JSON ({exc.msg} at line {exc.lineno}); write it "
            "with json.dump(model.fit(...).history, f)"
        ) from None


@dataclass(frozen=True)
class HistoryDiagnosis:
    """The verdicts of one run given as a Keras history."""

    curves: TrialCurves
    num_layers: int | None
    verdicts: tuple[Verdict, ...]
    has_batchnorm: bool | None = None
    """Whether the model has BatchNorm layers (``None``: the history did not say)."""

    def to_dict(self) -> dict[str, Any]:
        """The documented JSON shape (``docs/diagnose.md``)."""
        c = self.curves
        chance = None
        if c.chance_loss is not None and c.chance_accuracy is not None:
            chance = {"loss": round(c.chance_loss, 6), "accuracy": round(c.chance_accuracy, 6)}
        return {
            "chance": chance,
            "epochs": c.epochs,
            "has_batchnorm": self.has_batchnorm,
            "num_classes": c.num_classes,
            "of_layers": self.num_layers,
            "params": dict(sorted(c.params.items())),
            "primary": self.verdicts[0].verdict if self.verdicts else None,
            "verdicts": [v.to_dict() for v in self.verdicts],
        }

    def render_text(self, source: str = "the history") -> str:
        c = self.curves
        k = f", {c.num_classes} classes" if c.num_classes else ""
        lines = [f"Run from {source} ({c.epochs} epochs{k}):"]
        if not self.verdicts:
            lines.append("  no verdict: the history has no usable learning curve")
        for v in self.verdicts:
            lines.append(f"  {v.verdict} (confidence {v.confidence:.2f})")
            lines.append(f"    evidence: {v.evidence}")
            lines.append(f"    recommendation: {v.recommendation}")
        return "\n".join(lines) + "\n"


def diagnose_history(
    data: Any, thresholds: Thresholds | None = None, *, batchnorm_layers: int | None = None
) -> HistoryDiagnosis:
    """Validate ``data`` (a parsed history object, or a Keras ``History.history`` dict) and
    judge the run alone. ``batchnorm_layers``: the model's BatchNorm layers, when the caller
    counted them (overrides ``params``).

    Raises:
        ValueError: What :func:`history_curves` refuses.
    """
    curves, of_layers = history_curves(data)
    has_bn = _has_batchnorm(data, batchnorm_layers)
    verdicts = diagnose_trial(curves, (), thresholds or Thresholds(), of_layers, has_bn)
    if has_bn is None:
        verdicts = [
            replace(v, evidence=f"{v.evidence}; {UNCHECKED_BATCHNORM}")
            if v.verdict == BATCHNORM_MISMATCH
            else v
            for v in verdicts
        ]
    return HistoryDiagnosis(curves, of_layers, tuple(verdicts), has_bn)


def _has_batchnorm(data: Mapping[str, Any], counted: int | None) -> bool | None:
    """Whether the model has BatchNorm layers: counted by the caller, else what ``params``
    says (a BatchNorm mode, or ``batchnorm_layers``), else ``None`` (not known)."""
    if counted is not None:
        return counted > 0
    params = data.get("params")
    if not isinstance(params, Mapping):
        return None
    if params.get("batchnorm") is not None:
        return True
    layers = _int_param(params, "batchnorm_layers", 0)
    return None if layers is None else layers > 0
