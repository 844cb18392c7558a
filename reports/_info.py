"""Everything a report shows, computed once from a study and rendered by ``reports._render``."""

from __future__ import annotations

from dataclasses import dataclass

import optuna

from thaw._keys import BUDGET_EPOCHS
from thaw.reports._answer import AnswerStory, get_answer_story
from thaw.reports._charts import (
    AnytimeInfo,
    CurvesInfo,
    ParamScatterInfo,
    RangeTestInfo,
    get_anytime_info,
    get_curves_info,
    get_param_scatter_info,
    get_range_test_info,
)
from thaw.reports._diagnosis import StudyDiagnosis
from thaw.reports._findings import (
    DeterminismInfo,
    DiagnosisInfo,
    get_determinism_info,
    get_diagnosis_info,
    run_diagnosis,
    with_verdicts,
)
from thaw.reports._format import mask_url
from thaw.reports._levers import LeverInfo, get_lever_info
from thaw.reports._ranking import RankingInfo, get_ranking_info
from thaw.reports._summary import (
    AnswerInfo,
    ManifestInfo,
    PruningInfo,
    get_answer_info,
    get_manifest_info,
    get_pruning_info,
)


@dataclass(frozen=True)
class ReportInfo:
    """All data of one study report, in the order the report presents it."""

    study_name: str
    ranking: RankingInfo
    answer: AnswerInfo
    curves: CurvesInfo
    scatter: ParamScatterInfo
    pruning: PruningInfo
    manifest: ManifestInfo
    diagnosis: DiagnosisInfo | None = None
    """``None`` when the report was built with ``diagnose=False``."""
    determinism: DeterminismInfo | None = None
    top_n: int = 5
    levers: LeverInfo | None = None
    """What matters most: parameter levels the best trials share (controlled comparison),
    PED-ANOVA beside it; the diagnosis's own when the report diagnoses (see ``_levers``)."""
    anytime: AnytimeInfo | None = None
    """Best so far against cumulative epochs (the epoch budget, when one was set)."""
    range_test: RangeTestInfo | None = None
    """The learning-rate range test run before the search, if any."""
    story: AnswerStory | None = None
    """Nothing learnt much and the next move, and the path to the recommended trial
    (``None`` when the report was built with ``diagnose=False``)."""


def get_report_info(
    study: optuna.Study,
    storage_url_masked: str | None = None,
    top_n: int = 5,
    *,
    diagnose: bool | StudyDiagnosis = True,
) -> ReportInfo:
    """Read ``study`` once and compute everything the report needs.

    ``storage_url_masked`` is shown in the manifest (a password left in it is masked all
    the same). ``top_n`` is how many of the best trials get learning curves and verdict
    details (strategy trials always do). ``diagnose`` runs
    :func:`reports._diagnosis.diagnose_study` (or takes its result): the two-sentence
    diagnosis, verdicts for trials that stored none, parameter importances, domain shift.
    """
    ranking = get_ranking_info(study)
    attrs = study.user_attrs
    diagnosis: DiagnosisInfo | None = None
    levers: LeverInfo | None = None
    if diagnose is not False:
        result = diagnose if isinstance(diagnose, StudyDiagnosis) else run_diagnosis(study)
        diagnosis = get_diagnosis_info(study, result)
        ranking = with_verdicts(ranking, diagnosis)
        levers = result.levers
    if levers is None:
        levers = get_lever_info(ranking)
    storage = None if storage_url_masked is None else mask_url(storage_url_masked)
    answer = get_answer_info(ranking, attrs)
    story = None
    if diagnose is not False:
        best = answer.best
        story = get_answer_story(
            study,
            best.number if best is not None else None,
            verdicts=None if best is None else best.verdicts,
        )
    return ReportInfo(
        study_name=study.study_name,
        ranking=ranking,
        answer=answer,
        curves=get_curves_info(study, ranking, top_n=top_n),
        scatter=get_param_scatter_info(study, ranking),
        pruning=get_pruning_info(ranking, attrs),
        manifest=get_manifest_info(study.study_name, attrs, storage),
        diagnosis=diagnosis,
        determinism=get_determinism_info(attrs),
        top_n=top_n,
        levers=levers,
        anytime=get_anytime_info(
            ranking,
            study.study_name,
            attrs.get(BUDGET_EPOCHS) if isinstance(attrs.get(BUDGET_EPOCHS), int) else None,
        ),
        story=story,
        range_test=get_range_test_info(attrs),
    )
