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


def test_lora_on_a_kerashub_backbone_trains_the_top_blocks_convolutions_low_rank(
    tiny_preset: Path, tmp_path: Path
) -> None:
    import optuna

    from thaw.objectives import (
        ArrayData,
        FineTuneObjective,
        FloatRange,
        IntRange,
        SearchSpace,
        TrainSettings,
    )

    pretrained = load_pretrained(
        ModelSource(kind="kerashub", name=str(tiny_preset), unfreeze_by="blocks")
    )
    rng = np.random.default_rng(0)
    data = ArrayData(
        x_train=rng.integers(0, 256, (16, *SHAPE), dtype=np.uint8),
        y_train=np.arange(16) % 2,
        x_val=rng.integers(0, 256, (8, *SHAPE), dtype=np.uint8),
        y_val=np.arange(8) % 2,
        class_names=("a", "b"),
    )
    space = SearchSpace(
        unfrozen_layers=IntRange(1, 1),
        learning_rate=FloatRange(1e-3, 1e-3),
        dropout=FloatRange(0.0, 0.0),
        weight_decay=FloatRange(1e-6, 1e-6),
        lora_rank=(2,),
    )
    objective = FineTuneObjective(pretrained, data, space, TrainSettings(epochs=2, batch_size=8))
    models: list[Any] = []
    objective.on_trial_model = lambda trial, model, value: models.append(model)
    storage = f"sqlite:///{tmp_path / 'hub_lora.db'}"
    study = optuna.create_study(study_name="hub_lora", storage=storage)
    study.optimize(objective, n_trials=1)
    (trial,) = optuna.load_study(study_name="hub_lora", storage=storage).get_trials()
    assert trial.state.name == "COMPLETE", trial.user_attrs.get("fail_reason")
    assert trial.params["lora_rank"] == 2
    trained = {w.path for w in models[0].trainable_weights}
    for conv in ("stack1_block0_0_conv", "stack1_block0_1_conv", "stack1_block0_2_conv"):
        assert f"{conv}/lora_kernel_a" in trained and f"{conv}/kernel" not in trained
    assert not any(path.startswith("conv1") for path in trained)  # the stem stays frozen
