"""Data behind the report's charts. Rendering lives in ``reports._svg``."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import optuna

from thaw._keys import RANGE_TEST
from thaw.reports._attrs import as_float, history_series, intermediate_series
from thaw.reports._ranking import ParamColumn, RankingInfo, RankingRow, get_ranking_info

_logger = logging.getLogger(__name__)

LOG_RATIO = 30.0
"""Loss axes switch to a log scale when the largest value is this many times the smallest."""

PARAM_UNITS = {"unfrozen_layers": "layers", "dropout": "fraction of units"}
"""Axis units for parameters that have one; the others are dimensionless."""


@dataclass(frozen=True)
class CurveSeries:
    """Per-epoch losses of one trial; ``values[i]`` belongs to ``epochs[i]``."""

    number: int
    label: str
    role: Literal["top", "strategy", "climbing"]
    """``climbing``: a trial pruned because its validation loss climbed (always drawn)."""
    strategy: str | None
    state: str
    epochs: tuple[int, ...]
    val_loss: tuple[float | None, ...]
    train_loss: tuple[float | None, ...]
    best_epoch: int | None
    stopped_epoch: int | None
    """Epoch where a PRUNED trial was stopped; ``None`` otherwise."""
    prune_reason: str | None


@dataclass(frozen=True)
class CurvesInfo:
    """Learning curves of the top trials and every textbook strategy trial."""

    series: tuple[CurveSeries, ...]
    y_log: bool
    x_label: str
    y_label: str

    @property
    def max_epoch(self) -> int:
        return max((max(s.epochs) for s in self.series if s.epochs), default=0)


@dataclass(frozen=True)
class ScatterPoint:
    number: int
    x: float
    """Parameter value, or the category index for categorical parameters."""
    x_text: str
    y: float
    state: str
    rank: int | None


@dataclass(frozen=True)
class ParamScatter:
    """One parameter against the best validation loss each trial reached."""

    param: str
    kind: Literal["int", "float", "categorical"]
    log_x: bool
    x_label: str
    categories: tuple[str, ...]
    points: tuple[ScatterPoint, ...]
    spearman: float | None
    """Rank correlation of the parameter with best val loss (numeric params, >= 3 points)."""
    n_skipped: int
    """Trials left out (no value for this parameter, or non-positive on a log axis)."""


@dataclass(frozen=True)
class ParamScatterInfo:
    y_label: str
    y_log: bool
    scatters: tuple[ParamScatter, ...]


@dataclass(frozen=True)
class EfficiencyCurve:
    """Best score so far against cumulative epochs spent, one point per finished trial.

    Trials are taken in number order; failed trials add their epochs but no score.
    """

    label: str
    points: tuple[tuple[int, float], ...]
    """``(cumulative epochs, best score so far)`` after each trial once a score exists."""
    total_epochs: int
    best: float | None
    epochs_to_best: int | None
    """Cumulative epochs spent when the final best was first reached."""


@dataclass(frozen=True)
class EfficiencyInfo:
    """Search efficiency curves of several studies on one pair of axes."""

    curves: tuple[EfficiencyCurve, ...]
    maximize: bool
    y_log: bool
    x_label: str
    y_label: str


def get_efficiency_curve(ranking: RankingInfo, label: str) -> EfficiencyCurve:
    """The best score (``ranking`` order: best val loss, or the objective when maximizing)
    reached as a function of the epochs all trials spent so far."""
    rows = sorted(
        (r for r in ranking.rows if r.state in ("COMPLETE", "PRUNED", "FAIL")),
        key=lambda r: r.number,
    )
    spent = 0
    best: float | None = None
    at: int | None = None
    points: list[tuple[int, float]] = []
    for row in rows:
        spent += row.epochs_run or 0
        score = row.score if row.state != "FAIL" else None
        if score is not None and (
            best is None or (score > best if ranking.maximize else score < best)
        ):
            best, at = score, spent
        if best is not None:
            points.append((spent, best))
    return EfficiencyCurve(label, tuple(points), spent, best, at)


def get_efficiency_info(rankings: Sequence[RankingInfo], labels: Sequence[str]) -> EfficiencyInfo:
    """Efficiency curves of several studies that share one objective."""
    curves = tuple(
        get_efficiency_curve(r, label) for r, label in zip(rankings, labels, strict=True)
    )
    maximize = bool(rankings) and rankings[0].maximize
    metric = rankings[0].objective_metric if rankings else "val_loss"
    values = [v for c in curves for _, v in c.points]
    y_log = not maximize and _use_log(values)
    if maximize:
        y_label = f"best {metric} so far (higher is better)"
    else:
        y_label = "best val loss so far (lower is better" + (", log scale)" if y_log else ")")
    return EfficiencyInfo(
        curves=curves,
        maximize=maximize,
        y_log=y_log,
        x_label="cumulative epochs spent (all trials, in trial order)",
        y_label=y_label,
    )


@dataclass(frozen=True)
class AnytimeInfo:
    """Best-so-far against cumulative epochs for one study (its anytime curve)."""

    efficiency: EfficiencyInfo
    budget_epochs: int | None
    """The epoch budget the study ran under (``thaw:budget_epochs``), if any."""
    epochs_spent: int
    best_at_half: float | None
    """Best score within the first half of the epochs spent."""


def get_anytime_info(
    ranking: RankingInfo, label: str, budget_epochs: int | None = None
) -> AnytimeInfo:
    """The anytime curve of one study: what the search had found after each trial."""
    info = get_efficiency_info([ranking], [label])
    curve = info.curves[0]
    half = curve.total_epochs / 2
    within = [v for e, v in curve.points if e <= half]
    return AnytimeInfo(
        efficiency=info,
        budget_epochs=budget_epochs,
        epochs_spent=curve.total_epochs,
        best_at_half=within[-1] if within else None,
    )


def get_curves_info(
    study: optuna.Study, ranking: RankingInfo | None = None, top_n: int = 5
) -> CurvesInfo:
    """Validation and training loss per epoch for the ``top_n`` ranked trials and every
    strategy trial. Falls back to intermediate values when the objective is ``val_loss``
    and a trial has no ``history``.
    """
    ranking = ranking if ranking is not None else get_ranking_info(study)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    chosen: list[tuple[RankingRow, Literal["top", "strategy", "climbing"]]] = [
        (row, "top") for row in ranking.ranked[:top_n]
    ]
    taken = {row.number for row, _ in chosen}
    chosen += [
        (row, "strategy")
        for row in ranking.rows
        if row.strategy is not None and row.number not in taken and row.state != "FAIL"
    ]
    taken = {row.number for row, _ in chosen}
    chosen += [
        (row, "climbing")
        for row in ranking.rows
        if row.state == "PRUNED" and row.prune_reason == "climbing" and row.number not in taken
    ]

    series: list[CurveSeries] = []
    for row, role in chosen:
        trial = trials[row.number]
        val = history_series(trial, "val_loss")
        train = history_series(trial, "loss")
        if not val and ranking.objective_metric == "val_loss":
            steps = intermediate_series(trial)
            n = max((step for step, _ in steps), default=0)
            by_step = dict(steps)
            val = tuple(by_step.get(epoch) for epoch in range(1, n + 1))
        n_epochs = max(len(val), len(train))
        if n_epochs == 0:
            continue
        series.append(
            CurveSeries(
                number=row.number,
                label=row.label,
                role="strategy" if row.strategy is not None else role,
                strategy=row.strategy,
                state=row.state,
                epochs=tuple(range(1, n_epochs + 1)),
                val_loss=_pad(val, n_epochs),
                train_loss=_pad(train, n_epochs),
                best_epoch=row.best_epoch,
                stopped_epoch=(row.prune_epoch or n_epochs) if row.state == "PRUNED" else None,
                prune_reason=row.prune_reason,
            )
        )
    values = [v for s in series for v in (*s.val_loss, *s.train_loss) if v is not None]
    y_log = _use_log(values)
    return CurvesInfo(
        series=tuple(series),
        y_log=y_log,
        x_label="epoch",
        y_label="loss (lower is better" + (", log scale)" if y_log else ")"),
    )


def get_answer_curves(curves: CurvesInfo, best_number: int | None) -> CurvesInfo:
    """The answer's chart: the best trial's curve against the textbook strategies' curves
    (validation loss only; log scale when their range calls for it)."""
    series = tuple(s for s in curves.series if s.number == best_number or s.strategy is not None)
    series = tuple(
        replace(s, label=f"{s.label} (use this)") if s.number == best_number else s
        for s in sorted(series, key=lambda s: (s.number != best_number, s.number))
    )
    values = [v for s in series for v in s.val_loss if v is not None]
    y_log = _use_log(values)
    return CurvesInfo(
        series=series,
        y_log=y_log,
        x_label="epoch",
        y_label="val loss (lower is better" + (", log scale)" if y_log else ")"),
    )


def get_param_scatter_info(
    study: optuna.Study, ranking: RankingInfo | None = None
) -> ParamScatterInfo:
    """Each parameter against the best validation loss of every COMPLETE and PRUNED trial."""
    ranking = ranking if ranking is not None else get_ranking_info(study)
    rows = [r for r in ranking.rows if r.state != "FAIL" and r.best_val_loss is not None]
    scatters = tuple(_scatter(column, rows) for column in ranking.param_columns)
    y_log = _use_log([r.best_val_loss for r in rows if r.best_val_loss is not None])
    return ParamScatterInfo(
        y_label="best val loss (lower is better" + (", log scale)" if y_log else ")"),
        y_log=y_log,
        scatters=scatters,
    )


def _scatter(column: ParamColumn, rows: Sequence[RankingRow]) -> ParamScatter:
    categorical = column.kind == "categorical"
    categories: tuple[str, ...] = ()
    if categorical:
        categories = tuple(
            sorted(
                {_category(row.params[column.name]) for row in rows if column.name in row.params}
            )
        )
    points: list[ScatterPoint] = []
    skipped = 0
    for row in rows:
        if column.name not in row.params or row.best_val_loss is None:
            skipped += 1
            continue
        value = row.params[column.name]
        if categorical:
            text = _category(value)
            x = float(categories.index(text))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            x = float(value)
            if not math.isfinite(x) or (column.log and x <= 0):
                skipped += 1
                continue
            text = f"{x:.4g}"
        else:
            skipped += 1
            continue
        points.append(ScatterPoint(row.number, x, text, row.best_val_loss, row.state, row.rank))
    if skipped:
        _logger.debug("%s: %d trial(s) not plotted", column.name, skipped)
    parts = [p for p in (PARAM_UNITS.get(column.name), "log scale" if column.log else None) if p]
    return ParamScatter(
        param=column.name,
        kind=column.kind,
        log_x=column.log,
        x_label=f"{column.name} ({', '.join(parts)})" if parts else column.name,
        categories=categories,
        points=tuple(points),
        spearman=None if categorical else _spearman([p.x for p in points], [p.y for p in points]),
        n_skipped=skipped,
    )


def _use_log(values: Sequence[float]) -> bool:
    return bool(values) and min(values) > 0 and max(values) / min(values) >= LOG_RATIO


def _category(value: object) -> str:
    return "None" if value is None else str(value)


def _pad(values: Sequence[float | None], n: int) -> tuple[float | None, ...]:
    return tuple(values) + (None,) * (n - len(values))


def _spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    if len(xs) < 3:
        return None
    rx, ry = _ranks(xs), _ranks(ys)
    if np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(values: Sequence[float]) -> np.ndarray:
    """Average ranks (ties share the mean of their positions)."""
    array = np.asarray(values, dtype=float)
    order = np.argsort(array, kind="stable")
    ranks = np.empty(len(array), dtype=float)
    sorted_values = array[order]
    i = 0
    while i < len(array):
        j = i
        while j + 1 < len(array) and sorted_values[j + 1] == sorted_values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0
        i = j + 1
    return ranks


@dataclass(frozen=True)
class RangeCurve:
    """One BatchNorm mode's learning-rate range test: smoothed training loss against rate."""

    batchnorm: str
    learning_rates: tuple[float, ...]
    losses: tuple[float | None, ...]
    suggestion: float | None
    reason: str


@dataclass(frozen=True)
class RangeTestInfo:
    """The learning-rate range test run before the search (study attr ``thaw:range_test``)."""

    curves: tuple[RangeCurve, ...]
    epochs: float
    window: tuple[float, float] | None
    """The learning-rate range the sampler searched; None: the configured one."""


def get_range_test_info(study_attrs: Mapping[str, Any]) -> RangeTestInfo | None:
    """The range test's curves, or None when the study ran none."""
    stored = study_attrs.get(RANGE_TEST)
    if not isinstance(stored, Mapping) or not isinstance(stored.get("modes"), Mapping):
        return None
    curves = []
    for mode, result in stored["modes"].items():
        if not isinstance(result, Mapping):
            continue
        rates = [as_float(v) for v in result.get("learning_rates") or ()]
        losses = [as_float(v) for v in result.get("losses") or ()]
        pairs = [(r, v) for r, v in zip(rates, losses, strict=False) if r is not None and r > 0]
        curves.append(
            RangeCurve(
                batchnorm=str(mode),
                learning_rates=tuple(r for r, _ in pairs),
                losses=tuple(v if v is not None and math.isfinite(v) else None for _, v in pairs),
                suggestion=as_float(result.get("suggestion")),
                reason=str(result.get("reason") or ""),
            )
        )
    window = stored.get("window")
    bounds = None
    if isinstance(window, (list, tuple)) and len(window) == 2:
        low, high = as_float(window[0]), as_float(window[1])
        if low is not None and high is not None:
            bounds = (low, high)
    return RangeTestInfo(
        curves=tuple(curves), epochs=as_float(stored.get("epochs")) or 0.0, window=bounds
    )
