"""One lever analysis: the finding every view names, with PED-ANOVA beside it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from thaw.reports import get_report_info, render_markdown, render_summary_json
from thaw.reports._levers import comparable_length, get_lever_info
from thaw.reports._notes import render_study_note
from thaw.reports._ranking import get_ranking_info
from thaw.reports.diagnosis import diagnose_study

_DISTS = {
    "batchnorm": CategoricalDistribution(["adapt", "frozen"]),
    "learning_rate": FloatDistribution(1e-5, 1e-2, log=True),
}


def _rows() -> list[tuple[int, dict[str, object], float]]:
    """BatchNorm mode decides: adapt trials reach 0.30-0.52, frozen ones never below 0.57;
    the learning rate barely matters. The sampler tried frozen rarely (3 of 15)."""
    rows: list[tuple[int, dict[str, object], float]] = []
    lrs = [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3]
    for i in range(12):
        rows.append((i, {"batchnorm": "adapt", "learning_rate": lrs[i % 6]}, 0.30 + 0.02 * i))
    for j, value in enumerate((0.57, 0.7, 0.81)):
        rows.append((12 + j, {"batchnorm": "frozen", "learning_rate": lrs[j * 2]}, value))
    return rows


def _study(tmp_path: Path, rows: list[tuple[int, dict[str, object], float]]) -> optuna.Study:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/l.db", study_name="l")
    dists = {k: v for k, v in _DISTS.items() if any(k in p for _, p, _ in rows)}
    for _, params, value in rows:
        history = {"val_loss": [value + 0.3, value + 0.1, value], "loss": [1.0, 0.8, 0.7]}
        study.add_trial(
            optuna.trial.create_trial(
                params=params, distributions=dists, value=value, user_attrs={"history": history}
            )
        )
    return study


@pytest.mark.parametrize(
    ("importances", "agree", "phrase"),
    [
        (
            {"learning_rate": 0.99, "batchnorm": 0.001},
            False,
            "PED-ANOVA ranks learning rate first (99%) and gives BatchNorm mode under 1%: it "
            "weighs how often the best trials used each level, and the sampler tried BatchNorm "
            "mode frozen in 3 trials of 15",
        ),
        (
            {"learning_rate": 0.2, "batchnorm": 0.8},
            True,
            "PED-ANOVA agrees: it ranks BatchNorm mode first (80%).",
        ),
        (None, None, None),
    ],
)
def test_the_lever_with_importance_beside_it(
    tmp_path: Path, importances: dict[str, float] | None, agree: bool | None, phrase: str | None
) -> None:
    levers = get_lever_info(get_ranking_info(_study(tmp_path, _rows())), importances)
    assert levers.biggest == "batchnorm"
    assert levers.headline.startswith(
        "What matters most: BatchNorm statistics re-estimated on your data (adapt) makes the "
        "difference"
    )
    assert levers.agree is agree
    if phrase is None:
        assert levers.support is None
    else:
        assert levers.support is not None and phrase in levers.support


def test_numeric_params_are_binned_on_a_log_scale(tmp_path: Path) -> None:
    rows: list[tuple[int, dict[str, object], float]] = [
        (i, {"learning_rate": 10 ** (-5 + 0.25 * i)}, 0.2 + 0.1 * i) for i in range(12)
    ]
    levers = get_lever_info(get_ranking_info(_study(tmp_path, rows)))
    (finding,) = levers.findings
    assert [lv.n_trials for lv in finding.levels] == [4, 4, 4]
    assert finding.level == "1e-05..5.62e-05"


def test_too_few_trials_name_no_lever(tmp_path: Path) -> None:
    levers = get_lever_info(get_ranking_info(_study(tmp_path, _rows()[:3])))
    assert levers.biggest is None
    assert levers.headline.startswith("No parameter level sets the best 2 trials apart yet")


def test_every_view_names_the_same_lever(tmp_path: Path) -> None:
    study = _study(tmp_path, _rows())
    diagnosis = diagnose_study(study)
    levers = diagnosis.levers
    assert levers is not None and levers.biggest == "batchnorm"
    info = get_report_info(study, diagnose=diagnosis)
    assert info.levers is levers  # computed once
    summary = json.loads(render_summary_json(info))
    assert summary["findings"]["what_matters_most"]["param"] == "batchnorm"
    assert summary["findings"]["what_matters_most"]["sentence"] == levers.headline
    assert diagnosis.to_dict()["levers"]["biggest"] == "batchnorm"
    assert f"Levers: {levers.headline}" in diagnosis.render_text()
    note = render_study_note(study.study_name, diagnosis, get_ranking_info(study))
    assert levers.headline in note.replace("\\", "")
    md = render_markdown(info)
    importance = md.split("## ", 1)[1].split("Parameter importances", 1)[1]
    assert levers.headline.split(":", 1)[1].strip()[:40] in importance


def test_feature_extraction_comparison_names_the_batchnorm_confound(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/c.db", study_name="c")
    dists = {**_DISTS, "unfrozen_layers": IntDistribution(0, 5)}
    for number, params, value in _rows():
        # Fine-tuning trials adapted BatchNorm; two of the three frozen ones extract features.
        unfrozen = 0 if params["batchnorm"] == "frozen" and number < 14 else 3
        history = {"val_loss": [value + 0.3, value + 0.1, value], "loss": [1.0, 0.8, 0.7]}
        study.add_trial(
            optuna.trial.create_trial(
                params={**params, "unfrozen_layers": unfrozen},
                distributions=dists,
                value=value,
                user_attrs={"history": history},
            )
        )
    diagnosis = diagnose_study(study)
    assert diagnosis.levers is not None and diagnosis.levers.biggest == "batchnorm"
    assert "differ in BatchNorm mode (adapt vs frozen)" in diagnosis.fe_vs_ft.sentence


def test_block_start_levels_are_the_blocks_trained(tmp_path: Path) -> None:
    """``block_start`` 5 to 8 of 8 layers with 3 unfrozen all train the top block (5-7): one
    level, read from the stored block, not four raw values split over two bins."""
    dists = {
        "block_start": IntDistribution(0, 8),
        "unfrozen_layers": IntDistribution(1, 8),
    }
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/b.db", study_name="b")
    raw = [5, 6, 7, 8, 8, 7, 0, 0, 1, 1, 2, 2]
    for i, start in enumerate(raw):
        value = 0.30 + 0.02 * i if start >= 5 else 0.80 + 0.02 * i
        trained = min(start, 8 - 3)
        block = {"start": trained, "stop": trained + 3, "top": trained == 5, "depth": 8}
        study.add_trial(
            optuna.trial.create_trial(
                params={"block_start": start, "unfrozen_layers": 3},
                distributions=dists,
                value=value,
                user_attrs={
                    "history": {"val_loss": [value + 0.2, value], "loss": [1.0, 0.8]},
                    "thaw:unfrozen_block": block,
                },
            )
        )
    ranking = get_ranking_info(study)
    assert sorted(r.block_start for r in ranking.ranked if r.block_start is not None) == sorted(
        min(s, 5) for s in raw
    )
    finding = next(f for f in get_lever_info(ranking).findings if f.param == "block_start")
    assert finding.level == "5"
    assert (finding.low, finding.high) == (5, 5)
    assert next(s for s in finding.levels if s.level == "5").n_trials == 6


def _study_with_lengths(
    tmp_path: Path, rows: list[tuple[dict[str, object], float, int]]
) -> optuna.Study:
    """Trials of (params, best val loss, epochs run): those shorter than 20 epochs were pruned
    there, as the screen's rounds are."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/e.db", study_name="e")
    dists = {k: v for k, v in _DISTS.items() if any(k in p for p, _, _ in rows)}
    for params, value, epochs in rows:
        curve = [value + 0.5 * (epochs - e) / epochs for e in range(1, epochs + 1)]
        pruned = epochs < 20
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions=dists,
                value=None if pruned else value,
                state=optuna.trial.TrialState.PRUNED
                if pruned
                else optuna.trial.TrialState.COMPLETE,
                intermediate_values=dict(enumerate(curve, start=1)),
                user_attrs={
                    "history": {"val_loss": curve, "loss": [1.0] * epochs},
                    "epochs_run": epochs,
                },
            )
        )
    return study


def _screened_rows(frozen_epochs: int) -> list[tuple[dict[str, object], float, int]]:
    """adapt: 3 trials at full length (0.2-0.3) and 6 screened out at 1 or 3 epochs; frozen:
    4 trials that ran ``frozen_epochs`` epochs at most. One of them (3e-4, 1 epoch, 1.25) beats
    the adapt trial of its rate and length (1.35); the others lose to theirs."""
    lrs = [1e-4, 3e-4, 1e-3]
    rows: list[tuple[dict[str, object], float, int]] = []
    for i, lr in enumerate(lrs):
        rows.append(({"batchnorm": "adapt", "learning_rate": lr}, 0.2 + 0.05 * i, 20))
        rows.append(({"batchnorm": "adapt", "learning_rate": lr}, 1.0 + 0.05 * i, 3))
        rows.append(({"batchnorm": "adapt", "learning_rate": lr}, 1.3 + 0.05 * i, 1))
    for i, (lr, value) in enumerate(zip([*lrs, 2e-4], [1.5, 1.25, 1.6, 1.65], strict=True)):
        epochs = min(frozen_epochs, 1 if i % 2 else 3)
        rows.append(({"batchnorm": "frozen", "learning_rate": lr}, value, epochs))
    return rows


@pytest.mark.parametrize(
    ("frozen_epochs", "qualified"),
    [(3, True), (20, False)],
    ids=["frozen trials screened out early", "frozen trials at full length"],
)
def test_a_level_whose_trials_stopped_early_is_named_with_their_length(
    tmp_path: Path, frozen_epochs: int, qualified: bool
) -> None:
    rows = _screened_rows(frozen_epochs)
    if not qualified:  # the same levels, every trial at full length
        rows = [(p, v, 20) for p, v, _ in rows]
    (finding,) = [
        f
        for f in get_lever_info(get_ranking_info(_study_with_lengths(tmp_path, rows))).findings
        if f.param == "batchnorm"
    ]
    assert finding.level == "adapt"
    frozen = next(s for s in finding.levels if s.level == "frozen")
    assert frozen.max_epochs == (3 if qualified else 20)
    assert (
        "frozen BatchNorm never gets below 1.25 within the 3 epochs its trials ran"
        in finding.sentence
    ) is qualified
    # the ratio against the best is a full-length trial's against short runs: left out then
    assert ("x the best)" in finding.sentence) is not qualified


# (id, epochs of the two trials, comparable)
LENGTHS = [
    ("the same length", (20, 20), True),
    ("half as long", (10, 20), True),
    ("a screen round against a full trial", (3, 20), False),
    ("one epoch against three", (1, 3), False),
    ("a length not recorded", (None, 20), True),
]


@pytest.mark.parametrize(("epochs", "expected"), [pytest.param(*r[1:], id=r[0]) for r in LENGTHS])
def test_comparable_length(
    tmp_path: Path, epochs: tuple[int | None, int | None], expected: bool
) -> None:
    a, b = get_ranking_info(_study(tmp_path, _rows()[:2])).ranked
    a, b = replace(a, epochs_run=epochs[0]), replace(b, epochs_run=epochs[1])
    assert comparable_length(a, b) is expected
    assert comparable_length(b, a) is expected


def test_like_for_like_pairs_are_of_comparable_length(tmp_path: Path) -> None:
    """Every frozen trial ran 1 or 3 epochs: each is matched with an adapt trial as short, not
    with the full-length adapt trial nearest in learning rate."""
    rows = _screened_rows(3)
    (finding,) = [
        f
        for f in get_lever_info(get_ranking_info(_study_with_lengths(tmp_path, rows))).findings
        if f.param == "batchnorm"
    ]
    # Matched with the full-length adapt trial of its rate, every frozen trial would lose; matched
    # by length, the 1-epoch frozen trial at 3e-4 beats its adapt peer.
    assert (finding.pairs, finding.pairs_won) == (4, 3)
