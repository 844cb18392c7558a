"""The biggest lever from per-level best and median objectives, beside PED-ANOVA."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from thaw.reports.diagnosis import diagnose_study, parameter_levers


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


def test_levels_have_counts_best_and_median() -> None:
    levers = parameter_levers(_rows())
    bn = next(p for p in levers.params if p.param == "batchnorm")
    by_label = {lv.label: lv for lv in bn.levels}
    assert (by_label["adapt"].n, by_label["frozen"].n) == (12, 3)
    assert by_label["adapt"].best == pytest.approx(0.30)
    assert by_label["frozen"].best == pytest.approx(0.57)
    assert by_label["frozen"].median == pytest.approx(0.7)
    assert (bn.best_level, bn.worst_level) == ("adapt", "frozen")
    lr = next(p for p in levers.params if p.param == "learning_rate")
    assert len(lr.levels) == 6  # six distinct values: one level each


@pytest.mark.parametrize(
    ("importances", "agree", "phrase"),
    [
        ({"learning_rate": 0.99, "batchnorm": 0.01}, False, "they disagree"),
        ({"learning_rate": 0.2, "batchnorm": 0.8}, True, "PED-ANOVA agrees (80%)"),
        (None, None, "biggest lever: batchnorm"),
    ],
)
def test_biggest_lever_against_importance(
    importances: dict[str, float] | None, agree: bool | None, phrase: str
) -> None:
    levers = parameter_levers(_rows(), importances=importances)
    assert levers.biggest == "batchnorm"
    assert levers.agree is agree
    assert phrase in levers.sentence
    assert "n=3, best 0.570" in levers.sentence


def test_continuous_params_are_binned_on_a_log_scale() -> None:
    rows = [(i, {"learning_rate": 10 ** (-5 + 0.25 * i)}, 1.0 - 0.01 * i) for i in range(12)]
    (lr,) = parameter_levers(rows).params
    assert [lv.n for lv in lr.levels] == [4, 4, 4]
    assert lr.levels[0].label == "1e-5..5.6e-5"


def test_too_few_trials_name_no_lever() -> None:
    levers = parameter_levers([(0, {"dropout": 0.1}, 0.5), (1, {"dropout": 0.2}, 0.4)])
    assert levers.biggest is None and "too few" in levers.sentence


def test_study_diagnosis_carries_the_levers(tmp_path: object) -> None:
    study = optuna.create_study(storage="sqlite:///" + str(tmp_path) + "/l.db", study_name="l")
    dists = {
        "batchnorm": CategoricalDistribution(["adapt", "frozen"]),
        "learning_rate": FloatDistribution(1e-5, 1e-2, log=True),
    }
    for _, params, value in _rows():
        history = {"val_loss": [value + 0.3, value + 0.1, value], "loss": [1.0, 0.8, 0.7]}
        study.add_trial(
            optuna.trial.create_trial(
                params=params, distributions=dists, value=value, user_attrs={"history": history}
            )
        )
    diagnosis = diagnose_study(study)
    assert diagnosis.levers is not None and diagnosis.levers.biggest == "batchnorm"
    assert diagnosis.to_dict()["levers"]["biggest"] == "batchnorm"
    assert "Levers: biggest lever: batchnorm" in diagnosis.render_text()


def test_feature_extraction_comparison_names_the_batchnorm_confound(tmp_path: object) -> None:
    study = optuna.create_study(storage="sqlite:///" + str(tmp_path) + "/c.db", study_name="c")
    dists = {
        "batchnorm": CategoricalDistribution(["adapt", "frozen"]),
        "learning_rate": FloatDistribution(1e-5, 1e-2, log=True),
        "unfrozen_layers": IntDistribution(0, 5),
    }
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
