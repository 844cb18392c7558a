"""The embedded default: a source domain, a shifted target domain and a model pretrained on the
source, all generated deterministically with numpy so nothing is downloaded.

The source domain is clean, bright, full-resolution renderings of simple shapes; the target domain
is the same shapes, poorly lit, noisy, tinted and at half the resolution, like the seed's
"high-resolution birds vs poorly lit low-resolution birds". The target training set is small, so
aggressive fine-tuning overfits it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from thaw.objectives._data import ArrayData

if TYPE_CHECKING:
    import keras

_logger = logging.getLogger(__name__)

DEMO_CLASS_NAMES: tuple[str, ...] = ("disc", "ring", "square", "triangle", "cross", "bar")
DEMO_IMAGE_SIZE = 32
#: Bump when the generator or the architecture changes, so cached models are rebuilt.
_DEMO_VERSION = 4
#: Scale of the pretrained convolution kernels relative to what pretraining left. Large ImageNet
#: networks carry small kernels (weight decay shrinks kernels that BatchNorm makes
#: scale-invariant), which is why a learning rate of 1e-3 can wreck them. The rescale is
#: function-preserving: each following BatchNorm's moving mean and variance absorb it.
KERNEL_SCALE = 0.4
#: Name of the layer whose output is the pretrained feature vector (where the head is cut).
DEMO_FEATURE_LAYER = "features"


@dataclass(frozen=True)
class DemoDomain:
    """How a domain renders: brightness, noise, tint and resolution."""

    brightness: float
    contrast: float
    noise: float
    downsample: int
    tint: tuple[float, float, float]


SOURCE_DOMAIN = DemoDomain(brightness=1.0, contrast=1.0, noise=4.0, downsample=1, tint=(1, 1, 1))
TARGET_DOMAIN = DemoDomain(
    brightness=0.8, contrast=0.9, noise=8.0, downsample=2, tint=(0.9, 1.0, 1.1)
)


def _shape_mask(kind: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask of one shape of class ``kind`` at a random place, scale and rotation."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = rng.uniform(size * 0.35, size * 0.65, size=2)
    r = rng.uniform(size * 0.2, size * 0.32)
    theta = rng.uniform(0, np.pi)
    dy, dx = yy - cy, xx - cx
    # Rotated coordinates.
    u = dx * np.cos(theta) + dy * np.sin(theta)
    v = -dx * np.sin(theta) + dy * np.cos(theta)
    dist = np.sqrt(dx**2 + dy**2)
    name = DEMO_CLASS_NAMES[kind]
    if name == "disc":
        return dist <= r
    if name == "ring":
        return (dist <= r) & (dist >= r * 0.6)
    if name == "square":
        return (np.abs(u) <= r * 0.8) & (np.abs(v) <= r * 0.8)
    if name == "triangle":
        # Equilateral triangle pointing along -v.
        return (v <= r * 0.5) & (v >= -r + 1.7 * np.abs(u))
    if name == "cross":
        w = r * 0.3
        return ((np.abs(u) <= w) & (np.abs(v) <= r)) | ((np.abs(v) <= w) & (np.abs(u) <= r))
    # bar
    return (np.abs(u) <= r) & (np.abs(v) <= r * 0.3)


def render_images(
    n: int, domain: DemoDomain, seed: int, size: int = DEMO_IMAGE_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Render ``n`` uint8 images ``(n, size, size, 3)`` and labels, balanced over classes."""
    rng = np.random.default_rng(seed)
    num_classes = len(DEMO_CLASS_NAMES)
    labels = np.arange(n) % num_classes
    rng.shuffle(labels)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    tint = np.asarray(domain.tint, dtype=np.float32)
    for i, label in enumerate(labels):
        background = rng.uniform(150, 210) * np.ones(3, dtype=np.float32)
        colour = rng.uniform(0, 110, size=3).astype(np.float32)
        mask = _shape_mask(int(label), size, rng)
        img = np.where(mask[..., None], colour, background)
        # Distractor: a faint random blob shared by every class.
        by, bx = rng.integers(0, size, size=2)
        yy, xx = np.mgrid[0:size, 0:size]
        blob = ((yy - by) ** 2 + (xx - bx) ** 2) <= (size * 0.08) ** 2
        img = np.where(blob[..., None], img * 0.8, img)
        mean = img.mean()
        img = (img - mean) * domain.contrast + mean
        img = img * domain.brightness * tint
        if domain.downsample > 1:
            f = domain.downsample
            small = img.reshape(size // f, f, size // f, f, 3).mean(axis=(1, 3))
            img = np.repeat(np.repeat(small, f, axis=0), f, axis=1)
        img = img + rng.normal(0, domain.noise, size=img.shape)
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int32)


def demo_target_data(
    seed: int = 0, train_per_class: int = 8, val_per_class: int = 60, label_noise: float = 0.0
) -> ArrayData:
    """The shifted target domain: a small training set and a larger validation set.

    ``label_noise`` is the fraction of training labels replaced by another class (a noisy
    target set, as small target sets often are); validation labels stay clean.
    """
    num_classes = len(DEMO_CLASS_NAMES)
    x_train, y_train = render_images(train_per_class * num_classes, TARGET_DOMAIN, seed + 1)
    if label_noise > 0:
        rng = np.random.default_rng(seed + 3)
        flip = rng.random(len(y_train)) < label_noise
        shift = rng.integers(1, num_classes, size=len(y_train))
        y_train = np.where(flip, (y_train + shift) % num_classes, y_train).astype(np.int32)
    x_val, y_val = render_images(val_per_class * num_classes, TARGET_DOMAIN, seed + 2)
    return ArrayData(
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        class_names=DEMO_CLASS_NAMES,
        source=f"demo target domain (seed {seed})",
    )


def default_cache_dir() -> Path:
    """Where pretrained demo models are cached: ``$THAW_CACHE_DIR`` or ``~/.cache/thaw``."""
    env = os.environ.get("THAW_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "thaw"


def build_demo_network(num_classes: int, size: int = DEMO_IMAGE_SIZE) -> keras.Model:
    """The small CNN with BatchNorm that is pretrained on the source domain."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=(size, size, 3), name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    for i, filters in enumerate((16, 32, 64, 96), start=1):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{i}_conv")(x)
        x = layers.BatchNormalization(name=f"block{i}_bn")(x)
        x = layers.Activation("relu", name=f"block{i}_relu")(x)
        if i < 4:
            x = layers.MaxPooling2D(name=f"block{i}_pool")(x)
    x = layers.Conv2D(128, 1, use_bias=False, name="top_conv")(x)
    x = layers.BatchNormalization(name="top_bn")(x)
    x = layers.Activation("relu", name="top_relu")(x)
    x = layers.GlobalAveragePooling2D(name=DEMO_FEATURE_LAYER)(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="source_head")(x)
    return keras.Model(inputs, outputs, name="thaw_demo_cnn")


def rescale_kernels(model: keras.Model, scale: float) -> None:
    """Multiply each convolution kernel that feeds a BatchNormalization layer by ``scale``.

    The BatchNorm layer's moving mean and variance are scaled by ``scale`` and ``scale**2``, so
    the network computes the same function in inference mode.
    """
    import keras

    layers = model.layers
    for conv, bn in zip(layers, layers[1:]):  # noqa: B905 - pairs of neighbours
        if isinstance(conv, keras.layers.Conv2D) and isinstance(
            bn, keras.layers.BatchNormalization
        ):
            conv.kernel.assign(conv.kernel * scale)
            bn.moving_mean.assign(bn.moving_mean * scale)
            bn.moving_variance.assign(bn.moving_variance * scale**2)


def demo_pretrained_model_path(
    seed: int = 0, cache_dir: Path | None = None, source_images: int = 3000, epochs: int = 12
) -> Path:
    """Return the cached source-pretrained demo model, pretraining it once if needed."""
    cache_dir = cache_dir or default_cache_dir()
    key = hashlib.sha256(f"{_DEMO_VERSION}-{seed}-{source_images}-{epochs}".encode()).hexdigest()[
        :12
    ]
    path = cache_dir / f"demo-pretrained-{key}.keras"
    if path.exists():
        return path
    _logger.info("Pretraining the demo model on the source domain (runs once): %s", path)
    x, y = render_images(source_images, SOURCE_DOMAIN, seed + 100)
    return pretrain_to_cache(
        path,
        lambda: build_demo_network(len(DEMO_CLASS_NAMES)),
        x,
        y,
        seed,
        epochs,
        lambda model: rescale_kernels(model, KERNEL_SCALE),
    )


def pretrain_to_cache(
    path: Path,
    build: Callable[[], Any],
    x: np.ndarray,
    y: np.ndarray,
    seed: int,
    epochs: int,
    rescale: Callable[[Any], object],
) -> Path:
    """Pretrain ``build()`` on the source images, rescale its kernels, save it atomically."""
    import keras

    keras.utils.set_random_seed(seed)
    model = build()
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x.astype("float32"), y, batch_size=64, epochs=epochs, verbose=0)
    rescale(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)
    keras.backend.clear_session()
    return path
