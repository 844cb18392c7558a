"""The glyphs case: letters rendered with Pillow's font, a residual network pretrained on source
letters, and a shifted target domain of other letters."""

from __future__ import annotations

import functools
from pathlib import Path

import keras
import numpy as np
import pytest

from thaw.objectives import ModelSource, _glyphs, load_data, load_pretrained
from thaw.objectives._glyphs import (
    GLYPHS_FEATURE_LAYER,
    GLYPHS_SOURCE_CLASSES,
    GLYPHS_SOURCE_DOMAIN,
    GLYPHS_TARGET_CLASSES,
    GLYPHS_TARGET_DOMAIN,
    build_glyphs_network,
    glyphs_pretrained_model_path,
    glyphs_source_data,
    glyphs_target_data,
    render_glyphs,
    rescale_conv_kernels,
)
from thaw.search._config import load_study_file

REPO = Path(__file__).resolve().parents[2]
#: Pretraining sizes for tests: seconds, not a minute (the model is weak, its shape is the same).
SMALL = {"source_per_class": 12, "epochs": 1}


@pytest.fixture(scope="module")
def small_glyphs_model_path(thaw_cache_dir: Path) -> Path:
    path = glyphs_pretrained_model_path(seed=0, **SMALL)
    assert path.parent == thaw_cache_dir and path.is_file()
    return path


def test_target_data_is_deterministic_for_a_seed() -> None:
    a, b = (
        glyphs_target_data(seed=3, train_per_class=4, val_per_class=4),
        glyphs_target_data(seed=3, train_per_class=4, val_per_class=4),
    )
    assert a.fingerprint() == b.fingerprint()
    other = glyphs_target_data(seed=4, train_per_class=4, val_per_class=4)
    assert other.fingerprint() != a.fingerprint()


def test_target_data_shapes_and_class_counts() -> None:
    data = glyphs_target_data()
    assert data.x_train.shape == (30 * 5, 32, 32, 3) and data.x_train.dtype == np.uint8
    assert data.x_val.shape == (60 * 5, 32, 32, 3)
    assert data.class_names == GLYPHS_TARGET_CLASSES
    assert data.counts(data.y_train) == [30] * 5
    assert data.counts(data.y_val) == [60] * 5
    # Train and validation images are different renderings.
    assert not np.array_equal(data.x_train[:10], data.x_val[:10])


def test_target_letters_are_not_source_letters() -> None:
    assert len(GLYPHS_SOURCE_CLASSES) == 10 and len(GLYPHS_TARGET_CLASSES) == 5
    assert not set(GLYPHS_SOURCE_CLASSES) & set(GLYPHS_TARGET_CLASSES)


def test_target_domain_is_shifted_from_the_source() -> None:
    x_src, _ = glyphs_source_data(seed=0, per_class=10)
    x_tgt, _ = render_glyphs(100, GLYPHS_SOURCE_CLASSES, GLYPHS_TARGET_DOMAIN, seed=0)
    src, tgt = x_src.astype(np.float64), x_tgt.astype(np.float64)
    # Darker overall, lower contrast within each image, and tinted (channels differ).
    assert src.mean() > 170 and tgt.mean() < 140
    assert tgt.std(axis=(1, 2, 3)).mean() < 0.8 * src.std(axis=(1, 2, 3)).mean()
    src_channels, tgt_channels = src.mean(axis=(0, 1, 2)), tgt.mean(axis=(0, 1, 2))
    assert np.ptp(src_channels) < 3 and np.ptp(tgt_channels) > 5


def test_classes_differ_in_the_clean_source_domain() -> None:
    """Nearest class mean on clean renderings beats chance: the glyphs carry the class."""
    x, y = render_glyphs(400, GLYPHS_SOURCE_CLASSES, GLYPHS_SOURCE_DOMAIN, seed=1)
    ink = 1.0 - x.astype(np.float64).mean(axis=3).reshape(len(x), -1) / 255.0
    train, test = slice(0, 300), slice(300, 400)
    means = np.stack([ink[train][y[train] == c].mean(axis=0) for c in range(10)])
    pred = ((ink[test][:, None, :] - means[None]) ** 2).sum(axis=2).argmin(axis=1)
    # Pixel means blur over position, size and slant, so this stays far below a network's.
    assert (pred == y[test]).mean() > 0.15  # chance is 0.10; a blank renderer gets 0.10


def test_network_is_residual_with_a_softmax_over_source_classes() -> None:
    model = build_glyphs_network()
    assert sum(isinstance(layer, keras.layers.Add) for layer in model.layers) == 3
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    head = model.layers[-1]
    assert isinstance(head, keras.layers.Dense) and head.units == len(GLYPHS_SOURCE_CLASSES)
    assert head.activation is keras.activations.softmax
    assert model.get_layer(GLYPHS_FEATURE_LAYER).output is head.input


def test_rescaling_conv_kernels_keeps_the_function() -> None:
    keras.utils.set_random_seed(0)
    model = build_glyphs_network()
    x, _ = render_glyphs(8, GLYPHS_SOURCE_CLASSES, GLYPHS_SOURCE_DOMAIN, seed=2)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x.astype("float32"), np.arange(8) % 10, epochs=1, verbose=0)  # non-trivial stats
    before = model.predict(x.astype("float32"), verbose=0)
    assert rescale_conv_kernels(model, 0.4) == 9  # stem, 2 per block, 2 projections
    after = model.predict(x.astype("float32"), verbose=0)
    # Equal up to BatchNorm epsilon, which the rescaled variance weighs slightly more.
    np.testing.assert_allclose(after, before, atol=1e-3)


def test_pretrained_model_is_cached_and_ends_in_a_source_softmax(
    small_glyphs_model_path: Path,
) -> None:
    mtime = small_glyphs_model_path.stat().st_mtime_ns
    assert glyphs_pretrained_model_path(seed=0, **SMALL) == small_glyphs_model_path
    assert small_glyphs_model_path.stat().st_mtime_ns == mtime  # not pretrained again
    model = keras.saving.load_model(small_glyphs_model_path, compile=False, safe_mode=True)
    assert model.output_shape == (None, len(GLYPHS_SOURCE_CLASSES))
    assert model.layers[-1].activation is keras.activations.softmax
    probs = model.predict(np.zeros((2, 32, 32, 3), "float32"), verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_load_pretrained_cuts_the_glyphs_model_before_the_source_classifier(
    small_glyphs_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        _glyphs,
        "glyphs_pretrained_model_path",
        functools.partial(glyphs_pretrained_model_path, **SMALL),
    )
    pretrained = load_pretrained(ModelSource(kind="glyphs"))
    assert pretrained.input_shape == (32, 32, 3)
    assert pretrained.model.output_shape == (None, 64)
    assert pretrained.model.layers[-1].name == GLYPHS_FEATURE_LAYER
    assert "source letters" in pretrained.description


def test_study_file_uses_the_glyphs_model_and_data() -> None:
    config = load_study_file(REPO / "studies" / "glyphs.yaml")
    assert config.name == "glyphs"
    assert config.model.kind == "glyphs" and config.data.kind == "glyphs"
    data = load_data(config.data)
    assert data.fingerprint() == glyphs_target_data(seed=0).fingerprint()
