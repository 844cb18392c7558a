"""The report's BatchNorm shift profile and surgical comparison, from storage only: a SQLite study
holding ``thaw:shift_profile`` and trials with ``thaw:unfrozen_block``; the data first
(:func:`get_surgical_info`), then the rendered HTML and Markdown (layer names escaped)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from thaw._keys import SHIFT_PROFILE, UNFROZEN_BLOCK
from thaw.reports import summary_schema, write_report
from thaw.reports._surgical import get_surgical_info

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is a dev dependency")
optuna.logging.set_verbosity(optuna.logging.WARNING)

NASTY = "<img src=x onerror=alert(1)>|*"
PROFILE = {
    "unit": "layers",
    "groups": [
        {"name": NASTY, "shift": 0.8, "batchnorm": 1},
        {"name": "conv2", "shift": 0.85, "batchnorm": 1},
        {"name": "conv3", "shift": 0.9, "batchnorm": 1},
        {"name": "dense", "shift": None, "batchnorm": 0},
    ],
    "block": {"start": 0, "size": 2, "first": NASTY, "last": "conv2", "top": False},
}
DISTRIBUTIONS = {
    "unfrozen_layers": IntDistribution(0, 4),
    "block_start": IntDistribution(0, 4),
    "learning_rate": FloatDistribution(1e-5, 1e-2, log=True),
}


def block(start: int, stop: int, depth: int = 4) -> dict[str, Any]:
    names = [NASTY, "conv2", "conv3", "dense"]
    return {
        "start": start,
        "stop": stop,
        "first": names[start],
        "last": names[stop - 1],
        "top": stop == depth,
        "depth": depth,
    }


def make_study(tmp_path: Path, trials: list[tuple[int, int, float]]) -> optuna.Study:
    """``trials``: (unfrozen layers, block start, value)."""
    study = optuna.create_study(
        study_name="surgical", storage=f"sqlite:///{tmp_path / 'surgical.db'}"
    )
    study.set_user_attr(SHIFT_PROFILE, PROFILE)
    for layers, start, value in trials:
        lowest = min(start, 4 - layers)
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE,
                value=value,
                params={"unfrozen_layers": layers, "block_start": start, "learning_rate": 1e-3},
                distributions=DISTRIBUTIONS,
                user_attrs={UNFROZEN_BLOCK: block(lowest, lowest + layers)},
            )
        )
    return study


@pytest.mark.parametrize(
    ("trials", "expected"),
    [
        # the profile's block (0-1) beat the top two layers (2-3)
        (
            [(2, 0, 0.40), (2, 4, 0.55)],
            "reached 0.4 (trial 0), better than the top 2 layers at 0.55 (trial 1, trained as "
            "long): the block the shift profile points to won.",
        ),
        # two blocks tried: the better one won; the top won against it
        (
            [(2, 0, 0.70), (2, 1, 0.60), (2, 2, 0.50)],
            "conv2 to conv3 (layers 2-3 from the bottom), reached 0.6 (trial 1, best of 2 block "
            "trials), worse than the top 2 layers at 0.5 (trial 2, trained as long): unfreezing "
            "from the top won.",
        ),
        # no top trial of the same size
        (
            [(2, 0, 0.40), (3, 4, 0.30)],
            "no trial unfroze the top 2 layers for as long, so the two do not compare yet.",
        ),
    ],
)
def test_the_report_says_which_block_won(
    tmp_path: Path, trials: list[tuple[int, int, float]], expected: str
) -> None:
    study = make_study(tmp_path, trials)
    info = get_surgical_info(study)
    assert info is not None
    assert [g.in_block for g in info.groups] == [True, True, False, False]
    assert info.sentence.startswith(f"The BatchNorm shift arises most in {NASTY} to conv2")
    (comparison,) = info.comparisons
    assert comparison.sentence.endswith(expected)
    files = write_report(study, tmp_path / "out")
    html = Path(files.html).read_text(encoding="utf-8")
    markdown = Path(files.markdown).read_text(encoding="utf-8")
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "BatchNorm shift profile" in html and "BatchNorm shift profile" in markdown
    assert "profile&#x27;s block" in html or "profile's block" in html
    tail = expected.split(" (trial")[0]
    assert tail in html and tail in markdown.replace("\\", "")
    # Markdown: the name, escaped, can neither open a tag nor break the table
    assert "\\<img src=x onerror=alert(1)\\>\\|\\*" in markdown
    assert NASTY not in markdown
    summary = json.loads(Path(files.summary_json).read_text(encoding="utf-8"))
    assert summary["diagnosis"]["surgical"] == info.to_dict()
    jsonschema.Draft202012Validator(summary_schema()).validate(summary)


def test_a_study_without_a_profile_or_block_trials_has_no_section(tmp_path: Path) -> None:
    study = optuna.create_study(study_name="plain", storage=f"sqlite:///{tmp_path / 'p.db'}")
    study.add_trial(
        create_trial(
            state=TrialState.COMPLETE,
            value=0.5,
            params={"unfrozen_layers": 2},
            distributions={"unfrozen_layers": IntDistribution(0, 4)},
        )
    )
    assert get_surgical_info(study) is None
    files = write_report(study, tmp_path / "out")
    assert "BatchNorm shift profile" not in Path(files.markdown).read_text(encoding="utf-8")
    summary = json.loads(Path(files.summary_json).read_text(encoding="utf-8"))
    assert summary["diagnosis"]["surgical"] is None
    jsonschema.Draft202012Validator(summary_schema()).validate(summary)
