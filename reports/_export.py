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
from thaw.reports._ranking import RankingInfo, RankingRow

SUMMARY_SCHEMA = "thaw-report/1"

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


def csv_columns(ranking: RankingInfo) -> tuple[str, ...]:
    params = tuple(f"params_{c.name}" for c in ranking.param_columns)
    return CSV_COLUMNS[:3] + params + CSV_COLUMNS[3:]


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
    """The answer, counts, pruning savings and manifest as a JSON-able dict."""
    ranking, answer, pruning, manifest = info.ranking, info.answer, info.pruning, info.manifest
    summary: dict[str, Any] = {
        "schema": SUMMARY_SCHEMA,
        "study_name": info.study_name,
        "direction": ranking.direction,
        "objective_metric": ranking.objective_metric,
        "rank_by": ranking.rank_by,
        "counts": dict(ranking.state_counts),
        "n_trials": ranking.n_trials,
        "best": _trial_summary(answer.best),
        "best_overall": _trial_summary(answer.best_overall),
        "best_searched": _trial_summary(answer.best_searched),
        "strategies": [
            {
                "strategy": s.strategy,
                "number": s.number,
                "state": s.state,
                "rank": s.rank,
                "score": s.score,
                "best_val_loss": s.best_val_loss,
                "val_accuracy_at_best": s.val_accuracy_at_best,
                "search_advantage": s.search_advantage,
            }
            for s in answer.strategies
        ],
        "pruned_by_reason": dict(answer.prune_counts),
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
        "manifest": {
            "config_hash": manifest.config_hash,
            "data_fingerprint": manifest.data_fingerprint,
            "seed": manifest.seed,
            "storage_url": manifest.storage_url,
            "entries": dict(manifest.entries),
        },
        "ranking": [
            {
                "rank": r.rank,
                "number": r.number,
                "state": r.state,
                "score": r.score,
                "verdicts": list(r.verdicts),
                "verdicts_source": r.verdicts_source,
            }
            for r in ranking.rows
        ],
        "determinism": None
        if info.determinism is None
        else {
            "recorded": info.determinism.recorded,
            "deterministic": info.determinism.deterministic,
            "reason": info.determinism.reason,
            "sentence": info.determinism.sentence,
        },
        "diagnosis": _diagnosis_summary(info),
    }
    return _json_safe(summary)


def _diagnosis_summary(info: ReportInfo) -> dict[str, Any] | None:
    diagnosis = info.diagnosis
    if diagnosis is None:
        return None
    shift = diagnosis.domain_shift
    return {
        "sentences": list(diagnosis.sentences),
        "climb_findings": list(diagnosis.climb_findings),
        "verdict_mix": dict(verdict_mix(info.ranking.rows)),
        "importances": {
            t.key: {"evaluator": t.evaluator, "values": dict(t.bars)}
            for t in diagnosis.importances.targets
        },
        "domain_shift": {
            "measured": shift.measured,
            "overall": shift.overall,
            "level": shift.level,
            "layers": dict(shift.layers),
            "sentence": shift.sentence,
            "feature_extraction_vs_finetuning": shift.feature_extraction_sentence,
        },
    }


def render_summary_json(info: ReportInfo) -> str:
    """:func:`get_summary_dict` as stable JSON: sorted keys, 2-space indent, no NaN."""
    text = json.dumps(
        get_summary_dict(info), sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False
    )
    return text + "\n"


def _trial_summary(row: RankingRow | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "number": row.number,
        "state": row.state,
        "rank": row.rank,
        "params": dict(row.params),
        "score": row.score,
        "objective_value": row.objective_value,
        "best_val_loss": row.best_val_loss,
        "val_accuracy_at_best": row.val_accuracy_at_best,
        "best_epoch": row.best_epoch,
        "final_val_loss": row.final_val_loss,
        "epochs_run": row.epochs_run,
        "strategy": row.strategy,
        "prune_reason": row.prune_reason,
        "prune_epoch": row.prune_epoch,
        "verdicts": list(row.verdicts),
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
