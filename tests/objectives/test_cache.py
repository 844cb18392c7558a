"""Frozen-prefix caching: where the network is cut, that cached trials train exactly like uncached
ones, reuse across trials, the memory bound and the disk, and the base reused from memory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import optuna
import pytest
from keras import layers

from thaw.objectives import (
    ArrayData,
    FineTuneObjective,
    FloatRange,
    IntRange,
    ModelSource,
    PretrainedBase,
    SearchSpace,
    TrainSettings,
    build_model,
    cut_base,
    demo_target_data,
    freeze,
    load_pretrained,
)
from thaw.objectives._cache import FeatureCache, is_frozen, split_frozen_prefix

optuna.logging.set_verbosity(optuna.logging.WARNING)

Arrays = Callable[..., dict[str, np.ndarray]]

SPACE = SearchSpace(
    unfrozen_layers=IntRange(0, 2),
    learning_rate=FloatRange(1e-3, 1e-2, log=True),
    dropout=FloatRange(0.0, 0.5),
    weight_decay=FloatRange(1e-6, 1e-4, log=True),
)


def run_trial_attrs(objective: FineTuneObjective, params: dict[str, Any]) -> dict[str, Any]:
    """Run one enqueued trial; its user attrs."""
    study = optuna.create_study()
    study.enqueue_trial(params)
    study.optimize(objective, n_trials=1)
    trial = study.trials[-1]
    assert trial.state == optuna.trial.TrialState.COMPLETE, trial.user_attrs.get("fail_reason")
    return trial.user_attrs


def run_trial(objective: FineTuneObjective, params: dict[str, Any]) -> list[float]:
    """Run one enqueued trial; its per-epoch val losses."""
    return list(run_trial_attrs(objective, params)["history"]["val_loss"])


def assert_same_probes(got: dict[str, Any], expected: dict[str, Any], rtol: float) -> None:
    """The end-of-trial probes agree (a cached trial runs their inference passes on the top)."""
    assert set(got) == set(expected)
    for key, value in expected.items():
        if key == "weight_drift":
            assert set(got[key]) == set(value)
            np.testing.assert_allclose(
                [got[key][k] for k in value], list(value.values()), rtol=rtol, atol=1e-5
            )
        else:
            assert got[key] == pytest.approx(value, rel=rtol, abs=1e-5), key


def objectives(
    pretrained: PretrainedBase, data: ArrayData, settings: TrainSettings
) -> tuple[FineTuneObjective, FineTuneObjective]:
    cached = FineTuneObjective(
        pretrained, data, SPACE, settings, feature_cache=FeatureCache(directory=None)
    )
    plain = FineTuneObjective(
        pretrained, data, SPACE, TrainSettings(**{**vars(settings), "cache_frozen": "off"})
    )
    return cached, plain


# ------------------------------------------------------------- cached == uncached, tiny CNN


@pytest.mark.parametrize(
    ("nested", "unfrozen", "batchnorm", "boundary"),
    [
        (False, 0, "frozen", "thaw_finetune/tiny_cnn_base"),
        (False, 1, "frozen", "tiny_cnn_base/relu1"),
        (False, 2, "adapt", "tiny_cnn_base/rescale"),
        (True, 0, "frozen", "thaw_finetune/tiny_cnn_base"),
        (True, 1, "frozen", "tiny_cnn_base/backbone"),
    ],
)
def test_cached_trial_matches_uncached_trial(
    tiny_cnn: Callable[..., Any],
    tiny_arrays: Arrays,
    nested: bool,
    unfrozen: int,
    batchnorm: str,
    boundary: str,
) -> None:
    pretrained = PretrainedBase(cut_base(tiny_cnn(nested=nested), "features"), "tiny")
    data = ArrayData(**tiny_arrays(), class_names=("a", "b", "c"))
    cached, plain = objectives(pretrained, data, TrainSettings(epochs=3, batch_size=8))
    params = {
        "unfrozen_layers": unfrozen,
        "learning_rate": 5e-3,
        "dropout": 0.3,  # the head's dropout runs in both
        "weight_decay": 1e-4,
    }
    space = SearchSpace(**{**vars(SPACE), "batchnorm": (batchnorm,)})
    cached.space = plain.space = space
    # plain first: the cached trial must not depend on what ran before it either
    expected = run_trial_attrs(plain, params)
    got = run_trial_attrs(cached, params)
    assert plain.last_boundaries == [""]
    assert cached.last_boundaries == [boundary]
    np.testing.assert_allclose(
        got["history"]["val_loss"], expected["history"]["val_loss"], rtol=1e-5, atol=1e-6
    )
    assert_same_probes(got["probes"], expected["probes"], rtol=1e-4)
    cache = cached.feature_cache
    assert cache is not None
    # the features, and the bottom's activations with BatchNorm on batch statistics (the probe)
    assert (cache.misses, cache.hits) == (2, 0)
    # a warm trial takes both from the cache: the batch-statistics probe runs the top only
    again = run_trial_attrs(cached, params)
    assert (cache.misses, cache.hits) == (2, 2)
    assert_same_probes(again["probes"], expected["probes"], rtol=1e-4)


@pytest.mark.parametrize("unfrozen", [0, 1])
def test_cached_trial_probes_the_same_sample_as_an_uncached_trial(
    tiny_cnn: Callable[..., Any], tiny_arrays: Arrays, unfrozen: int
) -> None:
    """With fewer probe images than the splits hold, a cached trial probes the top on the
    sampled rows of its cached activations (and the bottom's batch-statistics activations of
    the sampled validation images): the probes of an uncached trial on the same sample."""
    pretrained = PretrainedBase(cut_base(tiny_cnn(), "features"), "tiny")
    data = ArrayData(**tiny_arrays(n_train=24, n_val=16), class_names=("a", "b", "c"))
    cached, plain = objectives(
        pretrained, data, TrainSettings(epochs=2, batch_size=4, probe_images=8)
    )
    params = {
        "unfrozen_layers": unfrozen,
        "learning_rate": 5e-3,
        "dropout": 0.3,
        "weight_decay": 1e-4,
    }
    space = SearchSpace(**{**vars(SPACE), "batchnorm": ("frozen",)})
    cached.space = plain.space = space
    expected = run_trial_attrs(plain, params)
    got = run_trial_attrs(cached, params)
    assert cached.last_boundaries != [""]
    assert expected["probes"]["sample_images"] == 8
    assert_same_probes(got["probes"], expected["probes"], rtol=1e-4)
    # the whole splits give other numbers: the sample is what was probed
    whole = FineTuneObjective(
        pretrained, data, space, TrainSettings(epochs=2, batch_size=4, cache_frozen="off")
    )
    full = run_trial_attrs(whole, params)["probes"]
    assert full["train_loss"] != pytest.approx(expected["probes"]["train_loss"], rel=1e-4)


def test_cached_trial_matches_on_the_demo_cnn_with_warmup(demo_model_path: Path) -> None:
    """Warm-up phase (head only) and fine-tuning phase are cut at different boundaries."""
    pretrained = load_pretrained(ModelSource("demo"))
    data = demo_target_data(train_per_class=4, val_per_class=8)
    settings = TrainSettings(epochs=3, batch_size=8, warmup_epochs=1)
    cached, plain = objectives(pretrained, data, settings)
    params = {"unfrozen_layers": 2, "learning_rate": 1e-3, "dropout": 0.2, "weight_decay": 1e-4}
    space = SearchSpace(
        unfrozen_layers=IntRange(0, 5),
        **{k: v for k, v in vars(SPACE).items() if k not in ("unfrozen_layers",)},
    )
    cached.space = plain.space = space
    expected = run_trial_attrs(plain, params)
    got = run_trial_attrs(cached, params)
    assert cached.last_boundaries == [
        "thaw_finetune/thaw_demo_cnn_base",
        "thaw_demo_cnn_base/block3_pool",
    ]
    np.testing.assert_allclose(
        got["history"]["val_loss"], expected["history"]["val_loss"], rtol=1e-4, atol=1e-5
    )
    assert_same_probes(got["probes"], expected["probes"], rtol=1e-3)


def test_features_are_reused_across_trials_and_the_full_model_holds_the_result(
    tiny_cnn: Callable[..., Any], tiny_arrays: Arrays
) -> None:
    pretrained = PretrainedBase(cut_base(tiny_cnn(), "features"), "tiny")
    data = ArrayData(**tiny_arrays(), class_names=("a", "b", "c"))
    cache = FeatureCache(directory=None)
    objective = FineTuneObjective(
        pretrained, data, SPACE, TrainSettings(epochs=2, batch_size=8), feature_cache=cache
    )
    params = {"unfrozen_layers": 1, "learning_rate": 1e-2, "dropout": 0.0, "weight_decay": 1e-6}
    run_trial(objective, params)
    run_trial(objective, {**params, "learning_rate": 2e-3})
    # features and the probe's batch-statistics activations: computed once, then reused
    assert (cache.misses, cache.hits) == (2, 2)

    # build + fit by hand: the full model is the prefix plus the trained top
    trial = optuna.create_study().ask()
    from thaw.objectives._callbacks import TrialHistory
    from thaw.objectives._space import TrialParams

    p = TrialParams(**params)
    model = objective.build(p)
    before = [w.copy() for w in model.get_weights()]
    objective.fit(trial, model, p, TrialHistory())
    after = model.get_weights()
    changed = [not np.allclose(a, b) for a, b in zip(before, after, strict=True)]
    names = [w.path for w in model.weights]
    assert any(c for c, n in zip(changed, names, strict=True) if "conv2" in n)
    assert any(c for c, n in zip(changed, names, strict=True) if "head_dense" in n)
    assert not any(c for c, n in zip(changed, names, strict=True) if "conv1" in n or "bn1" in n)
    x = objective._x_val
    split = split_frozen_prefix(model, model.layers[1])
    assert split is not None
    np.testing.assert_allclose(
        model.predict(x, verbose=0),
        split.suffix.predict(split.prefix.predict(x, verbose=0), verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize(
    ("settings", "batchnorm"),
    [
        (TrainSettings(epochs=1, batch_size=8, cache_frozen="off"), "frozen"),
        (TrainSettings(epochs=1, batch_size=8), "train"),
    ],
    ids=["off", "batchnorm-train"],
)
def test_no_cache_when_off_or_batchnorm_trains(
    tiny_cnn: Callable[..., Any], tiny_arrays: Arrays, settings: TrainSettings, batchnorm: str
) -> None:
    pretrained = PretrainedBase(cut_base(tiny_cnn(), "features"), "tiny")
    data = ArrayData(**tiny_arrays(), class_names=("a", "b", "c"))
    space = SearchSpace(**{**vars(SPACE), "batchnorm": (batchnorm,)})
    objective = FineTuneObjective(pretrained, data, space, settings)
    run_trial(objective, {"unfrozen_layers": 1})
    assert objective.last_boundaries == [""]


def test_unknown_cache_frozen_is_refused(tiny_cnn: Callable[..., Any], tiny_arrays: Arrays) -> None:
    pretrained = PretrainedBase(cut_base(tiny_cnn(), "features"), "tiny")
    data = ArrayData(**tiny_arrays(), class_names=("a", "b", "c"))
    with pytest.raises(
        ValueError, match=r"cache_frozen='always'; expected one of \('auto', 'off'\)"
    ):
        FineTuneObjective(pretrained, data, SPACE, TrainSettings(cache_frozen="always"))


# ----------------------------------------------------------------------- where the cut lies


def residual_base() -> keras.Model:
    """stem -> a -> b, a -> skip; add(b, skip) -> c. A cut at b is crossed by a -> skip."""
    inputs = keras.Input((8, 8, 3), name="image")
    stem = layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    a = layers.Conv2D(4, 3, padding="same", name="a")(stem)
    b = layers.Conv2D(4, 3, padding="same", name="b")(a)
    skip = layers.Conv2D(4, 1, name="skip")(a)
    added = layers.Add(name="add")([b, skip])
    c = layers.Conv2D(4, 3, padding="same", name="c")(added)
    return keras.Model(inputs, c, name="res")


@pytest.mark.parametrize(
    ("trainable", "boundary"),
    [
        ({"c"}, "res/add"),  # the block is whole below c
        ({"add", "c"}, "res/add"),  # no weights: "trainable" changes nothing
        ({"skip", "c"}, "res/a"),  # not "b": a -> skip crosses it
        ({"b", "skip", "c"}, "res/a"),
        ({"a", "b", "skip", "c"}, "res/stem"),
        ({"stem", "a", "b", "skip", "c"}, None),  # nothing frozen above the input
    ],
)
def test_cut_moves_below_a_crossing_skip_connection(
    trainable: set[str], boundary: str | None
) -> None:
    base = residual_base()
    for layer in base.layers:
        layer.trainable = layer.name in trainable
    model = build_model(base, 3, 0.1)
    split = split_frozen_prefix(model, base)
    assert (split.boundary if split else None) == boundary
    if split is not None:
        x = np.random.default_rng(0).normal(size=(5, 8, 8, 3)).astype("float32")
        np.testing.assert_allclose(
            model.predict(x, verbose=0),
            split.suffix.predict(split.prefix.predict(x, verbose=0), verbose=0),
            rtol=1e-5,
            atol=1e-6,
        )
        assert {id(w) for w in split.suffix.trainable_weights} == {
            id(w) for w in model.trainable_weights
        }


def test_cut_stops_below_random_layers_and_trainable_batchnorm() -> None:
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, name="conv1")(inputs)
    x = layers.RandomFlip(name="flip")(x)
    x = layers.Conv2D(4, 3, name="conv2")(x)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.Conv2D(4, 3, name="conv3")(x)
    base = keras.Model(inputs, x, name="aug")
    for layer in base.layers:
        layer.trainable = layer.name == "conv3"
    model = build_model(base, 3, 0.0)
    split = split_frozen_prefix(model, base)
    assert split is not None and split.boundary == "aug/conv1"
    assert not is_frozen(base.get_layer("flip"))
    base.get_layer("flip").trainable = False  # still random: trainable says nothing about it
    assert not is_frozen(base.get_layer("flip"))
    bn = base.get_layer("bn")
    assert is_frozen(bn)
    bn.trainable = True  # a trainable BatchNorm runs in training mode
    assert not is_frozen(bn)


def test_the_head_dropout_is_never_cached(tiny_cnn: Callable[..., Any]) -> None:
    base = cut_base(tiny_cnn(), "relu2")  # 4-D output: the head pools first
    freeze(base, 0)
    model = build_model(base, 3, 0.5)
    split = split_frozen_prefix(model, base)
    assert split is not None and split.boundary == "thaw_finetune/head_pool"
    assert [layer.name for layer in split.suffix.layers][1:] == ["head_dropout", "head_dense"]


# ---------------------------------------------------------------------------- FeatureCache


def test_feature_cache_spills_to_disk_beyond_its_bound(tmp_path: Path) -> None:
    a = (np.ones((10, 4), "float32"), np.zeros((5, 4), "float32"))  # 240 bytes
    b = (np.full((10, 4), 2, "float32"), np.full((5, 4), 3, "float32"))
    cache = FeatureCache(tmp_path / "features", max_memory_bytes=300)
    cache.put("a", a)
    assert cache.memory_bytes == 240 and not any((tmp_path / "features").glob("*"))
    cache.put("b", b)  # a (least recently used) goes to disk
    assert cache.memory_bytes == 240
    assert sorted(p.name for p in (tmp_path / "features").glob("*")) == [
        "a-0.npy",
        "a-1.npy",
        "a.count",
    ]
    got = cache.get("a")
    assert got is not None
    for x, y in zip(got, a, strict=True):
        np.testing.assert_array_equal(x, y)
    cache.clear()
    again = FeatureCache(tmp_path / "features", max_memory_bytes=300)  # another process
    assert "a" in again and "b" not in again
    big = (np.ones((100, 4), "float32"),)
    again.put("big", big)  # larger than the bound: straight to disk
    assert again.memory_bytes == 0 and "big" in again


def test_feature_cache_without_directory_drops_evicted_entries() -> None:
    cache = FeatureCache(None, max_memory_bytes=200)
    cache.put("a", (np.ones(40, "float32"),))
    cache.put("b", (np.ones(40, "float32"),))
    assert "a" not in cache and "b" in cache
    assert cache.get("a") is None and cache.misses == 1
    with pytest.raises(ValueError, match=r"max_memory_bytes=-1"):
        FeatureCache(None, max_memory_bytes=-1)


# ------------------------------------------------------------------- the base, from memory


def test_working_copy_is_built_once_and_reset_every_trial(
    tiny_cnn: Callable[..., Any], tiny_arrays: Arrays
) -> None:
    original = tiny_cnn()
    pretrained = PretrainedBase(original, "tiny")
    first = pretrained.working_copy(seed=1)
    assert first is not original
    for w in first.weights:
        w.assign(w + 1.0)
    second = pretrained.working_copy(seed=1)
    assert second is first
    for a, b in zip(second.get_weights(), pretrained.weights, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(original.get_weights(), pretrained.weights, strict=True):
        np.testing.assert_array_equal(a, b)


def test_trial_results_do_not_depend_on_earlier_trials(
    tiny_cnn: Callable[..., Any], tiny_arrays: Arrays
) -> None:
    """The first trial builds the working copy, later ones reuse it: same trial, same curve."""
    pretrained = PretrainedBase(cut_base(tiny_cnn(), "features"), "tiny")
    data = ArrayData(**tiny_arrays(), class_names=("a", "b", "c"))
    space = SearchSpace(**{**vars(SPACE), "batchnorm": ("frozen", "train")})
    objective = FineTuneObjective(
        pretrained, data, space, TrainSettings(epochs=2, batch_size=8, cache_frozen="off")
    )
    params = {
        "unfrozen_layers": 2,
        "learning_rate": 1e-2,
        "dropout": 0.2,
        "weight_decay": 1e-5,
        "batchnorm": "frozen",
    }
    first = run_trial(objective, params)
    run_trial(objective, {**params, "unfrozen_layers": 0, "batchnorm": "train"})
    assert run_trial(objective, params) == pytest.approx(first, rel=1e-6)


def test_mixed_precision_policy_survives_the_trials(
    tiny_cnn: Callable[..., Any], tiny_arrays: Arrays
) -> None:
    pretrained = PretrainedBase(cut_base(tiny_cnn(), "features"), "tiny")
    data = ArrayData(**tiny_arrays(), class_names=("a", "b", "c"))
    objective = FineTuneObjective(pretrained, data, SPACE, TrainSettings(epochs=1, batch_size=8))
    keras.config.set_dtype_policy("mixed_float16")
    try:
        run_trial(objective, {"unfrozen_layers": 0})
        assert keras.config.dtype_policy().name == "mixed_float16"
    finally:
        keras.config.set_dtype_policy("float32")


def test_working_copy_forgets_the_graphs_of_earlier_trials(tiny_cnn: Callable[..., Any]) -> None:
    """Each trial calls the base on a new input and cuts it; nothing of that piles up."""
    pretrained = PretrainedBase(cut_base(tiny_cnn(), "features"), "tiny")
    models = []
    for seed in range(3):
        base = pretrained.working_copy(seed=seed)
        freeze(base, 1)
        model = build_model(base, 3, 0.1)
        assert split_frozen_prefix(model, base) is not None
        models.append(model)
    # the latest trial's model still runs, and its graph is the only one recorded on the base
    x = np.zeros((2, 8, 8, 3), "float32")
    assert models[-1].predict(x, verbose=0).shape == (2, 3)
    assert len(base._inbound_nodes) == 1


def _same_bits(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(
        x.dtype == y.dtype and x.tobytes() == y.tobytes() for x, y in zip(a, b, strict=True)
    )


def three_mode_objective(
    tiny_cnn: Callable[..., Any], tiny_arrays: Arrays, epochs: int
) -> tuple[PretrainedBase, FineTuneObjective]:
    """The tiny CNN's objective over all three BatchNorm modes, cache in memory."""
    pretrained = PretrainedBase(cut_base(tiny_cnn(), "features"), "tiny")
    data = ArrayData(**tiny_arrays(), class_names=("a", "b", "c"))
    space = SearchSpace(**{**vars(SPACE), "batchnorm": ("frozen", "adapt", "train")})
    objective = FineTuneObjective(
        pretrained,
        data,
        space,
        TrainSettings(epochs=epochs, batch_size=8),
        feature_cache=FeatureCache(directory=None),
    )
    return pretrained, objective


def test_later_trials_repeat_the_first_exactly_whatever_ran_between(
    tiny_cnn: Callable[..., Any], tiny_arrays: Arrays
) -> None:
    """The base is reset to the pretrained weights, or to the adapted statistics, by assigning
    only what the trials before changed: a trial's curve is the same to the last digit, and
    the base it starts from is the pretrained one (or the adapted one), bit for bit."""
    from thaw.objectives._space import TrialParams

    pretrained, objective = three_mode_objective(tiny_cnn, tiny_arrays, epochs=3)
    params = {"unfrozen_layers": 1, "learning_rate": 1e-2, "dropout": 0.2, "weight_decay": 1e-5}
    adapt = {**params, "batchnorm": "adapt"}
    frozen = {**params, "batchnorm": "frozen"}
    first_adapt, first_frozen = run_trial(objective, adapt), run_trial(objective, frozen)
    run_trial(objective, {**params, "unfrozen_layers": 2, "batchnorm": "train"})  # all moves
    assert run_trial(objective, adapt) == first_adapt
    assert run_trial(objective, frozen) == first_frozen
    assert first_adapt != first_frozen
    base = objective.build(TrialParams(0, 1e-3, 0.0, 1e-5, "frozen")).layers[1]
    assert _same_bits(base.get_weights(), pretrained.weights)
    adapted = objective._adapted_weights
    assert adapted is not None and not _same_bits(adapted, pretrained.weights)
    base = objective.build(TrialParams(0, 1e-3, 0.0, 1e-5, "adapt")).layers[1]
    assert _same_bits(base.get_weights(), adapted)


@pytest.mark.parametrize("unfrozen", [0, 1])
def test_a_cached_trial_ends_with_the_weights_of_an_uncached_one(
    tiny_cnn: Callable[..., Any], tiny_arrays: Arrays, unfrozen: int
) -> None:
    """A trial of one phase on cached features keeps and restores the best epoch's weights of
    the top it trains only; the whole model ends as an uncached trial's does (the best epoch's
    weights, the bottom as pretrained), and the probes see the same model."""
    from thaw.objectives._probes import inference_metrics
    from thaw.objectives._space import TrialParams

    pretrained = PretrainedBase(cut_base(tiny_cnn(), "features"), "tiny")
    data = ArrayData(**tiny_arrays(), class_names=("a", "b", "c"))
    cached, plain = objectives(pretrained, data, TrainSettings(epochs=5, batch_size=8))
    params = TrialParams(unfrozen, 5e-2, 0.0, 1e-6, "frozen")
    results = []
    for objective in (plain, cached):
        trial = optuna.create_study().ask()
        model, history, _ = objective.train(trial, params)
        losses = history.epochs["val_loss"]
        best = objective._restored_epoch
        assert best is not None
        measured, _ = inference_metrics(model, objective._x_val, data.y_val, 8)
        assert measured == pytest.approx(losses[best - 1], rel=1e-5)
        weights = [w.copy() for w in model.get_weights()]
        objective.probe(trial, model, params, history)
        assert _same_bits(model.get_weights(), weights)  # the best epoch's, back after them
        results.append((losses, best, weights, trial.user_attrs["probes"]))
    (losses, best, weights, probes), (c_losses, c_best, c_weights, c_probes) = results
    assert cached.last_boundaries != [""]
    np.testing.assert_allclose(c_losses, losses, rtol=1e-5, atol=1e-6)
    assert c_best == best
    assert len(c_weights) == len(weights)
    for a, b in zip(c_weights, weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert_same_probes(c_probes, probes, rtol=1e-4)


def test_a_base_reset_after_cached_trials_is_the_pretrained_or_adapted_one_bit_for_bit(
    tiny_cnn: Callable[..., Any], tiny_arrays: Arrays
) -> None:
    """After a trial that trained only the top on cached activations, the next trial resets
    only that top's variables; whatever the order of the modes, the base it starts from is the
    pretrained one (or the adapted one), bit for bit."""
    from thaw.objectives._space import TrialParams

    pretrained, objective = three_mode_objective(tiny_cnn, tiny_arrays, epochs=2)
    params = {"learning_rate": 1e-2, "dropout": 0.2, "weight_decay": 1e-5}
    # (unfrozen layers, BatchNorm mode of the trial, mode of the next build, which is checked)
    steps = [
        (1, "frozen", "frozen"),
        (1, "adapt", "adapt"),  # the first adapt trial: the copy holds the adapted statistics
        (0, "adapt", "frozen"),
        (0, "frozen", "frozen"),
        (0, "adapt", "adapt"),
        (2, "train", "frozen"),  # the whole network trained: everything compared
        (1, "frozen", "adapt"),
    ]
    for unfrozen, mode, check in steps:
        run_trial(objective, {**params, "unfrozen_layers": unfrozen, "batchnorm": mode})
        assert (objective.last_boundaries != [""]) == (mode != "train")
        expected = pretrained.weights if check == "frozen" else objective._adapted_weights
        assert expected is not None
        base = objective.build(TrialParams(0, 1e-3, 0.0, 1e-5, check)).layers[1]
        assert _same_bits(base.get_weights(), expected), (unfrozen, mode, check)
    assert objective._adapted_weights is not None
    assert not _same_bits(objective._adapted_weights, pretrained.weights)


def test_working_copy_resets_only_the_changed_variables_it_is_told_of(
    tiny_cnn: Callable[..., Any],
) -> None:
    """``changed`` narrows the reset to those variables when the copy is reset to the same
    weights as last time; to other weights, every variable is compared."""
    pretrained = PretrainedBase(tiny_cnn(), "tiny")
    base = pretrained.working_copy(seed=1)
    first, last = base.weights[0], base.weights[-1]
    first.assign(first + 1.0)
    last.assign(last + 1.0)
    base = pretrained.working_copy(seed=1, changed=[last])
    assert _same_bits([last.numpy()], [pretrained.weights[-1]])
    assert not _same_bits([first.numpy()], [pretrained.weights[0]])  # as the caller said
    other = [w + 2.0 for w in pretrained.weights]
    base = pretrained.working_copy(seed=1, weights=other, changed=[last])
    assert _same_bits(base.get_weights(), other)
    base = pretrained.working_copy(seed=1, changed=[])
    assert _same_bits(base.get_weights(), pretrained.weights)


@pytest.mark.parametrize("warmup", [0, 1])
def test_the_kept_model_of_a_cached_trial_is_saved_compiled(
    tiny_cnn: Callable[..., Any], tiny_arrays: Arrays, tmp_path: Path, warmup: int
) -> None:
    """A trial that trained only its top on cached activations leaves its model uncompiled;
    the keeper compiles it before saving it, so the file loads compiled and measures the
    trial's best validation loss, and ``train`` hands back a compiled model."""
    from thaw.objectives import BestModelKeeper
    from thaw.objectives._space import TrialParams

    pretrained = PretrainedBase(cut_base(tiny_cnn(), "features"), "tiny")
    data = ArrayData(**tiny_arrays(), class_names=("a", "b", "c"))
    settings = TrainSettings(epochs=3, batch_size=8, warmup_epochs=warmup)
    objective = FineTuneObjective(
        pretrained, data, SPACE, settings, feature_cache=FeatureCache(directory=None)
    )
    saved: list[bool] = []

    def compiled_when_saved(model: keras.Model) -> None:
        objective.compile_if_deferred(model)
        saved.append(bool(model.compiled))

    objective.on_trial_model = BestModelKeeper(
        tmp_path, "val_loss", maximize=False, top_k=1, prepare=compiled_when_saved
    )
    attrs = run_trial_attrs(objective, {"unfrozen_layers": 1})
    assert objective.last_boundaries and all(objective.last_boundaries)  # cached phases only
    assert saved == [True]
    model = keras.saving.load_model(tmp_path / attrs["kept_model"], safe_mode=True)
    assert model.compiled and model.loss == "sparse_categorical_crossentropy"
    x_val = objective._x_val
    loss = model.evaluate(x_val, data.y_val, batch_size=8, verbose=0, return_dict=True)["loss"]
    assert loss == pytest.approx(attrs["best_val_loss"], rel=1e-4)

    trained, _, _ = objective.train(
        optuna.create_study().ask(), TrialParams(1, 1e-3, 0.0, 1e-5, "frozen")
    )
    assert trained.compiled
