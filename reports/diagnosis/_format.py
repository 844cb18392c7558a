"""Number and label formatting shared by the diagnosis texts."""

from __future__ import annotations

from typing import Any

from thaw.reports._format import param_label

_label = param_label
_EPS = 1e-12


def _fmt_sig(x: float, sig: int = 2) -> str:
    """Compact number: ``2e-3``, ``3.5e-4``, ``0.25``, ``12``."""
    if x == 0:
        return "0"
    if abs(x) < 0.01 or abs(x) >= 1e5:
        mantissa, exponent = f"{x:.{sig - 1}e}".split("e")
        if "." in mantissa:
            mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{int(exponent)}"
    return f"{x:.{sig + 1}g}" if abs(x) < 1 else f"{x:.{max(sig, 3)}g}"


def _fmt_loss(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def _fmt_pct(x: float) -> str:
    return f"{100.0 * x:+.0f}%"


def _fmt_value(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return _fmt_sig(value)


_label = param_label


def _scale(x: float, lo: float, hi: float, c_lo: float, c_hi: float) -> float:
    if hi <= lo:
        return c_hi
    frac = min(1.0, max(0.0, (x - lo) / (hi - lo)))
    return c_lo + frac * (c_hi - c_lo)


def _rel(delta: float, base: float) -> float:
    return delta / max(abs(base), _EPS)


# --------------------------------------------------------------------------------------------
# Curve analysis (per trial, independent of peers)
