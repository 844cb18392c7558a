"""A second real case next to the demo: letters rendered from the font Pillow ships, a residual
network pretrained on ten of them, and a shifted target domain of five other letters.

The source domain is clean dark glyphs on light paper, 300 per class, used only to pretrain.
The target domain asks for *other* letters (the source classifier cannot be reused, a new head
must be learned on the pretrained features), photographed badly: tinted ink and paper, sometimes
inverted (light ink on dark), low contrast, blurred, at half resolution and noisy, with only 30
training images per class. Glyphs vary by size, stroke width (faux bold), rotation, shear (faux
italic) and position, so the classes are learnable but not trivial.

Only Pillow's built-in FreeType font (``ImageFont.load_default(size=...)``, Pillow >= 10.1) is
used, so a fresh machine renders the same images without system fonts. Everything is seeded and
deterministic; the pretrained model is cached like the demo's, in ``$THAW_CACHE_DIR`` or
``~/.cache/thaw``.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from thaw.objectives._data import ArrayData
from thaw.objectives._demo import default_cache_dir, pretrain_to_cache

if TYPE_CHECKING:
    import keras

_logger = logging.getLogger(__name__)

#: Letters the network is pretrained on (the source classifier's classes, in order).
GLYPHS_SOURCE_CLASSES: tuple[str, ...] = ("A", "B", "C", "D", "E", "F", "G", "H", "K", "L")
#: Letters of the target task: none of them is a source class.
GLYPHS_TARGET_CLASSES: tuple[str, ...] = ("M", "N", "P", "R", "S")
GLYPHS_IMAGE_SIZE = 32
#: Name of the layer whose output is the pretrained feature vector (where the head is cut).
GLYPHS_FEATURE_LAYER = "features"
#: Bump when the renderer or the architecture changes, so cached models are rebuilt.
_GLYPHS_VERSION = 2
#: As in the demo: pretrained convolution kernels are scaled down (function-preserving, each
#: following BatchNorm absorbs it), like ImageNet networks whose kernels weight decay shrank.
KERNEL_SCALE = 0.4
#: Glyphs are drawn on a canvas this many times the image size, then reduced (antialiasing).
_SUPERSAMPLE = 2


@dataclass(frozen=True)
class GlyphDomain:
    """How a domain looks: ink and paper colours, inversion, contrast, blur, resolution, noise.

    ``ink`` and ``paper`` are RGB ranges ``(low, high)`` per channel; ``invert_fraction`` of the
    images swap them (light ink on dark paper); ``blur`` is a Gaussian radius in output pixels;
    ``downsample`` renders at ``size // downsample`` then scales back up.
    """

    ink: tuple[tuple[float, float], tuple[float, float], tuple[float, float]]
    paper: tuple[tuple[float, float], tuple[float, float], tuple[float, float]]
    invert_fraction: float
    contrast: float
    blur: float
    downsample: int
    noise: float


GLYPHS_SOURCE_DOMAIN = GlyphDomain(
    ink=((0, 90), (0, 90), (0, 90)),
    paper=((170, 250), (170, 250), (170, 250)),
    invert_fraction=0.0,
    contrast=1.0,
    blur=0.0,
    downsample=1,
    noise=3.0,
)
GLYPHS_TARGET_DOMAIN = GlyphDomain(
    # Blue ink on brownish paper, 30% of the images inverted, lower contrast, blurred, noisy.
    ink=((0, 50), (40, 100), (80, 150)),
    paper=((150, 200), (120, 170), (70, 120)),
    invert_fraction=0.3,
    contrast=0.8,
    blur=0.6,
    downsample=2,
    noise=8.0,
)


@lru_cache(maxsize=64)
def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no scalable built-in font
        raise RuntimeError(
            "the glyphs case needs Pillow >= 10.1 built with FreeType "
            "(ImageFont.load_default(size=...)); upgrade Pillow"
        ) from None


def _glyph_mask(letter: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A float mask in [0, 1] of ``letter`` at a random size, weight, slant, angle and place."""
    from PIL import Image, ImageDraw

    canvas = size * _SUPERSAMPLE
    font_size = int(rng.integers(int(canvas * 0.45), int(canvas * 0.75)))
    stroke = int(rng.integers(0, max(1, font_size // 12) + 1))
    img = Image.new("L", (canvas * 2, canvas * 2), 0)
    draw = ImageDraw.Draw(img)
    draw.text(
        (canvas, canvas),
        letter,
        fill=255,
        font=_font(font_size),
        anchor="mm",
        stroke_width=stroke,
        stroke_fill=255,
    )
    # Rotation, shear and translation about the centre, in one affine map (output -> input).
    theta = np.deg2rad(rng.uniform(-20, 20))
    shear = rng.uniform(-0.3, 0.3)
    scale = rng.uniform(0.85, 1.15)
    shift = rng.uniform(-0.15, 0.15, size=2) * canvas
    cos, sin = np.cos(theta), np.sin(theta)
    forward = np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, shear], [0.0, 1.0]]) * scale
    inverse = np.linalg.inv(forward)
    centre_out = np.array([canvas / 2, canvas / 2]) + shift
    centre_in = np.array([canvas, canvas], dtype=np.float64)
    offset = centre_in - inverse @ centre_out
    coeffs = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])
    out = img.transform(
        (canvas, canvas), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR
    )
    out = out.resize((size, size), Image.Resampling.BOX)
    return np.asarray(out, dtype=np.float32) / 255.0


def render_glyphs(
    n: int,
    letters: tuple[str, ...],
    domain: GlyphDomain,
    seed: int,
    size: int = GLYPHS_IMAGE_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """Render ``n`` uint8 images ``(n, size, size, 3)`` of ``letters`` and their labels (the
    index in ``letters``), balanced over classes."""
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(letters)
    rng.shuffle(labels)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        mask = _glyph_mask(letters[int(label)], size, rng)[..., None]
        ink = np.array([rng.uniform(lo, hi) for lo, hi in domain.ink], dtype=np.float32)
        paper = np.array([rng.uniform(lo, hi) for lo, hi in domain.paper], dtype=np.float32)
        if rng.random() < domain.invert_fraction:
            ink, paper = paper, ink
        img = mask * ink + (1.0 - mask) * paper
        mean = img.mean()
        img = (img - mean) * domain.contrast + mean
        if domain.blur > 0 or domain.downsample > 1:
            pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
            if domain.blur > 0:
                pil = pil.filter(ImageFilter.GaussianBlur(domain.blur))
            if domain.downsample > 1:
                small = size // domain.downsample
                pil = pil.resize((small, small), Image.Resampling.BOX)
                pil = pil.resize((size, size), Image.Resampling.BILINEAR)
            img = np.asarray(pil, dtype=np.float32)
        img = img + rng.normal(0, domain.noise, size=img.shape)
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int32)


def glyphs_source_data(
    seed: int = 0, per_class: int = 300, size: int = GLYPHS_IMAGE_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """The clean source domain (only for pretraining): images and labels over the source
    letters."""
    n = per_class * len(GLYPHS_SOURCE_CLASSES)
    return render_glyphs(n, GLYPHS_SOURCE_CLASSES, GLYPHS_SOURCE_DOMAIN, seed + 100, size)


def glyphs_target_data(
    seed: int = 0, train_per_class: int = 30, val_per_class: int = 60
) -> ArrayData:
    """The shifted target domain: other letters, a small training set and a validation set."""
    k = len(GLYPHS_TARGET_CLASSES)
    x_train, y_train = render_glyphs(
        train_per_class * k, GLYPHS_TARGET_CLASSES, GLYPHS_TARGET_DOMAIN, seed + 1
    )
    x_val, y_val = render_glyphs(
        val_per_class * k, GLYPHS_TARGET_CLASSES, GLYPHS_TARGET_DOMAIN, seed + 2
    )
    return ArrayData(
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        class_names=GLYPHS_TARGET_CLASSES,
        source=f"glyphs target domain (seed {seed})",
    )


def build_glyphs_network(
    num_classes: int = len(GLYPHS_SOURCE_CLASSES), size: int = GLYPHS_IMAGE_SIZE
) -> keras.Model:
    """A small residual network: a strided stem, three residual blocks (Conv+BatchNorm+ReLU
    twice with an ``Add`` skip, a strided 1x1 projection where the shape changes), global average
    pooling into ``features`` (a Dense+BatchNorm+ReLU embedding), then a softmax over the source
    letters."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=(size, size, 3), name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    x = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.Activation("relu", name="stem_relu")(x)
    for i, (filters, stride) in enumerate(((16, 1), (32, 2), (64, 2)), start=1):
        shortcut = x
        y = layers.Conv2D(
            filters, 3, strides=stride, padding="same", use_bias=False, name=f"res{i}_conv1"
        )(x)
        y = layers.BatchNormalization(name=f"res{i}_bn1")(y)
        y = layers.Activation("relu", name=f"res{i}_relu1")(y)
        y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"res{i}_conv2")(y)
        y = layers.BatchNormalization(name=f"res{i}_bn2")(y)
        if stride != 1 or shortcut.shape[-1] != filters:
            shortcut = layers.Conv2D(
                filters, 1, strides=stride, use_bias=False, name=f"res{i}_proj"
            )(shortcut)
            shortcut = layers.BatchNormalization(name=f"res{i}_proj_bn")(shortcut)
        x = layers.Add(name=f"res{i}_add")([y, shortcut])
        x = layers.Activation("relu", name=f"res{i}_out")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dense(64, use_bias=False, name="embed")(x)
    x = layers.BatchNormalization(name="embed_bn")(x)
    x = layers.Activation("relu", name=GLYPHS_FEATURE_LAYER)(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="source_head")(x)
    return keras.Model(inputs, outputs, name="thaw_glyphs_resnet")


def rescale_conv_kernels(model: keras.Model, scale: float) -> int:
    """Multiply each Conv2D kernel that feeds a BatchNormalization layer directly by ``scale``
    and scale that layer's moving mean and variance by ``scale`` and ``scale**2`` (the network
    computes the same function in inference mode). Pairs are found through the graph, not the
    layer order, so residual branches are handled. Returns the number of pairs rescaled."""
    import keras

    done = 0
    for bn in model.layers:
        if not isinstance(bn, keras.layers.BatchNormalization):
            continue
        producer = bn.input._keras_history.operation
        if isinstance(producer, keras.layers.Conv2D):
            producer.kernel.assign(producer.kernel * scale)
            bn.moving_mean.assign(bn.moving_mean * scale)
            bn.moving_variance.assign(bn.moving_variance * scale**2)
            done += 1
    return done


def glyphs_pretrained_model_path(
    seed: int = 0,
    cache_dir: Path | None = None,
    source_per_class: int = 300,
    epochs: int = 8,
) -> Path:
    """Return the cached residual network pretrained on the source letters, pretraining it once
    if needed. Smaller ``source_per_class``/``epochs`` give a quicker (weaker) model for tests."""
    cache_dir = cache_dir or default_cache_dir()
    key = hashlib.sha256(
        f"{_GLYPHS_VERSION}-{seed}-{source_per_class}-{epochs}".encode()
    ).hexdigest()[:12]
    path = cache_dir / f"glyphs-pretrained-{key}.keras"
    if path.exists():
        return path
    _logger.info("Pretraining the glyphs model on the source letters (runs once): %s", path)
    x, y = glyphs_source_data(seed, per_class=source_per_class)
    return pretrain_to_cache(
        path,
        lambda: build_glyphs_network(len(GLYPHS_SOURCE_CLASSES)),
        x,
        y,
        seed,
        epochs,
        lambda model: rescale_conv_kernels(model, KERNEL_SCALE),
    )
