"""Loading the pretrained model (demo or file) and instantiating fresh copies per trial."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from thaw.objectives import ModelSource, ModelSourceError, PretrainedBase, load_pretrained


def saved(model: keras.Model, path: Path) -> Path:
    model.save(path)
    return path


def test_pretrained_base_describes_the_model(tiny_cnn: Callable[..., Any]) -> None:
    base = PretrainedBase(tiny_cnn(), "tiny")
    assert base.num_layers == 3
    assert base.input_shape == (8, 8, 3)
    assert base.description == "tiny"


def test_instantiate_gives_an_independent_copy(
    tiny_cnn: Callable[..., Any], tiny_arrays: Callable[..., dict[str, np.ndarray]]
) -> None:
    original = tiny_cnn()
    pretrained = PretrainedBase(original, "tiny")
    reference = [w.copy() for w in original.get_weights()]
    copy = pretrained.instantiate()
    assert copy is not original
    for a, b in zip(copy.get_weights(), reference, strict=True):
        np.testing.assert_array_equal(a, b)

    copy.compile(optimizer=keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    arrays = tiny_arrays()
    copy.fit(arrays["x_train"].astype("float32"), arrays["y_train"], epochs=1, verbose=0)
    assert any(not np.allclose(a, b) for a, b in zip(copy.get_weights(), reference, strict=True))
    for a, b in zip(original.get_weights(), reference, strict=True):
        np.testing.assert_array_equal(a, b)
    # and the next copy starts from the pretrained weights again
    for a, b in zip(pretrained.instantiate().get_weights(), reference, strict=True):
        np.testing.assert_array_equal(a, b)


def test_load_model_file_and_cut(tiny_cnn: Callable[..., Any], tmp_path: Path) -> None:
    model = tiny_cnn()
    path = saved(model, tmp_path / "tiny.keras")
    pretrained = load_pretrained(ModelSource("file", path=path, cut_at="features"))
    assert pretrained.num_layers == 2
    assert pretrained.input_shape == (8, 8, 3)
    assert pretrained.description == "tiny.keras, cut at 'features'"
    assert pretrained.model.output_shape == (None, 6)
    conv = pretrained.model.get_layer("conv2")
    np.testing.assert_array_equal(conv.kernel.numpy(), model.get_layer("conv2").kernel.numpy())


def test_model_file_loses_its_top_classifier_by_default(
    tiny_cnn: Callable[..., Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = saved(tiny_cnn(), tmp_path / "m.keras")
    with caplog.at_level("INFO", logger="thaw.objectives._sources"):
        pretrained = load_pretrained(ModelSource("file", path=path))
    assert pretrained.num_layers == 2
    assert pretrained.model.output_shape == (None, 6)  # the features, not the 3 source classes
    assert pretrained.cut_classifier == "old_head"
    assert pretrained.description == (
        "m.keras, top classifier 'old_head' (Dense, softmax, 3 outputs) cut"
    )
    lines = [r.getMessage() for r in caplog.records if "old_head" in r.getMessage()]
    assert len(lines) == 1 and "the new head sits on 'features'" in lines[0]


def test_cut_at_none_keeps_the_whole_model(tiny_cnn: Callable[..., Any], tmp_path: Path) -> None:
    path = saved(tiny_cnn(), tmp_path / "m.keras")
    pretrained = load_pretrained(ModelSource("file", path=path, cut_at="none"))
    assert pretrained.num_layers == 3
    assert pretrained.cut_classifier is None
    assert pretrained.description == "m.keras"


@pytest.mark.parametrize(
    ("activation", "separate", "cut"),
    [
        ("softmax", False, True),
        ("sigmoid", False, True),
        ("softmax", True, True),  # Dense then Activation("softmax")
        ("relu", False, False),  # an embedding, not a classifier
        (None, False, False),  # logits: linear Dense is not cut
    ],
)
def test_which_last_layers_count_as_a_classifier(
    tmp_path: Path, activation: str | None, separate: bool, cut: bool
) -> None:
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(2, 3, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if separate:
        x = keras.layers.Dense(3, name="top")(x)
        x = keras.layers.Activation(activation, name="act")(x)
    else:
        x = keras.layers.Dense(3, activation=activation, name="top")(x)
    path = saved(keras.Model(inputs, x), tmp_path / "c.keras")
    pretrained = load_pretrained(ModelSource("file", path=path))
    assert (pretrained.cut_classifier == "top") is cut
    assert pretrained.num_layers == (1 if cut else 2)


def test_cut_at_naming_no_layer_lists_the_last_layers(
    tiny_cnn: Callable[..., Any], tmp_path: Path
) -> None:
    path = saved(tiny_cnn(), tmp_path / "m.keras")
    with pytest.raises(
        ModelSourceError,
        match=r"no layer named 'fc9'; its last layers are \[.*'features', 'old_head'\]",
    ):
        load_pretrained(ModelSource("file", path=path, cut_at="fc9"))


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("m.txt", b"x", r"has suffix '\.txt'; thaw loads '\.keras'"),
        ("m.keras", b"not a zip", r"is not a Keras model file \(not a \.keras zip archive\)"),
        ("m.h5", b"not hdf5", r"cannot load .*m\.h5 as a Keras model"),
    ],
)
def test_unreadable_model_files(tmp_path: Path, name: str, content: bytes, match: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ModelSourceError, match=match):
        load_pretrained(ModelSource("file", path=path))


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match=r"model file .*gone\.keras does not exist"):
        load_pretrained(ModelSource("file", path=tmp_path / "gone.keras"))


def test_cut_at_unknown_layer(tiny_cnn: Callable[..., Any], tmp_path: Path) -> None:
    path = saved(tiny_cnn(), tmp_path / "m.keras")
    with pytest.raises(ModelSourceError, match=r"has no layer named 'fc7'"):
        load_pretrained(ModelSource("file", path=path, cut_at="fc7"))


def test_lambda_layer_needs_explicit_unsafe_mode(tmp_path: Path) -> None:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inputs)
    x = keras.layers.Conv2D(2, 3, name="conv")(x)
    path = saved(keras.Model(inputs, x), tmp_path / "lambda.keras")
    with pytest.raises(
        ModelSourceError,
        match=r"needs unsafe deserialisation .* set "
        r"'model.safe_mode: false'",
    ):
        load_pretrained(ModelSource("file", path=path, safe_mode=True))
    assert load_pretrained(ModelSource("file", path=path, safe_mode=False)).num_layers == 1


def test_demo_source_is_the_cached_pretrained_cnn(demo_model_path: Path) -> None:
    pretrained = load_pretrained(ModelSource("demo"))
    assert pretrained.input_shape == (32, 32, 3)
    # block1..4 convs and top_conv; BatchNorm is not counted, the source head is cut off
    assert pretrained.num_layers == 5
    assert [layer.name for layer in pretrained.model.layers][-1] == "features"
    assert "demo CNN" in pretrained.description and "cut at 'features'" in pretrained.description


class _Shift(keras.layers.Layer):
    """Adds a learned bias; its config has a key its constructor refuses, so it cannot be
    rebuilt from it (as KerasHub 0.32's ViT patch embedding cannot)."""

    def __init__(self, width: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.width = width

    def build(self, input_shape: Any) -> None:
        self.shift = self.add_weight(shape=(self.width,), initializer="zeros", name="shift")

    def call(self, x: Any) -> Any:
        return x + self.shift

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "width": self.width, "positions": self.width}


class _Backbone(keras.Model):
    """A functional model rebuilt from its constructor's arguments, as a KerasHub backbone is."""

    def __init__(self, width: int, **kwargs: Any) -> None:
        inputs = keras.Input((4, 4, 3))
        x = keras.layers.Conv2D(width, 3, name="conv")(inputs)
        super().__init__(inputs, _Shift(width, name="shift")(x), **kwargs)
        self.width = width

    def get_config(self) -> dict[str, Any]:
        return {"width": self.width, "name": self.name}

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> _Backbone:
        return cls(**config)


def test_a_base_clone_model_cannot_copy_is_rebuilt_from_its_config() -> None:
    model = _Backbone(5, name="backbone")
    with pytest.raises(TypeError):
        keras.models.clone_model(model)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.weights])
    pretrained = PretrainedBase(model, "backbone")
    copy = pretrained.instantiate()
    assert copy is not model and isinstance(copy, _Backbone)
    x = rng.normal(size=(2, 4, 4, 3)).astype("float32")
    np.testing.assert_allclose(copy.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    # the working copy is built the same way and reset to the pretrained weights every trial
    working = pretrained.working_copy(seed=1)
    assert working is not model
    working.get_layer("shift").shift.assign(np.ones(5, "float32"))
    again = pretrained.working_copy(seed=1)
    assert again is working
    for a, b in zip(again.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_base_that_neither_clones_nor_rebuilds_is_refused_in_one_line() -> None:
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, _Shift(3, name="shift")(inputs), name="plain")
    pretrained = PretrainedBase(model, "plain")
    with pytest.raises(ModelSourceError, match=r"cannot make a copy of the model 'plain'") as info:
        pretrained.instantiate()
    assert "\n" not in str(info.value)
