"""The learning-rate range test before the search: where the rate is, per BatchNorm mode.

``objectives.lr_range_test`` trains the whole network with an exponentially rising rate for a
few hundred steps at most (Smith 2017; fastai's ``lr_find``); here it is run once per BatchNorm
mode of the space when a study is created, its epochs are counted in the budget, and what it
found centres the informed start (:func:`thaw.search._budget.informed_start`'s ``rates``) and
the sampler's learning-rate range (:func:`lr_window`). Stored on the study as
``thaw:range_test``; a study whose range test found nothing keeps the configured range.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from thaw.objectives import FloatRange, SearchSpace

_logger = logging.getLogger(__name__)

__all__ = [
    "WINDOW_FACTOR",
    "cap_training_rate",
    "lr_window",
    "narrowed_space",
    "range_test_message",
    "range_test_rates",
    "run_range_tests",
]

#: The sampler searches the rates within this factor of what the range test suggested (below
#: the lowest suggestion, above the highest), inside the configured range.
WINDOW_FACTOR = 30.0


def run_range_tests(objective: Any, space: SearchSpace, seed: int) -> dict[str, Any]:
    """Run the range test for each BatchNorm mode of ``space``; the JSON-able summary stored
    as ``thaw:range_test``: per mode its result, the epochs spent, the suggested rates and the
    sampler's window (None: the configured range)."""
    from thaw.objectives import lr_range_test

    modes: dict[str, Any] = {}
    epochs = 0.0
    for mode in space.batchnorm:
        result = lr_range_test(objective, mode, seed=seed)
        modes[mode] = result.to_dict()
        epochs += result.epochs
    cap_training_rate(modes)
    summary: dict[str, Any] = {"modes": modes, "epochs": round(epochs, 3)}
    rates = range_test_rates(summary)
    window = lr_window(rates.values(), space.learning_rate)
    summary["window"] = list(window) if window is not None else None
    return summary


#: The modes whose BatchNorm statistics stay fixed while the network trains.
FIXED_STATISTICS = ("frozen", "adapt")


def cap_training_rate(modes: dict[str, Any]) -> None:
    """Cap the rate suggested with BatchNorm training (``modes["train"]``, changed in place) at
    the highest rate suggested with fixed statistics (``frozen``, ``adapt``); without one, drop
    it (the informed start then uses its default rate).

    With BatchNorm training, the range test's training loss normalises each batch by the
    batch's own statistics, while validation uses the moving statistics, which lag behind
    weights that change fast: the training loss keeps falling at rates where the validation
    loss explodes. On the bench suite's cases a, b, e and f (3 seeds each) the uncapped rates
    (2.7e-3 to 0.1) gave validation losses of 2.5 to 1800 after one epoch, every time. The
    measured suggestion stays in the result as ``measured_suggestion``."""
    result = modes.get("train")
    if not isinstance(result, dict):
        return
    rates = range_test_rates({"modes": modes})
    rate = rates.get("train")
    if rate is None:
        return
    fixed = [rates[m] for m in FIXED_STATISTICS if m in rates]
    cap = max(fixed) if fixed else None
    if cap is not None and rate <= cap:
        return
    result["measured_suggestion"] = rate
    if cap is None:
        result["suggestion"] = None
        result["reason"] = (
            f"{result.get('reason', '')}; not used: with BatchNorm training the training loss "
            "hides what validation sees, and no mode with fixed statistics found a rate to cap it"
        )
    else:
        result["suggestion"] = cap
        result["reason"] = (
            f"{result.get('reason', '')}; capped at {cap:.3g}, the highest rate found with fixed "
            "BatchNorm statistics: with BatchNorm training the training loss hides what "
            "validation sees"
        )
    _logger.info("Range test: the BatchNorm-train rate %.3g is capped at %s", rate, cap)


def range_test_rates(summary: Mapping[str, Any] | None) -> dict[str, float]:
    """BatchNorm mode -> suggested learning rate, for the modes whose test found one."""
    out: dict[str, float] = {}
    modes = (summary or {}).get("modes")
    if not isinstance(modes, Mapping):
        return out
    for mode, result in modes.items():
        rate = result.get("suggestion") if isinstance(result, Mapping) else None
        if isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0:
            out[str(mode)] = float(rate)
    return out


def range_test_epochs(summary: Mapping[str, Any] | None) -> int:
    """Whole training epochs the range test spent (rounded up), as the budget counts them."""
    value = (summary or {}).get("epochs")
    if isinstance(value, (int, float)) and math.isfinite(value) and value > 0:
        return math.ceil(value - 1e-9)
    return 0


def lr_window(rates: Iterable[float], configured: FloatRange) -> tuple[float, float] | None:
    """The learning-rate range the sampler searches: ``WINDOW_FACTOR`` either side of the
    suggested ``rates``, inside ``configured``. None (the configured range) without a rate, or
    when the window would leave nothing of the configured range."""
    found = [r for r in rates if math.isfinite(r) and r > 0]
    if not found:
        return None
    low = max(configured.low, min(found) / WINDOW_FACTOR)
    high = min(configured.high, max(found) * WINDOW_FACTOR)
    if not low < high:
        return None
    if math.isclose(low, configured.low) and math.isclose(high, configured.high):
        return None
    return (low, high)


def narrowed_space(space: SearchSpace, summary: Mapping[str, Any] | None) -> SearchSpace:
    """``space`` with its learning-rate range narrowed to the stored window, if there is one."""
    window = (summary or {}).get("window")
    if not isinstance(window, (list, tuple)) or len(window) != 2:
        return space
    low, high = float(window[0]), float(window[1])
    configured = space.learning_rate
    low, high = max(low, configured.low), min(high, configured.high)
    if not low < high:
        return space
    return replace(space, learning_rate=FloatRange(low, high, log=configured.log))


def range_test_message(summary: Mapping[str, Any], configured: FloatRange) -> str:
    """One line for the terminal: what the range test found and the range searched, or that it
    diverged at every rate and the configured range is searched."""
    modes = summary.get("modes") or {}
    rates = range_test_rates(summary)
    if not rates:
        return (
            f"The learning-rate range test diverged at every rate ({', '.join(modes)}); "
            f"searching the configured range {configured.low:g} to {configured.high:g}."
        )
    found = ", ".join(
        f"{mode} {rates[mode]:.2g}" if mode in rates else f"{mode} none" for mode in modes
    )
    window = summary.get("window")
    low, high = window if window else (configured.low, configured.high)
    epochs = summary.get("epochs") or 0
    return (
        f"Learning-rate range test ({epochs:.2g} epochs): suggested rates {found}; "
        f"searching {low:.2g} to {high:.2g}."
    )
