"""``keras.applications`` networks by name: a real MobileNetV2 (random weights, 96x96, alpha 0.35),
its preprocessing, block-wise unfreezing, and the errors of weights and names."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from thaw.objectives import (
    APPLICATION_NAMES,
    ModelSource,
    ModelSourceError,
    PretrainedBase,
    block_name,
    count_trainable_weights,
    freeze,
    layer_groups,
    load_application,
    load_pretrained,
    unfreeze_table,
    weighted_layers,
)
from thaw.objectives._applications import APPLICATIONS

MOBILENET = ModelSource(
    kind="application",
    name="MobileNetV2",
    weights=None,
    input_shape=(96, 96, 3),
    alpha=0.35,
    unfreeze_by="blocks",
)


@pytest.fixture(scope="module")
def mobilenet() -> PretrainedBase:
    """Loaded once; tests that change ``trainable`` work on ``instantiate()`` copies."""
    return load_pretrained(MOBILENET)


def trainable_layer_names(model: keras.Model) -> set[str]:
    return {w.path.split("/")[-2] for w in model.trainable_weights}


def params(layer: keras.layers.Layer) -> int:
    return int(sum(int(np.prod(w.shape)) for w in layer.weights))


# --------------------------------------------------------------------------------- loading


def test_mobilenet_v2_loads_without_top(mobilenet: PretrainedBase) -> None:
    assert mobilenet.description == "keras.applications.MobileNetV2 (weights: None)"
    assert mobilenet.input_shape == (96, 96, 3)
    assert mobilenet.unfreeze_by == "blocks"
    assert len(mobilenet.model.output_shape) == 4  # include_top=False: a feature map
    assert not any(isinstance(layer, keras.layers.Dense) for layer in mobilenet.model.layers)
    # alpha 0.35 reached the constructor: the first convolution has 16 filters, not 32
    assert mobilenet.model.get_layer("Conv1").filters == 16
    assert mobilenet.num_layers == len(layer_groups(mobilenet.model, "blocks"))


def test_application_names_match_the_registry() -> None:
    assert tuple(sorted(APPLICATIONS)) == APPLICATION_NAMES
    for app in APPLICATIONS.values():
        assert hasattr(keras.applications, app.constructor)
        assert hasattr(getattr(keras.applications, app.module), "preprocess_input")


def test_preprocess_maps_uint8_to_minus_one_one(mobilenet: PretrainedBase) -> None:
    assert mobilenet.preprocess is not None
    x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=-1)
    original = x.copy()
    out = mobilenet.preprocess(x)
    assert out.dtype == np.float32
    assert out.shape == x.shape
    assert out.min() == pytest.approx(-1.0) and out.max() == pytest.approx(1.0)
    assert out[0, 0, 0, 0] == pytest.approx(-1.0)  # 0
    assert out[0, -1, -1, 0] == pytest.approx(1.0)  # 255
    assert np.all(np.diff(out[..., 0].ravel()) > 0)  # monotonic
    np.testing.assert_array_equal(x, original)  # the caller's array is not modified


def test_cut_at_a_layer_of_the_application() -> None:
    source = ModelSource(
        kind="application",
        name="MobileNetV2",
        weights=None,
        input_shape=(96, 96, 3),
        alpha=0.35,
        cut_at="block_13_expand_relu",
    )
    pretrained = load_pretrained(source)
    assert pretrained.description.endswith(", cut at 'block_13_expand_relu'")
    assert pretrained.model.layers[-1].name == "block_13_expand_relu"
    assert pretrained.preprocess is not None
    with pytest.raises(ModelSourceError, match=r"has no layer named 'block_99'"):
        load_pretrained(
            ModelSource(kind="application", name="MobileNetV2", weights=None, cut_at="block_99")
        )


# ----------------------------------------------------------------------------- blocks


def test_blocks_never_split_a_block(mobilenet: PretrainedBase) -> None:
    base = mobilenet.model
    layers = weighted_layers(base)
    groups = layer_groups(base, "blocks")
    assert len(groups) < len(layers)
    assert [layer for group in groups for layer in group] == layers  # same order, nothing lost
    names = []
    for group in groups:
        blocks = {block_name(layer.name) for layer in group}
        assert len(blocks) == 1, f"a group mixes blocks: {[layer.name for layer in group]}"
        names.append(blocks.pop())
    counts = Counter(names)
    assert all(n == 1 for n in counts.values()), f"blocks split over groups: {counts}"
    # every inverted-residual block_1..block_16 is one group of its expand/depthwise/project
    for i in range(1, 17):
        group = groups[names.index(f"block_{i}")]
        assert [layer.name for layer in group] == [
            f"block_{i}_expand",
            f"block_{i}_depthwise",
            f"block_{i}_project",
        ]
    assert names.index("block_15") < names.index("block_16")  # bottom to top
    assert names[-1] == "Conv_1"


def test_block_names() -> None:
    assert block_name("block_12_depthwise") == "block_12"
    assert block_name("block3a_expand_conv") == "block3a"
    assert block_name("conv4_block7_1_conv") == "conv4"
    assert block_name("Conv_1") == "Conv_1"


def test_freeze_by_blocks_unfreezes_whole_blocks(mobilenet: PretrainedBase) -> None:
    base = mobilenet.instantiate()
    groups = layer_groups(base, "blocks")
    table = unfreeze_table(base, "blocks")
    for k in (0, 1, 2, 5, len(groups)):
        freeze(base, k, unfreeze_by="blocks")
        expected = {layer.name for group in groups[len(groups) - k :] for layer in group}
        assert trainable_layer_names(base) == expected, k
        expected_count = sum(params(base.get_layer(name)) for name in expected)
        assert count_trainable_weights(base) == expected_count
        if k:
            assert table[k - 1].cumulative_trainable == expected_count
    freeze(base, 2, unfreeze_by="blocks")
    assert trainable_layer_names(base) == {
        "Conv_1",
        "block_16_expand",
        "block_16_depthwise",
        "block_16_project",
    }
    # counting layers instead splits block_16: only its projection is unfrozen
    freeze(base, 2, unfreeze_by="layers")
    assert trainable_layer_names(base) == {"Conv_1", "block_16_project"}


def test_freeze_by_blocks_out_of_range(mobilenet: PretrainedBase) -> None:
    base = mobilenet.instantiate()
    n = mobilenet.num_layers
    with pytest.raises(ValueError, match=rf"unfrozen_layers={n + 1} is outside 0\.\.{n}.* blocks"):
        freeze(base, n + 1, unfreeze_by="blocks")


def test_unknown_unfreeze_by(mobilenet: PretrainedBase) -> None:
    with pytest.raises(ValueError, match=r"unfreeze_by='stages'; expected one of"):
        layer_groups(mobilenet.model, "stages")


# ---------------------------------------------------------------------------- weights


def test_imagenet_weights_offline_say_which_file_and_where(tmp_path: Path) -> None:
    source = ModelSource(
        kind="application",
        name="MobileNetV2",
        weights="imagenet",
        input_shape=(96, 96, 3),
        alpha=0.35,
    )
    try:
        load_pretrained(source)
    except ModelSourceError as exc:
        message = str(exc)
    else:
        pytest.skip("the ImageNet weights were downloaded or cached: this machine is online")
    assert "\n" not in message
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5" in message
    assert ".keras/models" in message  # where Keras looks (KERAS_HOME unset)
    assert "'model.weights'" in message


_IMAGENET_SCRIPT = """
from thaw.objectives import ModelSource, ModelSourceError, load_pretrained
try:
    load_pretrained(ModelSource(kind="application", name="MobileNetV2", weights="imagenet",
                                input_shape=(96, 96, 3), alpha=0.35))
except ModelSourceError as exc:
    print("MESSAGE", exc)
else:
    print("DOWNLOADED")
"""


def test_imagenet_offline_hint_follows_keras_home(tmp_path: Path) -> None:
    keras_home = tmp_path / "keras-home"
    keras_home.mkdir()
    env = {**os.environ, "KERAS_HOME": str(keras_home), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-c", _IMAGENET_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    if "DOWNLOADED" in proc.stdout:
        pytest.skip("the ImageNet weights were downloaded: this machine is online")
    message = proc.stdout.split("MESSAGE ", 1)[1]
    assert str(keras_home / "models") in message


@pytest.mark.filterwarnings("ignore::UserWarning")  # Keras lists every layer it cannot match
def test_weights_file_of_another_model(tmp_path: Path, tiny_cnn: Callable[..., Any]) -> None:
    path = tmp_path / "tiny.weights.h5"
    tiny_cnn().save_weights(path)
    with pytest.raises(ModelSourceError) as info:
        load_pretrained(
            ModelSource(
                kind="application",
                name="MobileNetV2",
                weights=str(path),
                input_shape=(96, 96, 3),
                alpha=0.35,
            )
        )
    message = str(info.value)
    assert f"weights file {path} does not fit MobileNetV2 with input shape (96, 96, 3)" in message
    assert "\n" not in message


def test_missing_weights_file(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match=r"weights file .*gone\.h5 does not exist"):
        load_application("MobileNetV2", str(tmp_path / "gone.h5"), (96, 96, 3))


def test_unknown_application_lists_the_supported_names() -> None:
    with pytest.raises(ModelSourceError) as info:
        load_pretrained(ModelSource(kind="application", name="MobileNetV9", weights=None))
    message = str(info.value)
    assert "unknown keras.applications network 'MobileNetV9'" in message
    assert f"thaw supports: {', '.join(APPLICATION_NAMES)}" in message


def test_application_without_a_name() -> None:
    with pytest.raises(ModelSourceError, match=r"model.name is required"):
        load_pretrained(ModelSource(kind="application", weights=None))


def test_alpha_on_a_network_without_alpha() -> None:
    with pytest.raises(ModelSourceError, match=r"ResNet50 has no 'alpha' .*remove model.alpha"):
        load_pretrained(
            ModelSource(
                kind="application",
                name="ResNet50",
                weights=None,
                input_shape=(64, 64, 3),
                alpha=0.5,
            )
        )


def test_input_shape_the_network_refuses() -> None:
    with pytest.raises(ModelSourceError, match=r"cannot build MobileNetV2: Input size must be at"):
        load_application("MobileNetV2", None, (20, 20, 3), alpha=0.35)
