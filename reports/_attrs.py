"""Tolerant readers for what thaw keeps in Optuna storage (see ``docs/storage.md``).

Any attribute may be missing or malformed (old studies, failed trials, other writers), so
every reader returns ``None`` or an empty value instead of raising.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from optuna.trial import FrozenTrial

HISTORY_KEYS = ("loss", "val_loss", "accuracy", "val_accuracy")


def as_float(value: Any) -> float | None:
    """A finite float, or ``None`` for missing, non-numeric or non-finite values."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        result = float(value)
        return result if math.isfinite(result) else None
    return None


def as_int(value: Any) -> int | None:
    """An int, or ``None``. Integral floats (``5.0``) are accepted."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def as_str(value: Any) -> str | None:
    """Text for a free-form attribute; ``None`` stays ``None``, empty text becomes ``None``."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text if text.strip() else None


def dig(data: Any, *path: str) -> Any:
    """``data[path[0]][path[1]]...`` or ``None`` if any step is missing or not a mapping."""
    current = data
    for key in path:
        if not isinstance(current, Mapping) or key not in current:
            return None
        current = current[key]
    return current


def history_series(trial: FrozenTrial, key: str) -> tuple[float | None, ...]:
    """One list from the ``history`` user attr; index ``i`` is epoch ``i + 1``."""
    values = dig(trial.user_attrs, "history", key)
    if not isinstance(values, Sequence) or isinstance(values, (str, bytes)):
        return ()
    return tuple(as_float(v) for v in values)


def history_length(trial: FrozenTrial) -> int:
    """Number of epochs recorded in ``history`` (longest list)."""
    return max((len(history_series(trial, key)) for key in HISTORY_KEYS), default=0)


def intermediate_series(trial: FrozenTrial) -> tuple[tuple[int, float | None], ...]:
    """Intermediate values as ``(step, value)`` sorted by step; non-finite values are None."""
    return tuple((int(step), as_float(v)) for step, v in sorted(trial.intermediate_values.items()))


def verdict_names(value: Any) -> tuple[str, ...]:
    """Names from the ``verdicts`` user attr (list of dicts with a ``verdict`` key)."""
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        return ()
    names: list[str] = []
    for item in value:
        name = as_str(item.get("verdict")) if isinstance(item, Mapping) else as_str(item)
        if name is not None:
            names.append(name)
    return tuple(names)


def verdict_details(
    value: Any,
) -> tuple[tuple[str, float | None, str | None, str | None], ...]:
    """``(verdict, confidence, evidence, recommendation)`` per entry of the ``verdicts`` attr.

    Entries without a verdict name are skipped; plain strings count as a bare name.
    """
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        return ()
    out: list[tuple[str, float | None, str | None, str | None]] = []
    for item in value:
        if isinstance(item, Mapping):
            name = as_str(item.get("verdict"))
            if name is not None:
                out.append(
                    (
                        name,
                        as_float(item.get("confidence")),
                        as_str(item.get("evidence")),
                        as_str(item.get("recommendation")),
                    )
                )
        else:
            name = as_str(item)
            if name is not None:
                out.append((name, None, None, None))
    return tuple(out)


def argbest(values: Sequence[float | None], maximize: bool) -> int | None:
    """Index of the best finite value (first one on ties), or ``None``."""
    best_index: int | None = None
    best_value = 0.0
    for i, value in enumerate(values):
        if value is None:
            continue
        if best_index is None or (value > best_value if maximize else value < best_value):
            best_index, best_value = i, value
    return best_index
