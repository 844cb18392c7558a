"""Comparison reports: data first (get_comparison_info), then compare.md/html/csv."""

from __future__ import annotations

import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from thaw.reports import (
    ComparisonFiles,
    ComparisonInfo,
    get_comparison_info,
    get_efficiency_curve,
    get_ranking_info,
    render_efficiency_svg,
    write_comparison,
)

AddTrial = Callable[..., optuna.trial.FrozenTrial]
Params = Callable[..., dict[str, Any]]


def _copy(
    source: optuna.Study, path: Path, name: str, config: dict[str, Any] | None = None
) -> optuna.Study:
    study = optuna.create_study(storage=f"sqlite:///{path}", study_name=name)
    for key, value in source.user_attrs.items():
        study.set_user_attr(key, value)
    if config is not None:
        study.set_user_attr("thaw:config", {**source.user_attrs["thaw:config"], **config})
    study.add_trials(source.get_trials())
    return study


@pytest.fixture(scope="module")
def other_study(thaw_study: optuna.Study, tmp_path_factory: pytest.TempPathFactory) -> optuna.Study:
    """The reference study under another seed and sampler, with two extra cheap trials."""
    path = tmp_path_factory.mktemp("other") / "o.db"
    study = _copy(
        thaw_study,
        path,
        "flowers-random",
        {"seed": 7, "sampler": {"name": "RandomSampler"}},
    )
    study.set_user_attr("thaw:domain_shift", {"overall": 0.2})
    return study


@pytest.fixture(scope="module")
def comparison(thaw_study: optuna.Study, other_study: optuna.Study) -> ComparisonInfo:
    return get_comparison_info(
        [thaw_study, other_study], ["postgresql://thaw:s3cret@db/thaw", "sqlite:///o.db"]
    )


@pytest.fixture(scope="module")
def files(
    thaw_study: optuna.Study, other_study: optuna.Study, tmp_path_factory: pytest.TempPathFactory
) -> ComparisonFiles:
    return write_comparison(
        [thaw_study, other_study],
        tmp_path_factory.mktemp("compare") / "out",
        ["postgresql://thaw:s3cret@db/thaw", "sqlite:///o.db"],
    )


def test_efficiency_curve_data(thaw_study: optuna.Study) -> None:
    curve = get_efficiency_curve(get_ranking_info(thaw_study), "ref")
    # Trials in number order: epochs 10,10,10,10,5,3,2,(failed: 0),10,3,3.
    assert [e for e, _ in curve.points] == [10, 20, 30, 40, 45, 48, 50, 50, 60, 63, 66]
    assert [v for _, v in curve.points] == pytest.approx(
        [0.6, 0.45, 0.45, 0.38, 0.38, 0.38, 0.38, 0.38, 0.38, 0.38, 0.38]
    )
    assert (curve.total_epochs, curve.best, curve.epochs_to_best) == (66, 0.38, 40)


def test_comparison_info(comparison: ComparisonInfo) -> None:
    assert [s.label for s in comparison.studies] == ["flowers-finetune", "flowers-random"]
    assert (comparison.direction, comparison.objective_metric) == ("minimize", "val_loss")
    assert comparison.common_budget == 66
    assert comparison.best_at_budget == pytest.approx((0.38, 0.38))
    assert comparison.winner == 0  # a tie goes to the first study
    assert [s.best.number for s in comparison.studies if s.best] == [3, 3]
    assert comparison.verdicts == ("lr_too_high", "overfitting", "underfitting", "healthy")
    assert dict(comparison.studies[0].verdict_mix) == {
        "lr_too_high": 3,
        "overfitting": 1,
        "underfitting": 1,
        "healthy": 5,
    }
    assert [p.param for p in comparison.params] == [
        "unfrozen_layers",
        "learning_rate",
        "dropout",
        "weight_decay",
        "batchnorm",
    ]
    lr = comparison.params[1].cells[0]
    assert (lr.best, lr.top, lr.tried) == ("0.0003", "0.0001 .. 0.001", "1.5e-05 .. 0.009")
    assert lr.importance_loss is not None and 0 <= lr.importance_loss <= 1


def test_differences_come_from_manifests_and_configs(comparison: ComparisonInfo) -> None:
    differ = {d.item: d.values for d in comparison.differences}
    assert differ["seed"] == ("1234", "7")
    assert differ["sampler.name"] == ("TPESampler", "RandomSampler")
    assert differ["sampler.n_startup_trials"] == ("5", "not set")
    assert differ["storage"] == ("postgresql://thaw:***@db/thaw", "sqlite:///o.db")
    for same in ("pruner", "model", "dataset fingerprint", "search space", "config hash"):
        assert same not in {d.group for d in comparison.differences}, same
    assert comparison.differing_groups() == (
        "seed",
        "sampler (n_startup_trials, name)",
        "storage",
    )


def test_writes_three_files(files: ComparisonFiles) -> None:
    assert sorted(p.name for p in files.out_dir.iterdir()) == [
        "compare.csv",
        "compare.html",
        "compare.md",
    ]


def test_markdown_sections_and_answer(files: ComparisonFiles) -> None:
    md = files.markdown.read_text(encoding="utf-8")
    assert md.startswith("# thaw comparison: flowers-finetune vs flowers-random\n")
    assert re.findall(r"^## (.+)$", md, flags=re.M) == [
        "Answer",
        "Search efficiency",
        "Best configurations",
        "Verdict mix",
        "Pruning savings",
        "Parameters",
        "What differs between the studies",
    ]
    assert (
        "**Best: flowers-finetune, trial 3 (best val loss 0.38), reached after 40 of 66 "
        "epochs spent.**" in md
    )
    assert "At an equal budget of 66 epochs" in md
    assert "The studies differ in: seed, sampler (n_startup_trials, name)." in md
    assert "s3cret" not in md and "postgresql://thaw:\\*\\*\\*@db/thaw" in md
    pruning = md.split("## Pruning savings")[1].split("## ")[0]
    assert re.search(r"\| flowers-finetune +\| +10 \| +3 \| +66 \| +100 \| +34 \| +34% \|", pruning)


def test_csv_one_row_per_study(files: ComparisonFiles) -> None:
    frame = pd.read_csv(files.csv)
    assert frame["study"].tolist() == ["flowers-finetune", "flowers-random"]
    assert frame["best_trial"].tolist() == [3, 3]
    assert frame["best_val_loss"].tolist() == pytest.approx([0.38, 0.38])
    assert frame["epochs_saved"].tolist() == [34, 34]
    assert frame["seed"].tolist() == [1234, 7]
    assert frame["verdict_healthy"].tolist() == [5, 5]
    assert frame["params_learning_rate"].tolist() == pytest.approx([3e-4, 3e-4])
    assert "s3cret" not in files.csv.read_text(encoding="utf-8")


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_html_is_self_contained_with_one_chart(files: ComparisonFiles) -> None:
    html = files.html.read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html and "url(" not in html
    parser = _Tags()
    parser.feed(html)
    names = {tag for tag, _ in parser.tags}
    assert not names & {"script", "img", "link", "iframe", "object", "embed", "image", "use"}
    for tag, attrs in parser.tags:
        assert not set(attrs) & {"src", "href", "xlink:href"}, tag
        assert not any(name.startswith("on") for name in attrs), tag
    assert html.count("<svg") == html.count("</svg>") == 1
    assert 'id="efficiency-chart"' in html and 'id="comparison-best"' in html


def test_efficiency_svg_has_a_labelled_line_per_study(comparison: ComparisonInfo) -> None:
    svg = render_efficiency_svg(comparison.efficiency)
    assert svg.count("<polyline") == 2
    assert "cumulative epochs spent (all trials, in trial order)" in svg
    assert "best val loss so far (lower is better)" in svg
    assert 'stroke-dasharray="7 4"' in svg  # the second study is dashed
    assert ">flowers-random</text>" in svg


def test_comparison_is_byte_identical(
    thaw_study: optuna.Study, other_study: optuna.Study, files: ComparisonFiles, tmp_path: Path
) -> None:
    again = write_comparison(
        [thaw_study, other_study],
        tmp_path / "again",
        ["postgresql://thaw:s3cret@db/thaw", "sqlite:///o.db"],
    )
    for a, b in [
        (files.markdown, again.markdown),
        (files.html, again.html),
        (files.csv, again.csv),
    ]:
        assert a.read_bytes() == b.read_bytes(), a.name


def test_refuses_fewer_than_two_studies(thaw_study: optuna.Study, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^a comparison needs at least two studies, got 1$"):
        write_comparison([thaw_study], tmp_path / "out")
    with pytest.raises(ValueError, match="got 0"):
        get_comparison_info([])
    assert not (tmp_path / "out").exists()


def test_refuses_different_objectives(
    thaw_study: optuna.Study,
    make_study: Callable[..., optuna.Study],
    add_trial: AddTrial,
    thaw_params: Params,
    tmp_path: Path,
) -> None:
    accuracy = make_study(study_name="acc", direction="maximize")
    accuracy.set_user_attr("thaw:objective_metric", "val_accuracy")
    add_trial(accuracy, state=TrialState.COMPLETE, params=thaw_params(5, 1e-4), val_loss=[0.5])
    with pytest.raises(ValueError) as error:
        write_comparison([thaw_study, accuracy], tmp_path / "out")
    message = str(error.value)
    assert "\n" not in message
    assert message == (
        "cannot compare studies with different objectives ('flowers-finetune': minimize "
        "val_loss; 'acc': maximize val_accuracy)"
    )
    # Same direction, different metric attr.
    other = make_study(study_name="f1")
    other.set_user_attr("thaw:objective_metric", "val_f1_loss")
    with pytest.raises(ValueError, match="minimize val_f1_loss"):
        get_comparison_info([thaw_study, other])


def test_out_dir_is_a_file(
    thaw_study: optuna.Study, other_study: optuna.Study, tmp_path: Path
) -> None:
    target = tmp_path / "compare"
    target.write_text("x")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        write_comparison([thaw_study, other_study], target)


def test_storage_urls_must_match_studies(
    thaw_study: optuna.Study, other_study: optuna.Study
) -> None:
    with pytest.raises(ValueError, match="storage_urls_masked has 1 entries for 2 studies"):
        get_comparison_info([thaw_study, other_study], ["sqlite:///a.db"])


def test_same_name_and_empty_study(
    thaw_study: optuna.Study, make_study: Callable[..., optuna.Study], tmp_path: Path
) -> None:
    empty = make_study(study_name="flowers-finetune")
    files = write_comparison([thaw_study, empty], tmp_path / "out")
    md = files.markdown.read_text(encoding="utf-8")
    assert "# thaw comparison: flowers-finetune (1) vs flowers-finetune (2)" in md
    assert "flowers-finetune (2): no scored trial." in md
    assert "no completed trial" in md
    html = files.html.read_text(encoding="utf-8")
    assert "flowers-finetune (2) - no score" in html


def test_efficiency_info_scales_and_palette(
    make_study: Callable[..., optuna.Study], add_trial: AddTrial, thaw_params: Params
) -> None:
    studies = []
    for name, losses in (("wild", [5.0, 0.9]), ("calm", [0.6, 0.01])):
        study = make_study(study_name=name)
        for i, loss in enumerate(losses):
            add_trial(
                study, state=TrialState.COMPLETE, params=thaw_params(i, 1e-4), val_loss=[loss]
            )
        studies.append(study)
    info = get_comparison_info(studies).efficiency
    assert info.y_log and info.y_label == "best val loss so far (lower is better, log scale)"
    assert [c.points for c in info.curves] == [((1, 5.0), (2, 0.9)), ((1, 0.6), (2, 0.01))]
    svg = render_efficiency_svg(info)
    assert 'stroke="#0072B2"' in svg and 'stroke="#D55E00"' in svg  # Okabe-Ito
    assert ">0.01</text>" in svg and ">1</text>" in svg  # decade ticks on the log axis
