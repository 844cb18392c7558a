"""The trial table as plain records: one dict per finished trial, in rank order.

The same columns as ``trials.csv`` (:data:`reports._export.CSV_COLUMNS`, ``params_<name>`` after
``state``), with typed values instead of text: ``None`` where nothing was recorded. The
``verdicts`` column is a comma-separated string, as in the CSV.
"""

from __future__ import annotations

from typing import Any

import optuna

from thaw.reports._export import CSV_COLUMNS, csv_columns
from thaw.reports._ranking import RankingInfo, get_ranking_info


def get_trial_records(study: optuna.Study | RankingInfo) -> tuple[list[str], list[dict[str, Any]]]:
    """Column names and one record per trial of the ranking (ranked, unscored, failed)."""
    ranking = study if isinstance(study, RankingInfo) else get_ranking_info(study)
    columns = list(csv_columns(ranking))
    records = []
    for row in ranking.rows:
        record: dict[str, Any] = {
            name: getattr(row, name) for name in CSV_COLUMNS if name != "verdicts"
        }
        record["verdicts"] = ", ".join(row.verdicts) or None
        for column in ranking.param_columns:
            record[f"params_{column.name}"] = row.params.get(column.name)
        for metric in ranking.metric_columns:
            record[f"{metric}_at_best"] = row.metrics_at_best.get(metric)
        records.append({name: record[name] for name in columns})
    return columns, records
