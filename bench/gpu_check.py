"""GPU check for a machine with a GPU (prepared, not yet run: no GPU so far).

Keras on the JAX backend (TensorFlow is too large to carry to the GPU machine). Measures training
images per second of a thaw trial against a bare ``model.fit`` of the same model, data and
epochs, with mixed precision off/on and XLA (``jit_compile``) off/on, caching off so both do the
same work; then a feature-extraction trial with caching on. Sized to a few minutes on one GPU:

    pip install "jax[cuda12]" keras optuna numpy pyyaml   # whatever the machine lacks
    KERAS_BACKEND=jax python bench/gpu_check.py [--images 2048 --size 160 --epochs 3]

Targets: thaw trial >= 0.95x bare-fit images/s; mixed precision >= 1.5x where the
model allows. Prints one line per variant and the ratios.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    import keras
    import numpy as np
    import optuna

    from thaw.objectives import (
        ArrayData,
        FineTuneObjective,
        FloatRange,
        IntRange,
        PretrainedBase,
        SearchSpace,
        TrainSettings,
        TrialParams,
        build_model,
        compile_model,
        freeze,
        list_gpus,
    )
    from thaw.objectives._cache import FeatureCache

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}, GPUs {list_gpus()}")
    shape = (args.size, args.size, 3)
    rng = np.random.default_rng(0)
    n_val = args.images // 4
    data = ArrayData(
        x_train=rng.integers(0, 256, (args.images, *shape), dtype=np.uint8),
        y_train=(np.arange(args.images) % 10).astype("int32"),
        x_val=rng.integers(0, 256, (n_val, *shape), dtype=np.uint8),
        y_val=(np.arange(n_val) % 10).astype("int32"),
        class_names=tuple(f"c{i}" for i in range(10)),
    )
    x_train, x_val = data.x_train.astype("float32"), data.x_val.astype("float32")

    def pretrained_base() -> PretrainedBase:
        keras.utils.set_random_seed(0)
        net = keras.applications.MobileNetV2(input_shape=shape, weights=None, include_top=False)
        return PretrainedBase(net, "MobileNetV2 (weights=None)")

    def images_per_s(seconds: float) -> float:
        return args.images * args.epochs / seconds

    results: dict[tuple[str, bool, bool], float] = {}
    for mixed in (False, True):
        keras.config.set_dtype_policy("mixed_float16" if mixed else "float32")
        pretrained = pretrained_base()  # built under the policy being measured
        space = SearchSpace(
            unfrozen_layers=IntRange(0, pretrained.num_layers),
            learning_rate=FloatRange(1e-4, 1e-2, log=True),
            dropout=FloatRange(0.0, 0.5),
            weight_decay=FloatRange(1e-6, 1e-3, log=True),
        )
        params = TrialParams(pretrained.num_layers, 1e-3, 0.2, 1e-4)
        for xla in (False, True):
            # bare fit: model built and compiled outside the timing, as a user would
            base = pretrained.instantiate()
            freeze(base, params.unfrozen_layers)
            model = build_model(base, data.num_classes, params.dropout)
            compile_model(model, params.learning_rate, params.weight_decay, jit_compile=xla)
            t0 = time.perf_counter()
            model.fit(
                x_train,
                data.y_train,
                validation_data=(x_val, data.y_val),
                batch_size=args.batch_size,
                epochs=args.epochs,
                verbose=0,
            )
            results[("bare", mixed, xla)] = images_per_s(time.perf_counter() - t0)
            del model, base
            settings = TrainSettings(
                epochs=args.epochs, batch_size=args.batch_size, jit_compile=xla, cache_frozen="off"
            )
            objective = FineTuneObjective(pretrained, data, space, settings)
            study = optuna.create_study()
            study.enqueue_trial(vars(params))
            t0 = time.perf_counter()
            study.optimize(objective, n_trials=1)
            results[("thaw", mixed, xla)] = images_per_s(time.perf_counter() - t0)
            print(
                f"mixed precision {'on ' if mixed else 'off'}, XLA {'on ' if xla else 'off'}: "
                f"bare fit {results[('bare', mixed, xla)]:.0f} img/s, thaw trial "
                f"{results[('thaw', mixed, xla)]:.0f} img/s -> "
                f"{results[('thaw', mixed, xla)] / results[('bare', mixed, xla)]:.3f}x "
                "(target >= 0.95x)",
                flush=True,
            )
        if mixed:
            for xla in (False, True):
                gain = results[("thaw", True, xla)] / results[("thaw", False, xla)]
                print(f"mixed precision gain, XLA {'on' if xla else 'off'}: {gain:.2f}x (>= 1.5x)")
        # feature extraction with the frozen-prefix cache, XLA on
        settings = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, jit_compile=True)
        cached = FineTuneObjective(
            pretrained, data, space, settings, feature_cache=FeatureCache(None)
        )
        plain = FineTuneObjective(
            pretrained, data, space, TrainSettings(**{**vars(settings), "cache_frozen": "off"})
        )
        fe = {"unfrozen_layers": 0, "learning_rate": 1e-3, "dropout": 0.2, "weight_decay": 1e-4}
        times = {}
        for name, obj in (("off", plain), ("cold", cached), ("warm", cached)):
            study = optuna.create_study()
            study.enqueue_trial(fe)
            t0 = time.perf_counter()
            study.optimize(obj, n_trials=1)
            times[name] = time.perf_counter() - t0
        print(
            f"feature extraction, mixed precision {'on' if mixed else 'off'}: uncached "
            f"{times['off']:.2f} s, cached {times['cold']:.2f} s cold / {times['warm']:.2f} s "
            f"warm -> {times['off'] / times['warm']:.2f}x",
            flush=True,
        )
        keras.backend.clear_session()
    keras.config.set_dtype_policy("float32")


if __name__ == "__main__":
    main()
