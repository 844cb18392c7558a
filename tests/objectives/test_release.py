"""Trials release the custom-gradient entries TensorFlow registers for their traced graphs.

``tf.custom_gradient`` in graph mode adds a ``CustomGradient-<uid>`` entry to TensorFlow's global
gradient registry on every trace, and the entry keeps the traced graph alive
(``objectives/_release.py``). Real fits on a tiny model; the counts are exact, no timing.
"""

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
    cut_base,
)
from thaw.objectives._release import custom_gradient_count, released_custom_gradients

optuna.logging.set_verbosity(optuna.logging.WARNING)

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="the registry is TensorFlow's"
)

Arrays = Callable[..., dict[str, np.ndarray]]


def fit_tiny(
    tiny_cnn: Callable[..., Any], arrays: dict[str, np.ndarray], epochs: int = 1
) -> keras.Model:
    model = tiny_cnn()
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(arrays["x_train"], arrays["y_train"], batch_size=8, epochs=epochs, verbose=0)
    return model


def test_a_bare_fit_leaves_entries_that_the_release_drops(
    tiny_cnn: Callable[..., Any], tiny_arrays: Arrays
) -> None:
    arrays = tiny_arrays()
    before = custom_gradient_count()
    fit_tiny(tiny_cnn, arrays)
    leaked = custom_gradient_count()
    assert leaked > before  # what the release is for: Keras/TF leave entries behind

    with released_custom_gradients():
        model = fit_tiny(tiny_cnn, arrays)
        assert custom_gradient_count() > leaked
    assert custom_gradient_count() == leaked

    # The model keeps training after the release: its train step is already traced.
    weights = [w.copy() for w in model.get_weights()]
    model.fit(arrays["x_train"], arrays["y_train"], batch_size=8, epochs=1, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(weights, model.get_weights(), strict=True))
    # A new model traces anew and registers new names: it trains too.
    fit_tiny(tiny_cnn, arrays)


def test_overlapping_trials_release_when_the_last_one_ends(
    tiny_cnn: Callable[..., Any], tiny_arrays: Arrays
) -> None:
    arrays = tiny_arrays()
    start = custom_gradient_count()
    with released_custom_gradients():
        fit_tiny(tiny_cnn, arrays)
        with released_custom_gradients():
            fit_tiny(tiny_cnn, arrays)
        inner_done = custom_gradient_count()
        # The outer trial may still be tracing: the inner one's end drops nothing.
        assert inner_done > start
        fit_tiny(tiny_cnn, arrays)
    assert custom_gradient_count() == start


@pytest.mark.parametrize("cache_frozen", ["auto", "off"])
def test_custom_gradient_entries_do_not_grow_over_trials(
    tiny_cnn: Callable[..., Any], tiny_arrays: Arrays, tmp_path: Path, cache_frozen: str
) -> None:
    pretrained = PretrainedBase(cut_base(tiny_cnn(), "features"), "tiny")
    data = ArrayData(**tiny_arrays(), class_names=("a", "b", "c"))
    space = SearchSpace(
        unfrozen_layers=IntRange(0, 2),
        learning_rate=FloatRange(1e-3, 1e-2, log=True),
        dropout=FloatRange(0.0, 0.3),
        weight_decay=FloatRange(1e-6, 1e-4, log=True),
    )
    objective = FineTuneObjective(
        pretrained, data, space, TrainSettings(epochs=3, batch_size=8, cache_frozen=cache_frozen)
    )
    study = optuna.create_study(
        study_name="release",
        storage=f"sqlite:///{tmp_path / 'release.db'}",
        sampler=optuna.samplers.RandomSampler(seed=3),
    )
    for unfrozen in (0, 1, 2, 0, 2):  # feature extraction, partial and full fine-tuning
        study.enqueue_trial({"unfrozen_layers": unfrozen})
    counts: list[int] = []

    def count(study: optuna.Study, trial: FrozenTrial) -> None:
        counts.append(custom_gradient_count())

    start = custom_gradient_count()
    study.optimize(objective, n_trials=5, callbacks=[count])

    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    # Each trial traced a train step (a bare fit would have added entries, see above);
    # none of them is left behind.
    assert counts == [start] * 5


def test_frozen_heap_freezes_once_and_unfreezes_on_exit() -> None:
    import gc
    import weakref

    from thaw.objectives._release import frozen_heap, settle_heap

    class Node:
        pass

    assert gc.get_freeze_count() == 0
    with frozen_heap():
        frozen = gc.get_freeze_count()
        assert frozen > 0
        with frozen_heap():  # nested: freezes nothing more, unfreezes nothing
            assert gc.get_freeze_count() == frozen
        assert gc.get_freeze_count() == frozen
        # what a trial makes is still collected: a reference cycle made inside
        a, b = Node(), Node()
        a.other, b.other = b, a  # type: ignore[attr-defined]
        gone = weakref.ref(a)
        del a, b
        gc.collect()
        assert gone() is None
        # after the first trial: what it left alive is frozen too, once
        kept = Node()
        settle_heap()
        settled = gc.get_freeze_count()
        assert settled > frozen
        Node()
        settle_heap()
        assert gc.get_freeze_count() == settled
        del kept
    assert gc.get_freeze_count() == 0
    settle_heap()  # outside frozen_heap: nothing
    assert gc.get_freeze_count() == 0
