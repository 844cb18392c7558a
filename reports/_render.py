"""Render a :class:`~reports.ReportInfo` as Markdown or as one self-contained HTML page.

Both renderers walk the same list of sections built by :func:`_sections`, so the two files
always say the same thing. Every piece of text that comes from storage is escaped here:
``md_escape`` for Markdown, ``html.escape`` for HTML (SVG text is escaped in ``_svg``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from thaw.reports._blocks import (
    Block,
    Bullets,
    Figure,
    Figures,
    Heading,
    Para,
    Section,
    Table,
    html_head,
    html_section,
    md_block,
)
from thaw.reports._charts import CurveSeries, CurvesInfo, ParamScatter, get_answer_curves
from thaw.reports._findings import DiagnosisInfo, ImportanceInfo, verdict_mix
from thaw.reports._format import (
    MISSING,
    Align,
    fmt_num,
    fmt_seconds,
    fmt_value,
    html_escape,
    md_escape,
    one_line,
    truncate,
)
from thaw.reports._info import ReportInfo
from thaw.reports._levers import LeverInfo, level_words
from thaw.reports._ranking import RankingInfo, RankingRow, metric_label
from thaw.reports._summary import NOT_RECORDED, AnswerInfo
from thaw.reports._svg import (
    render_curves_svg,
    render_efficiency_svg,
    render_range_test_svg,
    render_scatter_svg,
)

MD_REASON_WIDTH = 48
"""Failure reasons are cut to this many characters in Markdown (full text in HTML/CSV)."""
SPARK_CHARS = "▁▂▃▄▅▆▇█"
SPARK_MISSING = "·"
SPARK_WIDTH = 40
COMPUTED_MARK = "*"
"""Suffix of verdicts computed by the diagnosis (the trial stored none)."""
MAX_SHIFT_LAYERS = 12


def render_markdown(info: ReportInfo, diagnosis_markdown: str | None = None) -> str:
    """The report as Markdown with aligned pipe tables (reads well in a terminal).

    ``diagnosis_markdown`` is inserted verbatim after the answer: it must be trusted,
    already-escaped Markdown.
    """
    out = [f"# thaw report: {md_escape(info.study_name)}", md_escape(_subtitle(info))]
    sections = _sections(info)
    out.append(
        "Contents: "
        + " · ".join(f"[{md_escape(s.title)}](#{_md_anchor(s.title)})" for s in sections)
    )
    for section in sections:
        out.append(f"## {md_escape(section.title)}")
        out += [md_block(block) for block in section.blocks if block.only != "html"]
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
    sections = _sections(info)
    toc = tuple((section.key, section.title) for section in sections)
    out = html_head(title, _subtitle(info), toc)
    for section in sections:
        out += html_section(section)
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


def _md_anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, spaces to hyphens, punctuation dropped."""
    return "".join(c for c in title.lower().replace(" ", "-") if c.isalnum() or c in "-_")


def _sections(info: ReportInfo) -> list[Section]:
    return [
        Section("answer", "Answer", _answer_blocks(info)),
        Section("why", "Why: diagnosis", _why_blocks(info)),
        Section("ranking", "Ranking", _ranking_blocks(info)),
        Section("curves", "Learning curves", _curves_blocks(info.curves)),
        Section("params", "Parameters against best validation loss", _param_blocks(info)),
        Section("pruning", "Pruning", _pruning_blocks(info)),
        *_anytime_sections(info),
        *_range_test_sections(info),
        Section("manifest", "Manifest", _manifest_blocks(info)),
    ]


STRATEGY_GLOSS = {
    "full fine-tuning": "every layer trains, learning rate 1e-3",
    "partial fine-tuning": "only the top layers train, learning rate 1e-4",
    "feature extraction": "the pretrained model stays frozen, only the new head trains",
}
"""One-line glosses of the textbook strategies, shown at their first use."""
SHIFT_WORDS = {
    "low": "to the pretrained model, your images look much like its pretraining images",
    "moderate": "to the pretrained model, your images differ somewhat from its pretraining images",
    "high": "to the pretrained model, your images differ clearly from its pretraining images",
    "unknown": "measured per layer only, without an overall score",
}
MAX_WHY = 3
"""Findings on the first screen."""


def _anytime_sections(info: ReportInfo) -> list[Section]:
    """Best so far against epochs spent: what the search had found at each point of its budget."""
    anytime = info.anytime
    if anytime is None or not anytime.efficiency.curves[0].points:
        return []
    curve = anytime.efficiency.curves[0]
    budget = f" of a budget of {anytime.budget_epochs}" if anytime.budget_epochs is not None else ""
    half = (
        f" Within the first half ({curve.total_epochs // 2} epochs) the best was "
        f"{fmt_num(anytime.best_at_half)}."
        if anytime.best_at_half is not None
        else ""
    )
    text = (
        f"{curve.total_epochs} training epochs spent{budget}, every trial counted, pruned ones "
        f"included; the best {fmt_num(curve.best)} was reached after {curve.epochs_to_best}." + half
    )
    rows = tuple((str(e), fmt_num(v)) for e, v in curve.points)
    return [
        Section(
            "anytime",
            "Best so far against epochs spent",
            (
                Para(text),
                Figure(
                    render_efficiency_svg(anytime.efficiency, compact=True),
                    "Best so far (step line): a dot at each new best, a ring where the final "
                    "best was reached.",
                ),
                Table(("epochs spent", "best so far"), ("right", "right"), rows, only="md"),
            ),
        )
    ]


def _range_test_sections(info: ReportInfo) -> list[Section]:
    """The learning-rate range test: where each BatchNorm mode's loss fell fastest."""
    test = info.range_test
    if test is None or not test.curves:
        return []
    found = [c for c in test.curves if c.suggestion is not None]
    if test.window is not None:
        searched = f"the sampler searched {fmt_num(test.window[0])} to {fmt_num(test.window[1])}"
    else:
        searched = "the sampler searched the configured range"
    lead = (
        f"Before the search, each BatchNorm mode trained with a rising learning rate "
        f"({test.epochs:.2g} epochs in all, counted in the budget); "
        + (
            f"{len(found)} of {len(test.curves)} modes found a rate, and {searched}."
            if found
            else f"the loss diverged at every rate, and {searched}."
        )
    )
    rows = tuple(
        (
            c.batchnorm,
            fmt_num(c.suggestion) if c.suggestion is not None else "none",
            c.reason,
        )
        for c in test.curves
    )
    blocks: list[Block] = [Para(lead)]
    svg = render_range_test_svg(test)
    if svg:
        blocks.append(
            Figure(svg, "Smoothed training loss against the learning rate, per BatchNorm mode.")
        )
    blocks.append(
        Table(("BatchNorm mode", "suggested rate", "how"), ("left", "right", "left"), rows)
    )
    return [Section("range-test", "Learning-rate range test", tuple(blocks))]


def _answer_blocks(info: ReportInfo) -> tuple[Block, ...]:
    """The first screen: what to use, how much better than the textbook strategies, why,
    the domain shift in words, one chart. About a dozen lines."""
    answer = info.answer
    blocks: list[Block] = []
    best, overall = answer.best, answer.best_overall
    if answer.n_trials == 0:
        blocks.append(Para("The study has no trials yet, so it has no best configuration.", True))
    elif best is None:
        if info.story is not None and info.story.headline is not None:
            blocks.append(Para(info.story.headline, lead=True, id="nothing-learnt"))
        blocks.append(
            Para(
                "No trial completed, so the study has no best configuration yet.",
                info.story is None or info.story.headline is None,
            )
        )
        if overall is not None:
            blocks.append(
                Para(
                    f"The best so far is {overall.state.lower()} trial {overall.number}: "
                    f"{answer.score_label} {fmt_num(overall.score)}"
                    + (f", stopped {_stop_text(overall)}." if overall.state == "PRUNED" else ".")
                )
            )
    else:
        story = info.story
        if story is not None and story.headline is not None:
            # Nothing learnt much: say so first, with the next move, then name the trial.
            blocks.append(Para(story.headline, lead=True, id="nothing-learnt"))
            blocks.append(
                Para(
                    f"The best so far is trial {best.number}: "
                    f"{_config_text(info.ranking, best, answer)}." + _advice_text(info),
                    id="best-configuration",
                )
            )
        else:
            blocks.append(
                Para(
                    f"Use trial {best.number}: {_config_text(info.ranking, best, answer)}."
                    + _advice_text(info),
                    lead=True,
                    id="best-configuration",
                )
            )
        gloss = _config_gloss(best)
        if gloss:
            blocks.append(Para(gloss, cls="gloss", id="config-gloss"))
        blocks.append(Para(_result_text(best, answer, info.ranking), id="best-result"))
        path = _path_text(info)
        if path:
            blocks.append(Para(path, id="search-path"))
    versus = _versus_lines(answer)
    if versus:
        blocks.append(Bullets(versus, id="versus-strategies"))
    why = _why_lines(info)
    if why:
        blocks.append(Para("Why:", id="why-lead"))
        blocks.append(Bullets(why, id="answer-why"))
    shift = _shift_words(info)
    if shift:
        blocks.append(Para(shift, id="domain-shift-words"))
    if best is not None and overall is not None and overall.number != best.number:
        better = "higher" if answer.maximize else "lower"
        blocks.append(
            Para(
                f"Pruned trial {overall.number} reached a {better} {answer.score_label} "
                f"({fmt_num(overall.score)}) before it was stopped {_stop_text(overall)}; "
                "its configuration may deserve a full run.",
                cls="note",
            )
        )
    chart = _answer_chart(info)
    if chart is not None:
        blocks.append(chart)
    blocks.append(Para(_counts_sentence(answer), id="trial-counts"))
    return tuple(blocks)


def _advice_text(info: ReportInfo) -> str:
    """The recommended trial's own verdict and what it calls for, said where it is named."""
    advice = None if info.story is None else info.story.advice
    return "" if advice is None else " " + advice.sentence


def _path_text(info: ReportInfo) -> str:
    """How the search got to the recommended trial: trial, then how each next one came."""
    story = info.story
    if story is None or len(story.path) < 2:
        return ""
    steps = [f"trial {step.number} ({step.how})" for step in story.path]
    return "How the search got there: " + " → ".join(steps) + "."


def _config_text(ranking: RankingInfo, best: RankingRow, answer: AnswerInfo) -> str:
    parts = []
    for column in ranking.param_columns:
        if column.name not in best.params:
            continue
        text = f"{column.name} {fmt_value(best.params[column.name])}"
        if column.name == "unfrozen_layers" and answer.num_layers is not None:
            text += f" of {answer.num_layers}"
        parts.append(text)
    if best.warmup_epochs is not None:
        parts.append(f"warmup_epochs {best.warmup_epochs}")
    if best.strategy is not None:
        parts.append(f"(the textbook strategy {best.strategy})")
    return ", ".join(parts) if parts else "no parameters recorded"


def _config_gloss(best: RankingRow) -> str:
    """One line of plain words for the parameters whose names are jargon."""
    glosses = []
    if "unfrozen_layers" in best.params:
        glosses.append(
            "unfrozen_layers: layers with weights, counted from the top, that train "
            "(0: only the new classification head trains)"
        )
    mode = best.params.get("batchnorm")
    if mode is not None:
        glosses.append(f"batchnorm {mode}: {level_words('batchnorm', str(mode))}")
    if "weight_decay" in best.params:
        glosses.append("weight_decay: a penalty that keeps weights small")
    return "; ".join(glosses) + "." if glosses else ""


def _result_text(best: RankingRow, answer: AnswerInfo, ranking: RankingInfo) -> str:
    at = f" at epoch {best.best_epoch}" if best.best_epoch is not None else ""
    if best.epochs_run is not None and best.best_epoch is not None:
        at += f" of {best.epochs_run}"
    measured = [("validation accuracy", best.val_accuracy_at_best)] + [
        (metric_label(m).replace("val ", "validation ", 1), best.metrics_at_best.get(m))
        for m in ranking.extra_metric_columns
    ]
    shown = [f"{name} {_num3(value)}" for name, value in measured if value is not None]
    accuracy = f", with {', '.join(shown)}" if shown else ""
    lead = ""
    if answer.maximize:
        lead = f"It reached {answer.score_label} {fmt_num(best.score)}. "
    return (
        f"{lead}Its validation loss (the error on held-out images the model never trains on; "
        f"lower is better) is {_num3(best.best_val_loss)}{at}{accuracy}."
    )


def _versus_lines(answer: AnswerInfo) -> tuple[str, ...]:
    best = answer.best
    if best is None:
        return ()
    lines = []
    for s in answer.strategies:
        if s.number == best.number:
            continue
        gloss = STRATEGY_GLOSS.get(s.strategy)
        name = (
            f"{s.strategy} ({gloss}; trial {s.number})"
            if gloss
            else f"{s.strategy} (trial {s.number})"
        )
        if s.state == "PRUNED":
            name += ", pruned"
        parts = []
        if answer.maximize and best.score is not None and s.score is not None:
            parts.append(
                f"{answer.score_label} {best.score - s.score:+.3g} "
                f"({_num3(best.score)} against {_num3(s.score)})"
            )
        if s.loss_ratio is not None and s.best_val_loss is not None:
            if s.loss_ratio >= 1:
                parts.append(
                    f"{_ratio(s.loss_ratio)} lower validation loss "
                    f"({_num3(best.best_val_loss)} against {_num3(s.best_val_loss)})"
                )
            else:
                parts.append(
                    f"{_ratio(1 / s.loss_ratio)} higher validation loss "
                    f"({_num3(best.best_val_loss)} against {_num3(s.best_val_loss)})"
                )
        elif s.best_val_loss is None:
            parts.append("no validation loss recorded for the strategy")
        if s.accuracy_difference is not None and s.val_accuracy_at_best is not None:
            parts.append(
                f"accuracy {s.accuracy_difference:+.2f} "
                f"({_num3(best.val_accuracy_at_best)} against {_num3(s.val_accuracy_at_best)})"
            )
        if parts:
            lines.append(f"Against {name}: " + ", ".join(parts) + ".")
    return tuple(lines)


def _why_lines(info: ReportInfo) -> tuple[str, ...]:
    lines: list[str] = []
    if info.levers is not None:
        lines += [f.brief or f.sentence for f in info.levers.findings[: MAX_WHY - 1]]
    if info.diagnosis is not None and info.answer.n_trials:
        lines.append(info.diagnosis.sentences[0])
    return tuple(lines[:MAX_WHY])


def _shift_words(info: ReportInfo) -> str:
    if info.diagnosis is None:
        return ""
    shift = info.diagnosis.domain_shift
    if not shift.measured:
        return (
            "Domain shift (how different your images look to the pretrained model from its "
            "pretraining images) was not measured."
        )
    score = f"{shift.overall:.2f}, " if shift.overall is not None else ""
    words = SHIFT_WORDS.get(shift.level, shift.level)
    text = (
        f"Domain shift: {score}{shift.level}. {words[0].upper()}{words[1:]} "
        "(0 would mean no difference)"
    )
    names = [name for name, _ in shift.layers[:2]]
    if names:
        text += f"; the most shifted layers are {' and '.join(names)}"
    return text + "."


def _answer_chart(info: ReportInfo) -> Figure | None:
    best = info.answer.best
    if best is None:
        return None
    curves = get_answer_curves(info.curves, best.number)
    if not curves.series or all(s.number != best.number for s in curves.series):
        return None
    others = len(curves.series) - 1
    title = f"Trial {best.number} against the textbook strategies: validation loss per epoch"
    svg = render_curves_svg(curves, train=False, title=title)
    if not svg:
        return None
    caption = (
        f"Validation loss per epoch of trial {best.number} (the answer)"
        + (
            f" and the {others} textbook strategy trial{'s' if others != 1 else ''}"
            if others
            else ""
        )
        + "; markers are best epochs, a cross is where a pruned trial stopped"
        + ("; log scale." if curves.y_log else ".")
    )
    return Figure(svg, caption, id="answer-chart")


def _num3(value: float | None) -> str:
    """Three significant digits for the plain-words screen."""
    return MISSING if value is None else f"{value:.3g}"


def _ratio(value: float) -> str:
    return f"{value:.0f}x" if value >= 10 else f"{value:.1f}x"


def _why_blocks(info: ReportInfo) -> tuple[Block, ...]:
    blocks: list[Block] = []
    if info.diagnosis is not None and info.answer.n_trials:
        blocks.append(
            Para(
                "Diagnosis: " + " ".join(info.diagnosis.sentences),
                id="diagnosis-summary",
                cls="summary",
            )
        )
    blocks += _lever_blocks(info)
    if info.diagnosis is not None:
        if info.diagnosis.climb_findings:
            blocks.append(Heading("Where validation loss climbed", id="climb"))
            blocks.append(Bullets(info.diagnosis.climb_findings, id="climb-findings"))
        blocks += _domain_shift_blocks(info.diagnosis)
        blocks += _importance_blocks(info.diagnosis, info.levers)
    if not blocks:
        blocks.append(Para("No diagnosis: the report was written without one."))
    return tuple(blocks)


def _lever_blocks(info: ReportInfo) -> list[Block]:
    levers = info.levers
    if levers is None:
        return []
    if not levers.findings:
        return [
            Heading("What the best trials share", id="levers"),
            Para(
                f"No parameter level sets the best {levers.top_k} trials apart yet "
                f"({_plural(levers.n_scored, 'scored trial')})."
            ),
        ]
    rows = []
    for f in levers.findings:
        elsewhere = "; ".join(
            f"{lv.level}: {_num3(lv.best)} ({_plural(lv.n_trials, 'trial')})"
            for lv in f.levels
            if lv.level != f.level
        )
        rows.append(
            (
                f.param,
                f.level,
                f"{f.n_top} of {f.top_k}",
                _num3(f.best_inside),
                elsewhere or MISSING,
                f"{f.pairs_won} of {f.pairs}",
            )
        )
    return [
        Heading("What the best trials share", id="levers"),
        Para(
            "Each row is a parameter level most of the best trials use, compared with the "
            "others: the best score at each level, and like-for-like pairs (each trial outside "
            "the level against its nearest trial inside it on all other parameters)."
        ),
        Table(
            (
                "parameter",
                "level",
                "best trials",
                "best there",
                "best at other levels",
                "pairs won",
            ),
            ("left", "left", "right", "right", "left", "right"),
            tuple(rows),
            text_columns=frozenset({4}),
            id="lever-table",
        ),
    ]


def _counts_sentence(answer: AnswerInfo) -> str:
    parts = [f"{answer.n_complete} complete"]
    pruned = f"{answer.n_pruned} pruned"
    if answer.prune_counts:
        pruned += " (" + ", ".join(f"{r} {n}" for r, n in answer.prune_counts) + ")"
    parts.append(pruned)
    parts.append(f"{answer.n_failed} failed")
    if answer.n_unfinished:
        parts.append(f"{answer.n_unfinished} still running or waiting (not ranked)")
    return (
        f"{_plural(answer.n_trials, 'trial')}: "
        + ", ".join(parts)
        + (
            ". Pruned: stopped early by thaw, ranked by the best value reached before stopping."
            if answer.n_pruned
            else "."
        )
    )


def _ranking_blocks(info: ReportInfo) -> tuple[Block, ...]:
    ranking = info.ranking
    if not ranking.rows:
        return (Para("No finished trials to rank."),)
    order = (
        f"{ranking.objective_metric} (highest first)"
        if ranking.maximize
        else "the best validation loss each trial reached (lowest first)"
    )
    intro = (
        f"Ranked by {order}; ties go to the lower trial number. Pruned trials are ranked by "
        "the best value they reached before stopping. Failed trials are listed last."
    )
    blocks: list[Block] = [Para(intro)]
    mix = verdict_mix(ranking.rows)
    if mix:
        computed = sum(1 for r in ranking.rows if r.verdicts_source == "computed")
        text = "Verdict mix (trials per verdict): " + ", ".join(f"{v} {n}" for v, n in mix) + "."
        if computed:
            text += (
                f" {_plural(computed, 'trial')} stored no verdicts; thaw's diagnosis computed "
                f"theirs (marked {COMPUTED_MARK})."
            )
        blocks.append(Para(text, id="verdict-mix"))
    blocks += [_ranking_table(ranking, "md"), _ranking_table(ranking, "html")]
    blocks += _verdict_detail_blocks(info)
    return tuple(blocks)


def _verdict_detail_blocks(info: ReportInfo) -> list[Block]:
    """Evidence and recommendation of each verdict of the top trials and strategy trials
    (a list, not a table: the ranking section holds one table only)."""
    ranking = info.ranking
    chosen = list(ranking.ranked[: info.top_n])
    chosen += [r for r in ranking.rows if r.strategy is not None and r not in chosen]
    items = []
    for row in chosen:
        for detail in row.verdict_details:
            mark = COMPUTED_MARK if row.verdicts_source == "computed" else ""
            text = f"{row.label}: {detail.verdict}{mark}"
            if detail.confidence is not None:
                text += f" (confidence {detail.confidence:.2f})"
            if detail.evidence:
                text += f": {one_line(detail.evidence)}"
            if detail.recommendation:
                text += f". Try: {one_line(detail.recommendation)}"
            items.append(text.rstrip(".") + ".")
    if not items:
        return []
    return [
        Heading("Verdicts of the top trials and the textbook strategies", id="verdicts"),
        Bullets(tuple(items), id="verdict-details"),
    ]


def _ranking_table(ranking: RankingInfo, target: Literal["md", "html"]) -> Table:
    return _ranking_table_md(ranking) if target == "md" else _ranking_table_html(ranking)


def _ranking_table_html(ranking: RankingInfo) -> Table:
    """Few columns that fit 1280 px (and wrap on a phone); the rest folded per row."""
    rows = ranking.rows
    headers = ["rank", "trial"]
    aligns: list[Align] = ["right", "left"]
    if ranking.maximize:
        headers.append(f"best {ranking.objective_metric}")
        aligns.append("right")
    metrics = ranking.extra_metric_columns
    headers += ["best val loss", "val acc", *(metric_label(m) for m in metrics), "verdict"]
    aligns += ["right", "right"]
    aligns += ["right"] * len(metrics)
    aligns.append("left")
    body = []
    for r in rows:
        cells = [fmt_num(r.rank), _trial_cell(r)]
        if ranking.maximize:
            cells.append(fmt_num(r.objective_value))
        cells += [fmt_num(r.best_val_loss), fmt_num(r.val_accuracy_at_best)]
        cells += [fmt_num(r.metrics_at_best.get(m)) for m in metrics]
        cells.append(_verdict_cell(r))
        body.append(tuple(cells))
    return Table(
        headers=tuple(headers),
        aligns=tuple(aligns),
        rows=tuple(body),
        row_classes=tuple(
            f"state-{r.state.lower()}" + (" rank-1" if r.rank == 1 else "") for r in rows
        ),
        text_columns=frozenset({1, len(headers) - 1}),
        only="html",
        id="ranking-table",
        folds=tuple(("config", _row_details(r, ranking)) for r in rows),
    )


def _trial_cell(row: RankingRow) -> str:
    text = str(row.number)
    if row.strategy is not None:
        text += f" {row.strategy}"
    if row.state == "PRUNED":
        text += f", pruned {_stop_text(row)}"
    elif row.state == "FAIL":
        text += ", failed"
    return text


def _row_details(row: RankingRow, ranking: RankingInfo) -> tuple[tuple[str, str], ...]:
    items = [
        (column.name, fmt_value(row.params[column.name]))
        for column in ranking.param_columns
        if column.name in row.params
    ]
    if row.warmup_epochs is not None:
        items.append(("warmup_epochs", str(row.warmup_epochs)))
    items.append(("best epoch", f"{fmt_num(row.best_epoch)} of {fmt_num(row.epochs_run)} run"))
    items.append(("final val loss", fmt_num(row.final_val_loss)))
    if row.duration_s is not None:
        items.append(("time", f"{fmt_seconds(row.duration_s)} s"))
    if row.state == "PRUNED" and row.prune_detail:
        items.append(("pruned because", one_line(row.prune_detail)))
    if row.fail_reason:
        items.append(("failed because", one_line(row.fail_reason)))
    for detail in row.verdict_details:
        text = detail.verdict
        if detail.confidence is not None:
            text += f" (confidence {detail.confidence:.2f})"
        if detail.evidence:
            text += f": {one_line(detail.evidence)}"
        if detail.recommendation:
            text += f". Try: {one_line(detail.recommendation)}"
        items.append(("verdict", text))
    return tuple(items)


def _ranking_table_md(ranking: RankingInfo) -> Table:
    target: Literal["md", "html"] = "md"
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
    ]
    columns += [
        (metric_label(m), "right", [fmt_num(r.metrics_at_best.get(m)) for r in rows])
        for m in ranking.extra_metric_columns
    ]
    columns += [
        ("best ep", "right", [fmt_num(r.best_epoch) for r in rows]),
        ("final val loss", "right", [fmt_num(r.final_val_loss) for r in rows]),
        ("epochs", "right", [fmt_num(r.epochs_run) for r in rows]),
    ]
    text_columns: set[int] = set()
    optional: list[tuple[str, Align, list[str], bool]] = [
        ("pruned", "left", [_prune_cell(r, target) for r in rows], False),
        ("time s", "right", [fmt_seconds(r.duration_s) for r in rows], False),
        ("strategy", "left", [r.strategy or MISSING for r in rows], True),
        ("verdicts", "left", [_verdict_cell(r) for r in rows], True),
        ("failed", "left", [_fail_cell(r, target) for r in rows], True),
    ]
    for header, align, cells, is_text in optional:
        if any(cell != MISSING for cell in cells):
            if is_text or (target == "html" and header == "pruned"):
                text_columns.add(len(columns))
            columns.append((header, align, cells))
    return Table(
        headers=tuple(c[0] for c in columns),
        aligns=tuple(c[1] for c in columns),
        rows=tuple(tuple(c[2][i] for c in columns) for i in range(len(rows))),
        row_classes=tuple(
            f"state-{r.state.lower()}" + (" rank-1" if r.rank == 1 else "") for r in rows
        ),
        text_columns=frozenset(text_columns),
        only=target,
        id="ranking-table" if target == "html" else None,
    )


def _verdict_cell(row: RankingRow) -> str:
    if not row.verdicts:
        return MISSING
    mark = COMPUTED_MARK if row.verdicts_source == "computed" else ""
    return ", ".join(f"{v}{mark}" for v in row.verdicts)


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


def _curves_blocks(curves: CurvesInfo) -> tuple[Block, ...]:
    if not curves.series:
        return (Para("No learning curves were recorded."),)
    caption = (
        "Validation loss (solid) and training loss (dashed) per epoch for the top trials and "
        "every textbook strategy trial. Dots mark each trial's best epoch; crosses mark where "
        "pruned trials were stopped." + (" The loss axis is logarithmic." if curves.y_log else "")
    )
    svg = render_curves_svg(curves)
    rows = tuple(_curve_row(s, curves) for s in curves.series)
    table = Table(
        ("trial", "state", "val loss per epoch (▁ low, █ high)", "best", "stopped"),
        ("left", "left", "left", "right", "left"),
        rows,
        only="md",
    )
    return (
        Figure(svg, caption),
        Para(
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


def _param_blocks(info: ReportInfo) -> tuple[Block, ...]:
    scatter_info = info.scatter
    if not scatter_info.scatters:
        return (Para("No trial has recorded parameters yet."),)
    figures = []
    for scatter in scatter_info.scatters:
        svg = render_scatter_svg(scatter, scatter_info.y_label, scatter_info.y_log)
        if svg:
            figures.append(Figure(svg, _scatter_caption(scatter)))
    rows = tuple(_param_row(s) for s in scatter_info.scatters)
    table = Table(
        ("parameter", "scale", "trials", "rank 1", "top 5", "Spearman rho"),
        ("left", "left", "right", "right", "left", "right"),
        rows,
    )
    blocks: list[Block] = [
        Para(
            "Each trial's best validation loss against its parameter values (completed and "
            "pruned trials). A positive Spearman rho means higher values went with higher "
            "(worse) loss, a negative one with lower loss; near 0 means no monotonic trend."
        ),
        table,
    ]
    if figures:
        blocks.append(Figures(tuple(figures)))
    else:
        blocks.append(Para("No trial recorded a validation loss to plot.", only="html"))
    return tuple(blocks)


def _importance_blocks(diagnosis: DiagnosisInfo, levers: LeverInfo | None) -> list[Block]:
    info: ImportanceInfo = diagnosis.importances
    blocks: list[Block] = [Heading("Parameter importances", id="importances")]
    if levers is not None:
        # The one "what matters most" finding leads; the importances below support it.
        lead = levers.headline
        if levers.support:
            lead += " " + levers.support
        blocks.append(Para(lead, id="importance-lever"))
    if not info.any:
        blocks.append(
            Para(
                "No importances yet: they need at least "
                f"{_plural(info.min_trials, 'trial')} with the target (completed trials for "
                "best val loss, completed and pruned trials for climb) and some variation."
            )
        )
    else:
        how = "; ".join(f"{t.title}: {t.evaluator or 'not computed'}" for t in info.targets)
        blocks.append(
            Para(
                "Share of the variation each parameter explains, from thaw's diagnosis "
                f"(Optuna importance evaluator per target: {how}). Climb is how far the final "
                "validation loss ended above the best one: parameters important for climb "
                "decide whether fine-tuning overfits or destroys pretrained features."
            )
        )
        params = sorted({p for t in info.targets for p, _ in t.bars})
        top_share = {p: max((v for t in info.targets for q, v in t.bars if q == p)) for p in params}
        params.sort(key=lambda p: (-top_share[p], p))
        values = [dict(t.bars) for t in info.targets]
        rows = []
        bars: dict[tuple[int, int], tuple[float, bool]] = {}
        for r, param in enumerate(params):
            cells = [param]
            for c, target_values in enumerate(values):
                share = target_values.get(param)
                cells.append(MISSING if share is None else f"{100 * share:.0f}%")
                if share is not None:
                    bars[(r, c + 1)] = (share, c == 1)
            rows.append(tuple(cells))
        left: Align = "left"
        aligns = (left,) * (len(info.targets) + 1)
        blocks.append(
            Table(
                ("parameter", *(f"importance for {t.title}" for t in info.targets)),
                aligns,
                tuple(rows),
                bars=bars,
                id="importance-table",
            )
        )
    return blocks


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


def _pruning_blocks(info: ReportInfo) -> tuple[Block, ...]:
    p = info.pruning
    if p.n_finished == 0:
        return (Para("No trial finished, so pruning saved nothing yet."),)
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
    blocks: list[Block] = [Para(text)]
    if p.by_reason:
        rows = tuple(
            (r.reason, str(r.n_trials), str(r.epochs_run), fmt_num(r.epochs_saved))
            for r in p.by_reason
        )
        blocks.append(
            Table(
                ("prune reason", "trials", "epochs run", "epochs saved"),
                ("left", "right", "right", "right"),
                rows,
            )
        )
    else:
        blocks.append(Para("No trial was pruned."))
    return tuple(blocks)


_CODE_ENTRIES = frozenset({"config hash", "data fingerprint", "storage"})


def _manifest_blocks(info: ReportInfo) -> tuple[Block, ...]:
    blocks: list[Block] = []
    if info.diagnosis is not None:
        blocks.append(Heading("Versions, settings and provenance", id="provenance"))
    if info.determinism is not None:
        cls = None if info.determinism.deterministic else "note"
        blocks.append(Para(info.determinism.sentence, id="determinism", cls=cls))
    entries = info.manifest.entries
    blocks.append(
        Table(
            ("item", "value"),
            ("left", "left"),
            tuple((label, text) for label, text in entries),
            text_columns=frozenset({1}),
            code_cells=frozenset(
                (i, 1)
                for i, (label, text) in enumerate(entries)
                if label in _CODE_ENTRIES and text != NOT_RECORDED
            ),
            id="manifest-table",
        )
    )
    return tuple(blocks)


def _domain_shift_blocks(diagnosis: DiagnosisInfo) -> list[Block]:
    shift = diagnosis.domain_shift
    blocks: list[Block] = [
        Heading("Domain shift", id="domain-shift"),
        Para(shift.sentence, id="domain-shift-score"),
    ]
    if shift.layers:
        shown = shift.layers[:MAX_SHIFT_LAYERS]
        top = max(score for _, score in shown) or 1.0
        blocks.append(
            Table(
                ("layer", "shift score"),
                ("left", "left"),
                tuple((name, f"{score:.2f}") for name, score in shown),
                bars={(i, 1): (score / top, False) for i, (_, score) in enumerate(shown)},
                id="domain-shift-layers",
            )
        )
        if len(shift.layers) > len(shown):
            blocks.append(Para(f"{len(shift.layers) - len(shown)} less shifted layers not listed."))
    blocks.append(Para(f"Indirect evidence from the trials: {shift.feature_extraction_sentence}"))
    return blocks + _surgical_blocks(diagnosis)


#: Rows of the BatchNorm shift profile the report lists (bottom first).
MAX_PROFILE_ROWS = 60


def _surgical_blocks(diagnosis: DiagnosisInfo) -> list[Block]:
    """The per-layer BatchNorm shift profile, where it points, and the blocks tried."""
    info = diagnosis.surgical
    if info is None:
        return []
    blocks: list[Block] = [
        Heading("BatchNorm shift profile", id="shift-profile"),
        Para(info.sentence, id="shift-profile-block"),
    ]
    shown = info.groups[:MAX_PROFILE_ROWS]
    if shown:
        top = max((g.shift for g in shown if g.shift is not None), default=0.0) or 1.0
        blocks.append(
            Table(
                (f"{info.unit[:-1]} (bottom first)", "shift", "block"),
                ("left", "left", "left"),
                tuple(
                    (
                        g.name,
                        MISSING if g.shift is None else f"{g.shift:.2f}",
                        "profile's block" if g.in_block else "",
                    )
                    for g in shown
                ),
                bars={
                    (i, 1): (g.shift / top, g.in_block)
                    for i, g in enumerate(shown)
                    if g.shift is not None
                },
                id="shift-profile-table",
            )
        )
        if len(info.groups) > len(shown):
            blocks.append(Para(f"{len(info.groups) - len(shown)} higher {info.unit} not listed."))
    if info.comparisons:
        blocks.append(Bullets(tuple(c.sentence for c in info.comparisons), id="surgical"))
    return blocks


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
