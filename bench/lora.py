"""LoRA against full fine-tuning of the same layers, on KerasHub backbones built locally.

    nice -n 10 python bench/lora.py [--backbones resnet,vit] [--ranks 4,16] [--rounds N]

Each backbone is built with random weights and saved as a KerasHub preset folder, as
``tests/objectives/test_kerashub.py`` builds one (no download), then loaded the way a study's
``model.source: kerashub`` loads it (unfrozen by blocks). The same top blocks train in every
variant: fully (``full``), or with LoRA at each rank (``search_space.lora_rank``: the Dense,
EinsumDense and Conv layers in them train a low-rank update of their kernels; biases,
normalisation layers and the new head train fully). Each variant runs alone in its own child
process, one after the other (with ``--rounds``, again in the reverse order, and so on), on the
same random images:

- trainable parameters of the whole model (head included);
- peak memory: the child's peak resident set (``ru_maxrss``), and how much the fit added to it
  over the resident set of the built and compiled model (on a GPU, also the device's peak);
- seconds per epoch: the median of the epochs after the first (the first traces the step).

Backbones: ``resnet``, a ResNet (basic blocks, 64x64 images, 3 stages), the top 2 blocks
unfrozen; ``vit``, a ViT (32x32 images, patches of 4, 6 transformer layers of width 256), whose
encoder KerasHub builds as one layer: its block is the whole encoder. The head is thaw's own
(``build_model``: the ViT's class token, a ResNet's feature map averaged), as in ``thaw run``.
Each variant trains the loaded backbone itself, in its own throwaway process (``thaw run``
trains a copy of it per trial).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

#: backbone -> (its KerasHub class and arguments, the blocks unfrozen)
BACKBONES: dict[str, tuple[str, dict[str, Any], int]] = {
    "resnet": (
        "ResNetBackbone",
        {
            "input_conv_filters": [64],
            "input_conv_kernel_sizes": [3],
            "stackwise_num_filters": [64, 128, 256],
            "stackwise_num_blocks": [2, 2, 2],
            "stackwise_num_strides": [1, 2, 2],
            "block_type": "basic_block",
            "image_shape": (64, 64, 3),
        },
        2,
    ),
    "vit": (
        "ViTBackbone",
        {
            "image_shape": (32, 32, 3),
            "patch_size": 4,
            "num_layers": 6,
            "num_heads": 4,
            "hidden_dim": 256,
            "mlp_dim": 1024,
        },
        1,
    ),
}
IMAGES = 512
BATCH = 32
CLASSES = 5


def rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def make_preset(name: str, folder: Path) -> None:
    import keras
    import keras_hub

    cls, kwargs, _ = BACKBONES[name]
    keras.utils.set_random_seed(0)
    getattr(keras_hub.models, cls)(**kwargs).save_to_preset(str(folder))


def variant(name: str, preset: Path, rank: int, epochs: int) -> dict[str, Any]:
    """One variant, in this process: its figures."""
    import keras
    import numpy as np

    from thaw.objectives import (
        ModelSource,
        build_model,
        compile_model,
        count_trainable_weights,
        freeze,
        load_pretrained,
    )
    from thaw.objectives._lora import enable_lora

    _, kwargs, blocks = BACKBONES[name]
    pretrained = load_pretrained(
        ModelSource(kind="kerashub", name=str(preset), unfreeze_by="blocks")
    )
    keras.utils.set_random_seed(0)
    # The loaded backbone itself, trained in this throwaway process (no second copy in memory).
    base = pretrained.model
    freeze(base, blocks, "frozen", "blocks")
    model = build_model(base, CLASSES, 0.1)
    full = count_trainable_weights(model)
    lora_layers = enable_lora(base, rank)
    compile_model(model, 1e-3, 1e-4)
    rng = np.random.default_rng(0)
    x = rng.random((IMAGES, *kwargs["image_shape"]), dtype=np.float32)
    y = np.arange(IMAGES) % CLASSES
    times: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            times.append(time.perf_counter() - self.start)

    gpu_peak = None
    before = rss_mib()
    model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0, callbacks=[Timer()])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            gpu_peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    except (ImportError, ValueError):
        pass
    return {
        "backbone": name,
        "variant": f"LoRA rank {rank}" if rank else "full",
        "base_weights": int(sum(int(np.prod(w.shape)) for w in base.weights)),
        "trainable": count_trainable_weights(model),
        "trainable_full": full,
        "lora_layers": len(lora_layers),
        "peak_rss_mib": round(peak),
        "fit_added_mib": round(peak - before),
        "gpu_peak_mib": None if gpu_peak is None else round(gpu_peak),
        "s_per_epoch": round(statistics.median(times[1:] or times), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--backbones", default="resnet,vit")
    parser.add_argument("--ranks", default="4,16")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument(
        "--rounds", type=int, default=1, help="runs of each variant, alternating the order"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)  # name:rank:preset
    parser.add_argument("--make-preset", help=argparse.SUPPRESS)  # name:folder
    args = parser.parse_args()
    if args.make_preset:
        name, folder = args.make_preset.split(":", 1)
        make_preset(name, Path(folder))
        return
    if args.child:
        name, rank, preset = args.child.split(":", 2)
        print(json.dumps(variant(name, Path(preset), int(rank), args.epochs)))
        return
    ranks = [0, *(int(r) for r in args.ranks.split(","))]
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.backbones.split(","):
            preset = Path(tmp) / name
            subprocess.run(
                [sys.executable, __file__, "--make-preset", f"{name}:{preset}"], check=True
            )
            for round_ in range(args.rounds):  # every other round in the reverse order
                for rank in ranks if round_ % 2 == 0 else ranks[::-1]:
                    out = subprocess.run(
                        [
                            sys.executable,
                            __file__,
                            "--child",
                            f"{name}:{rank}:{preset}",
                            "--epochs",
                            str(args.epochs),
                        ],
                        check=True,
                        capture_output=True,
                        text=True,
                    )
                    row = json.loads(out.stdout.strip().splitlines()[-1])
                    runs.setdefault((name, rank), []).append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
    gpu = any(r["gpu_peak_mib"] is not None for rows in runs.values() for r in rows)
    print(
        "| backbone | variant | trainable parameters | peak RSS MiB | fit added MiB |"
        + (" GPU peak MiB |" if gpu else "")
        + " s/epoch (median of the runs, their range) |"
    )
    print("|---|---|---:|---:|---:|" + ("---:|" if gpu else "") + "---:|")
    for rows in runs.values():
        r = rows[0]
        times = [row["s_per_epoch"] for row in rows]
        spread = f" ({min(times):.2f} to {max(times):.2f})" if len(times) > 1 else ""
        print(
            f"| {r['backbone']} | {r['variant']} | {r['trainable']:,} | "
            f"{max(row['peak_rss_mib'] for row in rows)} | "
            f"{max(row['fit_added_mib'] for row in rows)} |"
            + (f" {max(row['gpu_peak_mib'] or 0 for row in rows)} |" if gpu else "")
            + f" {statistics.median(times):.2f}{spread} |"
        )


if __name__ == "__main__":
    main()
