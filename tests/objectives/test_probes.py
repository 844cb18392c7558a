"""End-of-trial probes on a tiny real model."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import optuna
import pytest

from thaw.objectives import (
    ArrayData,
    FineTuneObjective,
    FloatRange,
    IntRange,
    PretrainedBase,
    SearchSpace,
    TrainSettings,
    TrialParams,
    cut_base,
)
from thaw.objectives._model import build_model, freeze
from thaw.objectives._probes import (
    BatchStatsRunner,
    _batch_statistics,
    batch_statistics_predict,
    batchnorm_probe,
    inference_metrics,
    probe_sample,
    run_probes,
    weight_drift,
)


def _finetune_model(tiny_cnn: Any, batchnorm: str) -> tuple[keras.Model, keras.Model]:
    pretrained = tiny_cnn()
    base = keras.Model(pretrained.input, pretrained.get_layer("features").output, name="base")
    trial_base = keras.models.clone_model(base)
    trial_base.set_weights(base.get_weights())
    freeze(trial_base, 2, batchnorm)
    model = build_model(trial_base, 3, 0.5)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    return model, base


def test_inference_metrics_match_evaluate(tiny_cnn: Any, tiny_arrays: Any) -> None:
    data = tiny_arrays()
    model, _ = _finetune_model(tiny_cnn, "frozen")
    loss, acc = inference_metrics(model, data["x_train"], data["y_train"], 8)
    assert loss == pytest.approx(model.evaluate(data["x_train"], data["y_train"], verbose=0), 1e-4)
    assert 0.0 <= acc <= 1.0


def test_batchnorm_probe_restores_moving_statistics(tiny_cnn: Any, tiny_arrays: Any) -> None:
    data = tiny_arrays()
    model, _ = _finetune_model(tiny_cnn, "frozen")
    bn = model.layers[1].get_layer("bn2")
    before = [w.numpy().copy() for w in bn.weights]
    flags = bn.trainable
    moving, batch = batchnorm_probe(model, data["x_val"], data["y_val"], 4) or (None, None)
    assert moving is not None and batch is not None
    # Batch statistics of these (uint8 noise) images differ from the random initial moving
    # statistics (mean 0, variance 1 of a fresh BatchNorm): the losses differ.
    assert moving != pytest.approx(batch, rel=1e-3)
    for w, value in zip(bn.weights, before, strict=True):
        np.testing.assert_array_equal(w.numpy(), value)
    assert bn.trainable == flags


def test_batchnorm_probe_is_none_without_batchnorm(tiny_arrays: Any) -> None:
    data = tiny_arrays()
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    assert batchnorm_probe(model, data["x_val"].astype("float32"), data["y_val"], 4) is None


def test_weight_drift_is_zero_before_and_grows_with_the_learning_rate(
    tiny_cnn: Any, tiny_arrays: Any
) -> None:
    data = tiny_arrays()
    drifts = {}
    for lr in (1e-4, 1.0):
        model, base = _finetune_model(tiny_cnn, "frozen")
        assert weight_drift(model.layers[1], base) == {"conv1": 0.0, "conv2": 0.0}
        model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy")
        model.fit(data["x_train"], data["y_train"], epochs=2, batch_size=8, verbose=0)
        drifts[lr] = weight_drift(model.layers[1], base)
    assert set(drifts[1.0]) == {"conv1", "conv2"}  # only the unfrozen layers
    assert all(drifts[1.0][k] > 10 * drifts[1e-4][k] for k in drifts[1.0])
    assert drifts[1e-4]["conv2"] < 0.05


def test_run_probes_gives_the_stored_shape(tiny_cnn: Any, tiny_arrays: Any) -> None:
    data = tiny_arrays()
    model, base = _finetune_model(tiny_cnn, "train")
    model.fit(data["x_train"], data["y_train"], epochs=1, batch_size=8, verbose=0)
    probes = run_probes(
        model,
        base,
        x_train=data["x_train"],
        y_train=data["y_train"],
        x_val=data["x_val"],
        y_val=data["y_val"],
        batch_size=8,
    )
    assert set(probes) == {
        "train_loss",
        "train_accuracy",
        "val_loss_moving_stats",
        "val_loss_batch_stats",
        "weight_drift",
    }
    assert all(isinstance(probes[k], float) for k in probes if k != "weight_drift")


def test_inference_metrics_of_a_thaw_compiled_model_match_predict(
    tiny_cnn: Any, tiny_arrays: Any
) -> None:
    from thaw.objectives._objective import compile_model

    data = tiny_arrays()
    model, _ = _finetune_model(tiny_cnn, "frozen")
    compile_model(model, 1e-2, 1e-4)  # as a trial compiles it: measured through evaluate
    model.fit(data["x_train"], data["y_train"], epochs=1, batch_size=8, verbose=0)
    loss, acc = inference_metrics(model, data["x_train"], data["y_train"], 8)
    probs = model.predict(data["x_train"], batch_size=8, verbose=0).astype("float64")
    expected = -np.mean(np.log(np.clip(probs[np.arange(len(probs)), data["y_train"]], 1e-7, 1)))
    assert loss == pytest.approx(expected, rel=1e-5)
    assert acc == pytest.approx(np.mean(np.argmax(probs, axis=-1) == data["y_train"]))


@pytest.mark.parametrize("n_val", [12, 13])  # 13: a last batch of one image, left out
def test_batchnorm_probe_batch_loss_is_each_batch_in_training_mode(
    tiny_cnn: Any, tiny_arrays: Any, n_val: int
) -> None:
    data = tiny_arrays(n_val=n_val)
    model, _ = _finetune_model(tiny_cnn, "frozen")
    x, y = data["x_val"], data["y_val"]
    losses, sizes = [], []
    with _batch_statistics(model):  # BatchNorm on batch statistics, dropout off: eager calls
        for start in range(0, len(x) - 1, 4):
            xb, yb = x[start : start + 4], y[start : start + 4]
            probs = keras.ops.convert_to_numpy(model(xb, training=True)).astype("float64")
            losses.append(-np.mean(np.log(np.clip(probs[np.arange(len(yb)), yb], 1e-7, 1))))
            sizes.append(len(yb))
    result = batchnorm_probe(model, x, y, 4)
    assert result is not None
    assert result[1] == pytest.approx(np.average(losses, weights=sizes), rel=1e-5)


def test_batch_stats_runner_matches_the_model_and_traces_once_per_architecture(
    tiny_cnn: Any, tiny_arrays: Any
) -> None:
    data = tiny_arrays(n_val=13)
    x = data["x_val"]
    runner = BatchStatsRunner()
    for unfrozen, dropout in ((2, 0.5), (1, 0.1)):  # trials differ in flags and dropout only
        model, _ = _finetune_model(tiny_cnn, "frozen")
        freeze(model.layers[1], unfrozen, "frozen")
        model.layers[-2].rate = dropout
        before = [w.copy() for w in model.get_weights()]
        flags = [layer.trainable for layer in model.layers[1].layers]
        expected = batch_statistics_predict(model, x, 4)  # traced on the model itself
        got = runner.predict(model, x, 4)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        # the inference pass through the same clone: the model's own predict
        inferred = runner.predict(model, x, 8, training=False)
        np.testing.assert_allclose(inferred, model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
        loss, acc = inference_metrics(model, x, data["y_val"], 4, runner)
        assert (loss, acc) == pytest.approx(inference_metrics(model, x, data["y_val"], 4), 1e-5)
        # the model is untouched: weights (moving statistics too) and flags
        for a, b in zip(model.get_weights(), before, strict=True):
            np.testing.assert_array_equal(a, b)
        assert [layer.trainable for layer in model.layers[1].layers] == flags
        assert model.layers[-2].rate == dropout
    assert runner.built == 1
    # another architecture gets its own clone
    other = build_model(keras.models.clone_model(model.layers[1]), 5, 0.2)
    runner.predict(other, x, 4)
    assert runner.built == 2


def test_probes_measure_the_model_as_it_ended_then_the_best_epoch_comes_back(
    tiny_cnn: Any, tiny_arrays: Any
) -> None:
    """Where the val loss rose after the best epoch, the probes see the last epoch's model (the
    memorised training set, the stale statistics); its moving-statistics loss is the one the
    fit logged for that epoch. Then the model holds its best epoch's weights again."""
    pretrained = PretrainedBase(cut_base(tiny_cnn(), "features"), "tiny")
    data = ArrayData(**tiny_arrays(), class_names=("a", "b", "c"))
    space = SearchSpace(
        unfrozen_layers=IntRange(0, 2),
        learning_rate=FloatRange(1e-3, 1e-1),
        dropout=FloatRange(0.0, 0.5),
        weight_decay=FloatRange(1e-6, 1e-4),
    )
    objective = FineTuneObjective(
        pretrained, data, space, TrainSettings(epochs=6, batch_size=8, cache_frozen="off")
    )
    trial = optuna.create_study().ask()
    # noise images: memorising the training set makes the val loss rise from epoch 2 on
    params = TrialParams(2, 1e-2, 0.0, 1e-6, "train")
    model, history, _ = objective.train(trial, params)
    losses = history.epochs["val_loss"]
    best_epoch = objective._restored_epoch
    assert best_epoch is not None and best_epoch < len(losses)  # it rose after its best
    best = [w.copy() for w in model.get_weights()]
    measured, _ = inference_metrics(model, objective._x_val, data.y_val, 8)
    assert measured == pytest.approx(losses[best_epoch - 1], rel=1e-5)

    ended = objective._ended
    assert ended is not None and ended[1] is not None
    last = ended[1]
    objective.probe(trial, model, params, history)
    probes = trial.user_attrs["probes"]
    assert probes["epoch"] == len(losses)
    assert probes["val_loss_moving_stats"] == pytest.approx(losses[-1], rel=1e-5)
    # the model is back at its best epoch
    for a, b in zip(model.get_weights(), best, strict=True):
        np.testing.assert_array_equal(a, b)
    # the train probe is the last epoch's model, measured again here
    model.set_weights(last)
    assert inference_metrics(model, objective._x_val, data.y_val, 8)[0] == pytest.approx(
        losses[-1], rel=1e-5
    )
    train_loss, _ = inference_metrics(model, objective._x_train, data.y_train, 8)
    assert probes["train_loss"] == pytest.approx(train_loss, rel=1e-4)


# ------------------------------------------------------------------ the probed sample


@pytest.mark.parametrize(
    ("labels", "size", "counts"),
    [
        ([0, 1, 2] * 10, 6, {0: 2, 1: 2, 2: 2}),  # stratified: every class in proportion
        ([0, 1, 2] * 10, 7, None),  # one class gets the extra image
        ([0] * 20 + [1] * 4, 10, {0: 6, 1: 4}),  # a small class gives all it has
        ([0, 1] * 5, 0, {}),  # 0: no image probes
        ([0, 1] * 5, 9, {0: 5, 1: 4}),
    ],
)
def test_probe_sample_is_stratified(labels: list[int], size: int, counts: Any) -> None:
    y = np.array(labels)
    index = probe_sample(y, size)
    assert index is not None
    assert len(index) == size == len(set(index.tolist()))
    got = {int(c): int(n) for c, n in zip(*np.unique(y[index], return_counts=True), strict=True)}
    if counts is None:
        assert sorted(got.values()) == [2, 2, 3]
    else:
        assert got == counts


@pytest.mark.parametrize("size", [10, 11, 100])
def test_probe_sample_is_everything_when_the_split_is_small(size: int) -> None:
    assert probe_sample(np.arange(10) % 2, size) is None


def test_probe_sample_is_the_same_every_trial_and_mixes_the_classes() -> None:
    y = np.repeat(np.arange(4), 25)  # sorted by class, as folders often are
    first = probe_sample(y, 16)
    assert first is not None
    np.testing.assert_array_equal(first, probe_sample(y, 16))  # every trial probes the same
    assert not np.array_equal(first, probe_sample(y, 16, seed=1))
    # batch-statistics batches of 4 are not of one class each
    assert all(len(set(y[first[i : i + 4]].tolist())) > 1 for i in range(0, 16, 4))


def test_probe_sample_refuses_a_negative_size() -> None:
    with pytest.raises(ValueError, match=r"probe sample size -1; expected >= 0"):
        probe_sample(np.zeros(4), -1)


def test_runner_copies_the_weights_once_for_the_passes_of_a_steady_model(
    tiny_cnn: Any, tiny_arrays: Any
) -> None:
    data = tiny_arrays(n_val=13)
    x = data["x_val"]
    model, _ = _finetune_model(tiny_cnn, "frozen")
    plain = BatchStatsRunner()
    expected = (plain.predict(model, x, 8, training=False), plain.predict(model, x, 4))
    assert plain.copies == 2  # outside steady: every pass copies
    runner = BatchStatsRunner()
    with runner.steady(model, "trial-model"):
        inferred = runner.predict(model, x, 8, training=False)
        again = runner.predict(model, x, 8, training=False)
        assert runner.copies == 1
        batch = runner.predict(model, x, 4)
        assert runner.copies == 1
        # the batch-statistics pass moved the clone's moving statistics: copied again
        after = runner.predict(model, x, 8, training=False)
        assert runner.copies == 2
    np.testing.assert_allclose(inferred, expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(again, expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(after, expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(batch, expected[1], rtol=1e-5, atol=1e-6)
    # a named architecture: one clone per name, whatever model comes with it
    other, _ = _finetune_model(tiny_cnn, "frozen")
    with runner.steady(other, "trial-model"):
        runner.predict(other, x, 4)
    assert runner.built == 1
    runner.predict(other, x, 4, architecture="another")
    assert runner.built == 2


def test_trial_probes_its_sample_of_each_split(tiny_cnn: Any, tiny_arrays: Any) -> None:
    """With fewer probe images than the splits hold, the probes measure the trial's model on
    the same stratified sample every trial; 0 leaves the weight drift only."""
    pretrained = PretrainedBase(cut_base(tiny_cnn(), "features"), "tiny")
    data = ArrayData(**tiny_arrays(n_train=30, n_val=24), class_names=("a", "b", "c"))
    space = SearchSpace(
        unfrozen_layers=IntRange(2, 2),
        learning_rate=FloatRange(1e-2, 1e-2),
        dropout=FloatRange(0.2, 0.2),
        weight_decay=FloatRange(1e-4, 1e-4),
        batchnorm=("train",),
    )
    train = probe_sample(data.y_train, 9)
    assert train is not None
    measured: dict[str, tuple[float, float]] = {}

    def measure(trial: Any, model: keras.Model, value: float) -> None:
        """The model at its best epoch (what the probes see next) on the 9 sampled images."""
        x = data.x_train[train].astype("float32")
        measured["train"] = inference_metrics(model, x, data.y_train[train], 4)

    def objective(probe_images: int) -> FineTuneObjective:
        # one epoch: the best is the last, so the model handed to ``measure`` is the probed one
        settings = TrainSettings(
            epochs=1, batch_size=4, cache_frozen="off", probe_images=probe_images
        )
        made = FineTuneObjective(pretrained, data, space, settings)
        made.on_trial_model = measure
        return made

    probes, sampled = {}, {}
    for size in (9, 0, 100):
        study = optuna.create_study()
        study.optimize(objective(size), n_trials=1)
        probes[size], sampled[size] = study.trials[0].user_attrs["probes"], measured["train"]
    assert set(probes[0]) == {"weight_drift", "epoch"}
    assert "sample_images" not in probes[100]
    assert probes[9]["sample_images"] == 9
    assert set(probes[9]) == set(probes[100]) | {"sample_images"}
    # the sampled train probe is the model's inference-mode loss on the 9 stratified images
    assert probes[9]["train_loss"] == pytest.approx(sampled[9][0], rel=1e-4)
    # probes are stored to 6 decimal places
    assert probes[9]["train_accuracy"] == pytest.approx(sampled[9][1], abs=1e-6)
