"""L2-SP, layer-wise learning-rate decay and augmentation, on real fits of the tiny CNN."""

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
    build_model,
    cut_base,
    freeze,
)
from thaw.objectives._finetune import (
    AUGMENT_NAME,
    FineTuneAdamW,
    augmentation,
    model_base,
    variable_plan,
    without_augmentation,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

Arrays = Callable[..., dict[str, np.ndarray]]

SPACE = SearchSpace(
    unfrozen_layers=IntRange(0, 2),
    learning_rate=FloatRange(1e-3, 1e-2, log=True),
    dropout=FloatRange(0.0, 0.3),
    weight_decay=FloatRange(1e-6, 1.0, log=True),
    l2sp=FloatRange(1e-4, 1.0, log=True),
    lr_decay=FloatRange(0.5, 1.0),
    augment=FloatRange(0.0, 1.0),
)

#: Off: the values a space without these methods trains with.
OFF = {"l2sp": 1e-4, "lr_decay": 1.0, "augment": 0.0}


@pytest.fixture
def pretrained(tiny_cnn: Callable[..., Any]) -> PretrainedBase:
    return PretrainedBase(cut_base(tiny_cnn(), "features"), "tiny")


@pytest.fixture
def data(tiny_arrays: Arrays) -> ArrayData:
    return ArrayData(**tiny_arrays(n_train=48), class_names=("a", "b", "c"))


def run_trial(
    pretrained: PretrainedBase,
    data: ArrayData,
    tmp_path: Path,
    params: dict[str, Any],
    epochs: int = 3,
    name: str = "t",
) -> FrozenTrial:
    """One trial with ``params`` (the rest as ``OFF``), in a fresh SQLite study."""
    storage = f"sqlite:///{tmp_path / (name + '.db')}"
    settings = TrainSettings(epochs=epochs, batch_size=8)
    objective = FineTuneObjective(pretrained, data, SPACE, settings)
    study = optuna.create_study(study_name=name, storage=storage)
    fixed = {"dropout": 0.0, "weight_decay": 1e-6, "unfrozen_layers": 2, **OFF, **params}
    study.enqueue_trial(fixed)
    study.optimize(objective, n_trials=1)
    (trial,) = optuna.load_study(study_name=name, storage=storage).get_trials()
    assert trial.state == TrialState.COMPLETE, trial.user_attrs.get("fail_reason")
    return trial


def drift(trial: FrozenTrial) -> dict[str, float]:
    return dict(trial.user_attrs["probes"]["weight_drift"])


@pytest.mark.parametrize(
    ("unfrozen", "layers"),
    [(2, ("conv1", "conv2")), (1, ("conv2",))],
    ids=["whole base", "top on cached activations"],
)
def test_l2sp_keeps_the_base_nearer_its_pretrained_weights_than_weight_decay(
    pretrained: PretrainedBase,
    data: ArrayData,
    tmp_path: Path,
    unfrozen: int,
    layers: tuple[str, ...],
) -> None:
    strength = 1.0
    common = {"learning_rate": 1e-2, "unfrozen_layers": unfrozen, "batchnorm": "frozen"}
    decayed = run_trial(
        pretrained, data, tmp_path, {**common, "weight_decay": strength}, name="wd", epochs=4
    )
    anchored = run_trial(
        pretrained,
        data,
        tmp_path,
        {**common, "weight_decay": 1e-6, "l2sp": strength},
        name="l2sp",
        epochs=4,
    )
    for layer in layers:
        assert drift(anchored)[layer] < drift(decayed)[layer], (drift(anchored), drift(decayed))


def test_layerwise_rate_decay_moves_lower_layers_less(
    pretrained: PretrainedBase, data: ArrayData, tmp_path: Path
) -> None:
    def ratio(factor: float) -> float:
        trial = run_trial(
            pretrained,
            data,
            tmp_path,
            {"learning_rate": 3e-3, "lr_decay": factor},
            name=f"llrd{factor}",
        )
        moved = drift(trial)
        return moved["conv1"] / moved["conv2"]

    # conv1 is one group below the top unfrozen one: its rate is halved at 0.5
    assert ratio(0.5) < 0.75 * ratio(1.0)


def test_rate_factors_of_one_train_as_plain_adamw(pretrained: PretrainedBase) -> None:
    x = np.random.default_rng(0).uniform(0, 255, (16, 8, 8, 3)).astype("float32")
    y = np.arange(16) % 3

    def fit(custom: bool) -> list[np.ndarray]:
        keras.utils.set_random_seed(0)
        base = pretrained.working_copy(seed=0)
        freeze(base, 2)
        model = build_model(base, 3, 0.0)
        if custom:
            scales, _ = variable_plan(base, 2, "layers", 1.0)
            optimizer: Any = FineTuneAdamW(
                learning_rate=1e-2, weight_decay=1e-2, rate_scales=scales
            )
        else:
            optimizer = keras.optimizers.AdamW(learning_rate=1e-2, weight_decay=1e-2)
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
        return [np.asarray(w) for w in model.get_weights()]

    for a, b in zip(fit(True), fit(False), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_variable_plan_scales_by_depth_below_the_top_group(pretrained: PretrainedBase) -> None:
    base = pretrained.working_copy(seed=0)
    freeze(base, 2, "train")
    scales, anchored = variable_plan(base, 2, "layers", 0.5)
    by_layer = {
        layer.name: {scales[id(v)] for v in layer.trainable_weights}
        for layer in base.layers
        if layer.trainable_weights
    }
    # conv2 is the top group and bn2 above it trains with it; conv1 and bn1 one group lower
    assert by_layer == {"conv1": {0.5}, "bn1": {0.5}, "conv2": {1.0}, "bn2": {1.0}}
    assert anchored == set(scales)


def test_augmentation_changes_the_training_loss_and_turns_the_cache_off(
    pretrained: PretrainedBase, data: ArrayData, tmp_path: Path
) -> None:
    # one unfrozen layer with frozen BatchNorm: the trial without augmentation trains on cached
    # activations of the frozen bottom
    common = {"learning_rate": 3e-3, "unfrozen_layers": 1, "batchnorm": "frozen"}
    plain = run_trial(pretrained, data, tmp_path, common, name="plain")
    augmented = run_trial(pretrained, data, tmp_path, {**common, "augment": 1.0}, name="aug")
    again = run_trial(pretrained, data, tmp_path, common, name="again")
    assert plain.user_attrs["history"]["loss"] == again.user_attrs["history"]["loss"]
    assert augmented.user_attrs["history"]["loss"] != plain.user_attrs["history"]["loss"]
    assert "augment" in augmented.user_attrs["cache_off"]
    assert "cache_off" not in plain.user_attrs
    # validation is never augmented: the losses are finite and the trial completed
    assert all(np.isfinite(augmented.user_attrs["history"]["val_loss"]))
    # the probes measure the base behind the augmentation layers
    assert drift(augmented)["conv2"] > 0


def test_without_augmentation_shares_the_weights_and_computes_the_same(
    pretrained: PretrainedBase,
) -> None:
    model = build_model(
        pretrained.working_copy(seed=0), 3, 0.2, augment=augmentation(0.5, (0, 255))
    )
    bare = without_augmentation(model)
    assert AUGMENT_NAME not in [layer.name for layer in bare.layers]
    assert model_base(bare) is model_base(model)
    assert {id(w) for w in bare.weights} <= {id(w) for w in model.weights}
    x = np.random.default_rng(2).uniform(0, 255, (4, 8, 8, 3)).astype("float32")
    # in inference; called as model(x), Keras's augmentation layers augment, the bare model not
    np.testing.assert_allclose(np.asarray(bare(x)), np.asarray(model(x, training=False)), rtol=1e-6)
    assert not np.allclose(np.asarray(bare(x)), np.asarray(model(x)))
    plain = build_model(pretrained.working_copy(seed=0), 3, 0.2)
    assert without_augmentation(plain) is plain


@pytest.mark.parametrize("strength", [-0.1, 1.5])
def test_augmentation_strength_outside_zero_to_one_is_refused(strength: float) -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        augmentation(strength, (0.0, 255.0))


def test_augmentation_layers_act_in_training_only(pretrained: PretrainedBase) -> None:
    assert augmentation(0.0, (0.0, 1.0)) is None
    base = pretrained.working_copy(seed=0)
    model = build_model(base, 3, 0.0, augment=augmentation(1.0, (0.0, 255.0)))
    assert model_base(model) is base
    assert model.layers[1].name == AUGMENT_NAME
    x = np.random.default_rng(1).uniform(0, 255, (4, 8, 8, 3)).astype("float32")
    layer = model.layers[1]
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    assert not np.allclose(np.asarray(layer(x, training=True)), x)


def test_the_methods_train_on_the_jax_backend() -> None:
    """The optimizer and the augmentation use the Keras 3 API only: they train on JAX too."""
    pytest.importorskip("jax")
    import subprocess
    import sys

    script = Path(__file__).with_name("jax_methods_check.py")
    tests = str(Path(__file__).resolve().parents[1])
    result = subprocess.run(
        [sys.executable, str(script), tests], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "JAX OK" in result.stdout
