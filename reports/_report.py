"""Write a study report (Markdown, HTML, CSV, JSON) into a directory."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import optuna

from thaw.reports._diagnosis import StudyDiagnosis
from thaw.reports._export import render_csv, render_summary_json
from thaw.reports._info import get_report_info
from thaw.reports._render import render_html, render_markdown

_logger = logging.getLogger(__name__)

MARKDOWN_NAME = "report.md"
HTML_NAME = "report.html"
CSV_NAME = "trials.csv"
SUMMARY_NAME = "summary.json"


@dataclass(frozen=True)
class ReportFiles:
    """Paths of the files :func:`write_report` wrote (and ``trials.parquet`` when
    :func:`thaw.report` wrote it too)."""

    out_dir: Path
    markdown: Path
    html: Path
    csv: Path
    summary_json: Path
    #: The study the report is of.
    study_name: str = ""
    parquet: Path | None = None

    @property
    def written(self) -> list[Path]:
        """Every file written, the Markdown report first."""
        paths = [self.markdown, self.html, self.csv, self.summary_json, self.parquet]
        return [p for p in paths if p is not None]


def write_report(
    study: optuna.Study,
    out_dir: Path | str,
    storage_url_masked: str | None = None,
    *,
    diagnosis_markdown: str | None = None,
    diagnosis_html: str | None = None,
    diagnose: bool | StudyDiagnosis = True,
    top_n: int = 5,
) -> ReportFiles:
    """Write ``report.md``, ``report.html``, ``trials.csv`` and ``summary.json`` to ``out_dir``.

    ``out_dir`` is created if needed; existing report files are replaced. The output is
    byte-identical for the same study. ``storage_url_masked`` is shown in the manifest
    (any password left in it is masked). By default the study is diagnosed
    (:func:`reports._diagnosis.diagnose_study`, or pass its result as ``diagnose``): the
    answer gets the two-sentence diagnosis, trials without stored verdicts get computed
    ones, and the report shows parameter importances and the domain shift;
    ``diagnose=False`` leaves all that out. ``diagnosis_markdown`` / ``diagnosis_html`` are
    extra trusted, pre-rendered fragments inserted after the answer section.

    Raises:
        ValueError: ``out_dir`` (or one of its parents) exists and is not a directory.
    """
    out = prepare_out_dir(out_dir)
    info = get_report_info(study, storage_url_masked, top_n, diagnose=diagnose)
    files = ReportFiles(
        out_dir=out,
        markdown=out / MARKDOWN_NAME,
        html=out / HTML_NAME,
        csv=out / CSV_NAME,
        summary_json=out / SUMMARY_NAME,
        study_name=study.study_name,
    )
    write_text(files.markdown, render_markdown(info, diagnosis_markdown))
    write_text(files.html, render_html(info, diagnosis_html, diagnosis_markdown))
    write_text(files.csv, render_csv(info.ranking))
    write_text(files.summary_json, render_summary_json(info))
    _logger.info("Wrote report for study %r to %s", study.study_name, out)
    return files


def prepare_out_dir(out_dir: Path | str) -> Path:
    """Create ``out_dir`` (and parents) if needed.

    Raises:
        ValueError: ``out_dir`` or one of its parents exists and is not a directory.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"report directory {str(out)!r} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as error:
        raise ValueError(
            f"cannot create report directory {str(out)!r}: a parent is not a directory"
        ) from error
    return out


def write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a reader never sees half a report."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8", newline="")
    os.replace(tmp, path)
