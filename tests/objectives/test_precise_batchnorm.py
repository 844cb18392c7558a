"""Precise BatchNorm: the statistics of the BatchNorm layers that train, re-estimated before
each validation on training images."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import optuna

from thaw.objectives import (
    ArrayData,
    FineTuneObjective,
    FloatRange,
    IntRange,
    SearchSpace,
    TrainSettings,
    load_pretrained,
)
from thaw.objectives._callbacks import PreciseBatchNorm
from thaw.objectives._model import batchnorm_input_stats, precise_batchnorm


def _stats(layer: keras.layers.Layer) -> tuple[np.ndarray, np.ndarray]:
    return (
        keras.ops.convert_to_numpy(layer.moving_mean),
        keras.ops.convert_to_numpy(layer.moving_variance),
    )


def test_only_the_layers_that_train_are_re_estimated(tiny_cnn: Callable[..., Any]) -> None:
    model = tiny_cnn()
    x = np.random.default_rng(0).integers(0, 256, (40, 8, 8, 3)).astype("float32")
    bn1, bn2 = model.get_layer("bn1"), model.get_layer("bn2")
    bn1.trainable = False
    before = _stats(bn1)
    assert precise_batchnorm(model, x) == [bn2]
    for a, b in zip(_stats(bn1), before, strict=True):
        np.testing.assert_array_equal(a, b)
    # bn2 gets its inputs' statistics as the frozen bn1 normalises them (inference mode)
    ((mean, var),) = batchnorm_input_stats(model, x, [bn2])
    np.testing.assert_allclose(_stats(bn2)[0], mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_stats(bn2)[1], var, rtol=1e-3, atol=1e-5)


def test_nothing_is_re_estimated_while_no_batchnorm_layer_trains(
    tiny_cnn: Callable[..., Any],
) -> None:
    model = tiny_cnn()
    for name in ("bn1", "bn2"):
        model.get_layer(name).trainable = False
    x = np.random.default_rng(0).integers(0, 256, (8, 8, 8, 3)).astype("float32")
    assert precise_batchnorm(model, x) == []


def test_each_validation_sees_the_statistics_of_the_epochs_weights(
    tiny_cnn: Callable[..., Any], tiny_arrays: Callable[..., dict[str, np.ndarray]]
) -> None:
    arrays = tiny_arrays(n_train=32, n_val=16)
    model = tiny_cnn()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    x = arrays["x_train"].astype("float32")
    seen: list[tuple[float, float]] = []

    class Check(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            stats = batchnorm_input_stats(model, x, [model.get_layer("bn2")])
            gap = float(np.abs(_stats(model.get_layer("bn2"))[0] - stats[0][0]).max())
            val = model.evaluate(arrays["x_val"], arrays["y_val"], verbose=0)
            seen.append((gap, abs(val - logs["val_loss"])))

    model.fit(
        x,
        arrays["y_train"],
        validation_data=(arrays["x_val"], arrays["y_val"]),
        batch_size=8,
        epochs=3,
        verbose=0,
        callbacks=[PreciseBatchNorm(model, x), Check()],
    )
    assert len(seen) == 3
    for gap, val_gap in seen:
        assert gap < 1e-3  # the moving means are the training images' own
        assert val_gap < 1e-4  # and the logged val_loss was computed with them


def _train_mode_trial(tmp_path: Path, demo_model_path: Path, precise: bool) -> optuna.FrozenTrial:
    from thaw.objectives import ModelSource

    pretrained = load_pretrained(ModelSource(kind="file", path=demo_model_path))
    rng = np.random.default_rng(0)
    shape = pretrained.input_shape
    data = ArrayData(
        x_train=rng.integers(0, 256, (24, *shape), dtype=np.uint8),
        y_train=np.arange(24) % 3,
        x_val=rng.integers(0, 256, (12, *shape), dtype=np.uint8),
        y_val=np.arange(12) % 3,
        class_names=("a", "b", "c"),
    )
    space = SearchSpace(
        unfrozen_layers=IntRange(2, 2),
        learning_rate=FloatRange(1e-2, 1e-2),
        dropout=FloatRange(0.0, 0.0),
        weight_decay=FloatRange(1e-6, 1e-6),
        batchnorm=("train",),
    )
    settings = TrainSettings(epochs=2, batch_size=8, precise_batchnorm=precise)
    objective = FineTuneObjective(pretrained, data, space, settings)
    storage = f"sqlite:///{tmp_path / f'p{int(precise)}.db'}"
    study = optuna.create_study(study_name="p", storage=storage)
    study.optimize(objective, n_trials=1)
    (trial,) = study.get_trials()
    assert trial.state.name == "COMPLETE", trial.user_attrs.get("fail_reason")
    return trial


def test_a_trial_that_trains_batchnorm_is_validated_on_precise_statistics(
    tmp_path: Path, demo_model_path: Path
) -> None:
    on = _train_mode_trial(tmp_path, demo_model_path, True)
    off = _train_mode_trial(tmp_path, demo_model_path, False)
    loss_on = on.user_attrs["history"]["val_loss"]
    loss_off = off.user_attrs["history"]["val_loss"]
    # the same training (seeded), a different validation: the statistics differ
    assert on.user_attrs["history"]["loss"][0] == off.user_attrs["history"]["loss"][0]
    assert loss_on[0] != loss_off[0]
