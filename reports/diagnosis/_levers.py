"""The biggest lever: best and median objective per level of each parameter, with counts,
beside PED-ANOVA, and whether the two agree.

PED-ANOVA weighs how a parameter's distribution differs between the top trials and the rest;
a sampler that rarely tried a level (say ``batchnorm: frozen``) can hide a lever from it. The
per-level table shows it directly: every level with its trial count, best and median objective.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from thaw.reports.diagnosis._format import _fmt_sig, _label

__all__ = ["LeverLevel", "Levers", "ParameterLever", "parameter_levers"]

_LOG_PARAMS = ("learning_rate", "weight_decay")
_MAX_EXACT_LEVELS = 6
_BINS = 3


@dataclass(frozen=True)
class LeverLevel:
    """One level (a value, or a bin of values) of a parameter."""

    label: str
    n: int
    best: float
    median: float
    trials: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "best": round(self.best, 6),
            "label": self.label,
            "median": round(self.median, 6),
            "n": self.n,
            "trials": list(self.trials),
        }


@dataclass(frozen=True)
class ParameterLever:
    """A parameter's levels, and the gap between the medians of its best and worst level
    (levels with at least two trials)."""

    param: str
    levels: tuple[LeverLevel, ...]
    gap: float | None
    best_level: str | None
    worst_level: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "best_level": self.best_level,
            "gap": None if self.gap is None else round(self.gap, 6),
            "levels": [level.to_dict() for level in self.levels],
            "param": self.param,
            "worst_level": self.worst_level,
        }


@dataclass(frozen=True)
class Levers:
    """Per parameter, best and median objective per level; the biggest lever; PED-ANOVA's top.

    Attributes:
        direction: ``minimize`` or ``maximize`` (of the objective values compared).
        n_trials: Completed trials with a finite objective.
        params: Parameters, biggest gap first.
        biggest: The parameter whose level medians differ most (``None`` with too few trials).
        importance_top: PED-ANOVA's (or fANOVA's) most important parameter, if computed.
        agree: Whether the two name the same parameter (``None`` when either is missing).
        sentence: One line for the diagnosis text.
    """

    direction: str
    n_trials: int
    params: tuple[ParameterLever, ...]
    biggest: str | None
    importance_top: str | None
    agree: bool | None
    sentence: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "agree": self.agree,
            "biggest": self.biggest,
            "direction": self.direction,
            "importance_top": self.importance_top,
            "n_trials": self.n_trials,
            "params": [p.to_dict() for p in self.params],
            "sentence": self.sentence,
        }


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _fmt(v: float, is_int: bool) -> str:
    return str(int(v)) if is_int else _fmt_sig(v)


def _levels(
    param: str, rows: list[tuple[int, Any, float]]
) -> list[tuple[str, list[tuple[int, float]]]]:
    values = [v for _, v, _ in rows]
    if not all(_is_number(v) for v in values) or len(set(values)) <= _MAX_EXACT_LEVELS:
        groups: dict[str, list[tuple[int, float]]] = {}
        order: dict[str, Any] = {}
        for number, v, y in rows:
            key = str(v) if not _is_number(v) else _fmt(float(v), isinstance(v, int))
            groups.setdefault(key, []).append((number, y))
            order.setdefault(key, v)
        keys = sorted(
            groups,
            key=lambda k: (not _is_number(order[k]), order[k] if _is_number(order[k]) else 0, k),
        )
        return [(k, groups[k]) for k in keys]
    is_int = all(isinstance(v, int) for v in values)
    log = param in _LOG_PARAMS and min(values) > 0
    keyed = sorted(((math.log(v) if log else float(v)), number, v, y) for number, v, y in rows)
    n = len(keyed)
    bins: list[tuple[str, list[tuple[int, float]]]] = []
    for b in range(_BINS):
        chunk = keyed[b * n // _BINS : (b + 1) * n // _BINS]
        if not chunk:
            continue
        lo, hi = chunk[0][2], chunk[-1][2]
        label = _fmt(lo, is_int) if lo == hi else f"{_fmt(lo, is_int)}..{_fmt(hi, is_int)}"
        bins.append((label, [(number, y) for _, number, _, y in chunk]))
    return bins


def parameter_levers(
    trials: Sequence[tuple[int, Mapping[str, Any], float]],
    *,
    maximize: bool = False,
    importances: Mapping[str, float] | None = None,
    evaluator: str = "PED-ANOVA",
) -> Levers:
    """Levers from ``(number, params, objective)`` of completed trials.

    Each parameter is split into levels (its values when there are at most six, else three
    equal-count bins, on a log scale for the learning rate and weight decay); each level gets
    its count, best and median objective. The biggest lever is the parameter whose best and
    worst level medians (levels with two or more trials) differ most.
    """
    finite = [(n, p, y) for n, p, y in trials if _is_number(y)]
    direction = "maximize" if maximize else "minimize"
    pick = max if maximize else min
    params_out: list[ParameterLever] = []
    for param in sorted({k for _, p, _ in finite for k in p}):
        rows = [(n, p[param], float(y)) for n, p, y in finite if p.get(param) is not None]
        if len(rows) < 2:
            continue
        levels = [
            LeverLevel(
                label,
                len(members),
                pick(y for _, y in members),
                statistics.median(y for _, y in members),
                tuple(sorted(n for n, _ in members)),
            )
            for label, members in _levels(param, rows)
        ]
        solid = [lv for lv in levels if lv.n >= 2]
        gap = best_level = worst_level = None
        if len(solid) >= 2:
            ranked = sorted(solid, key=lambda lv: lv.median, reverse=maximize)
            best_level, worst_level = ranked[0].label, ranked[-1].label
            gap = abs(ranked[-1].median - ranked[0].median)
        params_out.append(ParameterLever(param, tuple(levels), gap, best_level, worst_level))
    params_out.sort(key=lambda p: (p.gap is None, -(p.gap or 0.0), p.param))
    biggest = params_out[0].param if params_out and params_out[0].gap is not None else None
    shares = dict(importances or {})
    importance_top = max(shares, key=lambda k: (shares[k], k)) if shares else None
    agree = None if biggest is None or importance_top is None else biggest == importance_top
    sentence = _sentence(params_out, biggest, importance_top, agree, shares, evaluator, len(finite))
    return Levers(
        direction, len(finite), tuple(params_out), biggest, importance_top, agree, sentence
    )


def _sentence(
    params: list[ParameterLever],
    biggest: str | None,
    top: str | None,
    agree: bool | None,
    shares: Mapping[str, float],
    evaluator: str,
    n: int,
) -> str:
    if biggest is None:
        return f"too few completed trials ({n}) per parameter level to name the biggest lever"
    lever = next(p for p in params if p.param == biggest)
    levels = {lv.label: lv for lv in lever.levels}
    good, bad = levels[lever.best_level or ""], levels[lever.worst_level or ""]
    text = (
        f"biggest lever: {_label(biggest)} (median objective {good.median:.3f} with "
        f"{_label(biggest)} {good.label}, n={good.n}, best {good.best:.3f}; vs "
        f"{bad.median:.3f} with {bad.label}, n={bad.n}, best {bad.best:.3f})"
    )
    if agree is True:
        text += f"; {evaluator} agrees ({shares[biggest]:.0%})"
    elif agree is False and top is not None:
        text += (
            f"; {evaluator} ranks {_label(top)} first ({shares[top]:.0%}) and gives "
            f"{_label(biggest)} {shares.get(biggest, 0.0):.0%}: they disagree, trust the "
            "per-level counts where the sampler tried some levels rarely"
        )
    return text
