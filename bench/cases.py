"""The generalisation suite of ``bench/search_vs_peers.py``: twelve fine-tuning cases, each fully
determined by the fixed parameters below and a seed.

Each case pretrains a network on a generated *source* task (cached), renders a shifted *target*
task as an ``.npz`` file (``x_train, y_train, x_val, y_val``) and writes a study file that loads
both (``model: {source: file}``, ``data: {source: npz}``), so thaw runs it exactly as a user would.
Images come only from numpy (the demo's shapes) and Pillow's built-in font (the glyphs' letters);
``keras.applications`` networks are built with ``weights=None`` and pretrained here. Nothing is
downloaded.

Case: architecture; source it is pretrained on; target shift; training images per class;
what training BatchNorm is expected to do.

* a: demo CNN (4 conv+BN blocks); 6 shapes; new classes (6 letters), dark, blue tint, low
  contrast, half resolution, noise; 8 per class; either way.
* b: glyphs residual net; 10 letters; new classes (5 letters), ink and paper inverted in every
  image; 30 per class; training/adapting BatchNorm helps.
* c: MobileNetV2 alpha 0.35, 32 px; 10 letters; new classes (5 letters), red ink on yellow
  paper, noise; 10 per class; either way.
* d: MobileNetV3Small alpha 0.75, 32 px; 10 letters; the same classes (4 source letters), strong
  blur, low contrast; 100 per class; adapting/training BatchNorm helps.
* e: glyphs residual net; 10 letters; new classes (5 letters), mild tint and noise; 5 per class;
  training BatchNorm hurts.
* f: demo CNN; 6 shapes; the same classes, inverted (255 - image) and tinted; 100 per class;
  training/adapting BatchNorm helps.
* g: glyphs residual net; 10 letters; new classes (V to Z), grey ink on grey paper, low contrast,
  blur, half resolution; 15 per class; either way.
* h: demo CNN; 6 shapes; the same classes, dark, low contrast, noisy, half resolution, warm tint;
  10 per class; adapting/training BatchNorm helps.
* i: MobileNetV2 alpha 0.35, 32 px; 10 letters; 5 of the source's classes (E, F, H, K, L), blue
  ink on grey paper, half the images inverted, slight blur; 40 per class; adapting/training
  BatchNorm helps.
* j: demo CNN; 6 shapes; the same classes, overexposed, low contrast, noisy, cool tint; 50 per
  class; adapting/training BatchNorm helps.
* k: glyphs residual net; 10 letters; new classes (J, O, Q, U, I), light green ink on dark
  paper, slight blur, noise; 60 per class; adapting/training BatchNorm helps.
* l: demo CNN; 6 shapes; the same classes, inverted, dark, low contrast, half resolution, green
  tint; 12 per class; either way.

Cases g and h were added after a to f, and after the screen's rate guard
(``thaw.search._budget.rate_guard``), whose rule came from cases b and f: their parameters and
seeds were fixed before thaw ran on them. Cases i and j were added last, to check a rule that
would turn the rate guard on for targets of at least 20 images per class (from cases a, b, e to
h; not kept): their parameters and seeds too were fixed before thaw ran on them. Cases k and l
were added to check a learning rate decaying over each trial (``train.schedule: linear``; not
kept), with their parameters and seeds fixed before thaw ran on them.

The BatchNorm expectation is what the case was designed for: training BatchNorm on a
tiny target (5 images per class, batches of 16 and 9) estimates its batch statistics from a few
images and hurts; a strong input shift (inversion) moves every layer's statistics, so adapting or
training them helps when the target is large enough to estimate them.

The seed (0, 1, 2 are reported) draws the target's training and validation images and seeds
the search; the source network is pretrained once per case (seed 0) and cached under
``$THAW_CACHE_DIR/bench`` (``~/.cache/thaw/bench``).

    python bench/cases.py            # build every case for seeds 0-2; print source accuracy
    python bench/cases.py --cases c,d --seeds 0
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from thaw.objectives._demo import (  # noqa: E402
    DEMO_CLASS_NAMES,
    SOURCE_DOMAIN,
    DemoDomain,
    build_demo_network,
    default_cache_dir,
    pretrain_to_cache,
    render_images,
)
from thaw.objectives._glyphs import (  # noqa: E402
    GLYPHS_SOURCE_CLASSES,
    GLYPHS_SOURCE_DOMAIN,
    KERNEL_SCALE,
    GlyphDomain,
    build_glyphs_network,
    render_glyphs,
    rescale_conv_kernels,
)
from thaw.objectives._model import adapt_batchnorm  # noqa: E402

if TYPE_CHECKING:
    import keras

#: Bump when a generator, a network or a case parameter changes: cached files are rebuilt.
SUITE_VERSION = 1
#: The seeds the suite reports.
SEEDS: tuple[int, ...] = (0, 1, 2)
IMAGE_SIZE = 32


@dataclass(frozen=True)
class Source:
    """The pretraining task: ``kind`` shapes (demo renderer) or letters (glyphs renderer)."""

    kind: str  # "shapes" | "letters"
    classes: tuple[str, ...]
    per_class: int
    epochs: int


@dataclass(frozen=True)
class Target:
    """The fine-tuning task: images of ``classes`` rendered in a shifted domain."""

    kind: str  # "shapes" | "letters"
    classes: tuple[str, ...]
    train_per_class: int
    val_per_class: int
    glyph_domain: GlyphDomain | None = None
    shape_domain: DemoDomain | None = None
    invert: bool = False  # shapes: 255 - image after rendering


@dataclass(frozen=True)
class CaseSpec:
    key: str
    name: str
    architecture: str  # "demo_cnn" | "glyphs_resnet" | "mobilenetv2" | "mobilenetv3small"
    source: Source
    target: Target
    shift: str
    batchnorm: str  # the expectation the case was designed for
    epochs: int = 20  # per trial
    batch_size: int = 16
    budget: int = 150  # Hyperband's (and every peer's) budget; thaw runs at half of it
    quick_budget: int = 40


_LETTERS_SOURCE = Source("letters", GLYPHS_SOURCE_CLASSES, 300, 8)
#: keras.applications networks train from scratch more slowly: more epochs.
_LETTERS_SOURCE_APP = Source("letters", GLYPHS_SOURCE_CLASSES, 300, 16)
_SHAPES_SOURCE = Source("shapes", DEMO_CLASS_NAMES, 500, 12)

CASES: tuple[CaseSpec, ...] = (
    CaseSpec(
        key="a",
        name="a_demo_letters",
        architecture="demo_cnn",
        source=_SHAPES_SOURCE,
        target=Target(
            "letters",
            ("M", "N", "P", "R", "S", "T"),
            train_per_class=8,
            val_per_class=50,
            glyph_domain=GlyphDomain(
                ink=((10, 60), (20, 70), (30, 90)),
                paper=((90, 140), (100, 150), (110, 170)),
                invert_fraction=0.0,
                contrast=0.8,
                blur=0.0,
                downsample=2,
                noise=8.0,
            ),
        ),
        shift="new classes (letters for a shape network); dark, blue tint, low contrast, "
        "half resolution, noise",
        batchnorm="either",
    ),
    CaseSpec(
        key="b",
        name="b_glyphs_inverted",
        architecture="glyphs_resnet",
        source=_LETTERS_SOURCE,
        target=Target(
            "letters",
            ("M", "N", "P", "R", "S"),
            train_per_class=30,
            val_per_class=50,
            glyph_domain=GlyphDomain(
                ink=((0, 90), (0, 90), (0, 90)),
                paper=((170, 250), (170, 250), (170, 250)),
                invert_fraction=1.0,
                contrast=1.0,
                blur=0.0,
                downsample=1,
                noise=3.0,
            ),
        ),
        shift="new classes; ink/paper inverted in every image (light ink on dark paper)",
        batchnorm="train/adapt helps",
    ),
    CaseSpec(
        key="c",
        name="c_mobilenetv2_tint",
        architecture="mobilenetv2",
        source=_LETTERS_SOURCE_APP,
        target=Target(
            "letters",
            ("M", "N", "P", "R", "S"),
            train_per_class=10,
            val_per_class=40,
            glyph_domain=GlyphDomain(
                ink=((120, 200), (0, 40), (0, 60)),
                paper=((200, 255), (170, 230), (40, 110)),
                invert_fraction=0.0,
                contrast=0.9,
                blur=0.0,
                downsample=1,
                noise=12.0,
            ),
        ),
        shift="new classes; red ink on yellow paper, noise",
        batchnorm="either",
    ),
    CaseSpec(
        key="d",
        name="d_mobilenetv3_blur",
        architecture="mobilenetv3small",
        source=_LETTERS_SOURCE_APP,
        target=Target(
            "letters",
            ("A", "B", "C", "D"),
            train_per_class=100,
            val_per_class=40,
            glyph_domain=GlyphDomain(
                ink=((60, 110), (60, 110), (60, 110)),
                paper=((120, 170), (120, 170), (120, 170)),
                invert_fraction=0.0,
                contrast=0.6,
                blur=1.2,
                downsample=1,
                noise=4.0,
            ),
        ),
        shift="same classes (4 source letters); strong blur, low contrast",
        batchnorm="adapt/train helps",
        batch_size=32,
    ),
    CaseSpec(
        key="e",
        name="e_glyphs_tiny",
        architecture="glyphs_resnet",
        source=_LETTERS_SOURCE,
        target=Target(
            "letters",
            ("M", "N", "P", "R", "S"),
            train_per_class=5,
            val_per_class=50,
            glyph_domain=GlyphDomain(
                ink=((0, 90), (0, 90), (20, 110)),
                paper=((160, 240), (160, 240), (150, 230)),
                invert_fraction=0.0,
                contrast=0.95,
                blur=0.0,
                downsample=1,
                noise=5.0,
            ),
        ),
        shift="new classes; mild tint and noise",
        batchnorm="train hurts",
    ),
    CaseSpec(
        key="f",
        name="f_demo_inverted",
        architecture="demo_cnn",
        source=_SHAPES_SOURCE,
        target=Target(
            "shapes",
            DEMO_CLASS_NAMES,
            train_per_class=100,
            val_per_class=40,
            shape_domain=DemoDomain(
                brightness=1.0, contrast=1.0, noise=6.0, downsample=1, tint=(1.0, 0.8, 0.6)
            ),
            invert=True,
        ),
        shift="same classes; inverted (255 - image) and tinted",
        batchnorm="train/adapt helps",
    ),
    CaseSpec(
        key="g",
        name="g_glyphs_blur",
        architecture="glyphs_resnet",
        source=_LETTERS_SOURCE,
        target=Target(
            "letters",
            ("V", "W", "X", "Y", "Z"),
            train_per_class=15,
            val_per_class=50,
            glyph_domain=GlyphDomain(
                ink=((20, 80), (20, 80), (20, 80)),
                paper=((150, 210), (150, 210), (150, 210)),
                invert_fraction=0.0,
                contrast=0.7,
                blur=1.0,
                downsample=2,
                noise=6.0,
            ),
        ),
        shift="new classes; grey on grey, low contrast, blur, half resolution",
        batchnorm="either",
    ),
    CaseSpec(
        key="h",
        name="h_demo_dark",
        architecture="demo_cnn",
        source=_SHAPES_SOURCE,
        target=Target(
            "shapes",
            DEMO_CLASS_NAMES,
            train_per_class=10,
            val_per_class=40,
            shape_domain=DemoDomain(
                brightness=0.5, contrast=0.6, noise=12.0, downsample=2, tint=(1.1, 1.0, 0.8)
            ),
        ),
        shift="same classes; dark, low contrast, noisy, half resolution, warm tint",
        batchnorm="adapt/train helps",
    ),
    CaseSpec(
        key="i",
        name="i_mobilenetv2_mixed",
        architecture="mobilenetv2",
        source=_LETTERS_SOURCE_APP,
        target=Target(
            "letters",
            ("E", "F", "H", "K", "L"),
            train_per_class=40,
            val_per_class=40,
            glyph_domain=GlyphDomain(
                ink=((10, 70), (30, 90), (90, 160)),
                paper=((150, 200), (150, 200), (150, 200)),
                invert_fraction=0.5,
                contrast=0.85,
                blur=0.6,
                downsample=1,
                noise=6.0,
            ),
        ),
        shift="5 of the source's classes; blue ink on grey paper, half the images inverted, "
        "slight blur",
        batchnorm="adapt/train helps",
    ),
    CaseSpec(
        key="j",
        name="j_demo_washed",
        architecture="demo_cnn",
        source=_SHAPES_SOURCE,
        target=Target(
            "shapes",
            DEMO_CLASS_NAMES,
            train_per_class=50,
            val_per_class=40,
            shape_domain=DemoDomain(
                brightness=1.3, contrast=0.5, noise=10.0, downsample=1, tint=(0.7, 0.9, 1.2)
            ),
        ),
        shift="same classes; overexposed, low contrast, noisy, cool tint",
        batchnorm="adapt/train helps",
    ),
    CaseSpec(
        key="k",
        name="k_glyphs_green",
        architecture="glyphs_resnet",
        source=_LETTERS_SOURCE,
        target=Target(
            "letters",
            ("J", "O", "Q", "U", "I"),
            train_per_class=60,
            val_per_class=40,
            glyph_domain=GlyphDomain(
                ink=((150, 220), (180, 255), (120, 200)),
                paper=((20, 70), (30, 80), (20, 70)),
                invert_fraction=0.0,
                contrast=0.9,
                blur=0.4,
                downsample=1,
                noise=8.0,
            ),
        ),
        shift="new classes; light green ink on dark paper, slight blur, noise",
        batchnorm="adapt/train helps",
    ),
    CaseSpec(
        key="l",
        name="l_demo_small",
        architecture="demo_cnn",
        source=_SHAPES_SOURCE,
        target=Target(
            "shapes",
            DEMO_CLASS_NAMES,
            train_per_class=12,
            val_per_class=40,
            shape_domain=DemoDomain(
                brightness=0.7, contrast=0.7, noise=8.0, downsample=2, tint=(0.8, 1.1, 0.9)
            ),
            invert=True,
        ),
        shift="same classes; inverted, dark, low contrast, half resolution, green tint",
        batchnorm="either",
    ),
)
CASES_BY_KEY = {c.key: c for c in CASES}


# --------------------------------------------------------------------------- rendering


def render(
    kind: str,
    classes: tuple[str, ...],
    n: int,
    seed: int,
    glyph_domain: GlyphDomain | None = None,
    shape_domain: DemoDomain | None = None,
    invert: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 images and labels of ``classes``, balanced."""
    if kind == "letters":
        return render_glyphs(n, classes, glyph_domain or GLYPHS_SOURCE_DOMAIN, seed, IMAGE_SIZE)
    if tuple(classes) != DEMO_CLASS_NAMES:
        raise ValueError("the shapes renderer draws the demo's six shapes")
    x, y = render_images(n, shape_domain or SOURCE_DOMAIN, seed, IMAGE_SIZE)
    if invert:
        x = (255 - x).astype(np.uint8)
    return x, y


def source_images(spec: CaseSpec, seed: int, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    src = spec.source
    count = n if n is not None else src.per_class * len(src.classes)
    return render(src.kind, src.classes, count, seed)


# --------------------------------------------------------------------------- networks


def _with_head(inputs: Any, features: Any, num_classes: int, name: str) -> keras.Model:
    import keras

    x = keras.layers.GlobalAveragePooling2D(name="features")(features)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="source_head")(x)
    return keras.Model(inputs, outputs, name=name)


def build_network(architecture: str, num_classes: int) -> keras.Model:
    """The source network: raw 0-255 images in, source-class probabilities out; the head is a
    ``Dense`` softmax (cut by thaw's ``model: {source: file}``)."""
    import keras

    if architecture == "demo_cnn":
        return build_demo_network(num_classes, IMAGE_SIZE)
    if architecture == "glyphs_resnet":
        return build_glyphs_network(num_classes, IMAGE_SIZE)
    shape = (IMAGE_SIZE, IMAGE_SIZE, 3)
    inputs = keras.Input(shape=shape, name="image")
    if architecture == "mobilenetv2":
        x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(inputs)
        base = keras.applications.MobileNetV2(
            input_tensor=x, include_top=False, weights=None, alpha=0.35
        )
        return _with_head(inputs, base.output, num_classes, "mobilenetv2_035_32px")
    if architecture == "mobilenetv3small":
        # MobileNetV3 rescales its input itself (include_preprocessing).
        base = keras.applications.MobileNetV3Small(
            input_tensor=inputs, include_top=False, weights=None, alpha=0.75
        )
        return _with_head(inputs, base.output, num_classes, "mobilenetv3small_075_32px")
    raise ValueError(f"unknown architecture {architecture!r}")


APPLICATIONS = ("mobilenetv2", "mobilenetv3small")


def _set_batchnorm_momentum(model: keras.Model, momentum: float) -> keras.Model:
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
    return model


def bench_cache_dir() -> Path:
    """``$THAW_CACHE_DIR/bench`` (``~/.cache/thaw/bench``)."""
    return default_cache_dir() / "bench"


def _key(*parts: object) -> str:
    return hashlib.sha256("-".join(str(p) for p in parts).encode()).hexdigest()[:12]


def pretrained_path(spec: CaseSpec) -> Path:
    """The cached source-pretrained network of ``spec`` (pretrained once, seed 0)."""
    src = spec.source
    path = bench_cache_dir() / (
        f"{spec.architecture}-{src.kind}-"
        f"{_key(SUITE_VERSION, spec.architecture, src, IMAGE_SIZE)}.keras"
    )
    if path.exists():
        return path
    x, y = source_images(spec, seed=100)
    app = spec.architecture in APPLICATIONS

    def build() -> keras.Model:
        model = build_network(spec.architecture, len(src.classes))
        # keras.applications use BatchNorm momentum 0.99/0.999, made for long ImageNet runs:
        # over a short pretraining the moving statistics would stay near their initial values.
        return _set_batchnorm_momentum(model, 0.9) if app else model

    def finish(model: keras.Model) -> None:
        if app:
            # The population statistics of the source images, then the keras.applications
            # momentum back (what a user fine-tunes with).
            adapt_batchnorm(model, x.astype("float32"), 64, max_images=2000)
            _set_batchnorm_momentum(model, 0.999)
        # Like ImageNet networks, whose kernels weight decay shrank (function-preserving).
        rescale_conv_kernels(model, KERNEL_SCALE)

    return pretrain_to_cache(path, build, x, y, 0, src.epochs, finish)


def target_path(spec: CaseSpec, seed: int) -> Path:
    """The cached target ``.npz`` of ``spec`` for ``seed`` (the seed draws the images)."""
    tgt = spec.target
    path = bench_cache_dir() / f"{spec.name}-seed{seed}-{_key(SUITE_VERSION, tgt, seed)}.npz"
    if path.exists():
        return path
    k = len(tgt.classes)
    kwargs: dict[str, Any] = {
        "glyph_domain": tgt.glyph_domain,
        "shape_domain": tgt.shape_domain,
        "invert": tgt.invert,
    }
    base = 1000 * (seed + 1) + ord(spec.key)
    x_train, y_train = render(tgt.kind, tgt.classes, tgt.train_per_class * k, base + 1, **kwargs)
    x_val, y_val = render(tgt.kind, tgt.classes, tgt.val_per_class * k, base + 2, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val)
    os.replace(tmp, path)
    return path


def study_text(spec: CaseSpec, seed: int, model: Path, data: Path) -> str:
    classes = ", ".join(spec.target.classes)
    return f"""\
# Generalisation suite, case {spec.key}: {spec.architecture}, pretrained on {spec.source.kind}
# ({len(spec.source.classes)} classes); target: {spec.shift}; {spec.target.train_per_class}
# training images per class. Written by bench/cases.py.
name: {spec.name}-seed{seed}
seed: {seed}
n_trials: 30
objective: val_loss
model:
  source: file
  path: {model}
data:
  source: npz
  path: {data}
  class_names: [{classes}]
search_space:
  unfrozen_layers: {{low: 0, high: all}}
  learning_rate: {{low: 1.0e-4, high: 1.0e-2, log: true}}
  dropout: {{low: 0.0, high: 0.6}}
  weight_decay: {{low: 1.0e-6, high: 1.0e-1, log: true}}
  batchnorm: [frozen, adapt, train]
train:
  epochs: {spec.epochs}
  batch_size: {spec.batch_size}
pruner:
  compare: hyperband
  reduction_factor: 3
  patience: 3
  min_delta: 0.03
  n_warmup_steps: 2
reference_trials: true
"""


def build_case(spec: CaseSpec, seed: int) -> Path:
    """Pretrain (cached), render the target (cached) and write the study file; return its path."""
    model = pretrained_path(spec)
    data = target_path(spec, seed)
    study = bench_cache_dir() / "studies" / f"{spec.name}-seed{seed}.yaml"
    study.parent.mkdir(parents=True, exist_ok=True)
    study.write_text(study_text(spec, seed, model, data), encoding="utf-8")
    return study


def source_accuracy(spec: CaseSpec) -> float:
    """The pretrained network's accuracy on held-out source images."""
    import keras

    model = keras.saving.load_model(pretrained_path(spec), compile=False, safe_mode=True)
    x, y = source_images(spec, seed=12345, n=50 * len(spec.source.classes))
    return float((model.predict(x.astype("float32"), verbose=0).argmax(1) == y).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", help="comma-separated case keys (default: all)")
    parser.add_argument("--seeds", help="comma-separated seeds (default: 0,1,2)")
    args = parser.parse_args(argv)
    keys = args.cases.split(",") if args.cases else [c.key for c in CASES]
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(SEEDS)
    for key in keys:
        spec = CASES_BY_KEY[key]
        t0 = time.perf_counter()
        for seed in seeds:
            build_case(spec, seed)
        acc = source_accuracy(spec)
        print(
            f"{spec.key} {spec.name:<20} {spec.architecture:<16} source accuracy {acc:.3f} "
            f"(chance {1 / len(spec.source.classes):.3f}), {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
