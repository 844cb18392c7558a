"""What the report takes from :func:`reports._diagnosis.diagnose_study`, plus the
determinism and domain-shift study attributes, as plain data for the renderers.

The diagnosis itself lives in ``reports._diagnosis``; this module only selects and shapes
its results: the two-sentence summary, per-trial verdicts for trials that stored none,
parameter importances (for best loss and for climb), the domain-shift score.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import optuna

from thaw._keys import DETERMINISM, DOMAIN_SHIFT
from thaw.reports._attrs import as_float, as_str
from thaw.reports._ranking import RankingInfo, RankingRow, VerdictDetail
from thaw.reports._surgical import SurgicalInfo, get_surgical_info
from thaw.reports.diagnosis import VERDICTS, StudyDiagnosis, Thresholds, diagnose_study

IMPORTANCE_TITLES = {
    "best_val_loss": "best validation loss",
    "climb": "climb (final minus best validation loss)",
}
DOMAIN_SHIFT_ATTR = DOMAIN_SHIFT
DETERMINISM_ATTR = DETERMINISM
MAX_SHIFT_LAYERS = 12
"""Most-shifted layers listed in the report (all of them go to summary.json)."""

ImportanceKey = Literal["best_val_loss", "climb"]


@dataclass(frozen=True)
class ImportanceTarget:
    """Normalised importances of every parameter for one target, most important first."""

    key: ImportanceKey
    title: str
    evaluator: str
    """``PED-ANOVA``, ``fANOVA`` or ``""`` when nothing could be computed."""
    bars: tuple[tuple[str, float], ...]
    """``(parameter, share)`` pairs; shares sum to 1 when any is non-zero."""


@dataclass(frozen=True)
class ImportanceInfo:
    targets: tuple[ImportanceTarget, ...]
    min_trials: int
    """Trials a target needs before importances are computed."""

    @property
    def any(self) -> bool:
        return any(t.bars for t in self.targets)


@dataclass(frozen=True)
class DomainShiftInfo:
    """Study attr ``thaw:domain_shift``, interpreted by ``diagnose_study``."""

    measured: bool
    overall: float | None
    level: str
    """``low``, ``moderate``, ``high``, ``unknown`` (per-layer only) or ``not measured``."""
    layers: tuple[tuple[str, float], ...]
    """``(layer, score)`` pairs, most shifted first."""
    sentence: str
    feature_extraction_sentence: str
    """Indirect evidence: best feature-extraction trial vs best fine-tuning trial."""


@dataclass(frozen=True)
class DeterminismInfo:
    """Study attr ``thaw:determinism`` (written by the training side)."""

    recorded: bool
    deterministic: bool | None
    reason: str | None
    sentence: str

    @property
    def label(self) -> str:
        if self.deterministic is None:
            return "not recorded"
        text = "yes" if self.deterministic else "no"
        return f"{text}: {self.reason}" if self.reason else text


@dataclass(frozen=True)
class DiagnosisInfo:
    """The study diagnosis as the report shows it."""

    sentences: tuple[str, str]
    """Two sentences for the answer: where val loss climbed, where the good trials are."""
    climb_findings: tuple[str, ...]
    robust_region: str
    verdicts: Mapping[int, tuple[VerdictDetail, ...]]
    """Computed verdicts per trial number (used where a trial stored none)."""
    importances: ImportanceInfo
    domain_shift: DomainShiftInfo
    climb_data: Mapping[str, Any] = field(default_factory=dict)
    """The climb summary as data (counts, climbed trials, findings with their splits)."""
    surgical: SurgicalInfo | None = None
    """The BatchNorm shift profile and the unfrozen blocks against the top (None: neither)."""


def run_diagnosis(study: optuna.Study, thresholds: Thresholds | None = None) -> StudyDiagnosis:
    """:func:`diagnose_study` without the log line about its in-memory helper study."""
    with _quiet_helper_study():
        return diagnose_study(study, thresholds)


def get_diagnosis_info(
    study: optuna.Study, diagnosis: StudyDiagnosis | None = None
) -> DiagnosisInfo:
    """Shape ``diagnosis`` (computed when not given) for the report."""
    diagnosis = diagnosis if diagnosis is not None else run_diagnosis(study)
    climb = diagnosis.climb
    first = _sentence(climb.headline)
    if climb.findings:
        first = _sentence(f"{climb.headline}; {climb.findings[0].sentence}")
    second = _sentence(diagnosis.robust_region.sentence)
    return DiagnosisInfo(
        sentences=(first, second),
        climb_findings=tuple(_sentence(f.sentence) for f in climb.findings),
        robust_region=second,
        verdicts={
            t.number: tuple(
                VerdictDetail(v.verdict, v.confidence, v.evidence, v.recommendation)
                for v in t.verdicts
            )
            for t in diagnosis.trials
        },
        importances=get_importance_info(diagnosis),
        domain_shift=get_domain_shift_info(diagnosis),
        climb_data=climb.to_dict(),
        surgical=get_surgical_info(study),
    )


def get_importance_info(diagnosis: StudyDiagnosis) -> ImportanceInfo:
    """Importances for best val loss and for climb, as sorted ``(param, share)`` bars."""
    importances = diagnosis.importances
    targets = []
    key: ImportanceKey
    for key in ("best_val_loss", "climb"):
        values: Mapping[str, float] = getattr(importances, key)
        bars = tuple(
            sorted(
                ((str(k), float(v)) for k, v in values.items() if as_float(v) is not None),
                key=lambda kv: (-kv[1], kv[0]),
            )
        )
        targets.append(
            ImportanceTarget(
                key=key,
                title=IMPORTANCE_TITLES[key],
                evaluator=importances.evaluators.get(key, ""),
                bars=bars,
            )
        )
    return ImportanceInfo(tuple(targets), diagnosis.thresholds.importance_min_trials)


def get_domain_shift_info(diagnosis: StudyDiagnosis) -> DomainShiftInfo:
    shift = diagnosis.domain_shift
    fe = _sentence(diagnosis.fe_vs_ft.sentence)
    if shift is None:
        return DomainShiftInfo(
            measured=False,
            overall=None,
            level="not measured",
            layers=(),
            sentence=(
                "The domain shift was not measured: the study has no thaw:domain_shift attribute."
            ),
            feature_extraction_sentence=fe,
        )
    return DomainShiftInfo(
        measured=True,
        overall=shift.overall,
        level=shift.level,
        layers=shift.layers,
        sentence=_sentence(shift.sentence),
        feature_extraction_sentence=fe,
    )


def get_determinism_info(study_attrs: Mapping[str, Any]) -> DeterminismInfo:
    """Whether the run can be deterministic, from study attr ``thaw:determinism``."""
    attr = study_attrs.get(DETERMINISM_ATTR)
    flag = attr.get("deterministic") if isinstance(attr, Mapping) else None
    if not isinstance(flag, bool):
        return DeterminismInfo(
            recorded=False,
            deterministic=None,
            reason=None,
            sentence=(
                "Determinism was not recorded (no thaw:determinism attribute): rerunning the "
                "study may not reproduce these numbers exactly."
            ),
        )
    assert isinstance(attr, Mapping)
    reason = as_str(attr.get("reason"))
    if flag:
        sentence = "The run was deterministic: the same seed reproduces the same trials"
    else:
        sentence = "This run cannot be deterministic: rerunning it may give different numbers"
    sentence += f" ({reason})." if reason else "."
    return DeterminismInfo(True, flag, reason, sentence)


def with_verdicts(ranking: RankingInfo, diagnosis: DiagnosisInfo) -> RankingInfo:
    """The ranking with the diagnosis' verdicts (one verdict function for every view): a
    trial's stored ``verdicts`` were judged against the peers finished at the time and are
    replaced by the current ones; ``verdicts_source`` still says whether it stored any."""
    rows = tuple(_with_verdicts(row, diagnosis.verdicts) for row in ranking.rows)
    return replace(ranking, rows=rows)


def verdict_mix(rows: Sequence[RankingRow]) -> tuple[tuple[str, int], ...]:
    """``(verdict, trials)`` over ``rows``, in :data:`VERDICTS` order, unknown names last."""
    counts = Counter(name for row in rows for name in dict.fromkeys(row.verdicts))
    known = [(v, counts[v]) for v in VERDICTS if counts.get(v)]
    others = sorted((v, n) for v, n in counts.items() if v not in VERDICTS)
    return tuple(known + others)


def _with_verdicts(
    row: RankingRow, computed: Mapping[int, tuple[VerdictDetail, ...]]
) -> RankingRow:
    if row.number not in computed:
        return row
    details = computed[row.number]
    if not details:
        return row
    return replace(
        row,
        verdicts=tuple(d.verdict for d in details),
        verdict_details=details,
        verdicts_source="stored" if row.verdicts_source == "stored" else "computed",
    )


def _sentence(text: str) -> str:
    """Capitalise the first letter and end with a full stop."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


class _DropHelperStudyLog(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "thaw-diagnosis" not in record.getMessage()


_HELPER_STUDY_LOGGERS = ("optuna.storages._in_memory", "optuna.study.study")
"""Loggers that announce the in-memory study ``diagnose_study`` builds for importances."""


@contextlib.contextmanager
def _quiet_helper_study() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _HELPER_STUDY_LOGGERS]
    log_filter = _DropHelperStudyLog()
    for logger in loggers:
        logger.addFilter(log_filter)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(log_filter)
