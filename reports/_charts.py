"""Data behind the report's charts. Rendering lives in ``reports._svg``."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import optuna

from reports._attrs import history_series, intermediate_series
from reports._ranking import ParamColumn, RankingInfo, RankingRow, get_ranking_info

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
    role: Literal["top", "strategy"]
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


def get_curves_info(
    study: optuna.Study, ranking: RankingInfo | None = None, top_n: int = 5
) -> CurvesInfo:
    """Validation and training loss per epoch for the ``top_n`` ranked trials and every
    strategy trial. Falls back to intermediate values when the objective is ``val_loss``
    and a trial has no ``history``.
    """
    ranking = ranking if ranking is not None else get_ranking_info(study)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    chosen: list[tuple[RankingRow, Literal["top", "strategy"]]] = [
        (row, "top") for row in ranking.ranked[:top_n]
    ]
    taken = {row.number for row, _ in chosen}
    chosen += [
        (row, "strategy")
        for row in ranking.rows
        if row.strategy is not None and row.number not in taken and row.state != "FAIL"
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
