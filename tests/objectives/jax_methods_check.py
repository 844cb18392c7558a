"""Run by ``test_finetune.py`` where JAX is installed: the methods train on the JAX backend.

``python jax_methods_check.py <tests folder>``; prints ``JAX OK`` when every check holds.
"""

import os
import sys

os.environ["KERAS_BACKEND"] = "jax"

import keras  # noqa: E402
import numpy as np  # noqa: E402

from thaw.objectives import cut_base  # noqa: E402
from thaw.objectives._finetune import (  # noqa: E402
    FineTuneAdamW,
    augmentation,
    model_base,
    variable_plan,
)
from thaw.objectives._model import build_model, freeze  # noqa: E402

sys.path.insert(0, sys.argv[1])
from conftest import build_tiny_cnn  # noqa: E402


def run(factor: float, l2sp: float, aug: float) -> tuple[list[float], dict[str, float]]:
    """Three epochs of the tiny CNN's whole base; the loss, and how far each conv moved."""
    keras.utils.set_random_seed(0)
    base = cut_base(build_tiny_cnn(), "features")
    before = {n: np.array(base.get_layer(n).get_weights()[0]) for n in ("conv1", "conv2")}
    freeze(base, 2)
    model = build_model(base, 3, 0.0, augment=augmentation(aug, (0.0, 255.0)))
    scales, anchored = variable_plan(model_base(model), 2, "layers", factor)
    optimizer = FineTuneAdamW(
        learning_rate=3e-3, weight_decay=1.0, rate_scales=scales, anchored=anchored, l2sp=l2sp
    )
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (48, 8, 8, 3)).astype("float32")
    y = np.arange(48) % 3
    history = model.fit(x, y, batch_size=8, epochs=3, verbose=0)
    moved = {
        n: float(np.linalg.norm(base.get_layer(n).get_weights()[0] - w)) for n, w in before.items()
    }
    return history.history["loss"], moved


assert keras.backend.backend() == "jax"
plain_loss, plain = run(1.0, 0.0, 0.0)
_, decayed = run(0.5, 0.0, 0.0)
assert decayed["conv1"] / decayed["conv2"] < 0.75 * plain["conv1"] / plain["conv2"], decayed
_, anchored = run(1.0, 1.0, 0.0)
assert all(anchored[k] < plain[k] for k in anchored), (anchored, plain)
augmented_loss, _ = run(1.0, 0.0, 1.0)
assert augmented_loss != plain_loss and all(np.isfinite(augmented_loss))
print("JAX OK")
