"""Diagnose a run trained outside thaw from its Keras ``History.history`` dict.

The input (a JSON object, see ``docs/diagnose.md``)::

    {"loss": [...], "val_loss": [...], "accuracy": [...], "val_accuracy": [...],
     "params": {"learning_rate": 1e-5, "unfrozen_layers": 132, "of_layers": 132,
                "dropout": 0.2, "weight_decay": 0, "batchnorm": "frozen",
                "batch_size": 32, "train_per_class": 4650},
     "num_classes": 2}

``params`` and ``num_classes`` are optional; the series may also sit under a ``"history"``
key. The run is judged alone by the same rules as a trial (:func:`diagnose_trial`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thaw.reports.diagnosis._features import TrialCurves
from thaw.reports.diagnosis._thresholds import Thresholds
from thaw.reports.diagnosis._verdicts import Verdict, diagnose_trial

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
)
"""Keys ``params`` may hold."""

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

    def to_dict(self) -> dict[str, Any]:
        """The documented JSON shape (``docs/diagnose.md``)."""
        c = self.curves
        chance = None
        if c.chance_loss is not None and c.chance_accuracy is not None:
            chance = {"loss": round(c.chance_loss, 6), "accuracy": round(c.chance_accuracy, 6)}
        return {
            "chance": chance,
            "epochs": c.epochs,
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


def diagnose_history(data: Any, thresholds: Thresholds | None = None) -> HistoryDiagnosis:
    """Validate ``data`` (a parsed history object) and judge the run alone.

    Raises:
        ValueError: What :func:`history_curves` refuses.
    """
    curves, of_layers = history_curves(data)
    verdicts = diagnose_trial(curves, (), thresholds or Thresholds(), of_layers)
    return HistoryDiagnosis(curves, of_layers, tuple(verdicts))
