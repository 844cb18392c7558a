"""Machine-readable outputs: the ranking as CSV and the summary as JSON."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from thaw.reports._findings import verdict_mix
from thaw.reports._info import ReportInfo
from thaw.reports._levers import finding_dict
from thaw.reports._ranking import RankingInfo, RankingRow, VerdictDetail

SUMMARY_SCHEMA = "thaw-report/2"
SCHEMA_FILE = Path(__file__).with_name("summary.schema.json")
"""The JSON Schema every ``summary.json`` validates against (shipped with the package)."""

CSV_COLUMNS = (
    "rank",
    "number",
    "state",
    # params_<name> columns go here, in ranking order
    "objective_value",
    "best_val_loss",
    "val_accuracy_at_best",
    "best_epoch",
    "final_val_loss",
    "epochs_run",
    "prune_reason",
    "prune_epoch",
    "prune_detail",
    "fail_reason",
    "duration_s",
    "strategy",
    "warmup_epochs",
    "verdicts",
    "datetime_start",
    "datetime_complete",
)
"""CSV columns; ``params_<name>`` (Optuna's ``trials_dataframe`` naming) follow ``state``."""

_TEXT_COLUMNS = frozenset({"prune_reason", "prune_detail", "fail_reason", "strategy", "verdicts"})
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def summary_schema() -> dict[str, Any]:
    """The JSON Schema of ``summary.json`` (``reports/summary.schema.json``) as a dict."""
    schema: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return schema


def csv_columns(ranking: RankingInfo) -> tuple[str, ...]:
    params = tuple(f"params_{c.name}" for c in ranking.param_columns)
    metrics = tuple(f"{m}_at_best" for m in ranking.metric_columns)
    at = CSV_COLUMNS.index("val_accuracy_at_best") + 1
    return CSV_COLUMNS[:3] + params + CSV_COLUMNS[3:at] + metrics + CSV_COLUMNS[at:]


def render_csv(ranking: RankingInfo) -> str:
    """The ranking as CSV text, one row per ranked, unscored or failed trial.

    Floats are written with full precision (``repr``); missing values are empty cells.
    Free-text cells that a spreadsheet would run as a formula get a leading ``'``.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(csv_columns(ranking))
    for row in ranking.rows:
        writer.writerow(_csv_row(row, ranking))
    return buffer.getvalue()


def write_csv(ranking: RankingInfo, path: Path) -> Path:
    """Write :func:`render_csv` to ``path`` (UTF-8, ``\\n`` line endings)."""
    path.write_text(render_csv(ranking), encoding="utf-8", newline="")
    return path


def get_summary_dict(info: ReportInfo) -> dict[str, Any]:
    """The report as typed data (schema ``thaw-report/2``, see ``docs/summary.md`` and
    ``reports/summary.schema.json``): one ``best``, every ranking row with its parameters
    and verdicts with evidence, the findings, pruning savings and the manifest."""
    ranking, answer, pruning, manifest = info.ranking, info.answer, info.pruning, info.manifest
    overall = answer.best_overall
    summary: dict[str, Any] = {
        "schema": SUMMARY_SCHEMA,
        "study_name": info.study_name,
        "direction": ranking.direction,
        "objective_metric": ranking.objective_metric,
        "metrics": list(ranking.metric_columns),
        "rank_by": ranking.rank_by,
        "counts": dict(ranking.state_counts),
        "n_trials": ranking.n_trials,
        "best": None if answer.best is None else _row_dict(answer.best),
        "better_pruned_trial": None
        if overall is None or (answer.best is not None and overall.number == answer.best.number)
        else overall.number,
        "strategies": [
            {
                "strategy": s.strategy,
                "number": s.number,
                "state": s.state,
                "rank": s.rank,
                "score": s.score,
                "best_val_loss": s.best_val_loss,
                "val_accuracy_at_best": s.val_accuracy_at_best,
                "loss_ratio": s.loss_ratio,
                "accuracy_difference": s.accuracy_difference,
            }
            for s in answer.strategies
        ],
        "pruning": {
            "configured_epochs": pruning.configured_epochs,
            "epochs_source": pruning.epochs_source,
            "n_finished": pruning.n_finished,
            "epochs_spent": pruning.epochs_spent,
            "epochs_unpruned": pruning.epochs_unpruned,
            "epochs_saved": pruning.epochs_saved,
            "fraction_saved": pruning.fraction_saved,
            "by_reason": {
                r.reason: {
                    "n_trials": r.n_trials,
                    "epochs_run": r.epochs_run,
                    "epochs_saved": r.epochs_saved,
                }
                for r in pruning.by_reason
            },
        },
        "manifest": dict(manifest.values),
        "ranking": [_row_dict(r) for r in ranking.rows],
        "findings": _findings_dict(info),
        "determinism": None
        if info.determinism is None
        else {
            "recorded": info.determinism.recorded,
            "deterministic": info.determinism.deterministic,
            "reason": info.determinism.reason,
        },
        "diagnosis": _diagnosis_summary(info),
    }
    return _json_safe(summary)


def _findings_dict(info: ReportInfo) -> dict[str, Any]:
    levers = info.levers
    diagnosis = info.diagnosis
    shift = None if diagnosis is None else diagnosis.domain_shift
    return {
        "levers": [] if levers is None else [finding_dict(f) for f in levers.findings],
        "what_matters_most": None
        if levers is None
        else {
            "param": levers.biggest,
            "sentence": levers.headline,
            "importance_top": levers.importance_top,
            "agree": levers.agree,
            "support": levers.support,
        },
        "climb": None if diagnosis is None else dict(diagnosis.climb_data) or None,
        "domain_shift": None
        if shift is None
        else {
            "measured": shift.measured,
            "overall": shift.overall,
            "level": shift.level,
            "layers": [{"layer": name, "score": score} for name, score in shift.layers],
            "sentence": shift.sentence,
        },
    }


def _diagnosis_summary(info: ReportInfo) -> dict[str, Any] | None:
    diagnosis = info.diagnosis
    if diagnosis is None:
        return None
    return {
        "sentences": list(diagnosis.sentences),
        "verdict_mix": dict(verdict_mix(info.ranking.rows)),
        "importances": {
            t.key: {"evaluator": t.evaluator or None, "values": dict(t.bars)}
            for t in diagnosis.importances.targets
        },
        "feature_extraction_vs_finetuning": diagnosis.domain_shift.feature_extraction_sentence,
        "surgical": None if diagnosis.surgical is None else diagnosis.surgical.to_dict(),
    }


def render_summary_json(info: ReportInfo) -> str:
    """:func:`get_summary_dict` as stable JSON: sorted keys, 2-space indent, no NaN."""
    text = json.dumps(
        get_summary_dict(info), sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False
    )
    return text + "\n"


def _row_dict(row: RankingRow) -> dict[str, Any]:
    """One trial as typed data: the ranking row, ``best`` and the strategies use it."""
    return {
        "rank": row.rank,
        "number": row.number,
        "state": row.state,
        "params": dict(row.params),
        "score": row.score,
        "objective_value": row.objective_value,
        "best_val_loss": row.best_val_loss,
        "val_accuracy_at_best": row.val_accuracy_at_best,
        "metrics_at_best": dict(row.metrics_at_best),
        "best_epoch": row.best_epoch,
        "final_val_loss": row.final_val_loss,
        "epochs_run": row.epochs_run,
        "duration_s": row.duration_s,
        "strategy": row.strategy,
        "warmup_epochs": row.warmup_epochs,
        "prune": None
        if row.state != "PRUNED"
        else {"reason": row.prune_reason, "epoch": row.prune_epoch, "detail": row.prune_detail},
        "fail_reason": row.fail_reason,
        "verdicts": [
            {
                "verdict": d.verdict,
                "confidence": d.confidence,
                "evidence": d.evidence,
                "recommendation": d.recommendation,
            }
            for d in (
                row.verdict_details
                or tuple(VerdictDetail(v, None, None, None) for v in row.verdicts)
            )
        ],
        "verdicts_source": row.verdicts_source,
        "datetime_start": row.datetime_start,
        "datetime_complete": row.datetime_complete,
    }


def _csv_row(row: RankingRow, ranking: RankingInfo) -> list[str]:
    values: dict[str, Any] = {
        "rank": row.rank,
        "number": row.number,
        "state": row.state,
        "objective_value": row.objective_value,
        "best_val_loss": row.best_val_loss,
        "val_accuracy_at_best": row.val_accuracy_at_best,
        "best_epoch": row.best_epoch,
        "final_val_loss": row.final_val_loss,
        "epochs_run": row.epochs_run,
        "prune_reason": row.prune_reason,
        "prune_epoch": row.prune_epoch,
        "prune_detail": row.prune_detail,
        "fail_reason": row.fail_reason,
        "duration_s": row.duration_s,
        "strategy": row.strategy,
        "warmup_epochs": row.warmup_epochs,
        "verdicts": ", ".join(row.verdicts) or None,
        "datetime_start": row.datetime_start,
        "datetime_complete": row.datetime_complete,
    }
    for column in ranking.param_columns:
        values[f"params_{column.name}"] = row.params.get(column.name)
    for metric in ranking.metric_columns:
        values[f"{metric}_at_best"] = row.metrics_at_best.get(metric)
    return [_csv_cell(name, values[name]) for name in csv_columns(ranking)]


def _csv_cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    text = str(value)
    if column in _TEXT_COLUMNS and text.startswith(_FORMULA_START):
        return "'" + text
    return text


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)
