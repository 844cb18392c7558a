"""Study findings: where climbing concentrates, parameter importances, the robust region,
feature extraction vs fine-tuning, domain shift, and the study diagnosis bundling them with
every trial's verdicts."""

from __future__ import annotations

import dataclasses
import math
import statistics
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from thaw._keys import DOMAIN_SHIFT, NUMBER, OBJECTIVE_METRIC
from thaw.reports._levers import LeverInfo, get_lever_info
from thaw.reports._ranking import get_ranking_info
from thaw.reports.diagnosis._features import (
    TrialCurves,
    _Profile,
    _profile,
)
from thaw.reports.diagnosis._format import _fmt_sig, _fmt_value, _label, _rel
from thaw.reports.diagnosis._inputs import _all_verdicts, read_study_inputs
from thaw.reports.diagnosis._thresholds import DEFAULT_THRESHOLDS, Thresholds
from thaw.reports.diagnosis._verdicts import HEALTHY, VERDICTS, Verdict

__all__ = [
    "ClimbFinding",
    "ClimbSummary",
    "DomainShift",
    "FeatureExtractionComparison",
    "ParamRange",
    "ParameterImportances",
    "RobustRegion",
    "StudyDiagnosis",
    "TrialDiagnosis",
    "climb_summary",
    "diagnose_study",
    "feature_extraction_vs_finetuning",
    "parameter_importances",
    "robust_region",
]

# Candidate split points for climb_summary, as quantiles of a parameter's observed values.
_SPLIT_QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class ClimbFinding:
    """The most separating split of one parameter by climb rate.

    ``group`` is the side with the higher climb rate (e.g. ``>= 2e-3``), ``other`` the rest.
    """

    param: str
    group: str
    climbed: int
    total: int
    other: str
    other_climbed: int
    other_total: int
    z: float
    sentence: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "climbed": self.climbed,
            "group": self.group,
            "other": self.other,
            "other_climbed": self.other_climbed,
            "other_total": self.other_total,
            "param": self.param,
            "sentence": self.sentence,
            "total": self.total,
            "z": round(self.z, 3),
        }


@dataclass(frozen=True)
class ClimbSummary:
    """How many trials climbed and in which parameter ranges climbing concentrates.

    Attributes:
        n_trials: Trials with at least two finite val losses (or pruned as climbing).
        n_climbed: Of those, trials that climbed.
        climbed_trials: Their numbers.
        findings: Per parameter, the most separating split whose z-score reaches
            ``Thresholds.climb_split_min_z``, most separating first.
        headline: One sentence with the counts.
    """

    n_trials: int
    n_climbed: int
    climbed_trials: tuple[int, ...]
    findings: tuple[ClimbFinding, ...]
    headline: str

    @property
    def sentences(self) -> list[str]:
        return [f.sentence for f in self.findings]

    def to_dict(self) -> dict[str, Any]:
        return {
            "climbed_trials": list(self.climbed_trials),
            "findings": [f.to_dict() for f in self.findings],
            "headline": self.headline,
            "n_climbed": self.n_climbed,
            "n_trials": self.n_trials,
        }


def _z_score(c1: int, n1: int, c2: int, n2: int) -> float:
    pooled = (c1 + c2) / (n1 + n2)
    if pooled <= 0.0 or pooled >= 1.0:
        return 0.0
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    return (c1 / n1 - c2 / n2) / se


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _best_split(param: str, data: list[tuple[Any, bool]]) -> ClimbFinding | None:
    label = _label(param)
    # (|z|, tie-break, finding)
    options: list[tuple[float, int, ClimbFinding]] = []
    if all(_is_number(v) for v, _ in data):
        values = sorted(float(v) for v, _ in data)
        n = len(values)
        cuts = sorted({values[int(math.floor(q * (n - 1)))] for q in _SPLIT_QUANTILES})
        is_int = all(isinstance(v, int) for v, _ in data)
        for i, cut in enumerate(cuts):
            below = [(float(v), c) for v, c in data if float(v) <= cut]
            above = [(float(v), c) for v, c in data if float(v) > cut]
            if not below or not above:
                continue
            cb, nb = sum(c for _, c in below), len(below)
            ca, na = sum(c for _, c in above), len(above)
            z = _z_score(ca, na, cb, nb)

            def fmt(x: float, is_int: bool = is_int) -> str:
                return str(int(x)) if is_int else _fmt_sig(x)

            above_text = f"{label} >= {fmt(min(v for v, _ in above))}"
            below_text = f"{label} <= {fmt(max(v for v, _ in below))}"
            if z >= 0:
                hi = (above_text, ca, na, below_text, cb, nb)
            else:
                hi = (below_text, cb, nb, above_text, ca, na)
            options.append((abs(z), i, _finding(param, *hi, abs(z))))
    else:
        categories = sorted({str(v) for v, _ in data})
        if len(categories) < 2:
            return None
        for i, cat in enumerate(categories):
            inside = [c for v, c in data if str(v) == cat]
            outside = [c for v, c in data if str(v) != cat]
            ci, ni = sum(inside), len(inside)
            co, no = sum(outside), len(outside)
            z = _z_score(ci, ni, co, no)
            in_text = f"{label} = {cat}"
            out_text = f"other {label} values"
            if z >= 0:
                hi = (in_text, ci, ni, out_text, co, no)
            else:
                hi = (out_text, co, no, in_text, ci, ni)
            options.append((abs(z), i, _finding(param, *hi, abs(z))))
    if not options:
        return None
    # Most separating first; on ties prefer a concrete category / range as the climbing group.
    return min(options, key=lambda o: (-o[0], o[2].group.startswith("other "), o[1]))[2]


def _finding(
    param: str, group: str, c: int, n: int, other: str, oc: int, on: int, z: float
) -> ClimbFinding:
    sentence = f"{c} of {n} trials with {group} climbed; {oc} of {on} with {other}"
    return ClimbFinding(param, group, c, n, other, oc, on, z, sentence)


def _climb_summary(profiles: Sequence[_Profile], t: Thresholds) -> ClimbSummary:
    considered = [p for p in profiles if len(p.val) >= 2 or p.curves.prune_reason == "climbing"]
    climbed = tuple(sorted(p.curves.number for p in considered if p.climbed))
    params = sorted({k for p in considered for k in p.curves.params})
    findings = []
    for param in params:
        data = [
            (p.curves.params[param], p.climbed)
            for p in considered
            if param in p.curves.params and p.curves.params[param] is not None
        ]
        if len(data) < 2:
            continue
        finding = _best_split(param, data)
        if finding is not None and finding.z >= t.climb_split_min_z and finding.z > 0:
            findings.append(finding)
    findings.sort(key=lambda f: (-f.z, f.param))
    headline = (
        f"{len(climbed)} of {len(considered)} trials climbed (val loss ended >= "
        f"{100 * t.climb_min_relative_rise:g}% above its best, or pruned as climbing)"
    )
    return ClimbSummary(len(considered), len(climbed), climbed, tuple(findings), headline)


def climb_summary(
    trials: Sequence[TrialCurves], thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> ClimbSummary:
    """Count climbing trials and find the parameter ranges where climbing concentrates.

    A trial climbed when it was pruned as ``climbing`` or when its final val loss (and the
    smoothed end of its curve) lies at least ``climb_min_relative_rise`` above its best, beyond
    the curve's noise (the same rule :func:`diagnose_trial` uses).

    Each numeric parameter is split at candidate thresholds (deciles of its observed values);
    categorical parameters are split one category against the rest. The split with the largest
    two-proportion z-score is kept per parameter and reported when it reaches
    ``climb_split_min_z``, as a sentence such as ``"9 of 11 trials with learning rate >= 2e-3
    climbed; 1 of 19 with learning rate <= 5e-4"`` (the bounds are the observed extremes of the
    two groups).
    """
    return _climb_summary([_profile(c, thresholds) for c in trials], thresholds)


# --------------------------------------------------------------------------------------------
# Study level: parameter importances
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParameterImportances:
    """Normalised parameter importances for two targets.

    Attributes:
        best_val_loss: Importance for the best val loss of COMPLETE trials.
        climb: Importance for the climb size (final minus best val loss) of COMPLETE and
            PRUNED trials (pruned trials carry the climb measured until pruning).
        evaluators: Evaluator used per target (``PED-ANOVA``, ``fANOVA``) or ``""`` when no
            importance could be computed (too few trials, no variation, evaluator errors).
    """

    best_val_loss: Mapping[str, float]
    climb: Mapping[str, float]
    evaluators: Mapping[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "best_val_loss": dict(self.best_val_loss),
            "climb": dict(self.climb),
            "evaluators": dict(sorted(self.evaluators.items())),
        }


def _read_curves(
    study: optuna.Study, frozen: Sequence[FrozenTrial], metric: str | None
) -> list[TrialCurves]:
    val_loss_objective = metric == "val_loss" or (
        metric is None and study.directions == [StudyDirection.MINIMIZE]
    )
    return [
        TrialCurves.from_frozen_trial(ft, intermediate_is_val_loss=val_loss_objective)
        for ft in frozen
    ]


def _target_study(trials: Sequence[FrozenTrial]) -> optuna.Study:
    # A throw-away in-memory study (no log line, unlike optuna.create_study) whose trials are
    # all COMPLETE so pruned trials count for the climb target.
    storage = optuna.storages.InMemoryStorage()
    storage.create_new_study([StudyDirection.MINIMIZE], "thaw-diagnosis-importance")
    study = optuna.Study(study_name="thaw-diagnosis-importance", storage=storage)
    study.add_trials(
        optuna.trial.create_trial(
            params=dict(ft.params),
            distributions=dict(ft.distributions),
            value=0.0,
            user_attrs={NUMBER: ft.number},
        )
        for ft in trials
    )
    return study


def _evaluate_importance(
    study: optuna.Study, values: Mapping[int, float], params: list[str]
) -> tuple[dict[str, float], str]:
    def target(ft: FrozenTrial) -> float:
        return values.get(ft.user_attrs[NUMBER], math.nan)

    # PED-ANOVA is deterministic; aim for >= 5 trials in its top quantile.
    quantile = min(0.5, max(0.1, 5.0 / max(len(values), 1)))
    makers: list[tuple[str, Callable[[], optuna.importance.BaseImportanceEvaluator]]] = [
        (
            "PED-ANOVA",
            lambda: optuna.importance.PedAnovaImportanceEvaluator(target_quantile=quantile),
        ),
        ("fANOVA", lambda: optuna.importance.FanovaImportanceEvaluator(seed=0)),
    ]
    for name, make in makers:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                raw = optuna.importance.get_param_importances(
                    study, evaluator=make(), params=params, target=target, normalize=False
                )
        except Exception:  # fANOVA needs scikit-learn; degenerate data may raise
            continue
        total = sum(raw.values())
        if not math.isfinite(total) or total <= 0.0:
            return {}, name
        normalised = [(k, round(v / total, 6)) for k, v in raw.items()]
        return dict(sorted(normalised, key=lambda kv: (-kv[1], kv[0]))), name
    return {}, ""


def _importances(
    trials: Sequence[FrozenTrial], curves: Mapping[int, TrialCurves], t: Thresholds
) -> ParameterImportances:
    usable: list[FrozenTrial] = []
    best_values: dict[int, float] = {}
    climbs: dict[int, float] = {}
    for ft in trials:
        if ft.state not in (TrialState.COMPLETE, TrialState.PRUNED) or not ft.params:
            continue
        c = curves[ft.number]
        best, final = c.best_val_loss, c.final_val_loss
        if best is None or final is None:
            continue
        usable.append(ft)
        climbs[ft.number] = final - best
        if ft.state == TrialState.COMPLETE:
            best_values[ft.number] = best
    results: dict[str, dict[str, float]] = {"best_val_loss": {}, "climb": {}}
    evaluators = {"best_val_loss": "", "climb": ""}
    if len(climbs) >= t.importance_min_trials:
        study = _target_study(usable)
        for key, values in (("best_val_loss", best_values), ("climb", climbs)):
            if len(values) < t.importance_min_trials:
                continue
            params = sorted({p for ft in usable if ft.number in values for p in ft.params})
            results[key], evaluators[key] = _evaluate_importance(study, values, params)
    return ParameterImportances(results["best_val_loss"], results["climb"], evaluators)


def parameter_importances(
    study: optuna.Study, thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> ParameterImportances:
    """Parameter importances for the best val loss and for the climb size.

    Uses Optuna's :class:`~optuna.importance.PedAnovaImportanceEvaluator` (deterministic, no
    scikit-learn needed) with a top quantile holding about five trials, falling back to
    ``FanovaImportanceEvaluator(seed=0)``; returns empty mappings when fewer than
    ``importance_min_trials`` trials have the target or no evaluator works.
    """
    trials = study.get_trials(deepcopy=False)
    metric = study.user_attrs.get(OBJECTIVE_METRIC)
    curves = _read_curves(study, trials, metric if isinstance(metric, str) else None)
    return _importances(trials, {c.number: c for c in curves}, thresholds)


# --------------------------------------------------------------------------------------------
# Study level: robust region and feature extraction vs fine-tuning
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamRange:
    """Observed range of one parameter: ``low..high`` for numbers, ``choices`` otherwise."""

    param: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()

    def describe(self) -> str:
        label = _label(self.param)
        if self.low is None or self.high is None:
            return f"{label} in {{{', '.join(str(c) for c in self.choices)}}}"
        if self.low == self.high:
            return f"{label} = {_fmt_value(self.low)}"
        return f"{label} {_fmt_value(self.low)}..{_fmt_value(self.high)}"

    def to_dict(self) -> dict[str, Any]:
        if self.low is None or self.high is None:
            return {"choices": list(self.choices), "param": self.param}
        return {"high": self.high, "low": self.low, "param": self.param}


@dataclass(frozen=True)
class RobustRegion:
    """Parameter ranges of the top ``robust_top_fraction`` of completed trials.

    Attributes:
        n_completed: Completed trials with a finite best val loss.
        top_trials: Numbers of the top trials (best first).
        ranges: Parameter ranges over the top trials.
        expected_best_val_loss: Mean best val loss of the top trials.
        mean_best_val_loss: Mean best val loss of all completed trials, for contrast.
        sentence: Human summary.
    """

    n_completed: int
    top_trials: tuple[int, ...]
    ranges: tuple[ParamRange, ...]
    expected_best_val_loss: float | None
    mean_best_val_loss: float | None
    sentence: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "expected_best_val_loss": _round(self.expected_best_val_loss),
            "mean_best_val_loss": _round(self.mean_best_val_loss),
            "n_completed": self.n_completed,
            "ranges": [r.to_dict() for r in self.ranges],
            "sentence": self.sentence,
            "top_trials": list(self.top_trials),
        }


def _round(x: float | None, digits: int = 6) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, digits)


def _ranked(trials: Sequence[TrialCurves], states: tuple[str, ...]) -> list[TrialCurves]:
    with_loss = [c for c in trials if c.state in states and c.best_val_loss is not None]
    return sorted(with_loss, key=lambda c: (c.best_val_loss, c.number))


def robust_region(
    trials: Sequence[TrialCurves], thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> RobustRegion:
    """Parameter ranges where the top quarter (``robust_top_fraction``) of completed trials
    fall, with their expected (mean) best val loss."""
    ranked = _ranked(trials, ("COMPLETE",))
    if not ranked:
        return RobustRegion(0, (), (), None, None, "no completed trial with a val loss yet")
    k = max(1, math.ceil(len(ranked) * thresholds.robust_top_fraction))
    top = ranked[:k]
    ranges = []
    for param in sorted({p for c in top for p in c.params}):
        values = [c.params[param] for c in top if c.params.get(param) is not None]
        if not values:
            continue
        if all(_is_number(v) for v in values):
            ranges.append(ParamRange(param, min(values), max(values)))
        else:
            ranges.append(ParamRange(param, choices=tuple(sorted({str(v) for v in values}))))
    expected = statistics.fmean(c.best_val_loss or 0.0 for c in top)
    overall = statistics.fmean(c.best_val_loss or 0.0 for c in ranked)
    where = "; ".join(r.describe() for r in ranges) or "no params"
    n = len(ranked)
    who = (
        f"the best of {n} completed trials has"
        if k == 1 < n
        else f"the best {k} of {n} completed trials have"
        if k < n
        else ("the one completed trial has" if n == 1 else f"all {n} completed trials have")
    )
    sentence = (
        f"{who} {where}; expected best val loss there {expected:.3g} (all completed: {overall:.3g})"
    )
    return RobustRegion(
        len(ranked), tuple(c.number for c in top), tuple(ranges), expected, overall, sentence
    )


@dataclass(frozen=True)
class FeatureExtractionComparison:
    """Best feature-extraction trial (``unfrozen_layers == 0``) vs best fine-tuning trial.

    Attributes:
        fe_trial / fe_best_val_loss: Best trial with no unfrozen layers.
        ft_trial / ft_best_val_loss / ft_unfrozen_layers: Best trial with unfrozen layers.
        difference: ``ft_best_val_loss - fe_best_val_loss`` (negative: fine-tuning better).
        relative_gain: ``(fe - ft) / fe`` (positive: fine-tuning better).
        interpretation: ``large_gap``, ``moderate_gap``, ``equal``,
            ``feature_extraction_better`` or ``n/a``.
        sentence: What it means for the domain discrepancy.
    """

    fe_trial: int | None
    fe_best_val_loss: float | None
    ft_trial: int | None
    ft_best_val_loss: float | None
    ft_unfrozen_layers: int | None
    difference: float | None
    relative_gain: float | None
    interpretation: str
    sentence: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "difference": _round(self.difference),
            "fe_best_val_loss": _round(self.fe_best_val_loss),
            "fe_trial": self.fe_trial,
            "ft_best_val_loss": _round(self.ft_best_val_loss),
            "ft_trial": self.ft_trial,
            "ft_unfrozen_layers": self.ft_unfrozen_layers,
            "interpretation": self.interpretation,
            "relative_gain": _round(self.relative_gain),
            "sentence": self.sentence,
        }


def feature_extraction_vs_finetuning(
    trials: Sequence[TrialCurves], thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> FeatureExtractionComparison:
    """Compare the best feature-extraction trial with the best fine-tuning trial.

    COMPLETE and PRUNED trials count: a pruned trial's best val loss was really reached.
    """
    ranked = _ranked(trials, ("COMPLETE", "PRUNED"))
    fe = next((c for c in ranked if c.unfrozen_layers == 0), None)
    ft = next((c for c in ranked if (c.unfrozen_layers or 0) > 0), None)
    fe_loss = None if fe is None else fe.best_val_loss
    ft_loss = None if ft is None else ft.best_val_loss
    fe_n = None if fe is None else fe.number
    ft_n = None if ft is None else ft.number
    ft_u = None if ft is None else ft.unfrozen_layers
    if fe_loss is None or ft_loss is None:
        if fe_loss is None and ft_loss is None:
            sentence = "no trials with a val loss to compare feature extraction and fine-tuning"
        elif fe_loss is None:
            sentence = (
                f"no feature-extraction trial (unfrozen_layers = 0) to compare with; the best "
                f"fine-tuning trial #{ft_n} reached {ft_loss:.3g} with {ft_u} unfrozen layers"
            )
        else:
            sentence = (
                f"no fine-tuning trial (unfrozen_layers > 0) to compare with; the best "
                f"feature-extraction trial #{fe_n} reached {fe_loss:.3g}"
            )
        return FeatureExtractionComparison(
            fe_n, fe_loss, ft_n, ft_loss, ft_u, None, None, "n/a", sentence
        )
    diff = ft_loss - fe_loss
    gain = _rel(fe_loss - ft_loss, fe_loss)
    pair = f"{ft_loss:.3g} vs {fe_loss:.3g}"
    fine = f"fine-tuning (trial #{ft_n}, {ft_u} unfrozen layers)"
    extraction = f"feature extraction (trial #{fe_n})"
    if gain >= thresholds.domain_gap_large:
        interpretation = "large_gap"
        sentence = (
            f"{fine} beats {extraction} by {100 * gain:.0f}% ({pair}): the frozen pretrained "
            "features fit the target data poorly, so the target domain likely differs from the "
            "pretraining data and adapting deeper layers pays off"
        )
    elif gain >= thresholds.domain_gap_small:
        interpretation = "moderate_gap"
        sentence = (
            f"{fine} beats {extraction} by {100 * gain:.0f}% ({pair}): a moderate domain "
            "discrepancy; unfreezing top layers helps, but the pretrained features already "
            "carry most of the signal"
        )
    elif gain > -thresholds.domain_gap_small:
        interpretation = "equal"
        sentence = (
            f"{fine} and {extraction} are within {100 * thresholds.domain_gap_small:g}% "
            f"({pair}): the pretrained features transfer well (target close to the "
            "pretraining domain); feature extraction is cheaper and less prone to overfitting"
        )
    else:
        interpretation = "feature_extraction_better"
        sentence = (
            f"{extraction} beats the best {fine} by {100 * -gain:.0f}% ({pair}): fine-tuning "
            "damaged or overfit useful pretrained features (target close to the pretraining "
            "domain, or too little data / too high a learning rate for fine-tuning)"
        )
    return FeatureExtractionComparison(
        fe_n, fe_loss, ft_n, ft_loss, ft_u, diff, gain, interpretation, sentence
    )


# --------------------------------------------------------------------------------------------
# Study level: domain shift score carried from the training side
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DomainShift:
    """Domain-shift score stored by the training side in study attr ``thaw:domain_shift``.

    Attributes:
        overall: Overall score (0 = same distribution as pretraining), if stored.
        layers: ``(layer, score)`` pairs, most shifted first.
        level: ``low``, ``moderate``, ``high`` or ``unknown``.
        sentence: Interpretation.
    """

    overall: float | None
    layers: tuple[tuple[str, float], ...]
    level: str
    sentence: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": {name: score for name, score in sorted(self.layers)},
            "level": self.level,
            "overall": self.overall,
            "sentence": self.sentence,
        }


def _domain_shift(
    attr: Any, t: Thresholds, comparison: FeatureExtractionComparison
) -> DomainShift | None:
    if not isinstance(attr, Mapping):
        return None
    overall_raw = attr.get("overall")
    overall = float(overall_raw) if _is_number(overall_raw) and overall_raw is not None else None
    layers_raw = attr.get("layers")
    layers: list[tuple[str, float]] = []
    if isinstance(layers_raw, Mapping):
        layers = [(str(k), float(v)) for k, v in layers_raw.items() if _is_number(v)]
    layers.sort(key=lambda kv: (-kv[1], kv[0]))
    if overall is None and not layers:
        return None
    if overall is None:
        level = "unknown"
        sentence = "domain shift stored per layer only"
    else:
        if overall < t.domain_shift_low:
            level, meaning = "low", "the target data look like the pretraining data"
        elif overall < t.domain_shift_high:
            level, meaning = "moderate", "the target data partly differ from the pretraining data"
        else:
            level, meaning = "high", "the target data differ clearly from the pretraining data"
        sentence = f"domain shift {overall:.2f} ({level}): {meaning}"
    shifted = [(name, score) for name, score in layers if score >= t.domain_shift_low][:3]
    if shifted:
        top = ", ".join(f"{name} ({score:.2f})" for name, score in shifted)
        sentence += f"; most shifted layers: {top} - unfreezing those adapts the most"
    if level == "high" and comparison.interpretation in ("equal", "feature_extraction_better"):
        sentence += "; yet fine-tuning did not beat feature extraction, so check data size and "
        sentence += "learning rate"
    elif level == "low" and comparison.interpretation == "large_gap":
        sentence += "; yet fine-tuning clearly beat feature extraction, so the gain may come "
        sentence += "from the task (labels) rather than the input domain"
    elif comparison.interpretation != "n/a" and level != "unknown":
        sentence += "; consistent with the feature-extraction vs fine-tuning comparison"
    return DomainShift(overall, tuple(layers), level, sentence)


# --------------------------------------------------------------------------------------------
# Study diagnosis
# --------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


@dataclass(frozen=True)
class TrialDiagnosis:
    """Verdicts of one trial of a study."""

    number: int
    state: str
    params: Mapping[str, Any]
    verdicts: tuple[Verdict, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "params": _jsonable(self.params),
            "state": self.state,
            "verdicts": [v.to_dict() for v in self.verdicts],
        }


@dataclass(frozen=True)
class StudyDiagnosis:
    """Everything :func:`diagnose_study` found about one study."""

    study_name: str
    objective_metric: str | None
    num_layers: int | None
    state_counts: Mapping[str, int]
    trials: tuple[TrialDiagnosis, ...]
    verdict_counts: Mapping[str, int]
    climb: ClimbSummary
    importances: ParameterImportances
    robust_region: RobustRegion
    fe_vs_ft: FeatureExtractionComparison
    domain_shift: DomainShift | None
    thresholds: Thresholds
    levers: LeverInfo | None = None
    """What matters most (the like-for-like lever analysis), PED-ANOVA beside it."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (no NaN), with sorted keys and trials in number order."""
        result = {
            "climb": self.climb.to_dict(),
            "domain_shift": None if self.domain_shift is None else self.domain_shift.to_dict(),
            "feature_extraction_vs_finetuning": self.fe_vs_ft.to_dict(),
            "importances": self.importances.to_dict(),
            "levers": None if self.levers is None else self.levers.to_dict(),
            "num_layers": self.num_layers,
            "objective_metric": self.objective_metric,
            "robust_region": self.robust_region.to_dict(),
            "state_counts": dict(sorted(self.state_counts.items())),
            "study_name": self.study_name,
            "thresholds": self.thresholds.to_dict(),
            "trials": [t.to_dict() for t in self.trials],
            "verdict_counts": dict(sorted(self.verdict_counts.items())),
        }
        return {k: _jsonable(v) if k != "trials" else v for k, v in result.items()}

    def render_text(self) -> str:
        """Plain-text report for a terminal: the findings, then each trial's verdicts."""
        return self.render_findings() + self._render_trials()

    def render_findings(self) -> str:
        """The study's lines of :meth:`render_text`, before the trials."""
        states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(self.state_counts.items()))
        total = sum(self.state_counts.values())
        metric = f"; objective {self.objective_metric}" if self.objective_metric else ""
        lines = [f"Study {self.study_name!r}: {total} trials ({states}){metric}"]
        counts = [f"{v} {self.verdict_counts[v]}" for v in VERDICTS if self.verdict_counts.get(v)]
        lines.append("Verdicts: " + (", ".join(counts) if counts else "none"))
        lines.append("")
        lines.append(f"Climbing: {self.climb.headline}")
        lines.extend(f"  - {s}" for s in self.climb.sentences)
        for key, title in (("best_val_loss", "best val loss"), ("climb", "climb size")):
            values: Mapping[str, float] = getattr(self.importances, key)
            evaluator = self.importances.evaluators.get(key) or "n/a"
            shown = ", ".join(f"{_label(k)} {v:.2f}" for k, v in values.items()) or "n/a"
            lines.append(f"Importance for {title} ({evaluator}): {shown}")
        if self.levers is not None:
            lines.append(f"Levers: {self.levers.headline}")
            if self.levers.support:
                lines.append(f"  {self.levers.support}")
        lines.append(f"Robust region: {self.robust_region.sentence}")
        lines.append(f"Feature extraction vs fine-tuning: {self.fe_vs_ft.sentence}")
        if self.domain_shift is not None:
            lines.append(f"Domain shift: {self.domain_shift.sentence}")
        return "\n".join(lines) + "\n"

    def _render_trials(self) -> str:
        lines = [""]
        healthy = []
        for trial in self.trials:
            names = [v.verdict for v in trial.verdicts]
            if names == [HEALTHY]:
                healthy.append(trial.number)
                continue
            if not names:
                continue
            params = ", ".join(
                f"{_label(k)} {_fmt_value(v)}" for k, v in sorted(trial.params.items())
            )
            lines.append(f"Trial {trial.number} ({trial.state.lower()}; {params})")
            for v in trial.verdicts:
                lines.append(f"  {v.verdict} ({v.confidence:.2f}): {v.evidence}")
                lines.append(f"    -> {v.recommendation}")
        if healthy:
            lines.append("Healthy trials: " + ", ".join(str(n) for n in healthy))
        return "\n".join(lines) + "\n"


def _confounded(
    comparison: FeatureExtractionComparison,
    levers: LeverInfo | None,
    curves: Sequence[TrialCurves],
) -> FeatureExtractionComparison:
    """Feature extraction vs fine-tuning credits unfreezing; say so when the two trials compared
    also differ in the BatchNorm mode and BatchNorm mode is the biggest lever."""
    if levers is None or levers.biggest != "batchnorm" or comparison.interpretation == "n/a":
        return comparison
    by_number = {c.number: c for c in curves}
    if comparison.fe_trial is None or comparison.ft_trial is None:
        return comparison
    fe, ft = by_number.get(comparison.fe_trial), by_number.get(comparison.ft_trial)
    if fe is None or ft is None or fe.batchnorm == ft.batchnorm:
        return comparison
    sentence = (
        f"{comparison.sentence}; but the two trials also differ in BatchNorm mode "
        f"({ft.batchnorm} vs {fe.batchnorm}), the study's biggest lever, so part of the gap may "
        "be BatchNorm rather than unfreezing"
    )
    return dataclasses.replace(comparison, sentence=sentence)


def _study_levers(study: optuna.Study, importances: ParameterImportances) -> LeverInfo | None:
    """The one lever analysis (``reports._levers``) over the study's ranking, with the
    importances for the best loss beside it."""
    if len(study.directions) != 1:
        return None
    return get_lever_info(
        get_ranking_info(study),
        importances.best_val_loss,
        importances.evaluators.get("best_val_loss") or "PED-ANOVA",
    )


def diagnose_study(study: optuna.Study, thresholds: Thresholds | None = None) -> StudyDiagnosis:
    """Diagnose every trial of ``study`` and summarise the study.

    Reads only Optuna storage: trial params, user attrs and (for trials without ``history``
    in a ``val_loss`` study) intermediate values, and study attrs ``thaw:num_layers``,
    ``thaw:num_classes`` / ``thaw:data``, ``thaw:objective_metric``, ``thaw:config`` (the
    thresholds, unless ``thresholds`` is given) and ``thaw:domain_shift``. Each trial's verdicts
    are exactly :func:`trial_verdicts`. Deterministic for a given storage content.
    """
    frozen = sorted(study.get_trials(deepcopy=False), key=lambda ft: ft.number)
    attrs = study.user_attrs
    inputs = read_study_inputs(study, frozen, thresholds)
    thresholds = inputs.thresholds
    num_layers, metric = inputs.num_layers, inputs.metric
    curves = list(inputs.curves)
    verdicts = _all_verdicts(inputs)
    profiles = [_profile(c, thresholds) for c in curves]
    trial_diagnoses = tuple(
        TrialDiagnosis(c.number, c.state, c.params, tuple(verdicts[c.number])) for c in curves
    )
    state_counts: dict[str, int] = {}
    for c in curves:
        state_counts[c.state] = state_counts.get(c.state, 0) + 1
    verdict_counts: dict[str, int] = {}
    for td in trial_diagnoses:
        for v in td.verdicts:
            verdict_counts[v.verdict] = verdict_counts.get(v.verdict, 0) + 1
    comparison = feature_extraction_vs_finetuning(curves, thresholds)
    importances = _importances(frozen, {c.number: c for c in curves}, thresholds)
    levers = _study_levers(study, importances)
    comparison = _confounded(comparison, levers, curves)
    return StudyDiagnosis(
        study_name=study.study_name,
        objective_metric=metric,
        num_layers=num_layers,
        state_counts=state_counts,
        trials=trial_diagnoses,
        verdict_counts=verdict_counts,
        climb=_climb_summary(profiles, thresholds),
        importances=importances,
        robust_region=robust_region(curves, thresholds),
        levers=levers,
        fe_vs_ft=comparison,
        domain_shift=_domain_shift(attrs.get(DOMAIN_SHIFT), thresholds, comparison),
        thresholds=thresholds,
    )
