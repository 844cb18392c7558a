"""Render a :class:`~reports.ReportInfo` as Markdown or as one self-contained HTML page.

Both renderers walk the same list of sections built by :func:`_sections`, so the two files
always say the same thing. Every piece of text that comes from storage is escaped here:
``md_escape`` for Markdown, ``html.escape`` for HTML (SVG text is escaped in ``_svg``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from reports._charts import CurveSeries, CurvesInfo, ParamScatter
from reports._format import (
    MISSING,
    Align,
    fmt_num,
    fmt_seconds,
    fmt_value,
    html_escape,
    md_escape,
    md_table,
    md_table_code,
    one_line,
    truncate,
)
from reports._info import ReportInfo
from reports._ranking import RankingInfo, RankingRow
from reports._summary import NOT_RECORDED, AnswerInfo, StrategyComparison
from reports._svg import render_curves_svg, render_scatter_svg

Target = Literal["both", "md", "html"]

MD_REASON_WIDTH = 48
"""Failure reasons are cut to this many characters in Markdown (full text in HTML/CSV)."""
SPARK_CHARS = "▁▂▃▄▅▆▇█"
SPARK_MISSING = "·"
SPARK_WIDTH = 40

_CSS = """
body{font-family:Helvetica,Arial,sans-serif;color:#1a1a1a;background:#fff;max-width:1200px;
margin:2em auto;padding:0 1em;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #1a1a1a;padding-bottom:.15em;
margin-top:1.8em}
.meta{color:#444;margin-top:0}.lead{font-size:1.15em;font-weight:bold}
table{border-collapse:collapse;font-size:13px;margin:.6em 0}
th,td{border-bottom:1px solid #d0d0d0;padding:3px 8px;text-align:left;vertical-align:top}
th{border-bottom:2px solid #1a1a1a;white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.text{max-width:28em;overflow-wrap:anywhere}
tr.state-pruned td{color:#4d4d4d}tr.state-fail td{color:#8f2a00}
tr.rank-1 td{font-weight:bold}
.table-wrap{overflow-x:auto}
.charts{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:.5em 0}figcaption{font-size:13px;color:#333;max-width:780px}
svg.chart{max-width:100%;height:auto}
.diagnosis-body{border-left:4px solid #0072B2;padding-left:1em}
pre{white-space:pre-wrap}
@media print{body{max-width:none;margin:0;font-size:11pt}.table-wrap{overflow:visible}
figure,table{break-inside:avoid}h2{break-after:avoid}}
""".strip()


@dataclass(frozen=True)
class _Para:
    text: str
    lead: bool = False
    only: Target = "both"


@dataclass(frozen=True)
class _Bullets:
    items: tuple[str, ...]
    only: Target = "both"


@dataclass(frozen=True)
class _Table:
    headers: tuple[str, ...]
    aligns: tuple[Align, ...]
    rows: tuple[tuple[str, ...], ...]
    row_classes: tuple[str, ...] = ()
    text_columns: frozenset[int] = frozenset()
    """Columns holding free text: wrapped in HTML."""
    code_cells: frozenset[tuple[int, int]] = frozenset()
    """``(row, column)`` cells shown as code (identifiers, hashes, URLs)."""
    only: Target = "both"


@dataclass(frozen=True)
class _Figure:
    svg: str
    caption: str
    only: Target = "html"


@dataclass(frozen=True)
class _Figures:
    figures: tuple[_Figure, ...]
    only: Target = "html"


_Block = _Para | _Bullets | _Table | _Figure | _Figures


@dataclass(frozen=True)
class _Section:
    key: str
    title: str
    blocks: tuple[_Block, ...] = field(default_factory=tuple)


def render_markdown(info: ReportInfo, diagnosis_markdown: str | None = None) -> str:
    """The report as Markdown with aligned pipe tables (reads well in a terminal).

    ``diagnosis_markdown`` is inserted verbatim after the answer: it must be trusted,
    already-escaped Markdown.
    """
    out = [f"# thaw report: {md_escape(info.study_name)}", md_escape(_subtitle(info))]
    for section in _sections(info):
        out.append(f"## {md_escape(section.title)}")
        out += [_md_block(block) for block in section.blocks if block.only != "html"]
        if section.key == "answer" and diagnosis_markdown is not None:
            out.append("## Diagnosis")
            out.append(diagnosis_markdown.strip() or "No diagnosis.")
    return "\n\n".join(part for part in out if part) + "\n"


def render_html(
    info: ReportInfo,
    diagnosis_html: str | None = None,
    diagnosis_markdown: str | None = None,
) -> str:
    """The report as one self-contained HTML page: inline CSS and SVG, no scripts, no
    external requests, readable offline and in print.

    ``diagnosis_html`` is inserted verbatim after the answer: it must be a trusted,
    already-escaped HTML fragment. Without it, ``diagnosis_markdown`` (if given) is shown
    escaped as preformatted text.
    """
    title = f"thaw report: {info.study_name}"
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html_escape(title)}</title>",
        f"<style>\n{_CSS}\n</style>",
        "</head>",
        "<body>",
        f'<header><h1>{html_escape(title)}</h1><p class="meta">'
        f"{html_escape(_subtitle(info))}</p></header>",
    ]
    for section in _sections(info):
        out.append(f'<section class="{section.key}">')
        out.append(f"<h2>{html_escape(section.title)}</h2>")
        out += [_html_block(block) for block in section.blocks if block.only != "md"]
        out.append("</section>")
        if section.key == "answer" and (diagnosis_html is not None or diagnosis_markdown):
            out.append('<section class="diagnosis">')
            out.append("<h2>Diagnosis</h2>")
            if diagnosis_html is not None:
                body = diagnosis_html.strip()
            else:
                body = f"<pre>{html_escape((diagnosis_markdown or '').strip())}</pre>"
            out.append(f'<div class="diagnosis-body">\n{body}\n</div>')
            out.append("</section>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------
# Sections (shared by both renderers; all text here is raw and escaped on output)


def _subtitle(info: ReportInfo) -> str:
    ranking = info.ranking
    return (
        f"Objective: {ranking.direction} {ranking.objective_metric}. "
        f"{_plural(ranking.n_trials, 'trial')} in storage."
    )


def _sections(info: ReportInfo) -> list[_Section]:
    return [
        _Section("answer", "Answer", _answer_blocks(info)),
        _Section("ranking", "Ranking", _ranking_blocks(info.ranking)),
        _Section("curves", "Learning curves", _curves_blocks(info.curves)),
        _Section("params", "Parameters against best validation loss", _param_blocks(info)),
        _Section("pruning", "Pruning", _pruning_blocks(info)),
        _Section("manifest", "Manifest", _manifest_blocks(info)),
    ]


def _answer_blocks(info: ReportInfo) -> tuple[_Block, ...]:
    answer = info.answer
    blocks: list[_Block] = []
    best, overall = answer.best, answer.best_overall
    if answer.n_trials == 0:
        blocks.append(_Para("The study has no trials yet, so it has no best configuration.", True))
    elif best is None:
        blocks.append(
            _Para("No trial completed, so the study has no best configuration yet.", True)
        )
        if overall is not None:
            blocks.append(
                _Para(
                    f"The best so far is {overall.state.lower()} trial {overall.number}: "
                    f"{answer.score_label} {fmt_num(overall.score)}"
                    + (f", stopped {_stop_text(overall)}." if overall.state == "PRUNED" else ".")
                )
            )
    else:
        blocks.append(
            _Para(
                f"Best configuration: trial {best.number} "
                f"({answer.score_label} {fmt_num(best.score)}).",
                lead=True,
            )
        )
        blocks.append(_params_table(info.ranking, best, answer))
        blocks.append(_Bullets(_best_facts(best, overall, answer)))
    blocks += _strategy_blocks(answer)
    blocks.append(_Bullets((_counts_sentence(answer),)))
    return tuple(blocks)


def _params_table(ranking: RankingInfo, best: RankingRow, answer: AnswerInfo) -> _Table:
    rows = []
    for column in ranking.param_columns:
        if column.name not in best.params:
            continue
        text = fmt_value(best.params[column.name])
        if column.name == "unfrozen_layers" and answer.num_layers is not None:
            text += f" of {answer.num_layers} layers with weights"
        rows.append((column.name, text))
    if best.warmup_epochs is not None:
        rows.append(("warmup_epochs", str(best.warmup_epochs)))
    return _Table(("parameter", "value"), ("left", "left"), tuple(rows))


def _best_facts(
    best: RankingRow, overall: RankingRow | None, answer: AnswerInfo
) -> tuple[str, ...]:
    facts = []
    at_epoch = f" at epoch {best.best_epoch}" if best.best_epoch is not None else ""
    accuracy = (
        f", val accuracy {fmt_num(best.val_accuracy_at_best)} at that epoch"
        if best.val_accuracy_at_best is not None
        else ""
    )
    facts.append(f"Best val loss {fmt_num(best.best_val_loss)}{at_epoch}{accuracy}.")
    if best.final_val_loss is not None or best.epochs_run is not None:
        facts.append(
            f"Final val loss {fmt_num(best.final_val_loss)} after "
            f"{_plural(best.epochs_run, 'epoch')}."
        )
    if best.strategy is not None:
        facts.append(f"This is the textbook strategy trial '{best.strategy}'.")
    if best.verdicts:
        facts.append(f"Verdicts: {', '.join(best.verdicts)}.")
    if overall is not None and overall.number != best.number:
        better = "higher" if answer.maximize else "lower"
        facts.append(
            f"Pruned trial {overall.number} reached a {better} {answer.score_label} "
            f"({fmt_num(overall.score)}) before it was stopped {_stop_text(overall)}; "
            "its configuration may deserve a full run."
        )
    return tuple(facts)


def _strategy_blocks(answer: AnswerInfo) -> list[_Block]:
    if not answer.strategies:
        return []
    searched = answer.best_searched
    if searched is None:
        lead = (
            "No searched (non-strategy) trial completed, so the textbook strategies cannot "
            "be compared with the search yet."
        )
    else:
        comparable = [s for s in answer.strategies if s.search_advantage is not None]
        wins = [s for s in comparable if s.search_advantage is not None and s.search_advantage > 0]
        lead = (
            f"The best searched configuration (trial {searched.number}, "
            f"{answer.score_label} {fmt_num(searched.score)}) beat {len(wins)} of "
            f"{_plural(len(comparable), 'textbook strategy trial')}."
        )
        ahead = [s for s in comparable if (s.search_advantage or 0.0) < 0]
        if ahead:
            # The strategy the search trails most (largest negative advantage).
            top = min(ahead, key=lambda s: (s.search_advantage or 0.0, s.number))
            lead += f" Still ahead of it: {top.strategy} (trial {top.number})."
    rows = tuple(_strategy_row(s, answer) for s in answer.strategies)
    headers = ["strategy", "trial", "state", "rank"]
    aligns: list[Align] = ["left", "right", "left", "right"]
    if answer.maximize:
        headers.append(answer.score_label)
        aligns.append("right")
    headers += ["best val loss", "val acc", "search vs strategy"]
    aligns += ["right", "right", "left"]
    return [_Para(lead), _Table(tuple(headers), tuple(aligns), rows)]


def _strategy_row(s: StrategyComparison, answer: AnswerInfo) -> tuple[str, ...]:
    if s.search_advantage is None:
        verdict = MISSING
    elif s.search_advantage > 0:
        verdict = f"search better by {fmt_num(s.search_advantage)}"
    elif s.search_advantage < 0:
        verdict = f"strategy better by {fmt_num(-s.search_advantage)}"
    else:
        verdict = "tie"
    cells = [s.strategy, str(s.number), s.state.lower(), fmt_num(s.rank)]
    if answer.maximize:
        cells.append(fmt_num(s.score))
    cells += [fmt_num(s.best_val_loss), fmt_num(s.val_accuracy_at_best), verdict]
    return tuple(cells)


def _counts_sentence(answer: AnswerInfo) -> str:
    parts = [f"{answer.n_complete} complete"]
    pruned = f"{answer.n_pruned} pruned"
    if answer.prune_counts:
        pruned += " (" + ", ".join(f"{r} {n}" for r, n in answer.prune_counts) + ")"
    parts.append(pruned)
    parts.append(f"{answer.n_failed} failed")
    if answer.n_unfinished:
        parts.append(f"{answer.n_unfinished} still running or waiting (not ranked)")
    return f"{_plural(answer.n_trials, 'trial')}: " + ", ".join(parts) + "."


def _ranking_blocks(ranking: RankingInfo) -> tuple[_Block, ...]:
    if not ranking.rows:
        return (_Para("No finished trials to rank."),)
    order = (
        f"{ranking.objective_metric} (highest first)"
        if ranking.maximize
        else "the best validation loss each trial reached (lowest first)"
    )
    intro = (
        f"Ranked by {order}; ties go to the lower trial number. Pruned trials are ranked by "
        "the best value they reached before stopping. Failed trials are listed last."
    )
    return (_Para(intro), _ranking_table(ranking, "md"), _ranking_table(ranking, "html"))


def _ranking_table(ranking: RankingInfo, target: Literal["md", "html"]) -> _Table:
    rows = ranking.rows
    columns: list[tuple[str, Align, list[str]]] = [
        ("rank", "right", [fmt_num(r.rank) for r in rows]),
        ("trial", "right", [str(r.number) for r in rows]),
        ("state", "left", [r.state.lower() for r in rows]),
    ]
    for column in ranking.param_columns:
        align: Align = "left" if column.kind == "categorical" else "right"
        columns.append((column.name, align, [fmt_value(r.params.get(column.name)) for r in rows]))
    if ranking.maximize:
        columns.append(
            (
                f"best {ranking.objective_metric}",
                "right",
                [fmt_num(r.objective_value) for r in rows],
            )
        )
    columns += [
        ("best val loss", "right", [fmt_num(r.best_val_loss) for r in rows]),
        ("val acc", "right", [fmt_num(r.val_accuracy_at_best) for r in rows]),
        ("best ep", "right", [fmt_num(r.best_epoch) for r in rows]),
        ("final val loss", "right", [fmt_num(r.final_val_loss) for r in rows]),
        ("epochs", "right", [fmt_num(r.epochs_run) for r in rows]),
    ]
    text_columns: set[int] = set()
    optional: list[tuple[str, Align, list[str], bool]] = [
        ("pruned", "left", [_prune_cell(r, target) for r in rows], False),
        ("time s", "right", [fmt_seconds(r.duration_s) for r in rows], False),
        ("strategy", "left", [r.strategy or MISSING for r in rows], False),
        ("verdicts", "left", [", ".join(r.verdicts) or MISSING for r in rows], True),
        ("failed", "left", [_fail_cell(r, target) for r in rows], True),
    ]
    for header, align, cells, is_text in optional:
        if any(cell != MISSING for cell in cells):
            if is_text or (target == "html" and header == "pruned"):
                text_columns.add(len(columns))
            columns.append((header, align, cells))
    return _Table(
        headers=tuple(c[0] for c in columns),
        aligns=tuple(c[1] for c in columns),
        rows=tuple(tuple(c[2][i] for c in columns) for i in range(len(rows))),
        row_classes=tuple(
            f"state-{r.state.lower()}" + (" rank-1" if r.rank == 1 else "") for r in rows
        ),
        text_columns=frozenset(text_columns),
        only=target,
    )


def _prune_cell(row: RankingRow, target: Literal["md", "html"]) -> str:
    if row.state != "PRUNED":
        return MISSING
    text = row.prune_reason or "pruned"
    if row.prune_epoch is not None:
        text += f" @{row.prune_epoch}"
    if target == "html" and row.prune_detail:
        text += f": {one_line(row.prune_detail)}"
    return text


def _fail_cell(row: RankingRow, target: Literal["md", "html"]) -> str:
    if row.fail_reason is None:
        return MISSING
    text = one_line(row.fail_reason)
    return truncate(text, MD_REASON_WIDTH) if target == "md" else text


def _curves_blocks(curves: CurvesInfo) -> tuple[_Block, ...]:
    if not curves.series:
        return (_Para("No learning curves were recorded."),)
    caption = (
        "Validation loss (solid) and training loss (dashed) per epoch for the top trials and "
        "every textbook strategy trial. Dots mark each trial's best epoch; crosses mark where "
        "pruned trials were stopped." + (" The loss axis is logarithmic." if curves.y_log else "")
    )
    svg = render_curves_svg(curves)
    rows = tuple(_curve_row(s, curves) for s in curves.series)
    table = _Table(
        ("trial", "state", "val loss per epoch (▁ low, █ high)", "best", "stopped"),
        ("left", "left", "left", "right", "left"),
        rows,
        only="md",
    )
    return (
        _Figure(svg, caption),
        _Para(
            "Validation loss per epoch, on one shared scale"
            + (" (logarithmic)" if curves.y_log else "")
            + f"; {SPARK_MISSING} marks a missing or non-finite value. Charts are in report.html.",
            only="md",
        ),
        table,
    )


def _curve_row(series: CurveSeries, curves: CurvesInfo) -> tuple[str, ...]:
    values = [v for s in curves.series for v in s.val_loss if v is not None]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    best = MISSING
    if series.best_epoch is not None and 0 < series.best_epoch <= len(series.val_loss):
        value = series.val_loss[series.best_epoch - 1]
        if value is not None:
            best = f"{fmt_num(value)} @{series.best_epoch}"
    stopped = MISSING
    if series.state == "PRUNED":
        stopped = f"@{series.stopped_epoch} {series.prune_reason or 'pruned'}"
    return (
        series.label,
        series.state.lower(),
        _sparkline(series.val_loss, lo, hi, curves.y_log),
        best,
        stopped,
    )


def _sparkline(values: Sequence[float | None], lo: float, hi: float, log: bool) -> str:
    if len(values) > SPARK_WIDTH:
        size = math.ceil(len(values) / SPARK_WIDTH)
        values = [_bucket_min(values[i : i + size]) for i in range(0, len(values), size)]

    def scaled(v: float) -> float:
        return math.log10(v) if log and v > 0 else v

    a, b = scaled(lo), scaled(hi)
    chars = []
    for v in values:
        if v is None:
            chars.append(SPARK_MISSING)
            continue
        frac = 0.0 if b == a else (scaled(v) - a) / (b - a)
        index = min(max(round(frac * (len(SPARK_CHARS) - 1)), 0), len(SPARK_CHARS) - 1)
        chars.append(SPARK_CHARS[index])
    return "".join(chars)


def _bucket_min(values: Sequence[float | None]) -> float | None:
    finite = [v for v in values if v is not None]
    return min(finite) if finite else None


def _param_blocks(info: ReportInfo) -> tuple[_Block, ...]:
    scatter_info = info.scatter
    if not scatter_info.scatters:
        return (_Para("No trial has recorded parameters yet."),)
    figures = []
    for scatter in scatter_info.scatters:
        svg = render_scatter_svg(scatter, scatter_info.y_label, scatter_info.y_log)
        if svg:
            figures.append(_Figure(svg, _scatter_caption(scatter)))
    rows = tuple(_param_row(s) for s in scatter_info.scatters)
    table = _Table(
        ("parameter", "scale", "trials", "rank 1", "top 5", "Spearman rho"),
        ("left", "left", "right", "right", "left", "right"),
        rows,
    )
    blocks: list[_Block] = [
        _Para(
            "Each trial's best validation loss against its parameter values (completed and "
            "pruned trials). A positive Spearman rho means higher values went with higher "
            "(worse) loss, a negative one with lower loss; near 0 means no monotonic trend."
        ),
        table,
    ]
    if figures:
        blocks.append(_Figures(tuple(figures)))
    else:
        blocks.append(_Para("No trial recorded a validation loss to plot.", only="html"))
    return tuple(blocks)


def _scatter_caption(scatter: ParamScatter) -> str:
    caption = f"{scatter.param}: {_plural(len(scatter.points), 'trial')}"
    if scatter.log_x:
        caption += ", log x-axis"
    if scatter.n_skipped:
        caption += f", {scatter.n_skipped} not plotted (no value)"
    return caption + "."


def _param_row(scatter: ParamScatter) -> tuple[str, ...]:
    ranked = sorted((p for p in scatter.points if p.rank is not None), key=lambda p: p.rank or 0)
    first = ranked[0].x_text if ranked and ranked[0].rank == 1 else MISSING
    top = ranked[:5]
    if not top:
        spread = MISSING
    elif scatter.kind == "categorical":
        spread = ", ".join(sorted({p.x_text for p in top}))
    else:
        low = min(top, key=lambda p: p.x)
        high = max(top, key=lambda p: p.x)
        spread = low.x_text if low.x == high.x else f"{low.x_text} .. {high.x_text}"
    scale = (
        "categorical" if scatter.kind == "categorical" else ("log" if scatter.log_x else "linear")
    )
    return (
        scatter.param,
        scale,
        str(len(scatter.points)),
        first,
        spread,
        MISSING if scatter.spearman is None else f"{scatter.spearman:.2f}",
    )


def _pruning_blocks(info: ReportInfo) -> tuple[_Block, ...]:
    p = info.pruning
    if p.n_finished == 0:
        return (_Para("No trial finished, so pruning saved nothing yet."),)
    if p.epochs_unpruned is None or p.configured_epochs is None:
        text = (
            f"{_plural(p.n_finished, 'finished trial')} ran {_plural(p.epochs_spent, 'epoch')}; "
            "the configured epoch count is unknown, so the saving cannot be computed."
        )
    else:
        saved = p.epochs_saved or 0
        share = f" ({fmt_num(100 * p.fraction_saved)}%)" if p.fraction_saved is not None else ""
        text = (
            f"{_plural(p.n_finished, 'finished trial')} (complete and pruned) ran "
            f"{_plural(p.epochs_spent, 'epoch')}. Without pruning they would have run "
            f"{p.n_finished} x {p.configured_epochs} = {p.epochs_unpruned} "
            f"(epochs per trial from {p.epochs_source}): {saved} saved{share}."
        )
    if p.n_missing_epochs:
        text += f" {_plural(p.n_missing_epochs, 'trial')} recorded no epoch count (counted as 0)."
    blocks: list[_Block] = [_Para(text)]
    if p.by_reason:
        rows = tuple(
            (r.reason, str(r.n_trials), str(r.epochs_run), fmt_num(r.epochs_saved))
            for r in p.by_reason
        )
        blocks.append(
            _Table(
                ("prune reason", "trials", "epochs run", "epochs saved"),
                ("left", "right", "right", "right"),
                rows,
            )
        )
    else:
        blocks.append(_Para("No trial was pruned."))
    return tuple(blocks)


_CODE_ENTRIES = frozenset({"config hash", "data fingerprint", "storage"})


def _manifest_blocks(info: ReportInfo) -> tuple[_Block, ...]:
    entries = info.manifest.entries
    return (
        _Table(
            ("item", "value"),
            ("left", "left"),
            tuple((label, text) for label, text in entries),
            text_columns=frozenset({1}),
            code_cells=frozenset(
                (i, 1)
                for i, (label, text) in enumerate(entries)
                if label in _CODE_ENTRIES and text != NOT_RECORDED
            ),
        ),
    )


# ---------------------------------------------------------------------------------------
# Block renderers


def _md_block(block: _Block) -> str:
    if isinstance(block, _Para):
        text = md_escape(block.text)
        return f"**{text}**" if block.lead else text
    if isinstance(block, _Bullets):
        return "\n".join(f"- {md_escape(item)}" for item in block.items)
    if isinstance(block, _Table):
        return md_table(
            [md_escape(h) for h in block.headers],
            [
                [
                    md_table_code(cell) if (r, c) in block.code_cells else md_escape(cell)
                    for c, cell in enumerate(row)
                ]
                for r, row in enumerate(block.rows)
            ],
            block.aligns,
        )
    return ""


def _html_block(block: _Block) -> str:
    if isinstance(block, _Para):
        cls = ' class="lead"' if block.lead else ""
        return f"<p{cls}>{html_escape(block.text)}</p>"
    if isinstance(block, _Bullets):
        items = "".join(f"<li>{html_escape(item)}</li>" for item in block.items)
        return f"<ul>{items}</ul>"
    if isinstance(block, _Table):
        return _html_table(block)
    if isinstance(block, _Figure):
        return _html_figure(block)
    return '<div class="charts">\n' + "\n".join(_html_figure(f) for f in block.figures) + "\n</div>"


def _html_figure(figure: _Figure) -> str:
    if not figure.svg:
        return f"<p>{html_escape(figure.caption)} (nothing to plot)</p>"
    return (
        f"<figure>\n{figure.svg}\n<figcaption>{html_escape(figure.caption)}</figcaption>\n</figure>"
    )


def _html_table(table: _Table) -> str:
    def cls(i: int) -> str:
        if i in table.text_columns:
            return ' class="text"'
        return ' class="num"' if table.aligns[i] == "right" else ""

    head = "".join(f"<th{cls(i)}>{html_escape(h)}</th>" for i, h in enumerate(table.headers))
    body = []
    for r, row in enumerate(table.rows):
        row_cls = f' class="{html_escape(table.row_classes[r])}"' if table.row_classes else ""
        cells = "".join(
            f"<td{cls(i)}><code>{html_escape(c)}</code></td>"
            if (r, i) in table.code_cells
            else f"<td{cls(i)}>{html_escape(c)}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr{row_cls}>{cells}</tr>")
    return (
        '<div class="table-wrap"><table>\n'
        f"<thead><tr>{head}</tr></thead>\n<tbody>\n"
        + "\n".join(body)
        + "\n</tbody>\n</table></div>"
    )


def _stop_text(row: RankingRow) -> str:
    """``at epoch 5 (climbing)`` for a pruned trial."""
    text = f"at epoch {row.prune_epoch}" if row.prune_epoch is not None else "early"
    if row.prune_reason:
        text += f" ({row.prune_reason})"
    return text


def _plural(n: int | None, noun: str) -> str:
    if n is None:
        return f"{MISSING} {noun}s"
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
