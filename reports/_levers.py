"""Which parameter levels make the difference: study findings from a ranking, as data.

For each parameter the best trials share a level of (a categorical value, or a numeric
range), thaw compares that level with the rest of the study two ways:

- per level: the best and median score of the trials at each level, and how many of the
  top trials use it ("frozen BatchNorm never gets below 0.57");
- controlled: each trial outside the level is matched with its nearest trial inside the
  level on every *other* parameter (normalised distance), and the pair's scores are
  compared, so a level does not get credit for what another parameter did. Only trials of
  comparable length are matched (:func:`comparable_length`): a configuration screened out
  after 1 epoch says nothing against one trained for 20.

A level whose trials all stopped before the level's best trial had trained as long is named
with how long they trained ("frozen BatchNorm never gets below 1.58 within the 3 epochs its
trials ran"): its best is a short run's, not the level's.

A finding is kept when at least ``min_share`` of the top trials use the level, some trials
lie outside it, and the level wins most of its matched pairs. The strongest finding is the
study's one answer to "what matters most": the Answer, ``summary.json``, ``thaw diagnose``, the
dashboard note and the importance section all read it from :class:`LeverInfo`. PED-ANOVA's
importances are supporting evidence: :attr:`LeverInfo.support` says whether they agree, and
why they may not (it weighs how often the top trials used a level, so a level the sampler
rarely tried counts for little there). Pure data: the renderers turn the sentences and the
numbers into words.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from thaw.reports._format import param_label
from thaw.reports._ranking import ParamColumn, RankingInfo, RankingRow

MIN_TRIALS = 4
"""Scored trials a study needs before levers are looked for."""
MAX_TOP = 5
MIN_SHARE = 0.8
"""Share of the top trials that must use a level for it to be a finding."""
N_BINS = 3
"""Numeric parameters are cut into this many bins of (nearly) equal numbers of distinct
values, on a log scale for log parameters, before their levels are compared."""
MIN_RATIO = 1.1
"""For losses: the best trial outside the level must be at least this many times worse."""
MAX_FINDINGS = 3

LEVEL_GLOSS = {
    ("batchnorm", "adapt"): "BatchNorm statistics re-estimated on your data (adapt)",
    ("batchnorm", "frozen"): "BatchNorm kept at its pretraining statistics (frozen)",
    ("batchnorm", "train"): "BatchNorm layers trained with the unfrozen layers (train)",
}
"""Plain words for categorical levels whose name means little on its own."""
LEVEL_SHORT = {
    ("batchnorm", "adapt"): "adapted BatchNorm",
    ("batchnorm", "frozen"): "frozen BatchNorm",
    ("batchnorm", "train"): "trained BatchNorm",
}

LeverKind = Literal["categorical", "range"]


@dataclass(frozen=True)
class LevelStat:
    """Trials at one level of a parameter (``inside`` is the lever's level)."""

    level: str
    n_trials: int
    best: float | None
    median: float | None
    n_top: int
    max_epochs: int | None = None
    """The most epochs any of its trials trained (``None``: not recorded)."""


@dataclass(frozen=True)
class LeverFinding:
    """One parameter level that the best trials share, compared with the rest."""

    param: str
    kind: LeverKind
    level: str
    """Categorical value, or the range as text (``0.0031..0.0099``)."""
    low: float | None
    high: float | None
    """Range bounds for ``kind="range"`` (inclusive); ``None`` for categorical levels."""
    n_top: int
    top_k: int
    best_inside: float
    best_outside: float | None
    ratio: float | None
    """``best_outside / best_inside`` for losses (how many times worse the best trial
    outside the level is); ``None`` when maximizing or not computable."""
    pairs: int
    pairs_won: int
    """Matched pairs (outside trial, nearest inside trial) and how many the level won."""
    levels: tuple[LevelStat, ...]
    """Every level of a categorical parameter; the numeric bins of a range."""
    sentence: str
    brief: str = ""
    """The sentence for the first screen: the matched pairs in a short parenthesis."""
    best_inside_epochs: int | None = None
    """Epochs the best trial at the level trained (``None``: not recorded)."""
    outside_epochs: int | None = None
    """The most epochs any trial outside the level trained (``None``: not recorded)."""


@dataclass(frozen=True)
class LeverInfo:
    """The study's levers (strongest first) and PED-ANOVA's view of the same parameters."""

    findings: tuple[LeverFinding, ...]
    n_scored: int
    top_k: int
    maximize: bool
    importances: Mapping[str, float] = field(default_factory=dict)
    """Share of the best-loss variation per parameter (supporting evidence; may be empty)."""
    evaluator: str = "PED-ANOVA"

    @property
    def biggest(self) -> str | None:
        """The parameter that matters most: the strongest finding's, or ``None``."""
        return self.findings[0].param if self.findings else None

    @property
    def importance_top(self) -> str | None:
        shares = self.importances
        return max(shares, key=lambda k: (shares[k], k)) if shares else None

    @property
    def agree(self) -> bool | None:
        """Whether PED-ANOVA ranks the biggest lever first (``None`` when either is missing)."""
        top = self.importance_top
        return None if self.biggest is None or top is None else self.biggest == top

    @property
    def headline(self) -> str:
        """What matters most, in one sentence (every view uses this one)."""
        if not self.findings:
            return (
                f"No parameter level sets the best {self.top_k} trials apart yet "
                f"({self.n_scored} scored {'trial' if self.n_scored == 1 else 'trials'})."
            )
        f = self.findings[0]
        return f"What matters most: {f.brief or f.sentence}"

    @property
    def support(self) -> str | None:
        """One line on PED-ANOVA beside the lever: agrees, or disagrees and why."""
        top = self.importance_top
        if top is None:
            return None
        shares, ev = self.importances, self.evaluator
        if self.biggest is None:
            return f"{ev} ranks {param_label(top)} first ({_share(shares[top])})."
        if self.agree:
            return f"{ev} agrees: it ranks {param_label(top)} first ({_share(shares[top])})."
        f = self.findings[0]
        inside = next((s.n_trials for s in f.levels if s.level == f.level), 0)
        rare = min((s for s in f.levels), key=lambda s: s.n_trials)
        why = (
            f"it weighs how often the best trials used each level, and the sampler tried "
            f"{param_label(f.param)} {rare.level} in {_count(rare.n_trials, 'trial')} "
            f"of {self.n_scored}"
            if rare.n_trials * 4 <= self.n_scored
            else "it weighs how often the best trials used each level, not like-for-like "
            "pairs, so another parameter's effect can be credited to it"
        )
        return (
            f"{ev} ranks {param_label(top)} first ({_share(shares[top])}) and gives "
            f"{param_label(f.param)} {_share(shares.get(f.param, 0.0))}: {why}. The "
            f"like-for-like pairs ({f.pairs_won} of {f.pairs} won at {f.level}, "
            f"{_count(inside, 'trial')} there) decide."
        )

    def to_dict(self) -> dict[str, Any]:
        """The finding every view names, and PED-ANOVA beside it (JSON-able)."""
        return {
            "agree": self.agree,
            "biggest": self.biggest,
            "evaluator": self.evaluator,
            "headline": self.headline,
            "importance_top": self.importance_top,
            "n_scored": self.n_scored,
            "support": self.support,
            "top_k": self.top_k,
            "findings": [finding_dict(f) for f in self.findings],
        }


def finding_dict(f: LeverFinding) -> dict[str, Any]:
    """One finding as plain data (``summary.json`` and ``thaw diagnose --json``)."""
    return {
        "param": f.param,
        "kind": f.kind,
        "level": f.level,
        "low": f.low,
        "high": f.high,
        "n_top": f.n_top,
        "top_k": f.top_k,
        "best_inside": f.best_inside,
        "best_outside": f.best_outside,
        "ratio": f.ratio,
        "matched_pairs": f.pairs,
        "matched_pairs_won": f.pairs_won,
        "levels": [
            {
                "level": s.level,
                "n_trials": s.n_trials,
                "best": s.best,
                "median": s.median,
                "n_top": s.n_top,
                "max_epochs": s.max_epochs,
            }
            for s in f.levels
        ],
        "sentence": f.sentence,
    }


def _share(value: float) -> str:
    return "under 1%" if 0 < value < 0.005 else f"{value:.0%}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def level_words(param: str, level: str) -> str:
    """``BatchNorm statistics re-estimated on your data (adapt)`` or ``batchnorm = adapt``."""
    return LEVEL_GLOSS.get((param, level), f"{param} = {level}")


def get_lever_info(
    ranking: RankingInfo,
    importances: Mapping[str, float] | None = None,
    evaluator: str = "PED-ANOVA",
) -> LeverInfo:
    """Levers of the study: at most :data:`MAX_FINDINGS`, strongest first; ``importances``
    (PED-ANOVA's shares for the best loss) ride along as supporting evidence."""
    rows = [r for r in ranking.ranked if r.state in ("COMPLETE", "PRUNED") and r.score is not None]
    maximize = ranking.maximize
    top_k = min(MAX_TOP, max(2, math.ceil(len(rows) / 4)))
    shares = dict(importances or {})
    if len(rows) < MIN_TRIALS:
        return LeverInfo((), len(rows), top_k, maximize, shares, evaluator)
    found: list[LeverFinding] = []
    for column in ranking.param_columns:
        finding = _lever(column, rows, ranking.param_columns, top_k, maximize)
        if finding is not None:
            found.append(finding)
    found.sort(key=lambda f: (-_strength(f, maximize), f.param))
    return LeverInfo(tuple(found[:MAX_FINDINGS]), len(rows), top_k, maximize, shares, evaluator)


def _strength(finding: LeverFinding, maximize: bool) -> float:
    if finding.best_outside is None:
        return 0.0
    gap = finding.best_inside - finding.best_outside
    if not maximize:
        gap = -gap
        if finding.best_inside > 0:
            gap = math.log(finding.best_outside / finding.best_inside)
    return gap + 0.01 * finding.pairs_won


def _lever(
    column: ParamColumn,
    rows: Sequence[RankingRow],
    columns: Sequence[ParamColumn],
    top_k: int,
    maximize: bool,
) -> LeverFinding | None:
    with_value = [r for r in rows if _value(r, column.name) is not None]
    if len(with_value) < MIN_TRIALS:
        return None
    levels_of = _levels(column, with_value)
    if levels_of is None:
        return None
    top = with_value[:top_k]
    names = sorted(set(levels_of.values()))
    if column.kind != "categorical":
        lowest = {
            lv: min(
                _num(_value(r, column.name)) or 0.0 for r in with_value if levels_of[r.number] == lv
            )
            for lv in names
        }
        names.sort(key=lambda lv: lowest[lv])
    if len(names) < 2:
        return None
    counts = {lv: sum(1 for r in top if levels_of[r.number] == lv) for lv in names}
    level_text = max(names, key=lambda lv: (counts[lv], -names.index(lv)))

    def inside(row: RankingRow) -> bool:
        return levels_of[row.number] == level_text

    low = high = None
    if column.kind != "categorical":
        values = [_num(_value(r, column.name)) for r in with_value if inside(r)]
        low = min(v for v in values if v is not None)
        high = max(v for v in values if v is not None)
    ins = [r for r in with_value if inside(r)]
    outs = [r for r in with_value if not inside(r)]
    n_top = sum(1 for r in top if inside(r))
    if not outs or n_top < MIN_SHARE * len(top):
        return None
    best_in = _best([r.score for r in ins], maximize)
    best_out = _best([r.score for r in outs], maximize)
    assert best_in is not None
    best_row = next(r for r in ins if r.score == best_in)
    pairs, won = _matched_pairs(column, ins, outs, columns, maximize)
    if pairs == 0 or won * 2 <= pairs:
        return None
    if best_out is not None and (best_out < best_in if maximize else best_out > best_in) is False:
        return None
    ratio = best_out / best_in if not maximize and best_out is not None and best_in > 0 else None
    stats = tuple(
        _stat(lv, [r for r in with_value if levels_of[r.number] == lv], top, maximize)
        for lv in names
    )
    if ratio is not None and ratio < MIN_RATIO:
        return None
    finding = LeverFinding(
        param=column.name,
        kind="categorical" if column.kind == "categorical" else "range",
        level=level_text,
        low=low,
        high=high,
        n_top=n_top,
        top_k=len(top),
        best_inside=best_in,
        best_outside=best_out,
        ratio=ratio,
        pairs=pairs,
        pairs_won=won,
        levels=stats,
        sentence="",
        best_inside_epochs=best_row.epochs_run,
        outside_epochs=_max_epochs(outs),
    )
    return _with_sentence(finding, maximize)


def _max_epochs(rows: Sequence[RankingRow]) -> int | None:
    """The most epochs any of ``rows`` trained; ``None`` when one of them did not record it."""
    epochs = [r.epochs_run for r in rows]
    if not epochs or any(e is None for e in epochs):
        return None
    return max(e for e in epochs if e is not None)


def _shorter(epochs: int | None, than: int | None) -> bool:
    return epochs is not None and than is not None and epochs < than


def _stopped_by(epochs: int, whose: str = "its trials") -> str:
    return f"within the {_count(epochs, 'epoch')} {whose} ran"


def _with_sentence(f: LeverFinding, maximize: bool) -> LeverFinding:
    metric = "score" if maximize else "validation loss"
    if f.kind == "categorical":
        subject = level_words(f.param, f.level)
        who = (
            f"the {f.top_k} best trials all use it"
            if f.n_top == f.top_k
            else f"{f.n_top} of the {f.top_k} best trials use it"
        )
        lead = f"{subject} makes the difference: {who}"
        others = [s for s in f.levels if s.level != f.level and s.best is not None]
        if others:
            never = "above" if maximize else "below"
            lead += "; " + ", ".join(
                f"{LEVEL_SHORT.get((f.param, s.level), f'{f.param} = {s.level}')} never gets "
                f"{never} {_g3(s.best)}"
                + (
                    f" {_stopped_by(s.max_epochs)}"
                    if s.max_epochs is not None and _shorter(s.max_epochs, f.best_inside_epochs)
                    else ""
                )
                for s in others
            )
    else:
        words = param_label(f.param)
        who = (
            f"the {f.top_k} best trials all lie there"
            if f.n_top == f.top_k
            else f"{f.n_top} of the {f.top_k} best trials lie there"
        )
        lead = f"{words} {f.level}: {who}"
        if f.best_outside is not None:
            lead += f"; elsewhere the best {metric} is {_g3(f.best_outside)}"
            if f.outside_epochs is not None and _shorter(f.outside_epochs, f.best_inside_epochs):
                lead += f", {_stopped_by(f.outside_epochs, 'those trials')}"
    if f.ratio is not None and not _shorter(f.outside_epochs, f.best_inside_epochs):
        # (not against a best from shorter runs: that ratio is the length's as much as the level's)
        lead += f" ({f.ratio:.2g}x the best)" if f.ratio < 10 else f" ({f.ratio:.0f}x the best)"
    lead = lead[0].upper() + lead[1:]
    pairs = f"{f.pairs} {'pair' if f.pairs == 1 else 'pairs'}"
    sentence = f"{lead}. Matched on the other parameters, it won {f.pairs_won} of {pairs}."
    brief = f"{lead} (like-for-like comparisons: won {f.pairs_won} of {pairs})."
    return replace(f, sentence=sentence, brief=brief)


def _levels(column: ParamColumn, rows: Sequence[RankingRow]) -> dict[int, str] | None:
    """Level text per trial number: the categorical value, or the numeric bin as a range."""
    if column.kind == "categorical":
        return {r.number: str(_value(r, column.name)) for r in rows}
    scaled = {r.number: _scaled(column, _value(r, column.name)) for r in rows}
    if any(v is None for v in scaled.values()):
        return None
    distinct = sorted({v for v in scaled.values() if v is not None})
    if len(distinct) < 2:
        return None
    if len(distinct) <= N_BINS:
        edges = distinct
    else:
        edges = [distinct[math.ceil(i * len(distinct) / N_BINS)] for i in range(N_BINS)]
    bins: dict[int, int] = {}
    for number, v in scaled.items():
        assert v is not None
        bins[number] = max(i for i, edge in enumerate(edges) if v >= edge)
    out: dict[int, str] = {}
    for b in set(bins.values()):
        members = [_num(_value(r, column.name)) for r in rows if bins[r.number] == b]
        lo = min(v for v in members if v is not None)
        hi = max(v for v in members if v is not None)
        text = _g3(lo) if lo == hi else f"{_g3(lo)}..{_g3(hi)}"
        for r in rows:
            if bins[r.number] == b:
                out[r.number] = text
    return out


def _value(row: RankingRow, name: str) -> object:
    """The trial's value of parameter ``name`` as it trained: for ``block_start``, the lowest
    layer it unfroze (a start too high for the block is lowered to the top block, so 5 and 8
    of 8 layers with 3 unfrozen are one level), else the sampled value (None: not set)."""
    if name == "block_start" and row.block_start is not None:
        return row.block_start
    return row.params.get(name)


def _g3(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _stat(
    level: str, rows: Sequence[RankingRow], top: Sequence[RankingRow], maximize: bool
) -> LevelStat:
    scores = [r.score for r in rows if r.score is not None]
    numbers = {r.number for r in rows}
    return LevelStat(
        level=level,
        n_trials=len(rows),
        best=_best(scores, maximize),
        median=statistics.median(scores) if scores else None,
        n_top=sum(1 for r in top if r.number in numbers),
        max_epochs=_max_epochs(rows),
    )


#: Two trials are matched only when the shorter trained at least this share of the longer's
#: epochs (a trial's best after a 1-epoch screen round is not its configuration's best).
COMPARABLE_LENGTH = 0.5


def comparable_length(a: RankingRow, b: RankingRow) -> bool:
    """Whether two trials trained comparably long (:data:`COMPARABLE_LENGTH`); True when either
    length is not recorded."""
    if a.epochs_run is None or b.epochs_run is None:
        return True
    short, long = sorted((a.epochs_run, b.epochs_run))
    return short >= COMPARABLE_LENGTH * long


def _matched_pairs(
    column: ParamColumn,
    ins: Sequence[RankingRow],
    outs: Sequence[RankingRow],
    columns: Sequence[ParamColumn],
    maximize: bool,
) -> tuple[int, int]:
    """Pair each trial outside the level with its nearest inside trial of comparable length
    (:func:`comparable_length`) on the other parameters; count the pairs the inside trial
    scored better in."""
    others = [c for c in columns if c.name != column.name]
    spans = {c.name: _span(c, [*ins, *outs]) for c in others}
    pairs = won = 0
    for out in outs:
        candidates = [r for r in ins if comparable_length(out, r)]
        if not candidates:
            continue  # nothing inside the level trained as long: no like-for-like pair
        nearest = min(
            candidates, key=lambda r: (_distance(out, r, others, spans), r.rank or 0, r.number)
        )
        if out.score is None or nearest.score is None or out.score == nearest.score:
            continue
        pairs += 1
        if (nearest.score > out.score) if maximize else (nearest.score < out.score):
            won += 1
    return pairs, won


def _span(column: ParamColumn, rows: Sequence[RankingRow]) -> tuple[float, float] | None:
    if column.kind == "categorical":
        return None
    values = [v for v in (_scaled(column, _value(r, column.name)) for r in rows) if v is not None]
    return (min(values), max(values)) if values else None


def _distance(
    a: RankingRow,
    b: RankingRow,
    columns: Sequence[ParamColumn],
    spans: dict[str, tuple[float, float] | None],
) -> float:
    total = 0.0
    for c in columns:
        va, vb = _value(a, c.name), _value(b, c.name)
        if c.kind == "categorical":
            total += 0.0 if va == vb else 1.0
            continue
        sa, sb, span = _scaled(c, va), _scaled(c, vb), spans.get(c.name)
        if sa is None or sb is None or span is None:
            total += 1.0
        elif span[1] > span[0]:
            total += abs(sa - sb) / (span[1] - span[0])
    return total


def _scaled(column: ParamColumn, value: object) -> float | None:
    v = _num(value)
    if v is None:
        return None
    if column.log:
        return math.log10(v) if v > 0 else None
    return v


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _best(values: Sequence[float | None], maximize: bool) -> float | None:
    finite = [v for v in values if v is not None]
    if not finite:
        return None
    return max(finite) if maximize else min(finite)
