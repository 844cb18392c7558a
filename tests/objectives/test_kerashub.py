"""KerasHub backbones from a local preset folder, unfrozen by their own blocks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

keras_hub = pytest.importorskip(
    "keras_hub",
    reason="keras-hub is an optional extra (thaw-keras[kerashub]); its dependencies replace "
    "tensorflow-cpu with tensorflow here, so it is not in the shared environment",
)

from thaw.objectives import ModelSource, ModelSourceError, freeze, load_pretrained  # noqa: E402

SHAPE = (16, 16, 3)


@pytest.fixture
def tiny_preset(tmp_path: Path) -> Path:
    """A tiny ResNet backbone (82k weights) saved as a KerasHub preset folder."""
    import keras

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 8],
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type="basic_block",
        image_shape=SHAPE,
    )
    folder = tmp_path / "tiny_resnet"
    backbone.save_to_preset(str(folder))
    return folder


def test_backbone_loads_from_a_preset_folder_and_unfreezes_by_blocks(tiny_preset: Path) -> None:
    pretrained = load_pretrained(
        ModelSource(kind="kerashub", name=str(tiny_preset), unfreeze_by="blocks")
    )
    assert pretrained.input_shape == SHAPE
    assert pretrained.num_layers == 3  # conv1 (stem), stack0_block0, stack1_block0
    assert "KerasHub ResNetBackbone" in pretrained.description
    base = pretrained.instantiate()
    np.testing.assert_allclose(base.get_weights()[0], pretrained.model.get_weights()[0])
    freeze(base, 1, "frozen", "blocks")
    trainable = sorted({w.path.split("/")[0] for w in base.trainable_weights})
    assert trainable == ["stack1_block0_0_conv", "stack1_block0_1_conv", "stack1_block0_2_conv"]


def test_a_preset_name_offline_says_where_to_put_the_files() -> None:
    with pytest.raises(ModelSourceError, match=r"needs a download") as info:
        load_pretrained(ModelSource(kind="kerashub", name="thaw_test_no_such_preset"))
    assert "save_to_preset('DIR')" in str(info.value) and "model.preset: DIR" in str(info.value)
    assert "\n" not in str(info.value)


def test_a_missing_preset_folder_is_refused() -> None:
    with pytest.raises(ModelSourceError, match=r"preset folder ./nowhere does not exist"):
        load_pretrained(ModelSource(kind="kerashub", name="./nowhere"))


@pytest.mark.slow
def test_a_study_runs_on_a_kerashub_backbone(tiny_preset: Path, tmp_path: Path) -> None:
    import thaw

    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "data.npz",
        x_train=rng.integers(0, 256, (24, *SHAPE), dtype=np.uint8),
        y_train=np.arange(24) % 2,
        x_val=rng.integers(0, 256, (12, *SHAPE), dtype=np.uint8),
        y_val=np.arange(12) % 2,
    )
    study_file = tmp_path / "hub.yaml"
    study_file.write_text(
        yaml.safe_dump(
            {
                "name": "hub",
                "n_trials": 2,
                "reference_trials": False,
                "model": {"source": "kerashub", "preset": "tiny_resnet"},
                "data": {"source": "npz", "path": "data.npz"},
                "train": {"epochs": 2, "batch_size": 8},
                "sampler": {"name": "random"},
                "pruner": {"compare": "none"},
            }
        )
    )
    config = thaw.load_config(study_file)
    assert config.model.unfreeze_by == "blocks"
    study = thaw.run(config)
    states = {t.state.name for t in study.trials}
    assert states == {"COMPLETE"}, [t.user_attrs.get("fail_reason") for t in study.trials]
    assert study.user_attrs["thaw:num_layers"] == 3
    model: Any = thaw.load_best(study)
    assert model.output_shape == (None, 2)


def lora_trials(
    preset: Path, data: Any, ranks: tuple[int, ...], tmp_path: Path
) -> list[tuple[Any, Any]]:
    """One trial per rank in ``ranks`` (the top block unfrozen, lr 1e-3, 2 epochs), through
    ``FineTuneObjective`` on SQLite: each trial as stored, with the model it trained."""
    import optuna

    from thaw.objectives import (
        FineTuneObjective,
        FloatRange,
        IntRange,
        SearchSpace,
        TrainSettings,
    )

    pretrained = load_pretrained(
        ModelSource(kind="kerashub", name=str(preset), unfreeze_by="blocks")
    )
    space = SearchSpace(
        unfrozen_layers=IntRange(1, 1),
        learning_rate=FloatRange(1e-3, 1e-3),
        dropout=FloatRange(0.0, 0.0),
        weight_decay=FloatRange(1e-6, 1e-6),
        lora_rank=tuple(sorted(set(ranks))),
    )
    objective = FineTuneObjective(pretrained, data, space, TrainSettings(epochs=2, batch_size=8))
    models: dict[int, Any] = {}
    objective.on_trial_model = lambda trial, model, value: models.update({trial.number: model})
    storage = f"sqlite:///{tmp_path / 'lora.db'}"
    study = optuna.create_study(study_name="lora", storage=storage)
    for rank in ranks:
        study.enqueue_trial({"lora_rank": rank})
    study.optimize(objective, n_trials=len(ranks))
    trials = optuna.load_study(study_name="lora", storage=storage).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * len(ranks), [
        t.user_attrs.get("fail_reason") for t in trials
    ]
    return [(t, models[t.number]) for t in trials]


def test_lora_on_a_kerashub_backbone_trains_the_top_blocks_convolutions_low_rank(
    tiny_preset: Path, tmp_path: Path
) -> None:
    from thaw.objectives import ArrayData

    rng = np.random.default_rng(0)
    data = ArrayData(
        x_train=rng.integers(0, 256, (16, *SHAPE), dtype=np.uint8),
        y_train=np.arange(16) % 2,
        x_val=rng.integers(0, 256, (8, *SHAPE), dtype=np.uint8),
        y_val=np.arange(8) % 2,
        class_names=("a", "b"),
    )
    ((trial, model),) = lora_trials(tiny_preset, data, (2,), tmp_path)
    assert trial.params["lora_rank"] == 2
    trained = {w.path for w in model.trainable_weights}
    for conv in ("stack1_block0_0_conv", "stack1_block0_1_conv", "stack1_block0_2_conv"):
        assert f"{conv}/lora_kernel_a" in trained and f"{conv}/kernel" not in trained
    assert not any(path.startswith("conv1") for path in trained)  # the stem stays frozen


# ------------------------------------------------------------------------------------ ViT

VIT_SHAPE = (16, 16, 3)


@pytest.fixture
def tiny_vit_preset(tmp_path: Path) -> Path:
    """A tiny ViT backbone (16x16 images, patches of 4, 2 layers of width 32; 19k weights)
    saved as a KerasHub preset folder."""
    import keras

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.ViTBackbone(
        image_shape=VIT_SHAPE,
        patch_size=4,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
    )
    folder = tmp_path / "tiny_vit"
    backbone.save_to_preset(str(folder))
    return folder


def vit_arrays(n_train: int, n_val: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (n_train, *VIT_SHAPE), dtype=np.uint8),
        "y_train": np.arange(n_train) % 2,
        "x_val": rng.integers(0, 256, (n_val, *VIT_SHAPE), dtype=np.uint8),
        "y_val": np.arange(n_val) % 2,
    }


def test_a_vit_backbone_is_copied_per_trial_and_its_class_token_feeds_the_head(
    tiny_vit_preset: Path,
) -> None:
    import keras

    from thaw.objectives import build_model

    pretrained = load_pretrained(
        ModelSource(kind="kerashub", name=str(tiny_vit_preset), unfreeze_by="blocks")
    )
    assert pretrained.input_shape == VIT_SHAPE
    # KerasHub builds the encoder as one layer: the patch embedding and the encoder
    assert pretrained.num_layers == 2
    with pytest.raises(TypeError):  # KerasHub 0.32: the patch embedding's config does not load
        keras.models.clone_model(pretrained.model)
    base = pretrained.instantiate()
    for a, b in zip(base.get_weights(), pretrained.weights, strict=True):
        np.testing.assert_array_equal(a, b)
    model = build_model(base, num_classes=2, dropout=0.0)
    features = keras.Model(model.inputs, model.get_layer("head_dropout").input)
    x = np.random.default_rng(0).normal(size=(2, *VIT_SHAPE)).astype("float32")
    tokens = keras.ops.convert_to_numpy(pretrained.model(x))
    assert tokens.shape == (2, 17, 32)  # the class token, then 16 patches
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(features(x)), tokens[:, 0], rtol=1e-5, atol=1e-6
    )


def test_lora_on_a_vit_trains_low_rank_updates_of_the_encoder(
    tiny_vit_preset: Path, tmp_path: Path
) -> None:
    from thaw.objectives import ArrayData, count_trainable_weights

    data = ArrayData(**vit_arrays(16, 8), class_names=("a", "b"))
    trials = lora_trials(tiny_vit_preset, data, (2, 0), tmp_path)
    assert all(np.isfinite(t.value) for t, _ in trials)
    trained = {
        t.params["lora_rank"]: (
            count_trainable_weights(model),
            {w.path for w in model.trainable_weights},
        )
        for t, model in trials
    }
    (lora_count, lora_paths), (full_count, full_paths) = trained[2], trained[0]
    assert lora_count < full_count / 4
    query = "vit_encoder/transformer_block_1/mha/query"
    assert f"{query}/lora_kernel_a" in lora_paths and f"{query}/kernel" not in lora_paths
    assert f"{query}/kernel" in full_paths
    for paths in (lora_paths, full_paths):  # the patch embedding stays frozen
        assert not any(path.startswith("vit_patching_and_embedding") for path in paths)


@pytest.mark.slow
def test_thaw_run_fine_tunes_a_vit_backbone_with_lora(
    tiny_vit_preset: Path, tmp_path: Path
) -> None:
    import optuna

    import thaw
    from thaw.search._cli import main

    np.savez(tmp_path / "data.npz", **vit_arrays(24, 12))
    study_file = tmp_path / "vit.yaml"
    study_file.write_text(
        yaml.safe_dump(
            {
                "name": "vit",
                "n_trials": 2,
                "reference_trials": False,
                "model": {"source": "kerashub", "preset": "tiny_vit"},
                "data": {"source": "npz", "path": "data.npz"},
                "search_space": {"lora_rank": [2]},
                "train": {"epochs": 2, "batch_size": 8},
                "sampler": {"name": "random"},
                "pruner": {"compare": "none"},
            }
        )
    )
    assert main(["run", str(study_file), "--no-progress"]) == 0
    study = optuna.load_study(study_name="vit", storage=f"sqlite:///{tmp_path / 'vit.db'}")
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"], [
        t.user_attrs.get("fail_reason") for t in trials
    ]
    assert all(t.params["lora_rank"] == 2 and np.isfinite(t.value) for t in trials)
    assert study.user_attrs["thaw:num_layers"] == 2
    model: Any = thaw.load_best(study)  # the saved model loads with safe_mode on
    assert model.output_shape == (None, 2)
    assert "head_class_token" in [layer.name for layer in model.layers]
