"""Control for the memory line of bench/speed.py: RSS of a bare Keras loop, no thaw trial at all.

Each iteration: clear_session, build a tiny CNN, compile (AdamW), fit one epoch, delete, gc. Two
variants, each in a fresh child process so one's memory cannot hide in the other's:

- ``keep``: the loop as is. TensorFlow's gradient registry keeps one ``CustomGradient-<uid>``
  entry per traced ``tf.custom_gradient`` op, and with it the traced train-step graph.
- ``trim``: each iteration inside ``thaw.objectives._release.released_custom_gradients()``, which
  drops those entries when the iteration ends (what every thaw trial does).

    nice -n 10 python bench/memory_bare_keras.py [--iterations 30]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def rss() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def loop(variant: str, iterations: int) -> None:
    """One variant; prints ``iteration rss_mib registry_entries`` at 10, 20, ... iterations."""
    import keras
    import numpy as np

    from thaw.objectives._release import custom_gradient_count, released_custom_gradients

    rng = np.random.default_rng(1)
    x = rng.random((64, 16, 16, 3), dtype=np.float32)
    y = np.arange(64) % 3
    for i in range(1, iterations + 1):
        keras.backend.clear_session()
        release = released_custom_gradients() if variant == "trim" else contextlib.nullcontext()
        with release:
            inp = keras.Input((16, 16, 3))
            h = keras.layers.Conv2D(8, 3)(inp)
            h = keras.layers.BatchNormalization()(h)
            h = keras.layers.GlobalAveragePooling2D()(h)
            out = keras.layers.Dense(3, activation="softmax")(h)
            m = keras.Model(inp, out)
            m.compile(
                optimizer=keras.optimizers.AdamW(1e-3),
                loss="sparse_categorical_crossentropy",
                metrics=["accuracy"],
            )
            m.fit(x, y, validation_data=(x, y), batch_size=16, epochs=1, verbose=0)
            del m
        gc.collect()
        if i % 10 == 0:
            print(i, round(rss(), 1), custom_gradient_count(), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=30, help="a multiple of 10, >= 20")
    parser.add_argument("--variant", choices=("keep", "trim"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        loop(args.variant, args.iterations)
        return
    n = args.iterations
    for variant in ("keep", "trim"):
        out = subprocess.run(
            [sys.executable, __file__, "--variant", variant, "--iterations", str(n)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        marks = {int(i): (float(r), int(c)) for i, r, c in (ln.split() for ln in out.splitlines())}
        (first, _), (last, entries) = marks[10], marks[n]
        steps = " ".join(f"{r:.0f}" for r, _ in marks.values())
        print(
            f"bare keras loop, {variant:4}: RSS at iterations {', '.join(map(str, marks))}: "
            f"{steps} MiB; iteration {n}/10 {last / first:.3f}x, "
            f"{(last - first) / (n - 10):.2f} MiB/iteration; {entries} CustomGradient entries "
            "left in the registry"
        )


if __name__ == "__main__":
    main()
