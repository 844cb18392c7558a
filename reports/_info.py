"""Everything a report shows, computed once from a study and rendered by ``reports._render``."""

from __future__ import annotations

from dataclasses import dataclass

import optuna

from reports._charts import CurvesInfo, ParamScatterInfo, get_curves_info, get_param_scatter_info
from reports._ranking import RankingInfo, get_ranking_info
from reports._summary import (
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


def get_report_info(
    study: optuna.Study, storage_url_masked: str | None = None, top_n: int = 5
) -> ReportInfo:
    """Read ``study`` once and compute everything the report needs.

    ``storage_url_masked`` is shown verbatim in the manifest: mask passwords before passing it.
    ``top_n`` is how many of the best trials get learning curves (strategy trials always do).
    """
    ranking = get_ranking_info(study)
    attrs = study.user_attrs
    return ReportInfo(
        study_name=study.study_name,
        ranking=ranking,
        answer=get_answer_info(ranking, attrs),
        curves=get_curves_info(study, ranking, top_n=top_n),
        scatter=get_param_scatter_info(study, ranking),
        pruning=get_pruning_info(ranking, attrs),
        manifest=get_manifest_info(study.study_name, attrs, storage_url_masked),
    )
