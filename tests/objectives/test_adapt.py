"""BatchNorm ``adapt``: one forward pass gives the statistics of the layer-by-layer version."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from thaw.objectives import (
    ArrayData,
    FineTuneObjective,
    FloatRange,
    IntRange,
    ModelSource,
    PretrainedBase,
    SearchSpace,
    TrainSettings,
    TrialParams,
    cut_base,
    demo_target_data,
    load_pretrained,
)
from thaw.objectives._cache import FeatureCache
from thaw.objectives._model import (
    adapt_batchnorm,
    adapt_batchnorm_layer_by_layer,
    adapt_images_per_pass,
    batchnorm_layers,
)

Stats = list[tuple[np.ndarray, np.ndarray]]


def moving_stats(model: keras.Model) -> Stats:
    return [
        (np.array(layer.moving_mean.numpy()), np.array(layer.moving_variance.numpy()))
        for layer in batchnorm_layers(model)
    ]


def assert_stats_close(got: Stats, expected: Stats, rtol: float = 1e-3) -> None:
    assert len(got) == len(expected)
    for (mean, var), (mean_ref, var_ref) in zip(got, expected, strict=True):
        np.testing.assert_allclose(mean, mean_ref, rtol=rtol, atol=1e-6)
        np.testing.assert_allclose(var, var_ref, rtol=rtol, atol=1e-6)


def test_one_pass_gives_the_layer_by_layer_statistics_on_the_demo_cnn(
    demo_model_path: Path,
) -> None:
    pretrained = load_pretrained(ModelSource("demo"))
    data = demo_target_data(train_per_class=40, val_per_class=2)
    x = np.asarray(pretrained.preprocess(data.x_train) if pretrained.preprocess else data.x_train)
    x = x.astype("float32")
    reference = pretrained.instantiate()
    adapt_batchnorm_layer_by_layer(reference, x)
    adapted = pretrained.instantiate()
    adapt_batchnorm(adapted, x)
    pretrained_stats = moving_stats(pretrained.model)
    expected = moving_stats(reference)
    # The target differs from the source: the statistics moved, in every layer.
    for (mean, _), (mean_ref, _) in zip(pretrained_stats, expected, strict=True):
        assert not np.allclose(mean, mean_ref, rtol=1e-2)
    assert_stats_close(moving_stats(adapted), expected)
    # Nothing else changed: the adapted model's other weights are the pretrained ones.
    names = {id(w) for layer in batchnorm_layers(adapted) for w in layer.non_trainable_weights}
    for w, w_ref in zip(adapted.weights, pretrained.model.weights, strict=True):
        if id(w) not in names:
            np.testing.assert_array_equal(w.numpy(), w_ref.numpy())


def test_a_pass_leaves_the_flags_and_dropout_as_they_were(tiny_cnn: Callable[..., Any]) -> None:
    base = cut_base(tiny_cnn(), "features")
    x = np.random.default_rng(0).uniform(0, 255, (20, 8, 8, 3)).astype("float32")
    bn1, bn2 = batchnorm_layers(base)
    bn1.trainable = False
    adapt_batchnorm(base, x)
    assert bn1.trainable is False and bn2.trainable is True


def base_with(layer: keras.layers.Layer) -> keras.Model:
    """conv -> bn -> ``layer`` -> conv -> bn: a BatchNorm layer above a dropout or noise layer."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("relu")(x)
    x = layer(x)
    x = keras.layers.Conv2D(5, 3, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    return keras.Model(inputs, x)


@pytest.mark.parametrize(
    "layer",
    [keras.layers.Dropout(0.5), keras.layers.GaussianNoise(1.0)],
    ids=["dropout", "noise"],
)
def test_dropout_and_noise_stay_off(layer: keras.layers.Layer) -> None:
    """The statistics are those of inference mode: dropout off in the pass; a base with other
    random layers (noise) adapted layer by layer."""
    x = np.random.default_rng(1).normal(size=(40, 8, 8, 3)).astype("float32")
    reference = base_with(layer)
    adapt_batchnorm_layer_by_layer(reference, x)
    adapted = base_with(type(layer).from_config(layer.get_config()))
    adapt_batchnorm(adapted, x)
    assert_stats_close(moving_stats(adapted), moving_stats(reference))
    if isinstance(layer, keras.layers.Dropout):
        dropout = next(lay for lay in adapted.layers if isinstance(lay, keras.layers.Dropout))
        assert dropout.rate == 0.5


def test_several_passes_pool_the_statistics(tiny_cnn: Callable[..., Any]) -> None:
    """Split over passes, the lowest BatchNorm layer (nothing adapted below it) still gets the
    statistics of all the images; the one above, those of inputs normalised pass by pass."""
    x = np.random.default_rng(2).uniform(0, 255, (30, 8, 8, 3)).astype("float32")
    reference = cut_base(tiny_cnn(), "features")
    adapt_batchnorm_layer_by_layer(reference, x)
    split = cut_base(tiny_cnn(), "features")
    adapt_batchnorm(split, x, images_per_pass=10)
    (low, high), (low_ref, high_ref) = moving_stats(split), moving_stats(reference)
    assert_stats_close([low], [low_ref])
    assert_stats_close([high], [high_ref], rtol=0.2)


def test_images_per_pass_follows_the_memory_bound(tiny_cnn: Callable[..., Any]) -> None:
    base = cut_base(tiny_cnn(), "features")
    assert adapt_images_per_pass(base, 512) == 512  # a tiny network: everything in one pass
    # 8x8 images: (3 + 3 + 4 * 3 + 6 * 3) * 64 + 6 elements per image (rescale .. features).
    per_image = 4 * ((3 + 3 + 4 * 3 + 6 * 3) * 64 + 6)
    assert adapt_images_per_pass(base, 512, memory_bytes=per_image * 100, minimum=8) == 86
    assert adapt_images_per_pass(base, 512, memory_bytes=per_image, minimum=64) == 64


def test_a_nested_base_is_refused(tiny_cnn: Callable[..., Any]) -> None:
    base = cut_base(tiny_cnn(nested=True), "features")
    with pytest.raises(ValueError, match="cannot read BatchNorm inputs"):
        adapt_batchnorm(base, np.zeros((4, 8, 8, 3), dtype="float32"))


SPACE = SearchSpace(
    unfrozen_layers=IntRange(0, 2),
    learning_rate=FloatRange(1e-3, 1e-2, log=True),
    dropout=FloatRange(0.0, 0.3),
    weight_decay=FloatRange(1e-6, 1e-4, log=True),
)


def test_objectives_share_the_adapted_statistics_and_name_the_steps(
    tiny_cnn: Callable[..., Any], tiny_arrays: Callable[..., dict[str, np.ndarray]], tmp_path: Path
) -> None:
    data = ArrayData(**tiny_arrays(), class_names=("a", "b", "c"))
    cache = FeatureCache(tmp_path / "features")
    params = TrialParams(0, 1e-3, 0.1, 1e-5, batchnorm="adapt")
    runs: list[tuple[list[str], Stats]] = []
    for _ in range(2):  # two objectives of the same model and data (a second run, a worker)
        pretrained = PretrainedBase(cut_base(tiny_cnn(), "features"), "tiny")
        objective = FineTuneObjective(
            pretrained, data, SPACE, TrainSettings(epochs=1, batch_size=8), feature_cache=cache
        )
        steps: list[str] = []
        objective.on_step = steps.append
        shift = objective.domain_shift()
        assert shift["overall"] > 0
        model = objective.build(params)
        objective.build(params)  # the next trial: the statistics are not estimated again
        runs.append((steps, moving_stats(model.layers[1])))
        cache.clear()  # from disk the second time
    (first, stats), (second, stats_again) = runs
    assert first == [
        "Measuring the domain shift on 24 images (2 BatchNorm layers) ...",
        "Re-estimating BatchNorm statistics on 24 images (2 layers) ...",
    ]
    assert second == first[:1]
    assert_stats_close(stats_again, stats, rtol=0)
    x = np.asarray(data.x_train, dtype="float32")
    reference = cut_base(tiny_cnn(), "features")
    adapt_batchnorm_layer_by_layer(reference, x)
    assert_stats_close(stats, moving_stats(reference))
