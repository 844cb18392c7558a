"""Markdown notes, per-trial charts and history CSV for optuna-dashboard.

What ``search._publish`` shows reviewers inside optuna-dashboard: a note per trial (its
verdicts with evidence and recommendation), a study note (the study diagnosis and a link-free
ranking), and per trial a learning-curve SVG and a per-epoch CSV. Pure functions over what
Optuna storage holds (see ``docs/storage.md``); never imports Keras, ``objectives`` or ``search``.

Every string that comes from storage (class names, strategy names, prune and fail reasons,
parameter values, verdict texts) is escaped with :func:`note_escape`, so a note shows it as
text: it cannot open a link, an image, HTML, a heading or a table cell of its own.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from thaw._keys import (
    DATA,
    GRADUAL_UNFREEZING,
    OBJECTIVE_METRIC,
    PROPOSED_BY,
    SCREEN,
    SCREEN_WINNER,
)
from thaw.reports._answer import trial_origin
from thaw.reports._attrs import (
    HISTORY_KEYS,
    as_float,
    as_int,
    as_str,
    dig,
    history_length,
    history_series,
    intermediate_series,
)
from thaw.reports._charts import CurveSeries, CurvesInfo, _use_log
from thaw.reports._format import fmt_num, fmt_value, one_line, param_label, truncate
from thaw.reports._ranking import RankingInfo
from thaw.reports._svg import render_curves_svg
from thaw.reports.diagnosis import (
    VERDICTS,
    StudyDiagnosis,
    Thresholds,
    Verdict,
)
from thaw.reports.diagnosis import trial_verdicts as _trial_verdicts

__all__ = [
    "HISTORY_CSV_COLUMNS",
    "note_escape",
    "render_history_csv",
    "render_study_note",
    "render_trial_curves_svg",
    "render_trial_note",
    "trial_curves_info",
    "trial_verdicts",
    "verdict_dicts",
]

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)

HISTORY_CSV_COLUMNS = ("epoch", *HISTORY_KEYS, "intermediate_value")
"""Columns of :func:`render_history_csv`; ``intermediate_value`` is what the pruner saw."""

SVG_NAMESPACE = "http://www.w3.org/2000/svg"

# Characters that start emphasis, code, links, images, HTML, entities, strikethrough or table
# cells anywhere in a line; ``(``/``)``/``!`` are harmless once ``[`` is.
_NOTE_ALWAYS = re.compile(r"([\\`*_\[\]<>|~&])")
# GFM turns ``http://...``, ``www....`` and e-mail addresses into links after parsing, so a
# backslash cannot stop it; such words become code spans, which are never linked.
_NOTE_LINKISH = re.compile(r"(?i)[^\s|]*(?:://|www\.|@|mailto:|xmpp:)[^\s|]*")
# Headings, lists, block quotes and setext underlines only at the start of a line.
_NOTE_LEADING = re.compile(r"^([#+\-=]|\d+[.)])")
_MAX_TEXT = 2000

_VERDICT_TITLES = {
    "lr_too_high": "Learning rate too high",
    "batchnorm_mismatch": "BatchNorm mismatch",
    "overfitting": "Overfitting",
    "weak_regularisation": "Weak regularisation",
    "underfitting": "Underfitting",
    "healthy": "Healthy",
}


def note_escape(text: object, limit: int = _MAX_TEXT) -> str:
    """Untrusted text as inline Markdown that renders as exactly that text.

    Newlines and tabs become spaces and the text is cut at ``limit`` characters. Markdown
    punctuation is backslash-escaped (safe in table cells too); words that GFM would turn
    into links (URLs, ``www.``, e-mail addresses) become code spans. Digits and ``.`` stay
    readable in the raw note.
    """
    text = truncate(one_line(str(text)), limit)
    out: list[str] = []
    start = 0
    for match in _NOTE_LINKISH.finditer(text):
        out.append(_NOTE_ALWAYS.sub(r"\\\1", text[start : match.start()]))
        out.append(_code_span(match.group(0)))
        start = match.end()
    out.append(_NOTE_ALWAYS.sub(r"\\\1", text[start:]))
    escaped = "".join(out)
    return _NOTE_LEADING.sub(lambda m: m.group(1)[:-1] + "\\" + m.group(1)[-1], escaped)


def _code_span(word: str) -> str:
    """``word`` (no whitespace, no ``|``) as a code span: shown as is, never a link."""
    fence = "`" * (max((len(r) for r in re.findall(r"`+", word)), default=0) + 1)
    pad = " " if word.startswith("`") or word.endswith("`") else ""
    return f"{fence}{pad}{word}{pad}{fence}"


def _value_text(value: object, limit: int = 100) -> str:
    """A parameter value: numbers as formatted (nothing to escape), anything else escaped."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return fmt_value(value)
    return note_escape(fmt_value(value), limit)


def _label(param: str) -> str:
    return param_label(param)


def _objective_metric(study: optuna.Study) -> str | None:
    metric = as_str(study.user_attrs.get(OBJECTIVE_METRIC))
    return metric


def _val_loss_objective(study: optuna.Study) -> bool:
    metric = _objective_metric(study)
    if metric is not None:
        return metric == "val_loss"
    return len(study.directions) == 1 and study.direction == StudyDirection.MINIMIZE


# ------------------------------------------------------------------------------- verdicts


def trial_verdicts(
    study: optuna.Study,
    trial: FrozenTrial,
    *,
    state: str | None = None,
    trials: Sequence[FrozenTrial] | None = None,
    thresholds: Thresholds | None = None,
) -> list[Verdict]:
    """The trial's verdicts from :func:`thaw.reports.diagnosis.trial_verdicts`, the one
    verdict function every view calls (``state`` overrides the state of a trial about to
    finish; ``trials`` saves a storage read)."""
    return _trial_verdicts(study, trial, state=state, trials=trials, thresholds=thresholds)


def verdict_dicts(value: Any) -> list[dict[str, Any]]:
    """Well-formed verdicts from a ``verdicts`` user attr (or a list of :class:`Verdict`);
    malformed items are dropped."""
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        return []
    out: list[dict[str, Any]] = []
    for item in value:
        if isinstance(item, Verdict):
            out.append(item.to_dict())
        elif isinstance(item, Mapping) and as_str(item.get("verdict")) is not None:
            out.append(
                {
                    "verdict": str(item.get("verdict")),
                    "confidence": as_float(item.get("confidence")),
                    "evidence": as_str(item.get("evidence")) or "",
                    "recommendation": as_str(item.get("recommendation")) or "",
                }
            )
    return out


def _clauses(title: str, text: str) -> list[str]:
    """``- Title: text``, one sub-item per ``;``-separated clause when there are several
    (optuna-dashboard does not wrap notes beside a long user attr, so short lines matter)."""
    parts = [p.strip() for p in text.split("; ") if p.strip()]
    if not parts:
        return []
    if len(parts) == 1:
        return [f"- {title}: {note_escape(parts[0])}"]
    return [f"- {title}:"] + [f"  - {note_escape(p)}" for p in parts]


def _verdict_title(name: str) -> str:
    return note_escape(_VERDICT_TITLES.get(name, name.replace("_", " ")))


# ----------------------------------------------------------------------------- trial note


def _state_phrase(trial: FrozenTrial, state: str) -> str:
    attrs = trial.user_attrs
    if state == "PRUNED":
        epoch = as_int(attrs.get("prune_epoch"))
        reason = as_str(attrs.get("prune_reason"))
        text = "pruned" + (f" at epoch {epoch}" if epoch is not None else "")
        return text + (f" ({note_escape(reason.replace('_', ' '), 100)})" if reason else "")
    return {"COMPLETE": "complete", "FAIL": "failed"}.get(state, note_escape(state.lower()))


def render_trial_note(
    trial: FrozenTrial,
    verdicts: Sequence[Verdict | Mapping[str, Any]],
    *,
    state: str | None = None,
    objective_metric: str | None = None,
) -> str:
    """The Markdown note of one finished trial: outcome, parameters, verdicts.

    Verdicts are listed with confidence, evidence and recommendation; all text read from
    storage is escaped.
    """
    state = state or trial.state.name
    attrs = trial.user_attrs
    strategy = as_str(attrs.get("strategy"))
    title = f"### Trial {trial.number}: {_state_phrase(trial, state)}"
    lines = [title, ""]
    if strategy is not None:
        lines += [f"Textbook strategy: *{note_escape(strategy, 200)}*", ""]
    parent_number, how = trial_origin(attrs)
    if parent_number is not None and (
        PROPOSED_BY in attrs or SCREEN in attrs or SCREEN_WINNER in attrs
    ):
        # The same words as the Answer's path: who proposed this trial, and why.
        lines += [f"Proposed by trial {parent_number}: {note_escape(how, 300)}", ""]
    gradual = attrs.get(GRADUAL_UNFREEZING)
    if isinstance(gradual, Mapping):
        parent, layers = as_int(gradual.get("of")), as_int(gradual.get("unfrozen_layers"))
        if parent is not None and layers is not None:
            lines += [
                f"Gradual unfreezing: trial {parent}, the best of the informed start, with "
                f"{layers} layer{'' if layers == 1 else 's'} unfrozen",
                "",
            ]

    facts: list[str] = []
    if state == "COMPLETE" and trial.values:
        name = note_escape(objective_metric or "value", 60)
        facts.append(f"objective {name} {fmt_num(as_float(trial.values[0]))}")
    best_epoch = as_int(attrs.get("best_epoch"))
    epochs_run = as_int(attrs.get("epochs_run"))
    if best_epoch is not None:
        of = f" of {epochs_run}" if epochs_run is not None else ""
        facts.append(f"best epoch {best_epoch}{of}")
    elif epochs_run is not None:
        facts.append(f"{epochs_run} epochs")
    for key, text in (
        ("best_val_loss", "best val loss"),
        ("val_accuracy_at_best", "val accuracy at best"),
        ("final_val_loss", "final val loss"),
    ):
        value = as_float(attrs.get(key))
        if value is not None:
            facts.append(f"{text} {fmt_num(value)}")
    warmup = as_int(attrs.get("warmup_epochs"))
    if warmup:
        facts.append(f"{warmup} warm-up epochs")
    if facts:
        text = "; ".join(facts)
        lines += [text[:1].upper() + text[1:], ""]
    cache_off = as_str(attrs.get("cache_off"))
    if cache_off is not None:
        lines += [f"Trained without cached activations: {note_escape(cache_off, 300)}", ""]

    if trial.params:
        lines += ["| parameter | value |", "| --- | ---: |"]
        for name, value in trial.params.items():
            lines.append(f"| {note_escape(_label(name), 100)} | {_value_text(value)} |")
        lines.append("")

    detail = as_str(attrs.get("prune_detail"))
    if state == "PRUNED" and detail is not None:
        lines += [f"**Why pruned:** {note_escape(detail)}", ""]
    fail = as_str(attrs.get("fail_reason"))
    if state == "FAIL" and fail is not None:
        lines += [f"**Why it failed:** {note_escape(fail)}", ""]

    if history_length(trial) or trial.intermediate_values:
        lines += ["Learning curves (SVG) and per-epoch history (CSV): see Artifacts below.", ""]
    items = verdict_dicts(list(verdicts))
    lines.append("#### Verdicts")
    lines.append("")
    if not items:
        lines += ["No verdict: the trial recorded no usable learning curve.", ""]
    for item in items:
        confidence = item.get("confidence")
        conf = f" (confidence {confidence:.2f})" if isinstance(confidence, float) else ""
        lines.append(f"**{_verdict_title(str(item['verdict']))}**{conf}")
        lines.append("")
        lines += _clauses("Evidence", str(item["evidence"]))
        lines += _clauses("Recommendation", str(item["recommendation"]))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# ----------------------------------------------------------------------------- study note


def _trials_by_verdict(diagnosis: StudyDiagnosis) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for trial in diagnosis.trials:
        for verdict in trial.verdicts:
            found.setdefault(verdict.verdict, []).append(trial.number)
    return found


def _numbers(numbers: Sequence[int], limit: int = 20) -> str:
    shown = ", ".join(str(n) for n in numbers[:limit])
    return shown + (f" and {len(numbers) - limit} more" if len(numbers) > limit else "")


def _importance_line(diagnosis: StudyDiagnosis, key: str, title: str) -> str:
    values: Mapping[str, float] = getattr(diagnosis.importances, key)
    evaluator = diagnosis.importances.evaluators.get(key) or "n/a"
    shown = ", ".join(f"{note_escape(_label(k), 100)} {v:.2f}" for k, v in values.items())
    return f"- **Importance for {title}** ({note_escape(evaluator, 100)}): {shown or 'n/a'}"


def _diagnosis_lines(diagnosis: StudyDiagnosis) -> list[str]:
    lines = ["#### Diagnosis", ""]
    by_verdict = _trials_by_verdict(diagnosis)
    counts = [
        f"{_verdict_title(v)} {len(by_verdict[v])} (trials {_numbers(by_verdict[v])})"
        for v in VERDICTS
        if by_verdict.get(v)
    ]
    lines.append("- **Verdicts:** " + ("; ".join(counts) if counts else "none yet"))
    lines.append(f"- **Climbing:** {note_escape(diagnosis.climb.headline)}")
    lines.extend(f"  - {note_escape(s)}" for s in diagnosis.climb.sentences)
    lines.append(_importance_line(diagnosis, "best_val_loss", "best val loss"))
    lines.append(_importance_line(diagnosis, "climb", "climb size"))
    if diagnosis.levers is not None:
        lines.append(f"- **Levers:** {note_escape(diagnosis.levers.headline)}")
        if diagnosis.levers.support:
            lines.append(f"  - {note_escape(diagnosis.levers.support)}")
    lines.append(f"- **Robust region:** {note_escape(diagnosis.robust_region.sentence)}")
    lines.append(
        f"- **Feature extraction vs fine-tuning:** {note_escape(diagnosis.fe_vs_ft.sentence)}"
    )
    if diagnosis.domain_shift is not None:
        lines.append(f"- **Domain shift:** {note_escape(diagnosis.domain_shift.sentence)}")
    lines.append("")
    lines.append("Each trial's note has its verdicts with evidence and a recommendation.")
    lines.append("")
    return lines


def _ranking_lines(ranking: RankingInfo, top_n: int) -> list[str]:
    ranked = ranking.ranked[:top_n]
    score = "best val loss" if ranking.rank_by == "best_val_loss" else ranking.objective_metric
    lines = [f"#### Ranking (top {len(ranked)} of {len(ranking.ranked)} ranked trials)", ""]
    if not ranked:
        return [*lines, "No trial has recorded a metric yet.", ""]
    header = ["rank", "trial", "state", note_escape(score, 60), "best epoch", "parameters"]
    lines.append("| " + " | ".join([*header, "verdicts"]) + " |")
    lines.append("| ---: | --- | --- | ---: | ---: | --- | --- |")
    for row in ranked:
        trial = f"\\#{row.number}"
        if row.strategy is not None:
            trial += f" {note_escape(row.strategy, 60)}"
        state = row.state.lower()
        if row.state == "PRUNED" and row.prune_reason:
            state += f" ({note_escape(row.prune_reason.replace('_', ' '), 40)})"
        params = ", ".join(
            f"{note_escape(_label(c.name), 60)} {_value_text(row.params[c.name], 60)}"
            for c in ranking.param_columns
            if c.name in row.params
        )
        verdicts = note_escape(", ".join(v.replace("_", " ") for v in row.verdicts), 200)
        cells = [str(row.rank), trial, state, fmt_num(row.score), fmt_num(row.best_epoch)]
        cells += [params or "\\-", verdicts or "\\-"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def render_study_note(
    study_name: str,
    diagnosis: StudyDiagnosis,
    ranking: RankingInfo,
    *,
    study_attrs: Mapping[str, Any] | None = None,
    top_n: int = 10,
    updated: str | None = None,
) -> str:
    """The Markdown study note: counts, data, the study diagnosis and the top ``top_n``.

    Link-free: the ranking names trial numbers only. ``updated`` (e.g. an ISO time) is shown
    as given; leave it out for a deterministic note.
    """
    attrs = study_attrs or {}
    counts = ranking.state_counts
    state_text = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) or "no trials"
    metric = note_escape(ranking.objective_metric, 60)
    lines = [
        f"### thaw study {note_escape(study_name, 200)}",
        "",
        f"{ranking.n_trials} trials ({state_text}); objective {metric} ({ranking.direction}).",
        "",
    ]
    names = dig(attrs, DATA, "class_names")
    if isinstance(names, Sequence) and not isinstance(names, (str, bytes)) and names:
        shown = ", ".join(note_escape(n, 80) for n in list(names)[:30])
        more = f" and {len(names) - 30} more" if len(names) > 30 else ""
        lines += [f"Classes ({len(names)}): {shown}{more}.", ""]
    if updated is not None:
        lines += [f"*Updated {note_escape(updated, 60)}.*", ""]
    lines += _diagnosis_lines(diagnosis)
    lines += _ranking_lines(ranking, top_n)
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------- chart and CSV


def trial_curves_info(
    trial: FrozenTrial, *, state: str | None = None, objective_metric: str | None = "val_loss"
) -> CurvesInfo:
    """Learning curves of one trial (validation and training loss per epoch).

    Falls back to intermediate values when the objective is ``val_loss`` and the trial has no
    ``history``. ``state`` overrides the trial's state name.
    """
    state = state or trial.state.name
    attrs = trial.user_attrs
    val = history_series(trial, "val_loss")
    train = history_series(trial, "loss")
    if not val and objective_metric == "val_loss":
        steps = dict(intermediate_series(trial))
        n = max(steps, default=0)
        val = tuple(steps.get(epoch) for epoch in range(1, n + 1))
    n_epochs = max(len(val), len(train))
    series: tuple[CurveSeries, ...] = ()
    if n_epochs:
        best_epoch = as_int(attrs.get("best_epoch"))
        if best_epoch is None:
            finite = [(v, i + 1) for i, v in enumerate(val) if v is not None]
            best_epoch = min(finite)[1] if finite else None
        strategy = as_str(attrs.get("strategy"))
        label = f"#{trial.number}" + (f" {strategy}" if strategy else "")
        series = (
            CurveSeries(
                number=trial.number,
                label=label,
                role="strategy" if strategy else "top",
                strategy=strategy,
                state=state,
                epochs=tuple(range(1, n_epochs + 1)),
                val_loss=tuple(val) + (None,) * (n_epochs - len(val)),
                train_loss=tuple(train) + (None,) * (n_epochs - len(train)),
                best_epoch=best_epoch,
                stopped_epoch=(as_int(attrs.get("prune_epoch")) or n_epochs)
                if state == "PRUNED"
                else None,
                prune_reason=as_str(attrs.get("prune_reason")) if state == "PRUNED" else None,
            ),
        )
    values = [v for s in series for v in (*s.val_loss, *s.train_loss) if v is not None]
    y_log = _use_log(values)
    return CurvesInfo(
        series=series,
        y_log=y_log,
        x_label="epoch",
        y_label="loss (lower is better" + (", log scale)" if y_log else ")"),
    )


def render_trial_curves_svg(
    trial: FrozenTrial, *, state: str | None = None, objective_metric: str | None = "val_loss"
) -> str:
    """A standalone SVG file (with ``xmlns``, so browsers show it in ``<img>``) of one trial's
    learning curves, or ``""`` when the trial recorded no loss."""
    svg = render_curves_svg(
        trial_curves_info(trial, state=state, objective_metric=objective_metric)
    )
    if not svg:
        return ""
    if "xmlns=" not in svg.split(">", 1)[0]:
        svg = svg.replace("<svg ", f'<svg xmlns="{SVG_NAMESPACE}" ', 1)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + svg + "\n"


def render_history_csv(trial: FrozenTrial) -> str:
    """Per-epoch history of one trial as CSV (:data:`HISTORY_CSV_COLUMNS`); empty cells are
    values not recorded or not finite."""
    columns = {key: history_series(trial, key) for key in HISTORY_KEYS}
    steps = dict(intermediate_series(trial))
    n = max([len(v) for v in columns.values()] + [max(steps, default=0)])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HISTORY_CSV_COLUMNS)
    for epoch in range(1, n + 1):
        row: list[str] = [str(epoch)]
        for key in HISTORY_KEYS:
            values = columns[key]
            value = values[epoch - 1] if epoch <= len(values) else None
            row.append("" if value is None else repr(value))
        step = steps.get(epoch)
        row.append("" if step is None else repr(step))
        writer.writerow(row)
    return buffer.getvalue()
