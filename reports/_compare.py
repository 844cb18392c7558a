"""Data of a comparison of several studies that share one objective.

:func:`get_comparison_info` reads every study once (ranking, diagnosis, pruning, manifest)
and lines them up: search efficiency, best configurations, verdict mix, pruning savings,
per-parameter comparison and the settings that differ. Rendering is in
``reports._compare_render``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from thaw._keys import CONFIG, MANIFEST, OBJECTIVE_METRIC
from thaw.reports._attrs import dig
from thaw.reports._charts import (
    EfficiencyCurve,
    EfficiencyInfo,
    get_efficiency_curve,
    get_efficiency_info,
)
from thaw.reports._diagnosis import VERDICTS
from thaw.reports._findings import (
    DeterminismInfo,
    ImportanceInfo,
    get_determinism_info,
    get_diagnosis_info,
    run_diagnosis,
    verdict_mix,
    with_verdicts,
)
from thaw.reports._format import fmt_num, fmt_value, mask_url
from thaw.reports._ranking import ParamColumn, RankingInfo, RankingRow, get_ranking_info
from thaw.reports._summary import (
    MANIFEST_KEYS,
    NOT_RECORDED,
    AnswerInfo,
    ManifestInfo,
    PruningInfo,
    get_answer_info,
    get_manifest_info,
    get_pruning_info,
    manifest_text,
)

NOT_SET = "not set"
TOP_N = 5
"""Trials whose parameter range is reported as "top 5"."""


@dataclass(frozen=True)
class StudyColumn:
    """One study of a comparison."""

    label: str
    """Study name, with ``(i)`` appended when several studies share a name."""
    study_name: str
    ranking: RankingInfo
    answer: AnswerInfo
    pruning: PruningInfo
    manifest: ManifestInfo
    determinism: DeterminismInfo
    efficiency: EfficiencyCurve
    verdict_mix: tuple[tuple[str, int], ...]
    verdicts_computed: int
    """Trials whose verdicts came from the diagnosis (they stored none)."""
    importances: ImportanceInfo
    diagnosis_sentences: tuple[str, ...]
    settings: Mapping[str, Any]
    """Raw value per :data:`SETTING_ITEMS` label (``None``: not recorded)."""

    @property
    def best(self) -> RankingRow | None:
        return self.answer.best


@dataclass(frozen=True)
class SettingDiff:
    """One setting across the studies (``values[i]`` is the text for study ``i``).

    A structured setting that differs (search space, sampler, ...) is split into one
    ``SettingDiff`` per differing key, named ``group.key``.
    """

    item: str
    values: tuple[str, ...]
    group: str = ""
    """The top-level setting (``search space`` for ``search space.dropout``)."""

    @property
    def differs(self) -> bool:
        return len(set(self.values)) > 1


@dataclass(frozen=True)
class ParamCell:
    """One parameter in one study."""

    best: str
    top: str
    """Range over the top 5 ranked trials."""
    tried: str
    """Range over every ranked trial."""
    importance_loss: float | None
    importance_climb: float | None


@dataclass(frozen=True)
class ParamComparison:
    param: str
    cells: tuple[ParamCell, ...]


@dataclass(frozen=True)
class ComparisonInfo:
    """Everything a comparison report shows."""

    direction: str
    objective_metric: str
    score_label: str
    studies: tuple[StudyColumn, ...]
    efficiency: EfficiencyInfo
    common_budget: int | None
    """Epochs spent by the study that spent fewest (a fair budget to compare at)."""
    best_at_budget: tuple[float | None, ...]
    """Best score of each study after ``common_budget`` cumulative epochs."""
    winner: int | None
    """Index of the study with the best score overall (first on ties), if any scored."""
    settings: tuple[SettingDiff, ...]
    params: tuple[ParamComparison, ...]
    param_columns: tuple[ParamColumn, ...]
    verdicts: tuple[str, ...]
    """Verdict names seen in any study, in display order."""

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    @property
    def differences(self) -> tuple[SettingDiff, ...]:
        return tuple(s for s in self.settings if s.differs)

    def differing_groups(self) -> tuple[str, ...]:
        """``seed``, ``search space (dropout, learning_rate)``: what differs, in order."""
        keys: dict[str, list[str]] = {}
        for diff in self.differences:
            sub = keys.setdefault(diff.group, [])
            if diff.item != diff.group:
                sub.append(diff.item[len(diff.group) + 1 :])
        return tuple(
            g if not k else f"{g} ({', '.join(k)})" if len(k) <= 4 else f"{g} ({len(k)} keys)"
            for g, k in keys.items()
        )


SETTING_ITEMS = (
    "objective",
    "seed",
    "sampler",
    "pruner",
    "model",
    "dataset fingerprint",
    "search space",
    "training",
    "trials planned",
    "config hash",
    "deterministic",
    *MANIFEST_KEYS,
    "storage",
)
"""What the comparison checks for differences, in display order."""


def objective_of(study: optuna.Study) -> tuple[str, str]:
    """``(direction, objective metric)`` as the report ranks the study."""
    ranking_direction = "maximize" if study.directions[0].name == "MAXIMIZE" else "minimize"
    metric = study.user_attrs.get(OBJECTIVE_METRIC)
    if not isinstance(metric, str) or not metric.strip():
        metric = "val_accuracy" if ranking_direction == "maximize" else "val_loss"
    return ranking_direction, metric


def check_comparable(studies: Sequence[optuna.Study]) -> None:
    """Raise ``ValueError`` (one line) unless there are >= 2 studies with one objective."""
    if len(studies) < 2:
        raise ValueError(f"a comparison needs at least two studies, got {len(studies)}")
    objectives = [objective_of(s) for s in studies]
    if len(set(objectives)) > 1:
        listed = "; ".join(
            f"{s.study_name!r}: {direction} {metric}"
            for s, (direction, metric) in zip(studies, objectives, strict=True)
        )
        raise ValueError(f"cannot compare studies with different objectives ({listed})")


def get_comparison_info(
    studies: Sequence[optuna.Study], storage_urls_masked: Sequence[str | None] | None = None
) -> ComparisonInfo:
    """Read every study once and line them up for comparison.

    ``storage_urls_masked[i]`` (passwords are masked again anyway) belongs to ``studies[i]``.

    Raises:
        ValueError: fewer than two studies, objectives (direction or
            ``thaw:objective_metric``) differ, or ``storage_urls_masked`` has the wrong length.
    """
    check_comparable(studies)
    urls = list(storage_urls_masked) if storage_urls_masked is not None else [None] * len(studies)
    if len(urls) != len(studies):
        raise ValueError(f"storage_urls_masked has {len(urls)} entries for {len(studies)} studies")
    labels = _labels([s.study_name for s in studies])
    columns = tuple(
        _column(study, label, url) for study, label, url in zip(studies, labels, urls, strict=True)
    )
    first = columns[0].ranking
    efficiency = get_efficiency_info([c.ranking for c in columns], labels)
    totals = [c.efficiency.total_epochs for c in columns if c.efficiency.points]
    budget = min(totals) if totals else None
    at_budget = tuple(None if budget is None else _best_at(c.efficiency, budget) for c in columns)
    scored = [(c.answer.best_overall, i) for i, c in enumerate(columns)]
    winner = _winner(scored, first.maximize)
    param_columns = _union_columns([c.ranking for c in columns])
    verdicts = _verdict_order(columns)
    return ComparisonInfo(
        direction=first.direction,
        objective_metric=first.objective_metric,
        score_label=columns[0].answer.score_label,
        studies=columns,
        efficiency=efficiency,
        common_budget=budget,
        best_at_budget=at_budget,
        winner=winner,
        settings=tuple(
            diff
            for item in SETTING_ITEMS
            for diff in _setting_diffs(item, [c.settings.get(item) for c in columns])
        ),
        params=tuple(_param_comparison(p, columns) for p in param_columns),
        param_columns=param_columns,
        verdicts=verdicts,
    )


def _column(study: optuna.Study, label: str, url: str | None) -> StudyColumn:
    attrs = study.user_attrs
    ranking = get_ranking_info(study)
    diagnosis = get_diagnosis_info(study, run_diagnosis(study))
    ranking = with_verdicts(ranking, diagnosis)
    answer = get_answer_info(ranking, attrs)
    storage = None if url is None else mask_url(url)
    manifest = get_manifest_info(study.study_name, attrs, storage)
    determinism = get_determinism_info(attrs)
    return StudyColumn(
        label=label,
        study_name=study.study_name,
        ranking=ranking,
        answer=answer,
        pruning=get_pruning_info(ranking, attrs),
        manifest=manifest,
        determinism=determinism,
        efficiency=get_efficiency_curve(ranking, label),
        verdict_mix=verdict_mix(ranking.rows),
        verdicts_computed=sum(1 for r in ranking.rows if r.verdicts_source == "computed"),
        importances=diagnosis.importances,
        diagnosis_sentences=diagnosis.sentences,
        settings=_settings(study, ranking, manifest, determinism),
    )


def _settings(
    study: optuna.Study,
    ranking: RankingInfo,
    manifest: ManifestInfo,
    determinism: DeterminismInfo,
) -> dict[str, Any]:
    attrs = study.user_attrs
    config = attrs.get(CONFIG)
    versions = attrs.get(MANIFEST)
    settings: dict[str, Any] = {
        "objective": f"{ranking.direction} {ranking.objective_metric}",
        "seed": manifest.seed,
        "sampler": _first(config, ("sampler",), ("search", "sampler"), ("study", "sampler")),
        "pruner": _first(config, ("pruner",), ("search", "pruner"), ("study", "pruner")),
        "model": dig(config, "model"),
        "dataset fingerprint": manifest.data_fingerprint,
        "search space": _space(config, study),
        "training": dig(config, "train"),
        "trials planned": dig(config, "n_trials"),
        "config hash": manifest.config_hash,
        "deterministic": None if determinism.deterministic is None else determinism.label,
        "storage": manifest.storage_url,
    }
    for key in MANIFEST_KEYS:
        settings[key] = versions.get(key) if isinstance(versions, Mapping) else None
    return settings


def _setting_diffs(item: str, values: Sequence[Any]) -> list[SettingDiff]:
    texts = tuple(manifest_text(v) for v in values)
    if len(set(texts)) <= 1:
        return [SettingDiff(item, texts, item)]
    mappings = [v for v in values if isinstance(v, Mapping)]
    if len(mappings) < 2 or any(v is not None and not isinstance(v, Mapping) for v in values):
        return [SettingDiff(item, texts, item)]
    keys = sorted({str(k) for m in mappings for k in m})
    out = []
    for key in keys:
        sub = tuple(
            NOT_RECORDED
            if v is None
            else (manifest_text(v[key]) if key in v and v[key] is not None else NOT_SET)
            for v in values
        )
        if len(set(sub)) > 1:
            out.append(SettingDiff(f"{item}.{key}", sub, item))
    return out or [SettingDiff(item, texts, item)]


def _first(data: Any, *paths: tuple[str, ...]) -> Any:
    for path in paths:
        value = dig(data, *path)
        if value is not None:
            return value
    return None


def _space(config: Any, study: optuna.Study) -> Any:
    """The configured search space, else the one the trials' distributions describe."""
    space = dig(config, "search_space")
    if space is not None:
        return space
    found: dict[str, Any] = {}
    for trial in study.get_trials(deepcopy=False):
        for name, dist in trial.distributions.items():
            found.setdefault(name, _dist_dict(dist))
    return dict(sorted(found.items())) or None


def _dist_dict(dist: BaseDistribution) -> Any:
    if isinstance(dist, (IntDistribution, FloatDistribution)):
        return {"high": dist.high, "log": dist.log, "low": dist.low}
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    return str(dist)


def _labels(names: Sequence[str]) -> list[str]:
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return [f"{name} ({i + 1})" if counts[name] > 1 else name for i, name in enumerate(names)]


def _best_at(curve: EfficiencyCurve, budget: int) -> float | None:
    best = None
    for epochs, value in curve.points:
        if epochs > budget:
            break
        best = value
    return best


def _winner(scored: Sequence[tuple[RankingRow | None, int]], maximize: bool) -> int | None:
    best: tuple[float, int] | None = None
    for row, index in scored:
        if row is None or row.score is None:
            continue
        key = (-row.score if maximize else row.score, index)
        if best is None or key < best:
            best = key
    return None if best is None else best[1]


def _union_columns(rankings: Sequence[RankingInfo]) -> tuple[ParamColumn, ...]:
    seen: dict[str, ParamColumn] = {}
    for ranking in rankings:
        for column in ranking.param_columns:
            seen.setdefault(column.name, column)
    return tuple(seen.values())


def _verdict_order(columns: Sequence[StudyColumn]) -> tuple[str, ...]:
    names = {name for c in columns for name, _ in c.verdict_mix}
    return tuple(v for v in VERDICTS if v in names) + tuple(
        sorted(n for n in names if n not in VERDICTS)
    )


def _param_comparison(column: ParamColumn, studies: Sequence[StudyColumn]) -> ParamComparison:
    cells = []
    for study in studies:
        best = study.best
        ranked = study.ranking.ranked
        imp = {t.key: dict(t.bars) for t in study.importances.targets}
        cells.append(
            ParamCell(
                best="-" if best is None else fmt_value(best.params.get(column.name)),
                top=_range(ranked[:TOP_N], column),
                tried=_range(ranked, column),
                importance_loss=imp.get("best_val_loss", {}).get(column.name),
                importance_climb=imp.get("climb", {}).get(column.name),
            )
        )
    return ParamComparison(column.name, tuple(cells))


def _range(rows: Sequence[RankingRow], column: ParamColumn) -> str:
    values = [r.params[column.name] for r in rows if column.name in r.params]
    if not values:
        return "-"
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if column.kind == "categorical" or len(numbers) != len(values):
        return ", ".join(sorted({fmt_value(v) for v in values}))
    low, high = min(numbers), max(numbers)
    return fmt_num(low) if low == high else f"{fmt_num(low)} .. {fmt_num(high)}"
