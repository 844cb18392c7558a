"""The Optuna objective on a tiny model and tiny random data, with real studies in SQLite."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import optuna
import pytest
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial, TrialState

from thaw._keys import CONTINUES, TRIAL_EPOCHS
from thaw.objectives import (
    ArrayData,
    DivergedError,
    FeatureCache,
    FineTuneObjective,
    FloatRange,
    IntRange,
    PretrainedBase,
    SearchSpace,
    TrainSettings,
    TrialHistory,
    TrialReporter,
    cut_base,
    summarise_history,
)
from thaw.search import ClimbingPruner

optuna.logging.set_verbosity(optuna.logging.WARNING)

Arrays = Callable[..., dict[str, np.ndarray]]

SPACE = SearchSpace(
    unfrozen_layers=IntRange(0, 2),
    learning_rate=FloatRange(1e-3, 1e-2, log=True),
    dropout=FloatRange(0.0, 0.3),
    weight_decay=FloatRange(1e-6, 1e-4, log=True),
)


@pytest.fixture
def pretrained(tiny_cnn: Callable[..., Any]) -> PretrainedBase:
    return PretrainedBase(cut_base(tiny_cnn(), "features"), "tiny")


@pytest.fixture
def data(tiny_arrays: Arrays) -> ArrayData:
    return ArrayData(**tiny_arrays(), class_names=("a", "b", "c"))


@pytest.fixture
def storage_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'objective.db'}"


def stored_trials(storage_url: str, name: str = "o") -> list[FrozenTrial]:
    """Trials as any other storage client sees them."""
    return optuna.load_study(study_name=name, storage=storage_url).get_trials()


# --------------------------------------------------------------------------- a full trial


def test_completed_trial_stores_history_and_summary(
    pretrained: PretrainedBase, data: ArrayData, storage_url: str
) -> None:
    weights_before = [w.copy() for w in pretrained.model.get_weights()]
    objective = FineTuneObjective(pretrained, data, SPACE, TrainSettings(epochs=3, batch_size=8))
    study = optuna.create_study(
        study_name="o", storage=storage_url, sampler=optuna.samplers.RandomSampler(seed=1)
    )
    study.enqueue_trial({"unfrozen_layers": 2})  # fine-tune the whole tiny base
    study.optimize(objective, n_trials=1)

    (trial,) = stored_trials(storage_url)
    assert trial.state == TrialState.COMPLETE
    attrs = trial.user_attrs
    history = attrs["history"]
    assert set(history) == {"loss", "val_loss", "accuracy", "val_accuracy"}
    assert all(len(v) == 3 for v in history.values())
    assert all(isinstance(v, float) and math.isfinite(v) for vs in history.values() for v in vs)
    assert attrs["epochs_run"] == 3

    # intermediate values: step = 1-based epoch, value = that epoch's val_loss
    assert sorted(trial.intermediate_values) == [1, 2, 3]
    assert [trial.intermediate_values[s] for s in (1, 2, 3)] == pytest.approx(history["val_loss"])

    best_i = int(np.argmin(history["val_loss"]))
    assert attrs["best_epoch"] == best_i + 1
    assert attrs["best_val_loss"] == pytest.approx(history["val_loss"][best_i])
    assert trial.value == pytest.approx(min(history["val_loss"]))
    assert attrs["final_val_loss"] == pytest.approx(history["val_loss"][-1])
    assert attrs["val_accuracy_at_best"] == pytest.approx(history["val_accuracy"][best_i])
    # end-of-trial probes (objectives._probes), for the diagnosis
    probes = attrs["probes"]
    assert {"train_loss", "train_accuracy", "val_loss_moving_stats", "val_loss_batch_stats"} <= set(
        probes
    )
    assert set(probes["weight_drift"]) == {"conv1", "conv2"}
    assert all(v > 0 for v in probes["weight_drift"].values())

    assert set(trial.params) == {"unfrozen_layers", "learning_rate", "dropout", "weight_decay"}
    assert trial.params["unfrozen_layers"] == 2
    assert 1e-3 <= trial.params["learning_rate"] <= 1e-2
    # the trial trained a copy: the pretrained base is untouched
    for a, b in zip(pretrained.model.get_weights(), weights_before, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("own", "expected"), [(None, 2), (4, 4), (0, 2), (True, 2), ("4", 2)])
def test_a_trial_queued_with_its_own_length_trains_that_many_epochs(
    pretrained: PretrainedBase,
    data: ArrayData,
    storage_url: str,
    own: Any,
    expected: int,
) -> None:
    objective = FineTuneObjective(pretrained, data, SPACE, TrainSettings(epochs=2, batch_size=8))
    study = optuna.create_study(
        study_name="o", storage=storage_url, sampler=optuna.samplers.RandomSampler(seed=1)
    )
    attrs = {} if own is None else {TRIAL_EPOCHS: own}
    study.enqueue_trial({"unfrozen_layers": 0}, user_attrs=attrs)
    study.optimize(objective, n_trials=1)
    (trial,) = stored_trials(storage_url)
    assert trial.state == TrialState.COMPLETE
    assert trial.user_attrs["epochs_run"] == expected
    assert sorted(trial.intermediate_values) == list(range(1, expected + 1))


def memorised(tiny_arrays: Arrays) -> ArrayData:
    """Validation images = training images: the validation loss falls while the fit learns."""
    arrays = tiny_arrays()
    return ArrayData(
        arrays["x_train"],
        arrays["y_train"],
        arrays["x_train"],
        arrays["y_train"],
        class_names=("a", "b", "c"),
    )


LONGER_PARAMS = {"unfrozen_layers": 2, "learning_rate": 3e-3, "dropout": 0.0, "weight_decay": 1e-6}


def test_a_longer_trial_continues_from_where_its_source_ended(
    pretrained: PretrainedBase, tiny_arrays: Arrays, storage_url: str
) -> None:
    objective = FineTuneObjective(
        pretrained, memorised(tiny_arrays), SPACE, TrainSettings(epochs=3, batch_size=8)
    )
    study = optuna.create_study(study_name="o", storage=storage_url)
    study.enqueue_trial(LONGER_PARAMS)
    study.optimize(objective, n_trials=1)
    (first,) = stored_trials(storage_url)
    assert first.user_attrs["best_epoch"] == 3  # still falling at its end: its weights are kept
    study.enqueue_trial(
        LONGER_PARAMS, user_attrs={TRIAL_EPOCHS: 5, CONTINUES: {"trial": 0, "epochs": 3}}
    )
    study.optimize(objective, n_trials=1)
    longer = stored_trials(storage_url)[1]
    assert longer.state == TrialState.COMPLETE
    assert longer.user_attrs["continued_from"] == {"trial": 0, "epochs": 3}
    assert longer.user_attrs["epochs_run"] == 2  # 5 in all, 3 of them already trained
    # It starts where the first ended, not from the pretrained weights.
    assert longer.intermediate_values[1] < first.intermediate_values[1]
    assert longer.intermediate_values[1] < 1.5 * first.intermediate_values[3]


@pytest.mark.parametrize("unfrozen", [0, 1])
def test_a_longer_trial_continues_alike_from_a_cached_or_an_uncached_source(
    pretrained: PretrainedBase, tiny_arrays: Arrays, tmp_path: Path, unfrozen: int
) -> None:
    """A source that trained its top on cached activations keeps that top's weights only (the
    rest is the base as every trial starts); the longer trial trains as from an uncached one."""
    curves = []
    for cache in ("auto", "off"):
        objective = FineTuneObjective(
            pretrained,
            memorised(tiny_arrays),
            SPACE,
            TrainSettings(epochs=3, batch_size=8, cache_frozen=cache),
            feature_cache=FeatureCache(directory=None),
        )
        study = optuna.create_study(study_name="o", storage=f"sqlite:///{tmp_path / cache}.db")
        params = {**LONGER_PARAMS, "unfrozen_layers": unfrozen, "learning_rate": 1e-2}
        study.enqueue_trial(params)
        study.optimize(objective, n_trials=1)
        assert study.trials[0].user_attrs["best_epoch"] == 3
        assert (objective.last_boundaries != [""]) == (cache == "auto")
        study.enqueue_trial(
            params, user_attrs={TRIAL_EPOCHS: 5, CONTINUES: {"trial": 0, "epochs": 3}}
        )
        study.optimize(objective, n_trials=1)
        longer = study.trials[1]
        assert longer.user_attrs["continued_from"] == {"trial": 0, "epochs": 3}
        curves.append(longer.user_attrs["history"]["val_loss"])
    np.testing.assert_allclose(curves[0], curves[1], rtol=1e-5, atol=1e-6)


def test_a_longer_trial_whose_source_is_not_held_trains_from_the_start(
    pretrained: PretrainedBase, tiny_arrays: Arrays, storage_url: str
) -> None:
    objective = FineTuneObjective(
        pretrained, memorised(tiny_arrays), SPACE, TrainSettings(epochs=3, batch_size=8)
    )
    study = optuna.create_study(study_name="o", storage=storage_url)
    # Trial 7 ran on another worker (or before a restart): nothing of it is held here.
    study.enqueue_trial(
        LONGER_PARAMS, user_attrs={TRIAL_EPOCHS: 4, CONTINUES: {"trial": 7, "epochs": 3}}
    )
    study.optimize(objective, n_trials=1)
    (trial,) = stored_trials(storage_url)
    assert "continued_from" not in trial.user_attrs
    assert trial.user_attrs["epochs_run"] == 4


def test_val_accuracy_objective_returns_the_best_accuracy(
    pretrained: PretrainedBase, data: ArrayData, storage_url: str
) -> None:
    settings = TrainSettings(epochs=2, batch_size=8, metric="val_accuracy")
    study = optuna.create_study(study_name="o", storage=storage_url, direction="maximize")
    study.optimize(FineTuneObjective(pretrained, data, SPACE, settings), n_trials=1)
    (trial,) = stored_trials(storage_url)
    accuracy = trial.user_attrs["history"]["val_accuracy"]
    assert trial.value == pytest.approx(max(accuracy))
    assert [trial.intermediate_values[s] for s in (1, 2)] == pytest.approx(accuracy)
    assert trial.user_attrs["best_epoch"] == int(np.argmax(accuracy)) + 1


class PruneFromStep(BasePruner):
    """A real Optuna pruner that prunes every trial once it reports ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return (trial.last_step or 0) >= self.step


def test_pruned_trial_stops_the_fit_and_keeps_its_summary(
    pretrained: PretrainedBase, data: ArrayData, storage_url: str
) -> None:
    study = optuna.create_study(study_name="o", storage=storage_url, pruner=PruneFromStep(2))
    study.optimize(
        FineTuneObjective(pretrained, data, SPACE, TrainSettings(epochs=5, batch_size=8)),
        n_trials=1,
    )
    (trial,) = stored_trials(storage_url)
    assert trial.state == TrialState.PRUNED
    assert sorted(trial.intermediate_values) == [1, 2]
    assert trial.user_attrs["epochs_run"] == 2
    assert len(trial.user_attrs["history"]["val_loss"]) == 2
    assert trial.user_attrs["best_epoch"] in (1, 2)


# ------------------------------------------------------------------------------ divergence

DIVERGING_SPACE = SearchSpace(
    unfrozen_layers=IntRange(2, 2),
    learning_rate=FloatRange(1e-3, 1e9, log=True),
    dropout=FloatRange(0.0, 0.0),
    weight_decay=FloatRange(1e-6, 1e-6),
)


def run_diverging_then_healthy(
    pretrained: PretrainedBase, data: ArrayData, storage_url: str, pruner: BasePruner
) -> list[FrozenTrial]:
    study = optuna.create_study(study_name="o", storage=storage_url, pruner=pruner)
    study.enqueue_trial({"learning_rate": 1e9})
    study.enqueue_trial({"learning_rate": 1e-3})
    objective = FineTuneObjective(
        pretrained, data, DIVERGING_SPACE, TrainSettings(epochs=3, batch_size=8)
    )
    study.optimize(objective, n_trials=2, catch=(Exception,))
    return stored_trials(storage_url)


@pytest.mark.parametrize(
    "pruner", [ClimbingPruner(), optuna.pruners.NopPruner()], ids=["climbing", "nop"]
)
def test_diverged_trial_is_pruned_or_failed_and_the_study_goes_on(
    pretrained: PretrainedBase, data: ArrayData, storage_url: str, pruner: BasePruner
) -> None:
    diverged, healthy = run_diverging_then_healthy(pretrained, data, storage_url, pruner)
    assert diverged.params["learning_rate"] == 1e9
    assert diverged.state in (TrialState.PRUNED, TrialState.FAIL)
    if diverged.state == TrialState.PRUNED:
        assert diverged.user_attrs["prune_reason"] == "diverged"
    else:
        assert diverged.user_attrs["fail_reason"].startswith("DivergedError: val_loss")
    # the non-finite epoch is stored as null and training stopped there
    val_loss = diverged.user_attrs["history"]["val_loss"]
    assert val_loss[-1] is None
    assert diverged.user_attrs["epochs_run"] == len(val_loss) < 3
    assert math.isnan(diverged.intermediate_values[len(val_loss)])

    assert healthy.state == TrialState.COMPLETE
    assert math.isfinite(healthy.value)


def test_trial_diverged_from_the_first_epoch_has_consistent_attrs(
    pretrained: PretrainedBase, data: ArrayData, storage_url: str
) -> None:
    diverged, _ = run_diverging_then_healthy(pretrained, data, storage_url, ClimbingPruner())
    assert diverged.user_attrs["history"]["val_loss"] == [None]  # NaN from epoch 1
    if diverged.state == TrialState.FAIL:
        assert "prune_reason" not in diverged.user_attrs
    else:
        assert diverged.state == TrialState.PRUNED
        assert "fail_reason" not in diverged.user_attrs


# ------------------------------------------------------------------------- bad arguments


class _FailsAtEpoch(keras.callbacks.Callback):
    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if epoch + 1 == self.epoch:
            raise RuntimeError(f"disk gone at epoch {self.epoch}")


@pytest.mark.parametrize("fails_at", [1, 3])
def test_a_fit_that_raises_keeps_the_history_it_trained(
    pretrained: PretrainedBase, data: ArrayData, storage_url: str, fails_at: int
) -> None:
    """The history is stored when a fit ends; one that raises never ends: the objective stores
    what it trained before the trial fails, with its reason."""
    objective = FineTuneObjective(pretrained, data, SPACE, TrainSettings(epochs=4, batch_size=8))
    objective.extra_callbacks = lambda trial: [_FailsAtEpoch(fails_at)]
    study = optuna.create_study(study_name="o", storage=storage_url)
    study.optimize(objective, n_trials=1, catch=(RuntimeError,))
    (trial,) = stored_trials(storage_url)
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["fail_reason"] == f"RuntimeError: disk gone at epoch {fails_at}"
    assert trial.user_attrs["epochs_run"] == fails_at
    assert len(trial.user_attrs["history"]["val_loss"]) == fails_at
    assert sorted(trial.intermediate_values) == list(range(1, fails_at + 1))


def test_image_shape_mismatch(pretrained: PretrainedBase, tiny_arrays: Arrays) -> None:
    data = ArrayData(**tiny_arrays(shape=(10, 10, 3)), class_names=("a", "b", "c"))
    with pytest.raises(
        ValueError,
        match=r"images have shape \(10, 10, 3\) but the model "
        r"expects \(8, 8, 3\)",
    ):
        FineTuneObjective(pretrained, data, SPACE, TrainSettings())


def test_unknown_metric(pretrained: PretrainedBase, data: ArrayData) -> None:
    with pytest.raises(ValueError, match=r"objective metric 'accuracy'; expected one of"):
        FineTuneObjective(pretrained, data, SPACE, TrainSettings(metric="accuracy"))


# --------------------------------------------------------------------------- one trace per fit


@pytest.fixture
def train_step_traces(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the models whose train step was traced (called in Python), in order."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the train step is traced twice only on the TensorFlow backend")
    traced: list[str] = []
    train_step = keras.Model.train_step

    def counting(self: keras.Model, *args: Any, **kwargs: Any) -> Any:
        traced.append(self.name)
        return train_step(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "train_step", counting)
    return traced


def _fit_tiny(tiny_cnn: Callable[..., Any], arrays: dict[str, np.ndarray], prebuild: bool) -> Any:
    from thaw.objectives import build_training_state, compile_model

    model = tiny_cnn()
    compile_model(model, 1e-2, 1e-4)
    if prebuild:
        build_training_state(model, arrays["y_train"])
        assert model.optimizer.built
        assert all(float(v.numpy()) == 0.0 for v in model.metrics_variables)
    keras.utils.set_random_seed(3)
    return model.fit(
        arrays["x_train"],
        arrays["y_train"],
        validation_data=(arrays["x_val"], arrays["y_val"]),
        batch_size=8,
        epochs=3,
        verbose=0,
    ).history


@pytest.mark.parametrize(("prebuild", "traces"), [(False, 2), (True, 1)])
def test_the_training_state_built_first_traces_the_train_step_once(
    tiny_cnn: Callable[..., Any],
    tiny_arrays: Arrays,
    train_step_traces: list[str],
    prebuild: bool,
    traces: int,
) -> None:
    _fit_tiny(tiny_cnn, tiny_arrays(), prebuild)
    assert len(train_step_traces) == traces


def test_the_training_state_built_first_changes_no_result(
    tiny_cnn: Callable[..., Any], tiny_arrays: Arrays
) -> None:
    arrays = tiny_arrays()
    assert _fit_tiny(tiny_cnn, arrays, prebuild=True) == _fit_tiny(tiny_cnn, arrays, prebuild=False)


@pytest.mark.parametrize(
    ("settings", "unfrozen", "fits"),
    [
        (TrainSettings(epochs=2, batch_size=8, cache_frozen="off"), 2, 1),
        (TrainSettings(epochs=3, batch_size=8, cache_frozen="off", warmup_epochs=1), 2, 2),
        (TrainSettings(epochs=2, batch_size=8, cache_frozen="auto"), 0, 1),
    ],
    ids=["one-phase", "warm-up-then-fine-tuning", "cached-top"],
)
def test_every_fit_of_a_trial_traces_its_train_step_once(
    pretrained: PretrainedBase,
    data: ArrayData,
    storage_url: str,
    tmp_path: Path,
    train_step_traces: list[str],
    settings: TrainSettings,
    unfrozen: int,
    fits: int,
) -> None:
    from thaw.objectives import FeatureCache

    objective = FineTuneObjective(
        pretrained, data, SPACE, settings, feature_cache=FeatureCache(tmp_path / "cache")
    )
    study = optuna.create_study(study_name="o", storage=storage_url)
    study.enqueue_trial({"unfrozen_layers": unfrozen})
    study.optimize(objective, n_trials=1)
    (trial,) = stored_trials(storage_url)
    assert trial.state == TrialState.COMPLETE
    assert len(trial.user_attrs["history"]["val_loss"]) == settings.epochs
    assert len(train_step_traces) == fits
    cached = settings.cache_frozen == "auto"
    assert all(objective.last_boundaries) if cached else not any(objective.last_boundaries)


def test_build_freezes_as_the_params_say(pretrained: PretrainedBase, data: ArrayData) -> None:
    from thaw.objectives import TrialParams

    objective = FineTuneObjective(pretrained, data, SPACE, TrainSettings())
    model = objective.build(
        TrialParams(unfrozen_layers=1, learning_rate=1e-3, dropout=0.2, weight_decay=1e-5)
    )
    trainable = {w.path.split("/")[-2] for w in model.trainable_weights}
    assert trainable == {"conv2", "head_dense"}
    assert model.get_layer("head_dropout").rate == 0.2
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(1e-3)


# ------------------------------------------------------------------------ summarise_history


def hist(val_loss: list[float | None], val_acc: list[float | None]) -> dict[str, Any]:
    return {
        "loss": [0.0] * len(val_loss),
        "accuracy": [0.0] * len(val_loss),
        "val_loss": val_loss,
        "val_accuracy": val_acc,
    }


# (id, val_loss, val_accuracy, metric, best_epoch, best_value, final_val_loss)
SUMMARIES = [
    ("min in the middle", [0.9, 0.5, 0.7], [0.1, 0.6, 0.5], "val_loss", 2, 0.5, 0.7),
    ("first of ties", [0.5, 0.7, 0.5], [0.1, 0.2, 0.3], "val_loss", 1, 0.5, 0.5),
    ("last epoch best", [0.9, 0.8, 0.2], [0.1, 0.2, 0.3], "val_loss", 3, 0.2, 0.2),
    ("nulls never best", [None, 0.8, None], [None, 0.4, None], "val_loss", 2, 0.8, None),
    ("maximize", [0.9, 0.5, 0.7], [0.3, 0.6, 0.9], "val_accuracy", 3, 0.9, 0.7),
    ("maximize first of ties", [0.9, 0.5, 0.7], [0.6, 0.6, 0.2], "val_accuracy", 1, 0.6, 0.7),
    ("maximize skips nulls", [0.9, None], [0.4, None], "val_accuracy", 1, 0.4, None),
]


@pytest.mark.parametrize(
    ("val_loss", "val_acc", "metric", "best_epoch", "best_value", "final"),
    [pytest.param(*row[1:], id=row[0]) for row in SUMMARIES],
)
def test_summarise_history(
    val_loss: list[float | None],
    val_acc: list[float | None],
    metric: str,
    best_epoch: int,
    best_value: float,
    final: float | None,
) -> None:
    outcome = summarise_history(hist(val_loss, val_acc), metric)
    assert outcome.best_epoch == best_epoch
    assert outcome.best_value == best_value
    assert outcome.best_val_loss == val_loss[best_epoch - 1]
    assert outcome.val_accuracy_at_best == val_acc[best_epoch - 1]
    assert outcome.final_val_loss == final
    assert outcome.epochs_run == len(val_loss)
    assert set(outcome.user_attrs()) == {
        "best_value",
        "best_epoch",
        "best_val_loss",
        "final_val_loss",
        "val_accuracy_at_best",
        "epochs_run",
    }


@pytest.mark.parametrize("metric", ["val_loss", "val_accuracy"])
def test_summarise_history_never_finite(metric: str) -> None:
    with pytest.raises(DivergedError, match=rf"{metric} was never finite in 2 epochs"):
        summarise_history(hist([None, None], [None, None]), metric)


# ------------------------------------------------------------------------------ callbacks


def test_trial_history_stores_non_finite_values_as_none() -> None:
    history = TrialHistory()
    history.append({"loss": 1.0, "val_loss": float("nan"), "accuracy": np.float32(0.5)})
    history.append({"loss": float("inf"), "val_loss": 0.5, "val_accuracy": 0.75})
    assert len(history) == 2
    assert history.to_dict() == {
        "loss": [1.0, None],
        "val_loss": [None, 0.5],
        "accuracy": [0.5, None],
        "val_accuracy": [None, 0.75],
    }


def test_reporter_needs_validation_data(
    pretrained: PretrainedBase, data: ArrayData, tmp_path: Path
) -> None:
    study = optuna.create_study()
    trial = study.ask()
    model = pretrained.instantiate()
    head = keras.layers.Dense(3, activation="softmax")(model.output)
    model = keras.Model(model.input, head)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    with pytest.raises(KeyError, match=r"the fit logged no 'val_loss' .*is validation data set"):
        model.fit(
            data.x_train.astype("float32"),
            data.y_train,
            epochs=1,
            verbose=0,
            callbacks=[TrialReporter(trial)],
        )
