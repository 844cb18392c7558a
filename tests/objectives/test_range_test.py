"""The learning-rate range test: the suggestion rule on made-up curves, and real tests on a tiny
model and tiny data whose classes differ in brightness (so the loss can fall)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from PIL import Image

from thaw.objectives import (
    ArrayData,
    DataSource,
    FineTuneObjective,
    FloatRange,
    IntRange,
    PretrainedBase,
    RangeTestResult,
    SearchSpace,
    StreamedImages,
    TrainSettings,
    TrialParams,
    cut_base,
    load_data,
    lr_range_test,
    suggest_learning_rate,
)
from thaw.objectives._range_test import range_test_batch_size, smoothing_beta

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = SearchSpace(
    unfrozen_layers=IntRange(0, 2),
    learning_rate=FloatRange(1e-3, 1e-2, log=True),
    dropout=FloatRange(0.0, 0.3),
    weight_decay=FloatRange(1e-6, 1e-4, log=True),
    batchnorm=("frozen", "adapt", "train"),
)
N_TRAIN = 48


def rates(n: int, low: float = 1e-5, high: float = 1.0) -> list[float]:
    return [low * (high / low) ** (i / max(1, n - 1)) for i in range(n)]


# --------------------------------------------------------------------------- the rule

VALLEY = [2.0 - 0.08 * i for i in range(13)] + [1.1, 1.3, 1.7, 2.4, 3.5, 5.0, 8.0]
FALL = [2.0 - 0.05 * i for i in range(20)]
FLAT = [1.0, 0.99, 1.01, 0.98, 1.0, 1.02, 0.99, 1.0, 0.98, 1.01]
EXPLODES = [1.0, 1.2, 1.6, 2.5, 4.1, math.inf]
AT_START = [1.0, 1.1, 1.3, 1.6, 2.0, 2.6, 3.3, 4.2]
SECOND_STEP = [1.0, 0.9, 0.95, 1.0, 1.1, 1.3, 1.6, 2.0, 2.6, 3.3]
# One lucky first batch: 3 % below the first value, 18 % below the first two steps' level.
LUCKY_FIRST = [1.6, 2.2, 2.25, 2.2, 2.1, 2.0, 1.9, 1.8, 1.7, 1.55, 1.7, 2.5]
NAN_TAIL = [2.0, 1.9, 1.7, 1.5, 1.3, 1.2, 1.25, 1.6, math.nan]


@pytest.mark.parametrize(
    ("losses", "best_index", "reason"),
    [
        pytest.param(VALLEY, 12, "a tenth of", id="clean-valley"),
        pytest.param(FALL, 19, "still falling at the last rate", id="monotone-fall"),
        pytest.param(FLAT, None, "never fell more than 5%", id="no-fall"),
        pytest.param(EXPLODES, None, "never fell more than 5%", id="explodes-from-start"),
        pytest.param(AT_START, None, "never fell more than 5%", id="minimum-at-first-step"),
        pytest.param(SECOND_STEP, None, "among the first 2", id="minimum-at-second-step"),
        pytest.param(LUCKY_FIRST, 9, "18% below its starting level 1.9)", id="lucky-first-batch"),
        pytest.param(NAN_TAIL, 5, "a tenth of", id="nan-tail"),
        pytest.param([math.nan, 1.0, 0.5], None, "not finite", id="nan-at-start"),
        pytest.param([1.0], None, "need at least 2", id="one-step"),
    ],
)
def test_suggest_learning_rate(losses: list[float], best_index: int | None, reason: str) -> None:
    lrs = rates(len(losses))
    suggestion, why = suggest_learning_rate(lrs, losses)
    if best_index is None:
        assert suggestion is None
    else:
        assert suggestion == pytest.approx(lrs[best_index] / 10)
    assert reason in why
    assert "\n" not in why


def test_suggest_learning_rate_needs_one_loss_per_rate() -> None:
    with pytest.raises(ValueError, match="learning_rates has 3 entries but losses 2"):
        suggest_learning_rate([1e-3, 1e-2, 1e-1], [1.0, 0.5])


def test_batch_and_smoothing_choices() -> None:
    assert range_test_batch_size(48, 8, 2.0) == 4  # 8 would leave 12 steps: smaller
    assert range_test_batch_size(1000, 16, 2.0) == 16  # the study's: 125 steps
    assert range_test_batch_size(10, 16, 2.0) == 4  # never below 4 ...
    assert range_test_batch_size(3, 16, 2.0) == 3  # ... nor above the training set
    assert smoothing_beta(20) == 0.9 and smoothing_beta(100) == 0.95 and smoothing_beta(300) == 0.98


def test_result_round_trips_through_json() -> None:
    result = RangeTestResult(
        batchnorm="train",
        learning_rates=(1e-6, 1.2345678912e-3, 1.0),
        losses=(1.1, 0.912345678, math.inf),
        suggestion=1.2345678912e-4,
        diverged=False,
        epochs=1 / 3,
        reason="a tenth of 0.00123",
    )
    stored = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert stored["losses"][-1] is None
    back = RangeTestResult.from_dict(stored)
    assert back.batchnorm == "train" and back.reason == result.reason and not back.diverged
    assert back.learning_rates == pytest.approx(result.learning_rates, rel=1e-5)
    assert back.losses[:2] == pytest.approx(result.losses[:2], rel=1e-5)
    assert back.losses[-1] == math.inf
    assert back.suggestion == pytest.approx(1.23457e-4)
    assert back.epochs == pytest.approx(1 / 3, rel=1e-5)
    assert RangeTestResult.from_dict(back.to_dict()) == back  # rounding is idempotent


# --------------------------------------------------------------------------- real range tests


def learnable_data(n_train: int = N_TRAIN, seed: int = 0) -> ArrayData:
    """Random 8x8 images whose brightness gives the class away."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("val", 24)):
        y = (np.arange(n) % 3).astype(np.int32)
        noise = rng.integers(0, 40, size=(n, 8, 8, 3))
        arrays[f"x_{split}"] = (noise + 100 * y[:, None, None, None]).astype(np.uint8)
        arrays[f"y_{split}"] = y
    return ArrayData(**arrays, class_names=("a", "b", "c"))


def make_objective(tiny_cnn: Callable[..., Any], **settings: Any) -> FineTuneObjective:
    pretrained = PretrainedBase(cut_base(tiny_cnn(), "features"), "tiny")
    settings = {"epochs": 2, "batch_size": 8, **settings}
    return FineTuneObjective(pretrained, learnable_data(), SPACE, TrainSettings(**settings))


@pytest.fixture
def objective(tiny_cnn: Callable[..., Any]) -> FineTuneObjective:
    return make_objective(tiny_cnn)


def test_epochs_spent_and_exponential_rates(objective: FineTuneObjective) -> None:
    result = lr_range_test(objective, "frozen", min_lr=1e-4, max_lr=0.1, max_steps=12)
    # batch 4 (the study's 8 would give 12 steps in 2 epochs; 4 gives 24, max_steps caps at 12)
    assert result.steps == len(result.losses) == 12
    assert result.epochs == pytest.approx(12 * 4 / N_TRAIN)
    assert result.learning_rates == pytest.approx(rates(12, 1e-4, 0.1), rel=1e-9)
    ratios = np.diff(np.log(result.learning_rates))
    assert ratios == pytest.approx(np.full(11, math.log(1e3) / 11))
    assert all(math.isfinite(v) for v in result.losses)
    assert result.batchnorm == "frozen" and result.reason

    # max_epochs bounds the steps: 0.5 passes of 48 images in batches of 6 is 4 steps
    short = lr_range_test(objective, "train", max_epochs=0.5, batch_size=6, min_lr=1e-4, max_lr=0.1)
    assert short.steps == 4
    assert short.epochs == pytest.approx(0.5)


def test_deterministic_for_a_seed(objective: FineTuneObjective) -> None:
    first = lr_range_test(objective, "train", min_lr=1e-4, max_lr=1.0, max_steps=10, seed=3)
    again = lr_range_test(objective, "train", min_lr=1e-4, max_lr=1.0, max_steps=10, seed=3)
    other = lr_range_test(objective, "train", min_lr=1e-4, max_lr=1.0, max_steps=10, seed=4)
    assert again.losses == pytest.approx(first.losses, rel=1e-6)
    assert again.suggestion == first.suggestion and again.reason == first.reason
    assert other.losses != pytest.approx(first.losses, rel=1e-6)  # other batches


def test_a_rate_range_that_only_explodes_diverges(objective: FineTuneObjective) -> None:
    result = lr_range_test(objective, "frozen", min_lr=10, max_lr=1e4, max_steps=20)
    assert result.diverged is True
    assert result.suggestion is None
    assert result.reason.startswith("diverged:")
    assert 2 <= result.steps < 20  # stopped early
    assert result.epochs == pytest.approx(result.steps * 4 / N_TRAIN)
    assert RangeTestResult.from_dict(json.loads(json.dumps(result.to_dict()))).diverged


def trial_val_losses(objective: FineTuneObjective, tmp_path: Path, name: str) -> list[float]:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/{name}.db")
    trial = study.ask()
    objective.run(trial, TrialParams(2, 3e-3, 0.1, 1e-5, batchnorm="adapt"))
    return list(study.trials[0].user_attrs["history"]["val_loss"])


def test_the_next_trial_is_unaffected(tiny_cnn: Callable[..., Any], tmp_path: Path) -> None:
    expected = trial_val_losses(make_objective(tiny_cnn), tmp_path, "plain")
    objective = make_objective(tiny_cnn)
    for mode in ("train", "adapt", "frozen"):
        lr_range_test(objective, mode, min_lr=1e-3, max_lr=10.0, max_steps=8)
    assert trial_val_losses(objective, tmp_path, "after") == pytest.approx(expected, rel=1e-5)


def test_warmup_settings_still_train_the_unfrozen_layers(tiny_cnn: Callable[..., Any]) -> None:
    objective = make_objective(tiny_cnn, warmup_epochs=1)
    pretrained = objective.pretrained.model.get_layer("conv1").get_weights()[0]
    lr_range_test(objective, "frozen", min_lr=1e-3, max_lr=0.1, max_steps=4)
    # The base the test trained is the objective's working copy (the next trial restores it).
    working = objective.pretrained._working
    assert working is not None
    assert not np.allclose(working.get_layer("conv1").get_weights()[0], pretrained)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_lr": 0.0}, "min_lr=0.0"),
        ({"min_lr": 1e-3, "max_lr": 1e-3}, "max_lr=0.001"),
        ({"max_steps": 1}, "max_steps=1"),
        ({"max_epochs": 0.0}, "max_epochs=0.0"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"batchnorm": "bogus"}, "batchnorm='bogus'"),
        ({"max_epochs": 0.05}, "allows 0 step"),
    ],
)
def test_bad_arguments(objective: FineTuneObjective, kwargs: dict[str, Any], match: str) -> None:
    kwargs = {"batchnorm": "frozen", **kwargs}
    with pytest.raises(ValueError, match=match):
        lr_range_test(objective, **kwargs)


def test_streamed_data_decodes_its_batches(tmp_path: Path, tiny_cnn: Callable[..., Any]) -> None:
    rng = np.random.default_rng(0)
    for label, name in enumerate(("a", "b", "c")):
        folder = tmp_path / "img" / name
        folder.mkdir(parents=True)
        for i in range(6):
            pixels = 60 * label + 40 + rng.integers(0, 30, (8, 8, 3))
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    source = DataSource(kind="directory", path=str(tmp_path / "img"), max_memory_mb=0)
    data = load_data(source, (8, 8, 3))
    assert isinstance(data, StreamedImages)
    objective = FineTuneObjective(
        PretrainedBase(cut_base(tiny_cnn(), "features"), "tiny"),
        data,
        SPACE,
        TrainSettings(epochs=1, batch_size=4),
    )
    result = lr_range_test(objective, "adapt", min_lr=1e-3, max_lr=0.1, max_steps=5)
    n_train = len(data.train_files)
    assert result.steps == 5
    assert result.epochs == pytest.approx(5 * 4 / n_train)
