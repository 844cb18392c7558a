"""Study reports for thaw: ranking, learning curves, parameter plots, pruning, manifest.

Reads only what Optuna storage holds (see ``docs/storage.md``); never imports Keras,
TensorFlow, ``objectives`` or ``search``. Data first, rendering second::

    info = get_report_info(study)            # ranking, diagnosis, charts data, manifest
    markdown = render_markdown(info)
    files = write_report(study, Path("thaw-report"))

    comparison = get_comparison_info([study_a, study_b])   # same objective, >= 2 studies
    files = write_comparison([study_a, study_b], Path("thaw-compare"))
"""

from thaw.reports._answer import AnswerStory, NextMove, PathStep, get_answer_story
from thaw.reports._charts import (
    CurveSeries,
    CurvesInfo,
    EfficiencyCurve,
    EfficiencyInfo,
    ParamScatter,
    ParamScatterInfo,
    ScatterPoint,
    get_answer_curves,
    get_curves_info,
    get_efficiency_curve,
    get_efficiency_info,
    get_param_scatter_info,
)
from thaw.reports._compare import (
    ComparisonInfo,
    ParamCell,
    ParamComparison,
    SettingDiff,
    StudyColumn,
    check_comparable,
    get_comparison_info,
)
from thaw.reports._compare_render import (
    ComparisonFiles,
    render_comparison_csv,
    render_comparison_html,
    render_comparison_markdown,
    write_comparison,
)
from thaw.reports._export import (
    csv_columns,
    get_summary_dict,
    render_csv,
    render_summary_json,
    summary_schema,
    write_csv,
)
from thaw.reports._findings import (
    DeterminismInfo,
    DiagnosisInfo,
    DomainShiftInfo,
    ImportanceInfo,
    ImportanceTarget,
    get_determinism_info,
    get_diagnosis_info,
    get_domain_shift_info,
    get_importance_info,
)
from thaw.reports._frame import get_trial_records
from thaw.reports._info import ReportInfo, get_report_info
from thaw.reports._levers import LevelStat, LeverFinding, LeverInfo, get_lever_info
from thaw.reports._ranking import (
    ParamColumn,
    RankingInfo,
    RankingRow,
    VerdictDetail,
    get_ranking_info,
)
from thaw.reports._render import render_html, render_markdown
from thaw.reports._report import ReportFiles, write_report
from thaw.reports._summary import (
    AnswerInfo,
    ManifestInfo,
    PruneReasonSummary,
    PruningInfo,
    StrategyComparison,
    get_answer_info,
    get_manifest_info,
    get_pruning_info,
)
from thaw.reports._svg import render_curves_svg, render_efficiency_svg, render_scatter_svg
from thaw.reports.diagnosis import (
    BATCHNORM_MISMATCH,
    HEALTHY,
    LR_TOO_HIGH,
    OVERFITTING,
    UNDERFITTING,
    VERDICTS,
    WEAK_REGULARISATION,
    StudyDiagnosis,
    Thresholds,
    TrialCurves,
    Verdict,
    diagnose_study,
    diagnose_trial,
    study_verdicts,
    trial_verdicts,
)

__all__ = [
    "AnswerStory",
    "NextMove",
    "PathStep",
    "get_answer_story",
    "get_trial_records",
    "ComparisonFiles",
    "ComparisonInfo",
    "DeterminismInfo",
    "DiagnosisInfo",
    "DomainShiftInfo",
    "EfficiencyCurve",
    "EfficiencyInfo",
    "ImportanceInfo",
    "ImportanceTarget",
    "ParamCell",
    "ParamComparison",
    "SettingDiff",
    "StudyColumn",
    "VerdictDetail",
    "check_comparable",
    "get_comparison_info",
    "get_determinism_info",
    "get_diagnosis_info",
    "get_domain_shift_info",
    "get_answer_curves",
    "get_efficiency_curve",
    "get_lever_info",
    "LeverFinding",
    "LeverInfo",
    "LevelStat",
    "get_efficiency_info",
    "get_importance_info",
    "render_comparison_csv",
    "render_comparison_html",
    "render_comparison_markdown",
    "render_efficiency_svg",
    "write_comparison",
    "BATCHNORM_MISMATCH",
    "HEALTHY",
    "LR_TOO_HIGH",
    "OVERFITTING",
    "UNDERFITTING",
    "VERDICTS",
    "WEAK_REGULARISATION",
    "StudyDiagnosis",
    "Thresholds",
    "TrialCurves",
    "Verdict",
    "diagnose_study",
    "diagnose_trial",
    "study_verdicts",
    "trial_verdicts",
    "AnswerInfo",
    "CurveSeries",
    "CurvesInfo",
    "ManifestInfo",
    "ParamColumn",
    "ParamScatter",
    "ParamScatterInfo",
    "PruneReasonSummary",
    "PruningInfo",
    "RankingInfo",
    "RankingRow",
    "ReportFiles",
    "ReportInfo",
    "ScatterPoint",
    "StrategyComparison",
    "csv_columns",
    "get_answer_info",
    "get_curves_info",
    "get_manifest_info",
    "get_param_scatter_info",
    "get_pruning_info",
    "get_ranking_info",
    "get_report_info",
    "get_summary_dict",
    "render_csv",
    "render_curves_svg",
    "render_html",
    "render_markdown",
    "render_scatter_svg",
    "render_summary_json",
    "summary_schema",
    "write_csv",
    "write_report",
]
