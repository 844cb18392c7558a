from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from thaw.reports import (
    get_answer_info,
    get_manifest_info,
    get_pruning_info,
    get_ranking_info,
    get_report_info,
    render_markdown,
)

AddTrial = Callable[..., optuna.trial.FrozenTrial]
Params = Callable[..., dict[str, Any]]


def test_answer(thaw_study: optuna.Study) -> None:
    answer = get_answer_info(get_ranking_info(thaw_study), thaw_study.user_attrs)
    assert answer.best is not None and answer.best.number == 3
    assert answer.best_overall is answer.best
    assert answer.best_searched is answer.best
    assert (answer.n_trials, answer.n_complete, answer.n_pruned, answer.n_failed) == (12, 7, 3, 1)
    assert answer.n_unfinished == 1
    assert answer.prune_counts == (("climbing", 1), ("below_peers", 1), ("diverged", 1))
    assert answer.num_layers == 154
    assert answer.score_label == "best val loss"


def test_strategy_comparison(thaw_study: optuna.Study) -> None:
    answer = get_answer_info(get_ranking_info(thaw_study), thaw_study.user_attrs)
    got = [(s.strategy, s.number, s.rank) for s in answer.strategies]
    assert got == [
        ("full fine-tuning", 0, 7),
        ("partial fine-tuning", 1, 4),
        ("feature extraction", 2, 5),
    ]
    advantages = [s.search_advantage for s in answer.strategies]
    assert advantages == pytest.approx([0.22, 0.07, 0.12])


def test_pruned_trial_better_than_best_complete(
    make_study: Callable[..., optuna.Study], add_trial: AddTrial, thaw_params: Params
) -> None:
    study = make_study()
    add_trial(study, state=TrialState.COMPLETE, params=thaw_params(5, 1e-4), val_loss=[0.6, 0.5])
    add_trial(
        study,
        state=TrialState.PRUNED,
        params=thaw_params(50, 1e-3),
        val_loss=[0.5, 0.3, 0.4, 0.6],
        user_attrs={"prune_reason": "climbing", "prune_epoch": 4, "strategy": "full fine-tuning"},
    )
    answer = get_answer_info(get_ranking_info(study), study.user_attrs)
    assert answer.best is not None and answer.best.number == 0
    assert answer.best_overall is not None and answer.best_overall.number == 1
    (strategy,) = answer.strategies
    assert strategy.search_advantage == pytest.approx(-0.2)  # the strategy trial got lower
    md = render_markdown(get_report_info(study))
    # The strategy trial got lower before it was pruned: the ratio says so, not hides it.
    assert "1.7x higher validation loss (0.5 against 0.3)" in md
    assert "Pruned trial 1 reached a lower best val loss (0.3) before it was stopped" in md


def test_pruning_savings(thaw_study: optuna.Study) -> None:
    pruning = get_pruning_info(get_ranking_info(thaw_study), thaw_study.user_attrs)
    assert pruning.configured_epochs == 10
    assert pruning.epochs_source == "thaw:config train.epochs"
    assert pruning.n_finished == 10
    # 4 x 10 (complete) + 10 (trial 8) + 3 + 3 (trials 9, 10) + 5 + 3 + 2 (pruned)
    assert pruning.epochs_spent == 66
    assert pruning.epochs_unpruned == 100
    assert pruning.epochs_saved == 34
    assert pruning.fraction_saved == pytest.approx(0.34)
    assert [(r.reason, r.n_trials, r.epochs_run, r.epochs_saved) for r in pruning.by_reason] == [
        ("climbing", 1, 5, 5),
        ("below_peers", 1, 3, 7),
        ("diverged", 1, 2, 8),
    ]


def test_pruning_without_config_uses_most_epochs_run(
    make_study: Callable[..., optuna.Study], add_trial: AddTrial, thaw_params: Params
) -> None:
    study = make_study(attrs=False)
    add_trial(study, state=TrialState.COMPLETE, params=thaw_params(1, 1e-4), val_loss=[0.5] * 6)
    add_trial(
        study, state=TrialState.PRUNED, params=thaw_params(2, 1e-4), val_loss=[0.9, 0.8]
    )  # no prune reason recorded
    pruning = get_pruning_info(get_ranking_info(study), study.user_attrs)
    assert pruning.configured_epochs == 6
    assert pruning.epochs_source == "most epochs run by any trial"
    assert (pruning.epochs_spent, pruning.epochs_unpruned, pruning.epochs_saved) == (8, 12, 4)
    assert [r.reason for r in pruning.by_reason] == ["unspecified"]


def test_manifest(thaw_study: optuna.Study) -> None:
    manifest = get_manifest_info(
        thaw_study.study_name, thaw_study.user_attrs, "postgresql://thaw:***@db/thaw"
    )
    entries = dict(manifest.entries)
    assert manifest.seed == "1234"
    assert manifest.data_fingerprint == "d41d8cd98f00b204"
    assert manifest.config_hash is not None and manifest.config_hash.startswith("3f5a9c")
    assert entries["storage"] == "postgresql://thaw:***@db/thaw"
    assert entries["sampler"] == '{"n_startup_trials": 5, "name": "TPESampler"}'
    assert entries["pruner"] == '{"name": "thaw", "patience": 2}'
    assert entries["classes"] == "3: daisy, dandelion, roses"
    assert entries["train images"] == "1620 (500, 600, 520)"
    assert entries["device"] == "NVIDIA H100"
    assert entries["jax"] == "not recorded"
    labels = [label for label, _ in manifest.entries]
    assert labels.index("thaw") < labels.index("python") < labels.index("device")
    assert "thaw version" not in labels  # the manifest's "thaw" row says it, once


def test_manifest_without_versions_keeps_the_stored_thaw_version() -> None:
    manifest = get_manifest_info("old", {"thaw:version": "0.0.9"})
    entries = dict(manifest.entries)
    assert entries["thaw version"] == "0.0.9"
    assert "thaw" not in entries


def test_manifest_missing_everything() -> None:
    manifest = get_manifest_info("bare", {})
    entries = dict(manifest.entries)
    assert entries["config hash"] == "not recorded"
    assert entries["storage"] == "not recorded"
    assert entries["versions"] == "not recorded"
    assert manifest.seed is None
