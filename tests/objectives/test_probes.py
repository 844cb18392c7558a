"""End-of-trial probes on a tiny real model."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest

from thaw.objectives._model import build_model, freeze
from thaw.objectives._probes import (
    BatchStatsRunner,
    _batch_statistics,
    batch_statistics_predict,
    batchnorm_probe,
    inference_metrics,
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


def test_trial_knows_the_val_loss_of_the_weights_it_ends_with(
    tiny_cnn: Any, tiny_arrays: Any
) -> None:
    """The probe's moving-statistics loss comes from the fit's log of the restored epoch: it is
    the loss of the final model measured again."""
    import optuna

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

    pretrained = PretrainedBase(cut_base(tiny_cnn(), "features"), "tiny")
    data = ArrayData(**tiny_arrays(), class_names=("a", "b", "c"))
    space = SearchSpace(
        unfrozen_layers=IntRange(0, 2),
        learning_rate=FloatRange(1e-3, 1e-2),
        dropout=FloatRange(0.0, 0.5),
        weight_decay=FloatRange(1e-6, 1e-4),
    )
    objective = FineTuneObjective(
        pretrained, data, space, TrainSettings(epochs=4, batch_size=8, cache_frozen="off")
    )
    trial = optuna.create_study().ask()
    model, history, _ = objective.train(trial, TrialParams(2, 3e-2, 0.3, 1e-4))
    known = objective._final_val_loss(history)
    assert known is not None
    assert objective._restored_epoch is not None
    assert known == min(v for v in history.epochs["val_loss"] if v is not None)
    measured, _ = inference_metrics(model, objective._x_val, data.y_val, 8)
    assert known == pytest.approx(measured, rel=1e-5)
