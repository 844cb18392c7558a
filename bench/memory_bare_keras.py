"""Control for the memory line of bench/speed.py: RSS of a bare Keras loop, no thaw at all.

Each iteration: clear_session, build a tiny CNN, compile (AdamW), fit one epoch, delete, gc.

    nice -n 10 python bench/memory_bare_keras.py
"""

import gc
import os

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras
import numpy as np


def rss() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


rng = np.random.default_rng(1)
x = rng.random((64, 16, 16, 3), dtype=np.float32)
y = np.arange(64) % 3
marks = {}
for i in range(1, 31):
    keras.backend.clear_session()
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
    if i in (5, 10, 20, 30):
        marks[i] = rss()
        print(i, round(marks[i]), flush=True)
print(
    "bare keras loop RSS trial 30/10:",
    round(marks[30] / marks[10], 3),
    "MiB/iter",
    round((marks[30] - marks[10]) / 20, 2),
)
