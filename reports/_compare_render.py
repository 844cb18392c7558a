"""Render a :class:`~reports._compare.ComparisonInfo` as compare.md, compare.html and
compare.csv, and write them with :func:`write_comparison`."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from thaw.reports._blocks import (
    Block,
    Bullets,
    Figure,
    Heading,
    Para,
    Section,
    Table,
    html_page,
    md_page,
)
from thaw.reports._compare import ComparisonInfo, StudyColumn, get_comparison_info
from thaw.reports._format import MISSING, Align, fmt_num, fmt_value
from thaw.reports._report import prepare_out_dir, write_text
from thaw.reports._svg import render_efficiency_svg

_logger = logging.getLogger(__name__)

COMPARE_MARKDOWN = "compare.md"
COMPARE_HTML = "compare.html"
COMPARE_CSV = "compare.csv"


@dataclass(frozen=True)
class ComparisonFiles:
    """Paths of the files :func:`write_comparison` wrote."""

    out_dir: Path
    markdown: Path
    html: Path
    csv: Path


def write_comparison(
    studies: Sequence[optuna.Study],
    out_dir: Path | str,
    storage_urls_masked: Sequence[str | None] | None = None,
) -> ComparisonFiles:
    """Compare ``studies`` (same objective) and write compare.md, compare.html, compare.csv.

    The output is byte-identical for the same studies in the same order.

    Raises:
        ValueError: fewer than two studies, different objectives, or ``out_dir`` is a file.
    """
    info = get_comparison_info(studies, storage_urls_masked)
    out = prepare_out_dir(out_dir)
    files = ComparisonFiles(
        out_dir=out,
        markdown=out / COMPARE_MARKDOWN,
        html=out / COMPARE_HTML,
        csv=out / COMPARE_CSV,
    )
    write_text(files.markdown, render_comparison_markdown(info))
    write_text(files.html, render_comparison_html(info))
    write_text(files.csv, render_comparison_csv(info))
    _logger.info("Wrote comparison of %d studies to %s", len(info.studies), out)
    return files


def render_comparison_markdown(info: ComparisonInfo) -> str:
    return md_page(_title(info), _subtitle(info), _sections(info))


def render_comparison_html(info: ComparisonInfo) -> str:
    """One self-contained page: inline CSS and SVG, no scripts, no external requests."""
    return html_page(_title(info), _subtitle(info), _sections(info))


# ---------------------------------------------------------------------------------------
# CSV


def comparison_csv_columns(info: ComparisonInfo) -> tuple[str, ...]:
    return (
        "study",
        "label",
        "direction",
        "objective_metric",
        "n_trials",
        "n_complete",
        "n_pruned",
        "n_failed",
        "best_trial",
        "best_score",
        "best_val_loss",
        "val_accuracy_at_best",
        "epochs_to_best",
        "epochs_spent_all",
        "common_budget",
        "best_at_common_budget",
        "epochs_spent_finished",
        "epochs_unpruned",
        "epochs_saved",
        "fraction_saved",
        *(f"verdict_{v}" for v in info.verdicts),
        "verdicts_computed",
        *(f"params_{c.name}" for c in info.param_columns),
        "seed",
        "sampler",
        "pruner",
        "model",
        "dataset_fingerprint",
        "config_hash",
        "deterministic",
        "storage",
    )


def render_comparison_csv(info: ComparisonInfo) -> str:
    """One row per study; floats in full precision, missing values empty."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = comparison_csv_columns(info)
    writer.writerow(columns)
    for i, study in enumerate(info.studies):
        values = _csv_values(info, i, study)
        writer.writerow([_cell(values.get(name)) for name in columns])
    return buffer.getvalue()


def _csv_values(info: ComparisonInfo, i: int, study: StudyColumn) -> dict[str, Any]:
    answer, pruning, best = study.answer, study.pruning, study.best
    mix = dict(study.verdict_mix)
    values: dict[str, Any] = {
        "study": study.study_name,
        "label": study.label,
        "direction": info.direction,
        "objective_metric": info.objective_metric,
        "n_trials": answer.n_trials,
        "n_complete": answer.n_complete,
        "n_pruned": answer.n_pruned,
        "n_failed": answer.n_failed,
        "best_trial": None if best is None else best.number,
        "best_score": None if best is None else best.score,
        "best_val_loss": None if best is None else best.best_val_loss,
        "val_accuracy_at_best": None if best is None else best.val_accuracy_at_best,
        "epochs_to_best": study.efficiency.epochs_to_best,
        "epochs_spent_all": study.efficiency.total_epochs,
        "common_budget": info.common_budget,
        "best_at_common_budget": info.best_at_budget[i],
        "epochs_spent_finished": pruning.epochs_spent,
        "epochs_unpruned": pruning.epochs_unpruned,
        "epochs_saved": pruning.epochs_saved,
        "fraction_saved": pruning.fraction_saved,
        "verdicts_computed": study.verdicts_computed,
        "seed": study.manifest.seed,
        "sampler": _json_text(study.settings.get("sampler")),
        "pruner": _json_text(study.settings.get("pruner")),
        "model": _json_text(study.settings.get("model")),
        "dataset_fingerprint": study.manifest.data_fingerprint,
        "config_hash": study.manifest.config_hash,
        "deterministic": study.settings.get("deterministic"),
        "storage": study.manifest.storage_url,
    }
    for verdict in info.verdicts:
        values[f"verdict_{verdict}"] = mix.get(verdict, 0)
    for column in info.param_columns:
        values[f"params_{column.name}"] = None if best is None else best.params.get(column.name)
    return values


def _json_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(", ", ": "), default=str)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    text = str(value)
    return "'" + text if text.startswith(("=", "+", "-", "@", "\t", "\r")) else text


# ---------------------------------------------------------------------------------------
# Sections


def _title(info: ComparisonInfo) -> str:
    return "thaw comparison: " + " vs ".join(s.label for s in info.studies)


def _subtitle(info: ComparisonInfo) -> str:
    return (
        f"{len(info.studies)} studies, objective: {info.direction} {info.objective_metric}. "
        "Trials are taken in trial-number order; epochs are summed over all finished trials."
    )


def _sections(info: ComparisonInfo) -> list[Section]:
    return [
        Section("answer", "Answer", _answer_blocks(info)),
        Section("efficiency", "Search efficiency", _efficiency_blocks(info)),
        Section("best", "Best configurations", _best_blocks(info)),
        Section("verdicts", "Verdict mix", _verdict_blocks(info)),
        Section("pruning", "Pruning savings", _pruning_blocks(info)),
        Section("params", "Parameters", _param_blocks(info)),
        Section("differences", "What differs between the studies", _difference_blocks(info)),
    ]


def _answer_blocks(info: ComparisonInfo) -> tuple[Block, ...]:
    blocks: list[Block] = []
    if info.winner is None:
        blocks.append(
            Para("No study has a scored trial yet, so there is no best study.", lead=True)
        )
    else:
        study = info.studies[info.winner]
        row = study.answer.best_overall
        assert row is not None
        state = "" if row.state == "COMPLETE" else f", {row.state.lower()}"
        blocks.append(
            Para(
                f"Best: {study.label}, trial {row.number}{state} ({info.score_label} "
                f"{fmt_num(row.score)}), reached after {study.efficiency.epochs_to_best} of "
                f"{study.efficiency.total_epochs} epochs spent.",
                lead=True,
                id="comparison-best",
            )
        )
    others = []
    for i, study in enumerate(info.studies):
        if i == info.winner:
            continue
        row = study.answer.best_overall
        if row is None:
            others.append(f"{study.label}: no scored trial.")
        else:
            others.append(
                f"{study.label}: trial {row.number}, {info.score_label} {fmt_num(row.score)} "
                f"after {study.efficiency.epochs_to_best} of "
                f"{study.efficiency.total_epochs} epochs."
            )
    if others:
        blocks.append(Bullets(tuple(others)))
    if info.common_budget is not None:
        at = ", ".join(
            f"{s.label} {fmt_num(v)}"
            for s, v in zip(info.studies, info.best_at_budget, strict=True)
        )
        blocks.append(
            Para(
                f"At an equal budget of {info.common_budget} epochs (what the cheapest study "
                f"spent), {info.score_label}: {at}."
            )
        )
    differs = [g for g in info.differing_groups() if g != "storage"]
    if differs:
        text = "The studies differ in: " + ", ".join(differs) + "."
    else:
        text = "No recorded setting differs between the studies (apart from where they are stored)."
    blocks.append(Para(text, id="differences-summary", cls="summary"))
    return tuple(blocks)


def _efficiency_blocks(info: ComparisonInfo) -> tuple[Block, ...]:
    svg = render_efficiency_svg(info.efficiency)
    caption = (
        f"{info.efficiency.y_label.capitalize()} against {info.efficiency.x_label}. A steeper, "
        "earlier drop means a more efficient search."
    )
    rows = []
    for i, study in enumerate(info.studies):
        curve = study.efficiency
        rows.append(
            (
                study.label,
                fmt_num(curve.best),
                fmt_num(curve.epochs_to_best),
                str(curve.total_epochs),
                fmt_num(info.best_at_budget[i]),
            )
        )
    budget = MISSING if info.common_budget is None else str(info.common_budget)
    return (
        Figure(svg, caption, id="efficiency-chart"),
        Table(
            (
                "study",
                info.score_label,
                "epochs to best",
                "epochs spent",
                f"best after {budget} epochs",
            ),
            ("left", "right", "right", "right", "right"),
            tuple(rows),
            id="efficiency-table",
        ),
    )


def _best_blocks(info: ComparisonInfo) -> tuple[Block, ...]:
    headers = ["study", "trial", "state", info.score_label]
    aligns: list[Align] = ["left", "right", "left", "right"]
    if info.maximize:
        headers.append("best val loss")
        aligns.append("right")
    headers += ["val acc", "best ep", "verdicts"]
    aligns += ["right", "right", "left"]
    for column in info.param_columns:
        headers.append(column.name)
        aligns.append("left" if column.kind == "categorical" else "right")
    rows = []
    for study in info.studies:
        best = study.best
        if best is None:
            cells = [study.label, MISSING, "no completed trial", MISSING]
            if info.maximize:
                cells.append(MISSING)
            cells += [MISSING, MISSING, MISSING]
            cells += [MISSING] * len(info.param_columns)
        else:
            cells = [study.label, str(best.number), best.state.lower(), fmt_num(best.score)]
            if info.maximize:
                cells.append(fmt_num(best.best_val_loss))
            cells += [
                fmt_num(best.val_accuracy_at_best),
                fmt_num(best.best_epoch),
                ", ".join(best.verdicts) or MISSING,
            ]
            cells += [fmt_value(best.params.get(c.name)) for c in info.param_columns]
        rows.append(tuple(cells))
    return (
        Para("The best completed trial of each study."),
        Table(tuple(headers), tuple(aligns), tuple(rows), id="best-table"),
    )


def _verdict_blocks(info: ComparisonInfo) -> tuple[Block, ...]:
    blocks: list[Block] = []
    if not info.verdicts:
        blocks.append(Para("No trial of any study has a verdict yet."))
    else:
        rows = []
        for verdict in info.verdicts:
            cells = [verdict]
            for study in info.studies:
                n = dict(study.verdict_mix).get(verdict, 0)
                ranked = len(study.ranking.rows)
                cells.append(f"{n} ({_pct(n, ranked)})" if ranked else "0")
            rows.append(tuple(cells))
        blocks.append(
            Para(
                "Trials per verdict (share of each study's finished trials). A trial can have "
                "several verdicts. Trials that stored no verdicts were diagnosed by thaw: "
                + ", ".join(f"{s.label} {s.verdicts_computed}" for s in info.studies)
                + "."
            )
        )
        blocks.append(
            Table(
                ("verdict", *(s.label for s in info.studies)),
                _aligns("left", "right", len(info.studies)),
                tuple(rows),
                id="verdict-table",
            )
        )
    blocks.append(Heading("Diagnosis of each study"))
    blocks.append(
        Bullets(tuple(f"{s.label}: {' '.join(s.diagnosis_sentences)}" for s in info.studies))
    )
    return tuple(blocks)


def _pruning_blocks(info: ComparisonInfo) -> tuple[Block, ...]:
    rows = []
    for study in info.studies:
        p = study.pruning
        rows.append(
            (
                study.label,
                str(p.n_finished),
                str(study.answer.n_pruned),
                str(p.epochs_spent),
                fmt_num(p.epochs_unpruned),
                fmt_num(p.epochs_saved),
                MISSING if p.fraction_saved is None else f"{100 * p.fraction_saved:.0f}%",
            )
        )
    return (
        Para(
            "Epochs the finished (complete and pruned) trials ran, against what they would have "
            "run without pruning (each for the configured number of epochs)."
        ),
        Table(
            (
                "study",
                "finished trials",
                "pruned",
                "epochs spent",
                "without pruning",
                "saved",
                "saved %",
            ),
            ("left", "right", "right", "right", "right", "right", "right"),
            tuple(rows),
            id="pruning-table",
        ),
    )


def _param_blocks(info: ComparisonInfo) -> tuple[Block, ...]:
    if not info.params:
        return (Para("No study has recorded parameters yet."),)
    rows: list[tuple[str, ...]] = []
    bars: dict[tuple[int, int], tuple[float, bool]] = {}
    for param in info.params:
        for study, cell in zip(info.studies, param.cells, strict=True):
            r = len(rows)
            rows.append(
                (
                    param.param,
                    study.label,
                    cell.best,
                    cell.top,
                    cell.tried,
                    _share(cell.importance_loss),
                    _share(cell.importance_climb),
                )
            )
            if cell.importance_loss is not None:
                bars[(r, 5)] = (cell.importance_loss, False)
            if cell.importance_climb is not None:
                bars[(r, 6)] = (cell.importance_climb, True)
    return (
        Para(
            "Per parameter and study: the value of the best configuration, the range of the top "
            "5 ranked trials, the range tried, and the importance for best validation loss and "
            "for climb (final minus best validation loss) from thaw's diagnosis."
        ),
        Table(
            (
                "parameter",
                "study",
                "best",
                "top 5",
                "tried",
                "importance for best loss",
                "importance for climb",
            ),
            ("left", "left", "right", "left", "left", "left", "left"),
            tuple(rows),
            bars=bars,
            id="param-table",
        ),
    )


def _difference_blocks(info: ComparisonInfo) -> tuple[Block, ...]:
    differ = info.differences
    same = [s for s in info.settings if not s.differs]
    blocks: list[Block] = []
    if differ:
        blocks.append(
            Table(
                ("setting", *(s.label for s in info.studies)),
                _aligns("left", "left", len(info.studies)),
                tuple((s.item, *s.values) for s in differ),
                text_columns=frozenset(range(1, len(info.studies) + 1)),
                id="differences-table",
            )
        )
    else:
        blocks.append(Para("Every recorded setting is the same."))
    if same:
        blocks.append(Heading("Same in every study"))
        blocks.append(
            Table(
                ("setting", "value"),
                ("left", "left"),
                tuple((s.item, s.values[0]) for s in same),
                text_columns=frozenset({1}),
                id="same-table",
            )
        )
    return tuple(blocks)


def _aligns(first: Align, rest: Align, n: int) -> tuple[Align, ...]:
    return (first,) + (rest,) * n


def _share(value: float | None) -> str:
    return MISSING if value is None else f"{100 * value:.0f}%"


def _pct(n: int, total: int) -> str:
    return f"{100 * n / total:.0f}%"
