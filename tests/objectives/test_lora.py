"""LoRA on the unfrozen layers (Keras's ``enable_lora``), on real fits of the tiny CNN."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from thaw.objectives import (
    ArrayData,
    FineTuneObjective,
    FloatRange,
    IntRange,
    PretrainedBase,
    SearchSpace,
    TrainSettings,
    TrialParams,
    count_trainable_weights,
    cut_base,
)
from thaw.objectives._finetune import model_base
from thaw.objectives._lora import check_lora_rank, check_lora_space, enable_lora, own_weights

optuna.logging.set_verbosity(optuna.logging.WARNING)

Arrays = Callable[..., dict[str, np.ndarray]]

SPACE = SearchSpace(
    unfrozen_layers=IntRange(0, 2),
    learning_rate=FloatRange(1e-3, 1e-2, log=True),
    dropout=FloatRange(0.0, 0.3),
    weight_decay=FloatRange(1e-6, 1e-1, log=True),
    l2sp=FloatRange(1e-4, 1.0, log=True),
    lr_decay=FloatRange(0.5, 1.0),
    lora_rank=(0, 1, 2, 4),
)


@pytest.fixture
def pretrained(tiny_cnn: Callable[..., Any]) -> PretrainedBase:
    return PretrainedBase(cut_base(tiny_cnn(), "features"), "tiny")


@pytest.fixture
def data(tiny_arrays: Arrays) -> ArrayData:
    return ArrayData(**tiny_arrays(n_train=48), class_names=("a", "b", "c"))


def params(**changes: Any) -> TrialParams:
    base: dict[str, Any] = {
        "unfrozen_layers": 2,
        "learning_rate": 1e-2,
        "dropout": 0.0,
        "weight_decay": 1e-6,
    }
    return TrialParams(**{**base, **changes})


def objective(
    pretrained: PretrainedBase, data: ArrayData, epochs: int = 3, **settings: Any
) -> FineTuneObjective:
    return FineTuneObjective(
        pretrained, data, SPACE, TrainSettings(epochs=epochs, batch_size=8, **settings)
    )


def run_trial(
    obj: FineTuneObjective, tmp_path: Path, fixed: dict[str, Any], name: str = "t"
) -> FrozenTrial:
    storage = f"sqlite:///{tmp_path / (name + '.db')}"
    study = optuna.create_study(study_name=name, storage=storage)
    study.enqueue_trial(
        {"unfrozen_layers": 2, "dropout": 0.0, "weight_decay": 1e-6, "l2sp": 1e-4, **fixed}
    )
    study.optimize(obj, n_trials=1)
    (trial,) = optuna.load_study(study_name=name, storage=storage).get_trials()
    assert trial.state == TrialState.COMPLETE, trial.user_attrs.get("fail_reason")
    return trial


def trained_paths(model: keras.Model) -> set[str]:
    return {w.path for w in model.trainable_weights}


def test_lora_trains_low_rank_updates_of_the_unfrozen_kernels_and_the_whole_head(
    pretrained: PretrainedBase, data: ArrayData
) -> None:
    obj = objective(pretrained, data)
    full = obj.build(params(lora_rank=0))
    full_count = count_trainable_weights(full)
    full_paths = trained_paths(full)
    lora = obj.build(params(lora_rank=1))
    paths = trained_paths(lora)
    assert {"conv1/kernel", "conv2/kernel"} <= full_paths
    assert not {"conv1/kernel", "conv2/kernel"} & paths
    assert {"conv1/lora_kernel_a", "conv1/lora_kernel_b", "conv2/lora_kernel_b"} <= paths
    assert {"conv1/bias", "conv2/bias", "head_dense/kernel", "head_dense/bias"} <= paths
    # rank 1: conv1 3x3x3x4 (108) -> A 27x1 + B 1x4; conv2 3x3x4x6 (216) -> A 36x1 + B 1x6
    assert count_trainable_weights(lora) < full_count
    assert count_trainable_weights(lora) == full_count - (108 - 27 - 4) - (216 - 36 - 6)


def test_lora_only_on_the_unfrozen_layers(pretrained: PretrainedBase, data: ArrayData) -> None:
    model = objective(pretrained, data).build(params(unfrozen_layers=1, lora_rank=2))
    base = model_base(model)
    assert base.get_layer("conv2").lora_enabled
    assert not base.get_layer("conv1").lora_enabled
    assert not base.get_layer("conv1").trainable


def test_a_trial_after_a_lora_trial_gets_a_base_without_lora(
    pretrained: PretrainedBase, data: ArrayData
) -> None:
    obj = objective(pretrained, data)
    with_lora = model_base(obj.build(params(lora_rank=2)))
    without = model_base(obj.build(params(lora_rank=0)))
    assert without is not with_lora
    assert not any(getattr(layer, "lora_enabled", False) for layer in without.layers)
    for got, want in zip(without.get_weights(), pretrained.weights, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "fixed",
    [
        {"unfrozen_layers": 2, "batchnorm": "frozen"},
        {"unfrozen_layers": 1, "batchnorm": "frozen"},  # conv1 and below on cached activations
        {"unfrozen_layers": 2, "batchnorm": "train", "l2sp": 1e-2, "lr_decay": 0.5},
    ],
    ids=["whole base", "top on cached activations", "with L2-SP and rate decay"],
)
def test_a_lora_trial_keeps_the_pretrained_kernels_and_moves_the_merged_ones(
    pretrained: PretrainedBase, data: ArrayData, tmp_path: Path, fixed: dict[str, Any]
) -> None:
    obj = objective(pretrained, data)
    models: list[keras.Model] = []
    obj.on_trial_model = lambda trial, model, value: models.append(model)
    trial = run_trial(obj, tmp_path, {"learning_rate": 1e-2, "lora_rank": 2, **fixed})
    assert trial.params["lora_rank"] == 2
    # cached activations: of the rescaled images, or (one layer unfrozen) of those below conv2
    (boundary,) = obj.last_boundaries
    assert (boundary == "tiny_cnn_base/rescale") == (fixed["unfrozen_layers"] == 2), boundary
    (model,) = models
    layer = model_base(model).get_layer("conv2")
    pretrained_kernel = pretrained.model.get_layer("conv2").get_weights()[0]
    np.testing.assert_array_equal(layer._kernel.numpy(), pretrained_kernel)
    merged = own_weights(layer)[0]
    assert merged.shape == pretrained_kernel.shape
    assert not np.allclose(merged, pretrained_kernel)
    # the weight drift probe measures the merged kernel
    assert trial.user_attrs["probes"]["weight_drift"]["conv2"] > 0


def test_a_warmed_up_lora_trial_gets_lora_after_the_warm_up(
    pretrained: PretrainedBase, data: ArrayData, tmp_path: Path
) -> None:
    obj = objective(pretrained, data, epochs=3, warmup_epochs=1)
    models: list[keras.Model] = []
    obj.on_trial_model = lambda trial, model, value: models.append(model)
    run_trial(obj, tmp_path, {"learning_rate": 1e-2, "lora_rank": 1, "batchnorm": "frozen"})
    paths = trained_paths(models[0])
    assert "conv2/lora_kernel_a" in paths and "conv2/kernel" not in paths


def test_a_saved_lora_model_loads_in_safe_mode_and_predicts_the_same(
    pretrained: PretrainedBase, data: ArrayData, tmp_path: Path
) -> None:
    obj = objective(pretrained, data)
    model = obj.build(params(lora_rank=2))
    x = obj._x_train[:16]
    model.fit(x, data.y_train[:16], epochs=2, batch_size=8, verbose=0)
    path = tmp_path / "lora.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
    # Keras merged the update into the saved kernel; the reloaded LoRA matrices are zero
    conv2 = model_base(loaded).get_layer("conv2")
    np.testing.assert_allclose(
        conv2._kernel.numpy(), own_weights(model_base(model).get_layer("conv2"))[0], atol=1e-6
    )
    assert not np.any(conv2.lora_kernel_b.numpy())


def test_enable_lora_skips_frozen_and_unsupported_layers() -> None:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.DepthwiseConv2D(3, name="depthwise")(inputs)
    x = keras.layers.Conv2D(4, 3, name="conv")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(5, name="dense")(x)
    x = keras.layers.EinsumDense("ab,bc->ac", output_shape=3, name="einsum")(x)
    base = keras.Model(inputs, x)
    base.get_layer("conv").trainable = False
    done = enable_lora(base, 2)
    assert [layer.name for layer in done] == ["dense", "einsum"]
    assert enable_lora(base, 2) == done  # twice: the same layers, no error
    assert enable_lora(base, 0) == []


@pytest.mark.parametrize("rank", [-1, 257, 2.5, True, "4", None])
def test_a_rank_outside_the_range_is_refused(rank: object) -> None:
    with pytest.raises(ValueError, match="LoRA rank"):
        check_lora_rank(rank)


def test_lora_asked_of_a_base_without_a_supported_layer_names_the_kinds(
    pretrained: PretrainedBase, data: ArrayData
) -> None:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.LayerNormalization(name="norm")(x)
    base = keras.Model(inputs, x, name="normed")
    check_lora_space(base, (0, 4), 2, "layers")  # conv may be unfrozen: fine
    check_lora_space(base, (0,), 1, "layers")  # LoRA not asked for: fine
    with pytest.raises(ValueError, match="Dense, EinsumDense, Conv1D, Conv2D, Conv3D") as info:
        check_lora_space(base, (0, 4), 1, "layers")
    assert "LayerNormalization" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="lora_rank"):
        FineTuneObjective(
            pretrained,
            data,
            SearchSpace(**{**SPACE.__dict__, "unfrozen_layers": IntRange(0, 0)}),
            TrainSettings(),
        )


@keras.saving.register_keras_serializable(package="thaw_test")
class Block(keras.layers.Layer):
    """A subclassed layer holding Dense layers, as KerasHub's transformer encoders do."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inner = keras.layers.Dense(6, name="inner")
        self.outer = keras.layers.Dense(4, name="outer")
        self.norm = keras.layers.LayerNormalization(name="norm")

    def build(self, input_shape: Any) -> None:
        self.inner.build(input_shape)
        self.outer.build((*input_shape[:-1], 6))
        self.norm.build((*input_shape[:-1], 4))

    def call(self, x: Any) -> Any:
        return self.norm(self.outer(self.inner(x)))


def test_lora_reaches_the_dense_layers_inside_an_unfrozen_subclassed_layer(
    tmp_path: Path,
) -> None:
    inputs = keras.Input((5,))
    base = keras.Model(inputs, Block(name="block")(inputs), name="encoder")
    block = base.get_layer("block")
    before = [np.array(w) for w in own_weights(block)]
    done = enable_lora(base, 2)
    assert sorted(layer.name for layer in done) == ["inner", "outer"]
    assert {w.path.split("/")[-1] for w in base.trainable_weights} >= {"lora_kernel_a"}
    assert not any(w.path.endswith("inner/kernel") for w in base.trainable_weights)
    block.inner.lora_kernel_b.assign(np.ones((2, 6), "float32"))
    after = own_weights(block)
    assert [a.shape for a in after] == [b.shape for b in before]
    assert not np.allclose(after[0], before[0])  # inner's kernel, its update merged
    np.testing.assert_array_equal(after[2], before[2])  # outer's kernel, its update still zero
    x = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    base.save(tmp_path / "block.keras")
    loaded = keras.models.load_model(tmp_path / "block.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), base.predict(x, verbose=0), atol=1e-5)
