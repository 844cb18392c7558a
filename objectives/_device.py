"""Device set-up for a worker process: GPU memory growth, mixed precision, threads, determinism.

Call :func:`configure_device` once per process, before any model is built.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import keras

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceInfo:
    backend: str
    gpus: tuple[str, ...]
    mixed_precision: bool
    deterministic: bool
    determinism_reason: str


def list_gpus() -> tuple[str, ...]:
    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            return tuple(g.name for g in tf.config.list_physical_devices("GPU"))
        if backend == "jax":
            import jax

            return tuple(str(d) for d in jax.devices() if d.platform == "gpu")
        if backend == "torch":
            import torch

            return tuple(f"cuda:{i}" for i in range(torch.cuda.device_count()))
    except Exception as exc:  # noqa: BLE001 - no GPU runtime means no GPU
        _logger.debug("No GPU found: %s", exc)
    return ()


def configure_device(
    mixed_precision: str = "auto",
    threads: int | None = None,
    workers: int = 1,
    deterministic: bool = True,
) -> DeviceInfo:
    """Set up this process. ``mixed_precision``: ``auto`` (on with a GPU), ``on`` or ``off``."""
    backend = keras.backend.backend()
    if threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    gpus: tuple[str, ...] = ()
    if backend == "tensorflow":
        import tensorflow as tf

        if threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(max(1, threads // 2))
            except RuntimeError as exc:  # already initialised in this process
                _logger.debug("Threads not set: %s", exc)
        for gpu in tf.config.list_physical_devices("GPU"):
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError as exc:
                _logger.debug("Memory growth not set: %s", exc)
        gpus = list_gpus()
    else:
        gpus = list_gpus()
    use_mp = mixed_precision == "on" or (mixed_precision == "auto" and bool(gpus))
    keras.mixed_precision.set_global_policy("mixed_float16" if use_mp else "float32")
    reasons = []
    if gpus:
        reasons.append("GPU kernels (cuDNN convolutions, atomics) are not bit-reproducible")
    if workers > 1:
        reasons.append(f"{workers} workers sample in parallel, so trial order depends on timing")
    if not deterministic:
        reasons.append("determinism was turned off")
    is_deterministic = not reasons
    if is_deterministic and backend == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.experimental.enable_op_determinism()
        except Exception as exc:  # noqa: BLE001
            reasons.append(f"TensorFlow op determinism unavailable: {exc}")
            is_deterministic = False
    reason = (
        "; ".join(reasons)
        if reasons
        else f"CPU, one worker, seeded, {backend} deterministic ops: reruns give the same values"
    )
    info = DeviceInfo(backend, gpus, use_mp, is_deterministic, reason)
    _logger.info("Device: %s", info)
    return info
