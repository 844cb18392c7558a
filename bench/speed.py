"""Trial speed and memory, measured side by side in one run.

1. Overhead: a thaw trial (SQLite storage, callbacks, rebuild of the model from weights in
   memory, end-of-trial probes) against a bare ``model.fit`` of the same model, data and epochs
   (demo CNN, or ``--overhead-model glyphs``: the glyphs residual network on its shifted target;
   full fine-tuning, caching off so both do the same computation), at ``--epochs``
   and, on an extra line, at the demo study's own 20 epochs per trial (``--overhead-epochs``).
   As in ``thaw run``, thaw's storage (``open_storage``: SQLite with heartbeats) is opened and
   the study loaded once, and the trials run inside ``frozen_heap()`` (as ``optimize_exactly``
   runs them); a trial's timing is its ``study.optimize(objective, n_trials=1)`` with the
   ``enqueue_trial`` that fixes its parameters. The bare fit is timed twice: compiled and fitted
   as Keras does by default (the first trace of its train step creates the optimizer's and the
   metrics' variables, so TensorFlow traces it again), and with ``build_training_state`` first,
   as thaw compiles (one trace): the thaw trial against the second is the cost of thaw's own
   machinery alone. The thaw trial's seconds outside ``model.fit`` are printed too.
2. Feature extraction on MobileNetV2 (alpha 0.35, 96 px, weights=None, synthetic images): a trial
   with ``cache_frozen: off`` against one with ``auto``, cold (the features are computed in the
   trial) and warm (another trial already cached them).
3. The same with about 10% of the weighted layers unfrozen.
4. Resident memory (RSS) after trial 10 and after trial 100 of a tiny-model study (inside
   ``frozen_heap()``, as ``thaw run`` runs it).
5. Deep networks (``--deep``: DenseNet121 and EfficientNetB0 at 32 px, MobileNetV2 alpha 0.35 at
   96 px; weights=None, synthetic images, ``--deep-images`` training and 5x as many validation
   images): the domain-shift score at study creation, then for BatchNorm ``frozen`` and ``adapt``
   a study of two feature-extraction trials (cache auto, ``--deep-epochs`` epochs, inside
   ``frozen_heap()`` as ``thaw run`` runs them), each trial's seconds outside ``model.fit`` split
   into building the model (``adapt`` apart), the cache build, the end-of-trial probes and the
   rest (Optuna, the collection that ends a trial); then a third ``frozen`` trial of 20 epochs,
   timed whole: the denominator of the later trials' share outside ``fit``.

Each timing is the median of ``--repeats`` runs, the variants alternating, so the machine's noise
hits them alike; the overhead lines also give the median of the paired ratios (each run against
the bare fit that ran right before it) and the ratio of the fastest runs (noise only ever adds
time, so the fastest run of each is the least disturbed).
Run it niced on a shared machine:

    nice -n 10 python bench/speed.py [--images 512 --epochs 5 --repeats 3 --trials 100]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def rss_mib() -> float:
    """Current resident set size of this process (Linux /proc), in MiB."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """Wall and CPU seconds of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def median_pair(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def fastest_pair(runs: list[tuple[float, float]]) -> tuple[float, float]:
    """The fastest of the repeats, wall and CPU: on a shared machine the noise only ever adds
    time (another process, a slow spell), so the minimum is the least disturbed run."""
    return min(r[0] for r in runs), min(r[1] for r in runs)


def paired_ratio(
    runs: list[tuple[float, float]], bare: list[tuple[float, float]]
) -> tuple[float, float]:
    """Median over the repeats of (this run / the bare fit run right before it), wall and CPU:
    each pair ran back to back, so a slow spell of the machine hits both of its runs."""
    return (
        statistics.median(r[0] / b[0] for r, b in zip(runs, bare, strict=True)),
        statistics.median(r[1] / b[1] for r, b in zip(runs, bare, strict=True)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=512, help="MobileNetV2 training images")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trials", type=int, default=100, help="trials of the memory study")
    parser.add_argument(
        "--overhead-epochs",
        type=int,
        nargs="*",
        default=None,
        help="epochs of the overhead lines (default: --epochs, then 20, the demo study's)",
    )
    parser.add_argument(
        "--overhead-model",
        choices=("demo", "glyphs"),
        default="demo",
        help="the overhead lines' case: the demo CNN, or the glyphs residual network on its "
        "shifted target (150 training, 300 validation images)",
    )
    parser.add_argument(
        "--skip", nargs="*", default=(), choices=("overhead", "cache", "memory", "deep")
    )
    parser.add_argument(
        "--deep",
        nargs="*",
        default=("DenseNet121", "EfficientNetB0", "MobileNetV2"),
        help="the deep cases to run",
    )
    parser.add_argument("--deep-images", type=int, default=150)
    parser.add_argument("--deep-epochs", type=int, default=10)
    args = parser.parse_args()

    import keras
    import numpy as np
    import optuna

    from thaw.objectives import (
        ArrayData,
        FineTuneObjective,
        FloatRange,
        IntRange,
        ModelSource,
        PretrainedBase,
        SearchSpace,
        TrainSettings,
        TrialParams,
        build_model,
        build_training_state,
        compile_model,
        demo_target_data,
        freeze,
        load_pretrained,
    )
    from thaw.objectives._cache import FeatureCache
    from thaw.objectives._release import frozen_heap

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="thaw-speed-"))
    print(f"keras {keras.__version__} backend {keras.backend.backend()}, CPU only (no GPU here)")

    def space_for(pretrained: PretrainedBase, batchnorm: str = "frozen") -> SearchSpace:
        return SearchSpace(
            unfrozen_layers=IntRange(0, pretrained.num_layers),
            learning_rate=FloatRange(1e-4, 1e-2, log=True),
            dropout=FloatRange(0.0, 0.5),
            weight_decay=FloatRange(1e-6, 1e-3, log=True),
            batchnorm=(batchnorm,),
        )

    from thaw.search._study import open_storage

    # thaw's own storage (heartbeats on, connections retried), opened once as thaw run does.
    storage = open_storage(f"sqlite:///{tmp / 'speed.db'}")
    studies: dict[str, optuna.Study] = {}

    def open_study(name: str) -> optuna.Study:
        """The study ``name``, opened once (``thaw run`` opens its storage and study once)."""
        if name not in studies:
            studies[name] = optuna.create_study(
                study_name=name,
                storage=storage,
                load_if_exists=True,
                pruner=optuna.pruners.NopPruner(),
            )
        return studies[name]

    def one_trial(objective: FineTuneObjective, params: TrialParams, name: str) -> None:
        study = open_study(name)
        study.enqueue_trial(
            {
                "unfrozen_layers": params.unfrozen_layers,
                "learning_rate": params.learning_rate,
                "dropout": params.dropout,
                "weight_decay": params.weight_decay,
            }
        )
        study.optimize(objective, n_trials=1)
        state = study.trials[-1].state
        if state != optuna.trial.TrialState.COMPLETE:
            raise RuntimeError(f"bench trial ended {state}: {study.trials[-1].user_attrs}")

    # ------------------------------------------------------------------ 1. overhead vs bare fit
    overhead_epochs = args.overhead_epochs
    if overhead_epochs is None:
        overhead_epochs = [args.epochs] + ([20] if args.epochs != 20 else [])
    fit_seconds: list[float] = []
    keras_fit = keras.Model.fit

    def timed_fit(self: keras.Model, *fit_args: Any, **fit_kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return keras_fit(self, *fit_args, **fit_kwargs)
        finally:
            fit_seconds.append(time.perf_counter() - start)

    if "overhead" not in args.skip:
        keras.Model.fit = timed_fit  # type: ignore[method-assign]
        pretrained = load_pretrained(ModelSource(args.overhead_model))
        if args.overhead_model == "glyphs":
            from thaw.objectives import glyphs_target_data

            data = glyphs_target_data()
            case = "glyphs network"
        else:
            data = demo_target_data(train_per_class=40, val_per_class=40)
            case = "demo CNN"
        x_train = data.x_train.astype("float32")
        x_val = data.x_val.astype("float32")
        for epochs in overhead_epochs:
            settings = TrainSettings(epochs=epochs, batch_size=16, cache_frozen="off")
            params = TrialParams(pretrained.num_layers, 1e-3, 0.2, 1e-4)
            objective = FineTuneObjective(pretrained, data, space_for(pretrained), settings)
            # The same trial without its end-of-trial probes (objectives._probes: one inference
            # pass over a sample of the training images, one over a sample of the validation
            # images with BatchNorm on batch statistics), to show their share.
            no_probes = FineTuneObjective(pretrained, data, space_for(pretrained), settings)
            no_probes.probe = lambda *args, **kwargs: None
            variants = {
                "thaw trial": (objective, f"overhead-{epochs}"),
                "the trial without its end-of-trial probes": (no_probes, f"no-probes-{epochs}"),
            }
            for name in (*(v[1] for v in variants.values()), f"warm-up-{epochs}"):
                open_study(name)

            def bare(
                built_first: bool = False,
                settings: TrainSettings = settings,
                params: TrialParams = params,
            ) -> tuple[float, float]:
                """A bare ``model.fit``; ``built_first``: after ``build_training_state`` (timed
                with the fit), as thaw compiles, so its train step is traced once."""
                keras.backend.clear_session()
                keras.utils.set_random_seed(0)
                base = pretrained.instantiate()
                freeze(base, params.unfrozen_layers, params.batchnorm)
                model = build_model(base, data.num_classes, params.dropout)
                compile_model(model, params.learning_rate, params.weight_decay)

                def fit() -> None:
                    if built_first:
                        build_training_state(model, data.y_train)
                    model.fit(
                        x_train,
                        data.y_train,
                        validation_data=(x_val, data.y_val),
                        batch_size=settings.batch_size,
                        epochs=settings.epochs,
                        verbose=0,
                    )

                timing = timed(fit)
                # The bare fit's garbage (a model, its traced graphs) is collected here, untimed:
                # otherwise the next thaw trial's own end-of-trial collection pays for it.
                del model, base
                gc.collect()
                return timing

            bare_runs: list[tuple[float, float]] = []
            built_runs: list[tuple[float, float]] = []
            runs: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
            # Seconds of the thaw trial spent outside model.fit (building the model, the probes,
            # Optuna's bookkeeping, the collection that ends the trial): what thaw adds, measured
            # directly rather than as a difference of two noisy totals.
            outside: list[float] = []
            with frozen_heap():  # as optimize_exactly (thaw run) runs its trials
                # builds the working copy and the probe's runner once, as a study's first trial
                for variant, _ in variants.values():
                    one_trial(variant, params, f"warm-up-{epochs}")
                for _ in range(args.repeats):
                    bare_runs.append(bare())
                    built_runs.append(bare(built_first=True))
                    for name, (variant, study_name) in variants.items():
                        fit_seconds.clear()
                        timing = timed(partial(one_trial, variant, params, study_name))
                        runs[name].append(timing)
                        if name == "thaw trial":
                            outside.append(timing[0] - sum(fit_seconds))
            bw, bc = median_pair(bare_runs)
            uw, uc = median_pair(built_runs)
            parts = [
                f"[overhead] {case}, {len(x_train)} images, {settings.epochs} epochs, full "
                f"fine-tuning, median of {args.repeats}: bare fit {bw:.2f} s wall / {bc:.2f} s "
                f"CPU; bare fit with its training state built first (as thaw compiles: the train "
                f"step traced once, not twice) {uw:.2f} s / {uc:.2f} s -> {uw / bw:.3f}x wall, "
                f"{uc / bc:.3f}x CPU"
            ]
            fw, fc = fastest_pair(bare_runs)
            for name, timings in runs.items():
                (tw, tc), (rw, rc) = median_pair(timings), paired_ratio(timings, bare_runs)
                mw, mc = fastest_pair(timings)
                target = " (target <= 1.05x)" if name == "thaw trial" else ""
                parts.append(
                    f"{name} {tw:.2f} s / {tc:.2f} s -> {tw / bw:.3f}x wall, {tc / bc:.3f}x CPU; "
                    f"paired {rw:.3f}x wall, {rc:.3f}x CPU; fastest of {args.repeats} "
                    f"{mw / fw:.3f}x wall, {mc / fc:.3f}x CPU{target}; against the bare fit "
                    f"built first {tw / uw:.3f}x wall, {tc / uc:.3f}x CPU, paired "
                    + "{:.3f}x wall, {:.3f}x CPU".format(*paired_ratio(timings, built_runs))
                )
            parts.append(
                f"the thaw trial outside model.fit: {statistics.median(outside):.3f} s "
                f"(median; {min(outside):.3f}-{max(outside):.3f} s)"
            )
            print("; ".join(parts), flush=True)
        keras.Model.fit = keras_fit  # type: ignore[method-assign]
        keras.backend.clear_session()

    # ----------------------------------------------------------- 2./3. frozen-prefix caching
    if "cache" not in args.skip:
        keras.utils.set_random_seed(0)
        t0 = time.perf_counter()
        net = keras.applications.MobileNetV2(
            input_shape=(96, 96, 3), alpha=0.35, weights=None, include_top=False
        )
        build_s = time.perf_counter() - t0
        pretrained = PretrainedBase(net, "MobileNetV2 alpha 0.35 96 px (weights=None)")
        t0 = time.perf_counter()
        pretrained.instantiate()
        clone_s = time.perf_counter() - t0
        pretrained.working_copy()
        t0 = time.perf_counter()
        pretrained.working_copy()
        reuse_s = time.perf_counter() - t0
        print(
            f"[model] MobileNetV2: build {build_s:.2f} s, clone (instantiate) {clone_s:.2f} s, "
            f"restore weights from memory (working_copy) {reuse_s:.3f} s"
        )
        rng = np.random.default_rng(0)
        n_val = max(args.images // 4, 32)
        data = ArrayData(
            x_train=rng.integers(0, 256, (args.images, 96, 96, 3), dtype=np.uint8),
            y_train=(np.arange(args.images) % 6).astype("int32"),
            x_val=rng.integers(0, 256, (n_val, 96, 96, 3), dtype=np.uint8),
            y_val=(np.arange(n_val) % 6).astype("int32"),
            class_names=tuple("abcdef"),
        )
        space = space_for(pretrained)
        ten_percent = max(1, round(pretrained.num_layers * 0.1))
        for label, unfrozen in (
            ("feature extraction", 0),
            (f"{ten_percent} of {pretrained.num_layers} layers unfrozen (~10%)", ten_percent),
        ):
            params = TrialParams(unfrozen, 1e-3, 0.2, 1e-4)
            plain = FineTuneObjective(
                pretrained,
                data,
                space,
                TrainSettings(epochs=args.epochs, batch_size=32, cache_frozen="off"),
            )
            cache = FeatureCache(directory=tmp / "features")
            cached = FineTuneObjective(
                pretrained,
                data,
                space,
                TrainSettings(epochs=args.epochs, batch_size=32),
                feature_cache=cache,
            )
            # The same two without the end-of-trial probes: their batch-statistics pass runs the
            # whole network over the validation images, cached or not.
            plain_np = FineTuneObjective(pretrained, data, space, plain.settings)
            cached_np = FineTuneObjective(
                pretrained, data, space, cached.settings, feature_cache=cache
            )
            plain_np.probe = cached_np.probe = lambda *args, **kwargs: None
            plain_runs, cold_runs, warm_runs, plain_np_runs, warm_np_runs = [], [], [], [], []
            for name in ("plain", "plain-np", "cold", "warm", "warm-np"):
                open_study(name)
            with frozen_heap():  # as optimize_exactly (thaw run) runs its trials
                for _ in range(args.repeats):
                    plain_runs.append(timed(partial(one_trial, plain, params, "plain")))
                    plain_np_runs.append(timed(partial(one_trial, plain_np, params, "plain-np")))
                    cache.clear()
                    cold_runs.append(timed(partial(one_trial, cached, params, "cold")))
                    warm_runs.append(timed(partial(one_trial, cached, params, "warm")))
                    warm_np_runs.append(timed(partial(one_trial, cached_np, params, "warm-np")))
            (pw, pc), (cw, _), (ww, wc) = (
                median_pair(plain_runs),
                median_pair(cold_runs),
                median_pair(warm_runs),
            )
            (npw, npc), (nww, nwc) = median_pair(plain_np_runs), median_pair(warm_np_runs)
            print(
                f"[cache] {label}, {args.images} images, {args.epochs} epochs, boundary "
                f"{cached.last_boundaries[0] or 'none'}: uncached {pw:.2f} s; cached, features "
                f"computed in the trial {cw:.2f} s -> {pw / cw:.2f}x; cached, features from an "
                f"earlier trial {ww:.2f} s -> {pw / ww:.2f}x (CPU {pc / wc:.2f}x) "
                f"(target >= {5 if unfrozen == 0 else 2}x); without the end-of-trial probes: "
                f"uncached {npw:.2f} s, cached from an earlier trial {nww:.2f} s -> "
                f"{npw / nww:.2f}x (CPU {npc / nwc:.2f}x)",
                flush=True,
            )
        keras.backend.clear_session()

    # ------------------------------------------------------------- 5. one-time costs vs depth
    if "deep" not in args.skip:
        keras.Model.fit = timed_fit  # type: ignore[method-assign]
        sizes = {"DenseNet121": 32, "EfficientNetB0": 32, "MobileNetV2": 96}
        for arch in args.deep:
            keras.backend.clear_session()
            keras.utils.set_random_seed(0)
            px = sizes[arch]
            extra = {"alpha": 0.35} if arch == "MobileNetV2" else {}
            t0 = time.perf_counter()
            net = getattr(keras.applications, arch)(
                input_shape=(px, px, 3), weights=None, include_top=False, **extra
            )
            pretrained = PretrainedBase(net, f"{arch} {px} px (weights=None)")
            load_s = time.perf_counter() - t0
            rng = np.random.default_rng(0)
            n_train, n_val = args.deep_images, args.deep_images * 5
            data = ArrayData(
                x_train=rng.integers(0, 256, (n_train, px, px, 3), dtype=np.uint8),
                y_train=(np.arange(n_train) % 6).astype("int32"),
                x_val=rng.integers(0, 256, (n_val, px, px, 3), dtype=np.uint8),
                y_val=(np.arange(n_val) % 6).astype("int32"),
                class_names=tuple("abcdef"),
            )
            settings = TrainSettings(epochs=args.deep_epochs, batch_size=32)
            bns = sum(isinstance(la, keras.layers.BatchNormalization) for la in net.layers)
            line = [f"[deep] {arch} {px} px, {bns} BatchNorm layers: build {load_s:.1f} s"]
            shift_objective = FineTuneObjective(pretrained, data, space_for(pretrained), settings)
            shift_s, _ = timed(shift_objective.domain_shift)
            line.append(f"domain-shift score at study creation {shift_s:.1f} s")
            for mode in ("frozen", "adapt"):
                objective = FineTuneObjective(
                    pretrained,
                    data,
                    space_for(pretrained, mode),
                    settings,
                    feature_cache=FeatureCache(directory=tmp / f"deep-{arch}-{mode}"),
                )
                spent: dict[str, float] = {}

                def clocked(
                    name: str, fn: Callable[..., Any], spent: dict[str, float] = spent
                ) -> Callable[..., Any]:
                    def run(*fn_args: Any, **fn_kwargs: Any) -> Any:
                        start = time.perf_counter()
                        try:
                            return fn(*fn_args, **fn_kwargs)
                        finally:
                            spent[name] = spent.get(name, 0.0) + time.perf_counter() - start

                    return run

                objective._assemble = clocked(  # type: ignore[method-assign]
                    "build", objective._assemble
                )
                objective._adapt = clocked("adapt", objective._adapt)  # type: ignore[method-assign]
                objective._features = clocked(  # type: ignore[method-assign]
                    "cache build", objective._features
                )
                objective.probe = clocked("probes", objective.probe)  # type: ignore[method-assign]
                params = TrialParams(0, 1e-3, 0.2, 1e-4, batchnorm=mode)
                # Each mode's trials run as `thaw run` runs a study's (inside frozen_heap: the
                # first trial's collection freezes what later trials reuse).
                with frozen_heap():
                    for which in ("first", "later"):
                        spent.clear()
                        fit_seconds.clear()
                        study_name = f"deep-{arch}-{mode}"
                        trial_s, _ = timed(partial(one_trial, objective, params, study_name))
                        fit_s = sum(fit_seconds)
                        outside_s = trial_s - fit_s
                        spent["build"] = spent.get("build", 0.0) - spent.get("adapt", 0.0)
                        steps = ", ".join(f"{step} {sec:.2f}" for step, sec in spent.items())
                        rest_s = outside_s - sum(spent.values())
                        line.append(
                            f"{mode} {which} trial {trial_s:.1f} s (fit {fit_s:.1f} s, outside "
                            f"{outside_s:.2f} s: {steps}, rest {rest_s:.2f})"
                        )
                        if mode == "frozen" and which == "first":
                            frozen_first = trial_s
                        if mode == "frozen" and which == "later":
                            # The denominator: a later frozen trial of 20 epochs, run and timed
                            # whole (the same study, parameters and features; only the epochs).
                            objective.settings = replace(settings, epochs=20)
                            fit_seconds.clear()
                            frozen_20, _ = timed(partial(one_trial, objective, params, study_name))
                            objective.settings = settings
                            fit_20 = sum(fit_seconds)
                            line.append(
                                f"frozen later trial of 20 epochs {frozen_20:.1f} s (fit "
                                f"{fit_20:.1f} s, outside {frozen_20 - fit_20:.2f} s; "
                                f"scaled from the {args.deep_epochs}-epoch trial "
                                f"~{outside_s + fit_s * 20 / args.deep_epochs:.1f} s)"
                            )
                        if mode == "adapt" and which == "first":
                            line.append(
                                f"-> first adapt trial / first frozen trial "
                                f"{trial_s / frozen_first:.2f}x (target <= 1.5x)"
                            )
                        if which == "later":
                            line.append(
                                f"-> {mode} later trial outside fit / 20-epoch frozen trial "
                                f"({frozen_20:.1f} s) {outside_s / frozen_20:.1%} (target <= 10%)"
                            )
            print("; ".join(line), flush=True)
        keras.Model.fit = keras_fit  # type: ignore[method-assign]
        keras.backend.clear_session()

    # -------------------------------------------------------------------- 4. memory over trials
    if "memory" not in args.skip:
        inputs = keras.Input((16, 16, 3), name="image")
        x = keras.layers.Rescaling(1 / 255)(inputs)
        for i, filters in enumerate((8, 16), start=1):
            x = keras.layers.Conv2D(filters, 3, padding="same", name=f"conv{i}")(x)
            x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
            x = keras.layers.Activation("relu")(x)
        x = keras.layers.GlobalAveragePooling2D(name="features")(x)
        tiny = PretrainedBase(keras.Model(inputs, x, name="tiny"), "tiny CNN")
        rng = np.random.default_rng(1)
        data = ArrayData(
            x_train=rng.integers(0, 256, (64, 16, 16, 3), dtype=np.uint8),
            y_train=(np.arange(64) % 3).astype("int32"),
            x_val=rng.integers(0, 256, (32, 16, 16, 3), dtype=np.uint8),
            y_val=(np.arange(32) % 3).astype("int32"),
            class_names=("a", "b", "c"),
        )
        objective = FineTuneObjective(
            tiny,
            data,
            space_for(tiny),
            TrainSettings(epochs=1, batch_size=16),
            feature_cache=FeatureCache(directory=tmp / "tiny-features"),
        )
        study = optuna.create_study(
            study_name="memory",
            storage=f"sqlite:///{tmp / 'memory.db'}",
            sampler=optuna.samplers.RandomSampler(seed=0),
        )
        marks: dict[int, float] = {}
        t0 = time.perf_counter()

        def mark(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            n = trial.number + 1
            if n in (10, args.trials // 2, args.trials):
                marks[n] = rss_mib()

        with frozen_heap():  # as optimize_exactly (thaw run) runs its trials
            study.optimize(objective, n_trials=args.trials, callbacks=[mark])
        first, last = marks[10], marks[args.trials]
        print(
            f"[memory] tiny-model study, {args.trials} trials in {time.perf_counter() - t0:.0f} s: "
            f"RSS after trial 10 {first:.0f} MiB, after trial {args.trials // 2} "
            f"{marks[args.trials // 2]:.0f} MiB, after trial {args.trials} {last:.0f} MiB -> "
            f"{last / first:.3f}x (target <= 1.10x)"
        )


if __name__ == "__main__":
    main()
