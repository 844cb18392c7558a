"""Study reports for thaw: ranking, learning curves, parameter plots, pruning, manifest.

Reads only what Optuna storage holds (see ``docs/storage.md``); never imports Keras,
TensorFlow, ``objectives`` or ``search``. Data first, rendering second::

    info = get_report_info(study)
    markdown = render_markdown(info)
    files = write_report(study, Path("thaw-report"))
"""

from reports._charts import (
    CurveSeries,
    CurvesInfo,
    ParamScatter,
    ParamScatterInfo,
    ScatterPoint,
    get_curves_info,
    get_param_scatter_info,
)
from reports._export import (
    csv_columns,
    get_summary_dict,
    render_csv,
    render_summary_json,
    write_csv,
)
from reports._info import ReportInfo, get_report_info
from reports._ranking import ParamColumn, RankingInfo, RankingRow, get_ranking_info
from reports._render import render_html, render_markdown
from reports._report import ReportFiles, write_report
from reports._summary import (
    AnswerInfo,
    ManifestInfo,
    PruneReasonSummary,
    PruningInfo,
    StrategyComparison,
    get_answer_info,
    get_manifest_info,
    get_pruning_info,
)
from reports._svg import render_curves_svg, render_scatter_svg

__all__ = [
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
    "write_csv",
    "write_report",
]
