"""Rank every trial of a study by the best validation loss it reached."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from thaw._keys import OBJECTIVE_METRIC, UNFROZEN_BLOCK
from thaw.reports._attrs import (
    argbest,
    as_float,
    as_int,
    as_str,
    history_length,
    history_series,
    intermediate_series,
    verdict_details,
    verdict_names,
)

_logger = logging.getLogger(__name__)

ParamValue = str | int | float | bool | None
ParamKind = Literal["int", "float", "categorical"]

KNOWN_PARAMS = ("unfrozen_layers", "learning_rate", "dropout", "weight_decay")
"""Search-space parameters in the order thaw shows them; any others follow alphabetically."""

LOG_PARAMS = frozenset({"learning_rate", "weight_decay"})
"""Parameters always drawn on a log axis, whatever their stored distribution says."""

RANKED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class ParamColumn:
    """One search-space parameter as it appears in the ranking."""

    name: str
    kind: ParamKind
    log: bool


@dataclass(frozen=True)
class VerdictDetail:
    """One verdict on a trial: what is wrong (or ``healthy``), how sure, why, what to try."""

    verdict: str
    confidence: float | None
    evidence: str | None
    recommendation: str | None


VerdictSource = Literal["stored", "computed", "none"]


@dataclass(frozen=True)
class RankingRow:
    """One trial of the ranking. ``None`` means "not recorded"."""

    rank: int | None
    """1-based rank; ``None`` for failed trials and trials that recorded no metric."""
    number: int
    state: str
    """``COMPLETE``, ``PRUNED`` or ``FAIL``."""
    params: Mapping[str, ParamValue]
    score: float | None
    """The value the ranking sorts by (best val loss, or objective value when maximizing)."""
    objective_value: float | None
    best_val_loss: float | None
    val_accuracy_at_best: float | None
    best_epoch: int | None
    final_val_loss: float | None
    epochs_run: int | None
    prune_reason: str | None
    prune_epoch: int | None
    prune_detail: str | None
    fail_reason: str | None
    duration_s: float | None
    strategy: str | None
    warmup_epochs: int | None
    verdicts: tuple[str, ...]
    datetime_start: str | None
    datetime_complete: str | None
    verdict_details: tuple[VerdictDetail, ...] = ()
    """Full verdicts (same order as ``verdicts``)."""
    metrics_at_best: Mapping[str, float | None] = field(default_factory=dict)
    """The extra validation metrics logged (``val_auc``, ``val_f1``) at the best epoch."""
    verdicts_source: VerdictSource = "none"
    """``stored``: the trial's ``verdicts`` user attr; ``computed``: ``diagnose_study``."""
    block_start: int | None = None
    """The lowest layer the trial unfroze, as trained (``thaw:unfrozen_block``): a
    ``block_start`` too high for its ``unfrozen_layers`` is lowered to the top block, so
    ``block_start`` 5 and 8 of 8 layers with 3 unfrozen both train layers 5 to 7. ``None``
    when not recorded (``block_start`` not searched)."""

    @property
    def label(self) -> str:
        """Short name for legends: ``#7`` or ``#0 full fine-tuning``."""
        return f"#{self.number}" if self.strategy is None else f"#{self.number} {self.strategy}"


@dataclass(frozen=True)
class RankingInfo:
    """Every finished trial in rank order: ranked trials, then unscored ones, then failures."""

    study_name: str
    direction: Literal["minimize", "maximize"]
    objective_metric: str
    rank_by: Literal["best_val_loss", "objective_value"]
    param_columns: tuple[ParamColumn, ...]
    rows: tuple[RankingRow, ...]
    state_counts: Mapping[str, int]
    """Trials per state name, over all trials in the study (RUNNING and WAITING included)."""
    metric_columns: tuple[str, ...] = ()
    """Extra validation metrics some trial logged (``val_auc``, ``val_f1``), in that order."""

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    @property
    def ranked(self) -> tuple[RankingRow, ...]:
        """Rows that have a rank, best first."""
        return tuple(row for row in self.rows if row.rank is not None)

    @property
    def best_complete(self) -> RankingRow | None:
        """The best COMPLETE trial (the answer of the study), or ``None``."""
        return next((row for row in self.ranked if row.state == "COMPLETE"), None)

    @property
    def n_trials(self) -> int:
        return sum(self.state_counts.values())

    def count(self, state: str) -> int:
        return self.state_counts.get(state, 0)

    @property
    def extra_metric_columns(self) -> tuple[str, ...]:
        """The logged metrics a table shows beside the score: :attr:`metric_columns` less the
        objective when the score column already shows it (``objective: val_auc``)."""
        return tuple(
            m for m in self.metric_columns if not (self.maximize and m == self.objective_metric)
        )


def get_ranking_info(study: optuna.Study) -> RankingInfo:
    """Rank the COMPLETE and PRUNED trials of ``study``, failed trials last.

    Minimized studies are ranked by the best validation loss a trial reached (user attr
    ``best_val_loss``; else the minimum of ``history["val_loss"]``; else the minimum
    intermediate value when the objective is ``val_loss``). Maximized studies are ranked by
    the objective value, descending. Ties are broken by trial number. RUNNING and WAITING
    trials are not ranked (they are counted in ``state_counts``).
    """
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    direction = _direction(study)
    maximize = direction == "maximize"
    metric = _objective_metric(study.user_attrs, maximize)
    columns = _param_columns(trials)

    scored: list[RankingRow] = []
    unscored: list[RankingRow] = []
    failed: list[RankingRow] = []
    for trial in trials:
        if trial.state in RANKED_STATES:
            row = _row(trial, metric, maximize, columns)
            (scored if row.score is not None else unscored).append(row)
        elif trial.state == TrialState.FAIL:
            failed.append(_row(trial, metric, maximize, columns))

    def sort_key(row: RankingRow) -> tuple[float, int]:
        assert row.score is not None
        return (-row.score if maximize else row.score, row.number)

    scored.sort(key=sort_key)
    ranked = [_with_rank(row, i + 1) for i, row in enumerate(scored)]
    counts = Counter(t.state.name for t in trials)
    if unscored:
        _logger.info("%d trial(s) recorded no metric and are listed unranked", len(unscored))
    return RankingInfo(
        study_name=study.study_name,
        direction=direction,
        objective_metric=metric,
        rank_by="objective_value" if maximize else "best_val_loss",
        param_columns=columns,
        rows=tuple(ranked + unscored + failed),
        state_counts=dict(sorted(counts.items())),
        metric_columns=tuple(
            m for m in EXTRA_VAL_METRICS if any(m in r.metrics_at_best for r in ranked + unscored)
        ),
    )


#: Extra validation metrics a trial may log (``metrics: [auc, f1]``), reported at its best epoch.
EXTRA_VAL_METRICS: tuple[str, ...] = ("val_auc", "val_f1")

_METRIC_LABELS = {"val_auc": "val AUC", "val_f1": "val F1"}


def metric_label(metric: str) -> str:
    """A logged metric's name in a table header or a sentence (``val_auc`` -> ``val AUC``)."""
    return _METRIC_LABELS.get(metric, metric.replace("_", " "))


def _direction(study: optuna.Study) -> Literal["minimize", "maximize"]:
    directions = study.directions
    if len(directions) > 1:
        _logger.warning(
            "Study %r has %d objectives; the report uses the first one",
            study.study_name,
            len(directions),
        )
    return "maximize" if directions[0] == StudyDirection.MAXIMIZE else "minimize"


def _objective_metric(study_attrs: Mapping[str, Any], maximize: bool) -> str:
    metric = as_str(study_attrs.get(OBJECTIVE_METRIC))
    if metric is not None:
        return metric
    return "val_accuracy" if maximize else "val_loss"


def _param_columns(trials: Sequence[FrozenTrial]) -> tuple[ParamColumn, ...]:
    found: dict[str, ParamColumn] = {}
    for trial in trials:
        for name, dist in trial.distributions.items():
            if name not in found:
                found[name] = _column(name, dist)
        for name, value in trial.params.items():
            if name not in found:
                kind: ParamKind = "categorical"
                if isinstance(value, int) and not isinstance(value, bool):
                    kind = "int"
                elif isinstance(value, float):
                    kind = "float"
                found[name] = ParamColumn(name, kind, name in LOG_PARAMS)
    known = [found[name] for name in KNOWN_PARAMS if name in found]
    others = [found[name] for name in sorted(found) if name not in KNOWN_PARAMS]
    return tuple(known + others)


def _column(name: str, dist: BaseDistribution) -> ParamColumn:
    if isinstance(dist, IntDistribution):
        return ParamColumn(name, "int", dist.log or name in LOG_PARAMS)
    if isinstance(dist, FloatDistribution):
        return ParamColumn(name, "float", dist.log or name in LOG_PARAMS)
    if isinstance(dist, CategoricalDistribution):
        return ParamColumn(name, "categorical", False)
    return ParamColumn(name, "float", name in LOG_PARAMS)


def _with_rank(row: RankingRow, rank: int) -> RankingRow:
    return replace(row, rank=rank)


def _row(
    trial: FrozenTrial, metric: str, maximize: bool, columns: Sequence[ParamColumn]
) -> RankingRow:
    attrs = trial.user_attrs
    val_loss = history_series(trial, "val_loss")
    val_acc = history_series(trial, "val_accuracy")
    objective_history = history_series(trial, metric)
    intermediates = intermediate_series(trial)
    inter_values = [v for _, v in intermediates]
    objective_is_loss = metric == "val_loss"

    best_val_loss = as_float(attrs.get("best_val_loss"))
    if best_val_loss is None:
        best_val_loss = _best(val_loss, maximize=False)
    if best_val_loss is None and objective_is_loss:
        best_val_loss = _best(inter_values, maximize=False)

    best_epoch = as_int(attrs.get("best_epoch"))
    if best_epoch is None:
        index = argbest(objective_history, maximize)
        if index is not None:
            best_epoch = index + 1
        else:
            index = argbest(inter_values, maximize)
            if index is not None:
                best_epoch = intermediates[index][0]

    val_accuracy_at_best = as_float(attrs.get("val_accuracy_at_best"))
    if val_accuracy_at_best is None and best_epoch is not None and 0 < best_epoch <= len(val_acc):
        val_accuracy_at_best = val_acc[best_epoch - 1]

    if "final_val_loss" in attrs:
        final_val_loss = as_float(attrs.get("final_val_loss"))
    elif val_loss:
        final_val_loss = val_loss[-1]
    elif objective_is_loss and intermediates:
        final_val_loss = intermediates[-1][1]
    else:
        final_val_loss = None

    epochs_run = as_int(attrs.get("epochs_run"))
    if epochs_run is None:
        epochs_run = history_length(trial) or (intermediates[-1][0] if intermediates else None)

    objective_value: float | None = None
    if trial.state == TrialState.COMPLETE and trial.values:
        objective_value = as_float(trial.values[0])
    if objective_value is None:
        objective_value = _best(inter_values, maximize)
    if objective_value is None:
        objective_value = _best(objective_history, maximize)

    duration_s: float | None = None
    if trial.datetime_start is not None and trial.datetime_complete is not None:
        duration_s = (trial.datetime_complete - trial.datetime_start).total_seconds()

    params: dict[str, ParamValue] = {}
    for column in columns:
        if column.name in trial.params:
            params[column.name] = trial.params[column.name]

    metrics_at_best: dict[str, float | None] = {}
    for extra in EXTRA_VAL_METRICS:
        series = history_series(trial, extra)
        if series:
            metrics_at_best[extra] = (
                series[best_epoch - 1]
                if best_epoch is not None and 0 < best_epoch <= len(series)
                else None
            )
    state = trial.state.name
    return RankingRow(
        metrics_at_best=metrics_at_best,
        rank=None,
        number=trial.number,
        state=state,
        params=params,
        score=objective_value if maximize else best_val_loss,
        objective_value=objective_value,
        best_val_loss=best_val_loss,
        val_accuracy_at_best=val_accuracy_at_best,
        best_epoch=best_epoch,
        final_val_loss=final_val_loss,
        epochs_run=epochs_run,
        prune_reason=as_str(attrs.get("prune_reason")) if state == "PRUNED" else None,
        prune_epoch=_prune_epoch(attrs.get("prune_epoch"), epochs_run)
        if state == "PRUNED"
        else None,
        prune_detail=as_str(attrs.get("prune_detail")) if state == "PRUNED" else None,
        fail_reason=as_str(attrs.get("fail_reason")),
        duration_s=duration_s,
        strategy=as_str(attrs.get("strategy")),
        warmup_epochs=as_int(attrs.get("warmup_epochs")),
        verdicts=verdict_names(attrs.get("verdicts")),
        verdict_details=tuple(
            VerdictDetail(*detail) for detail in verdict_details(attrs.get("verdicts"))
        ),
        verdicts_source="stored" if "verdicts" in attrs else "none",
        block_start=_block_start(attrs.get(UNFROZEN_BLOCK)),
        datetime_start=_iso(trial.datetime_start),
        datetime_complete=_iso(trial.datetime_complete),
    )


def _block_start(value: Any) -> int | None:
    """The ``start`` of a stored ``thaw:unfrozen_block`` (None when absent or malformed)."""
    return as_int(value.get("start")) if isinstance(value, Mapping) else None


def _prune_epoch(value: Any, epochs_run: int | None) -> int | None:
    recorded = as_int(value)
    return recorded if recorded is not None else epochs_run


def _best(values: Sequence[float | None], maximize: bool) -> float | None:
    index = argbest(values, maximize)
    return None if index is None else values[index]


def _iso(value: Any) -> str | None:
    return None if value is None else str(value.isoformat())
