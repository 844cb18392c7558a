"""Creating, resuming and running a thaw study on Optuna storage."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.pruners import BasePruner, MedianPruner
from optuna.samplers import BaseSampler
from optuna.study import StudyDirection
from optuna.trial import TrialState

from thaw._keys import (
    BUDGET_EPOCHS,
    CHANCE,
    CONFIG,
    CONFIG_HASH,
    DATA,
    DOMAIN_SHIFT,
    MANIFEST,
    MODEL_FINGERPRINT,
    NUM_LAYERS,
    OBJECTIVE_METRIC,
    RANGE_TEST,
    SHIFT_PROFILE,
    TASK,
    VERSION,
)
from thaw._version import __version__
from thaw.reports.diagnosis import ShiftProfile
from thaw.search._budget import (
    best_trial,
    fit_start_to_budget,
    informed_start,
    profile_block,
    sampler_seed,
    start_label,
    start_queue,
    surgical_size,
)
from thaw.search._config import (
    PrunerConfig,
    SamplerConfig,
    StudyConfig,
    mask_url,
    without_paths,
)
from thaw.search._pruners import ClimbingPruner, RungPruner, ScreenPruner, chance_value
from thaw.search._range import narrowed_space, range_test_rates

_logger = logging.getLogger(__name__)

FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class StorageError(RuntimeError):
    """The storage cannot be opened or does not hold what was asked for."""


class StudyMismatchError(RuntimeError):
    """An existing study was created from a different search space, model or data."""


def make_sampler(
    config: SamplerConfig, seed: int, n_workers: int = 1, n_start: int = 0
) -> BaseSampler:
    """The sampler; see :func:`thaw.search._budget.make_sampler` (multivariate TPE)."""
    from thaw.search._budget import make_sampler as _make

    return _make(config, seed, n_workers=n_workers, n_start=n_start)


def _start_trials(study: optuna.Study) -> int:
    """Trials of the informed start the study holds (queued or run), screen included."""
    return sum(1 for t in study.get_trials(deepcopy=False) if start_label(t) is not None)


def _attach_sampler(
    study: optuna.Study, config: StudyConfig, n_workers: int, salt: int, *, resumed: bool
) -> None:
    """Give ``study`` its sampler: seeded by the trials already there when ``resumed`` (so a
    resume does not replay them), modelling right after the informed start it holds."""
    existing = len(study.get_trials(deepcopy=False)) if resumed else 0
    study.sampler = make_sampler(
        config.sampler,
        sampler_seed(config.seed, existing, salt),
        n_workers,
        n_start=_start_trials(study),
    )


def make_pruner(config: PrunerConfig, max_epochs: int, chance: float | None = None) -> ScreenPruner:
    """The climbing and runaway rules composed with the configured comparative pruner, inside
    the screen of the informed start (:class:`ScreenPruner`).

    ``chance`` (``chance_value(K)``) tells the climbing rule how much a curve still on the
    chance plateau wobbles, and what a runaway is; "worse" always means worse by more than the
    curve's own epoch-to-epoch noise.
    """
    wrapped: BasePruner | None
    min_resource = max(1, config.n_warmup_steps)
    if config.compare == "median":
        wrapped = MedianPruner(
            n_startup_trials=config.n_startup_trials, n_warmup_steps=config.n_warmup_steps
        )
    elif config.compare == "hyperband":
        wrapped = RungPruner(
            min_resource=min_resource,
            reduction_factor=config.reduction_factor,
            max_resource=max_epochs,
            n_brackets=hyperband_brackets(min_resource, max_epochs, config.reduction_factor),
            chance=chance,
        )
    elif config.compare == "successive_halving":
        wrapped = RungPruner(
            min_resource=min_resource,
            reduction_factor=config.reduction_factor,
            max_resource=max_epochs,
            chance=chance,
        )
    else:
        wrapped = None
    return ScreenPruner(
        ClimbingPruner(
            wrapped,
            patience=config.patience,
            min_delta=config.min_delta,
            n_warmup_steps=config.n_warmup_steps,
            chance=chance,
            noise_aware=True,
        )
    )


def check_storage_url(url: str) -> None:
    """Check a storage URL without opening it (nothing is created); one-line StorageError."""
    masked = mask_url(url)
    from thaw.search._proxy import ProxyError, check_url, is_grpc_url, is_journal_url

    if is_grpc_url(url) or is_journal_url(url):
        try:
            check_url(url)
        except ProxyError as exc:
            raise StorageError(str(exc)) from None
        return
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - sqlalchemy raises several kinds for a malformed URL
        raise StorageError(
            f"storage {masked} is not a database URL; use e.g. sqlite:///demo.db, "
            "postgresql://user@host/db, grpc://HOST:PORT or journal:///study.journal"
        ) from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql", "mysql"):
        raise StorageError(
            f"storage {masked}: unknown database {backend!r}; use sqlite:///file.db, "
            "postgresql://user@host/db, grpc://HOST:PORT or journal:///study.journal"
        )
    if backend != "sqlite":
        return
    if not url.startswith("sqlite:///") or parsed.database in (None, "", ":memory:"):
        raise StorageError(
            f"storage {masked}: an in-memory SQLite database is lost when thaw exits; give a "
            "file, e.g. sqlite:///demo.db"
        )
    db = Path(url[len("sqlite:///") :])
    if not db.parent.exists():
        raise StorageError(
            f"cannot open storage {masked}: folder {db.parent} does not exist; create it or "
            "change 'storage'"
        )
    if db.is_dir():
        raise StorageError(f"storage {masked} is a folder; give a file such as {db}/study.db")
    if db.exists() and db.stat().st_size > 0:
        with db.open("rb") as f:
            header = f.read(16)
        if header != b"SQLite format 3\x00":
            raise StorageError(
                f"storage {masked}: {db} exists and is not a SQLite database; give another file"
            )
        refuse_foreign_sqlite(db, masked)
    # SQLite writes the database and its journal beside it: the folder must be writable.
    if not os.access(db.parent, os.W_OK | os.X_OK):
        raise StorageError(
            f"cannot use storage {masked}: folder {db.parent} is not writable; give a storage "
            "file in a folder you can write (--storage sqlite:///path/to/study.db)"
        )
    if db.exists() and not os.access(db, os.W_OK):
        raise StorageError(
            f"cannot use storage {masked}: {db} is not writable; make it writable or give "
            "another file"
        )


#: Tables every Optuna RDB storage holds (a SQLite file without them is not Optuna's).
OPTUNA_TABLES = frozenset({"studies", "trials", "alembic_version"})


def refuse_foreign_sqlite(db: Path, masked: str) -> None:
    """Refuse a SQLite file holding tables but not Optuna's, before Optuna adds its own."""
    tables = sqlite_tables(db) if db.is_file() and db.stat().st_size > 0 else []
    if tables and not set(tables) >= OPTUNA_TABLES:
        shown = ", ".join(tables[:5]) + (" ..." if len(tables) > 5 else "")
        raise StorageError(
            f"storage {masked}: {db} is another application's SQLite database (tables: "
            f"{shown}); give thaw a file of its own, e.g. {db.parent / 'thaw.db'}"
        )


def sqlite_tables(db: Path) -> list[str]:
    """The tables of a SQLite file, read without writing to it (read-only, immutable)."""
    import sqlite3
    from urllib.parse import quote

    try:
        conn = sqlite3.connect(f"file:{quote(str(db))}?mode=ro&immutable=1", uri=True)
    except sqlite3.Error:
        return []
    try:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    except sqlite3.Error:
        return []
    finally:
        conn.close()
    return sorted(str(r[0]) for r in rows)


def hyperband_brackets(min_resource: int, max_resource: int, reduction_factor: int) -> int:
    """Brackets whose first rung lies below ``max_resource`` (at least 1)."""
    n, r = 0, min_resource
    while r < max_resource:
        n += 1
        r *= reduction_factor
    return max(1, n)


def open_storage(url: str, must_exist: bool = False) -> optuna.storages.BaseStorage:
    """Open a storage; one-line :class:`StorageError` (password masked) when it fails.

    ``grpc://HOST:PORT``: Optuna's gRPC storage proxy (``thaw storage-proxy``);
    ``journal:///file``: Optuna's journal file storage; otherwise a database (RDB storage).
    """
    masked = mask_url(url)
    from thaw.search._proxy import (
        ProxyError,
        is_grpc_url,
        is_journal_url,
        open_grpc_storage,
        open_journal_storage,
    )

    if is_grpc_url(url) or is_journal_url(url):
        if must_exist and is_journal_url(url):
            from thaw.search._proxy import journal_path

            if not journal_path(url).exists():
                raise StorageError(
                    f"no storage at {url}: the file does not exist; run 'thaw run' first or "
                    "pass --storage"
                )
        try:
            return open_grpc_storage(url) if is_grpc_url(url) else open_journal_storage(url)
        except ProxyError as exc:
            raise StorageError(str(exc)) from None
    if url.startswith("sqlite:///"):
        db = Path(url[len("sqlite:///") :])
        if must_exist and not db.exists():
            raise StorageError(
                f"no storage at {masked}: the file does not exist; run 'thaw run' first or pass "
                "--storage"
            )
        if not db.parent.exists():
            raise StorageError(
                f"cannot open storage {masked}: folder {db.parent} does not exist; create it or "
                "change 'storage'"
            )
        refuse_foreign_sqlite(db, masked)
    # Heartbeats on every RDB storage, SQLite included: a trial whose worker dies is failed with
    # the reason and queued again (search/_faults.py); a dropped connection is retried.
    from thaw.search._faults import make_rdb_storage

    try:
        return make_rdb_storage(url)
    except Exception as exc:  # noqa: BLE001 - sqlalchemy raises many kinds; all mean "cannot open"
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        detail = detail.replace(url, masked)
        raise StorageError(
            f"cannot open storage {masked}: {type(exc).__name__}: {detail[:300]}"
        ) from None


@contextlib.contextmanager
def sqlite_run_lock(url: str) -> Iterator[None]:
    """SQLite serves one process: held while a run uses a ``sqlite:///`` file, so that a second
    run on the same file, from another process, is refused in one line (:class:`StorageError`)
    instead of both writing to it and taking the same trial slots.

    An advisory ``flock`` on the database file itself, taken before the storage is opened (an
    empty file is created for it when there is none, and removed again if it is still empty at
    the end): SQLite's own locks are of another kind (``fcntl``) and do not see it, and the lock
    goes with the process that holds it, however it ends. Nothing to hold for other storages,
    where ``flock`` is missing, or where the file cannot be opened (the storage's own checks
    then say why).
    """
    db = Path(url[len("sqlite:///") :].split("?", 1)[0]) if url.startswith("sqlite:///") else None
    try:
        import fcntl
    except ImportError:  # Windows
        fcntl = None  # type: ignore[assignment]
    if db is None or fcntl is None or db.is_dir():
        yield
        return
    created = not db.exists()
    try:
        fd = os.open(db, os.O_RDONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as exc:
        _logger.debug("No lock on %s: %s", db, exc)
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            created = False  # the other run's file
            raise StorageError(
                f"storage {mask_url(url)}: another thaw run is using {db} right now, and SQLite "
                "serves one process; wait for it to end (a rerun then resumes the study), or "
                "share the study through PostgreSQL to run workers side by side "
                "(docs/cluster.md)"
            ) from None
        except OSError as exc:  # a file system without flock: nothing to hold
            _logger.debug("No lock on %s: %s", db, exc)
        yield
    finally:
        if created:
            with contextlib.suppress(OSError):
                if db.stat().st_size == 0:
                    db.unlink()  # refused before anything was written: nothing left behind
        os.close(fd)  # releases the lock


def study_exists(storage: optuna.storages.BaseStorage, name: str) -> bool:
    return any(s.study_name == name for s in storage.get_all_studies())


def load_existing_study(
    storage: optuna.storages.BaseStorage, name: str, storage_url: str
) -> optuna.Study:
    if not study_exists(storage, name):
        names = sorted(s.study_name for s in storage.get_all_studies())
        known = f"; studies there: {', '.join(names)}" if names else "; it holds no study"
        raise StorageError(f"no study named {name!r} in {mask_url(storage_url)}{known}")
    return optuna.load_study(study_name=name, storage=storage)


def manifest() -> dict[str, str]:
    """Versions and device of this process, stored on the study."""
    import keras
    import numpy

    info = {
        "thaw": __version__,
        "python": platform.python_version(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "optuna": optuna.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "device": _device_name(),
    }
    for module in ("tensorflow", "jax"):
        mod = sys.modules.get(module)
        if mod is not None:
            info[module] = str(getattr(mod, "__version__", "?"))
    return info


def _device_name() -> str:
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            devices = jax.devices()
            return ", ".join(sorted({f"{d.platform}:{d.device_kind}" for d in devices}))
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                names = [
                    tf.config.experimental.get_device_details(g).get("device_name", g.name)
                    for g in gpus
                ]
                return ", ".join(names)
    except Exception:  # noqa: BLE001 - the device name is informative only
        pass
    return f"CPU: {_cpu_model()}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def create_or_resume(
    config: StudyConfig,
    storage: optuna.storages.BaseStorage,
    num_layers: int,
    data_summary: dict[str, Any],
    *,
    domain_shift: dict[str, Any] | None = None,
    n_workers: int = 1,
    sampler_salt: int = 0,
    num_classes: int | None = None,
    unfreeze_by: str = "layers",
    range_test: dict[str, Any] | None = None,
    model_fingerprint: str | None = None,
    shift_profile: list[dict[str, Any]] | None = None,
    chance: Mapping[str, Any] | None = None,
) -> tuple[optuna.Study, bool]:
    """Return the study and whether it was resumed. Refuses a changed search space or data.

    A new study stores ``domain_shift`` and starts with the informed start (when
    ``reference_trials``); the sampler's seed depends on the trials the study already holds, so
    a resumed study does not repeat its configurations. ``chance``: the target's task and
    chance levels (``objectives.chance_levels``), stored as ``thaw:task`` and ``thaw:chance``
    and read by the pruner; without it, ln K and 1/K of the classes.
    """
    classes = num_classes or len(data_summary.get("class_names") or []) or None
    floor = pruner_chance(config.train.metric, classes, chance)
    pruner = make_pruner(config.pruner, config.train.epochs, chance=floor)
    config_hash = config.config_hash()

    def _finish_creation(study: optuna.Study) -> tuple[optuna.Study, bool]:
        # A new study, or one a killed run left half-created: attrs and informed start, then
        # the sampler that models right after that start.
        complete_creation(
            study,
            config,
            num_layers,
            data_summary,
            domain_shift=domain_shift,
            unfreeze_by=unfreeze_by,
            range_test=range_test,
            model_fingerprint=model_fingerprint,
            shift_profile=shift_profile,
            chance=chance,
        )
        _attach_sampler(study, config, n_workers, sampler_salt, resumed=False)
        return study, False

    if study_exists(storage, config.name):
        study = optuna.load_study(study_name=config.name, storage=storage, pruner=pruner)
        attrs = study.user_attrs
        stored_hash = attrs.get(CONFIG_HASH)
        if stored_hash is None:
            if not _half_created(study):
                raise StudyMismatchError(
                    f"study {config.name!r} exists in {mask_url(config.storage)} but was not "
                    "created by thaw; choose another 'name'"
                )
            if study.direction != StudyDirection[config.direction.upper()]:
                raise StudyMismatchError(
                    f"study {config.name!r} in {mask_url(config.storage)} was left half-created "
                    f"with direction {study.direction.name.lower()}, but objective "
                    f"{config.train.metric!r} needs {config.direction}; delete it (optuna "
                    "delete-study) or choose another 'name'"
                )
            # Killed while it was being created: finish the creation, never refuse it.
            _logger.warning("Study %r was left half-created; completing it", config.name)
            return _finish_creation(study)
        check_same_study(config, attrs, data_summary, model_fingerprint)
        if stored_hash != config_hash or (
            model_fingerprint is not None and MODEL_FINGERPRINT not in attrs
        ):
            # A study stored by thaw 0.2.0 or earlier (paths in its hash): from now on it is
            # identified by content, wherever its files sit.
            study.set_user_attr(CONFIG_HASH, config_hash)
            if model_fingerprint is not None:
                study.set_user_attr(MODEL_FINGERPRINT, model_fingerprint)
        _attach_sampler(study, config, n_workers, sampler_salt, resumed=True)
        return study, True
    study = optuna.create_study(
        study_name=config.name,
        storage=storage,
        sampler=make_sampler(config.sampler, sampler_seed(config.seed, 0, sampler_salt), n_workers),
        pruner=pruner,
        direction=StudyDirection[config.direction.upper()],
    )
    return _finish_creation(study)


#: The parts of a study's identity, in the order a difference is named, with their words.
_PARTS: tuple[tuple[str, str], ...] = (
    ("search_space", "search space"),
    ("model", "model"),
    ("data", "data"),
    ("train", "training settings"),
)


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k in sorted(value):
            out.update(_flat(value[k], f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return "unset" if value is None else str(value)


def config_difference(stored: dict[str, Any], current: dict[str, Any]) -> str | None:
    """The first difference between two study identities (:meth:`StudyConfig.identity`), as
    ``"a different search space (learning_rate.high 0.01 -> 0.03)"``; None when they agree."""
    stored, current = without_paths(stored), without_paths(current)
    for part, words in _PARTS:
        old, new = _flat(stored.get(part) or {}), _flat(current.get(part) or {})
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                article = "" if part == "data" else "a "
                return (
                    f"{article}different {words} ({key} {_shown(old.get(key))} -> "
                    f"{_shown(new.get(key))})"
                )
    return None


def check_same_study(
    config: StudyConfig,
    attrs: dict[str, Any],
    data_summary: dict[str, Any],
    model_fingerprint: str | None = None,
) -> None:
    """Refuse, in one line naming the difference, a study file whose search space, model or
    data differ from the stored study's. Paths do not count: the model file's and the data's
    content fingerprints do.

    A study stored by thaw 0.2.0 or earlier has absolute paths in its hash and no model
    fingerprint: when only paths differ it is accepted, with a warning that the model file
    could not be compared (its fingerprint is stored from then on).
    """
    name = config.name
    fix = "use a new study name or restore the file"
    stored_hash = attrs.get(CONFIG_HASH)
    if stored_hash not in (config.config_hash(), config.legacy_config_hash()):
        difference = config_difference(dict(attrs.get(CONFIG) or {}), config.identity())
        if difference is not None:
            raise StudyMismatchError(f"study {name!r} was created with {difference}; {fix}")
        if MODEL_FINGERPRINT in attrs:
            raise StudyMismatchError(
                f"study {name!r} was created with different settings (its stored hash differs); "
                f"{fix}"
            )
        _logger.warning(
            "Study %r was stored by thaw 0.2.0 or earlier with other file paths; resuming it "
            "with the same settings and data (its model file could not be compared)",
            name,
        )
    stored_fp = (attrs.get(DATA) or {}).get("fingerprint")
    if stored_fp is not None and stored_fp != data_summary.get("fingerprint", stored_fp):
        raise StudyMismatchError(
            f"study {name!r} was run on different data (fingerprint {stored_fp[:12]} -> "
            f"{str(data_summary['fingerprint'])[:12]} now); use a new study name or restore the "
            "data"
        )
    stored_model = attrs.get(MODEL_FINGERPRINT)
    if stored_model is not None and model_fingerprint not in (None, stored_model):
        raise StudyMismatchError(
            f"study {name!r} was created with a different model (fingerprint "
            f"{stored_model[:12]} -> {str(model_fingerprint)[:12]} now); use a new study name "
            "or restore the model file"
        )


def needs_creation(storage: optuna.storages.BaseStorage, name: str) -> bool:
    """Whether the study ``name`` is still to be created: absent, or left half-created (no
    ``thaw:config_hash``) by a run killed while creating it."""
    if not study_exists(storage, name):
        return True
    study_id = storage.get_study_id_from_name(name)
    if CONFIG_HASH in storage.get_study_user_attrs(study_id):
        return False
    # Only what a killed creation leaves (a foreign study is refused, not measured)
    return all(
        t.state == TrialState.WAITING and start_label(t) is not None
        for t in storage.get_all_trials(study_id, deepcopy=False)
    )


def _half_created(study: optuna.Study) -> bool:
    """A study thaw began to create and did not finish (killed): no ``thaw:config_hash`` yet,
    and at most the waiting informed-start trials thaw queues at creation."""
    return all(
        t.state == TrialState.WAITING and start_label(t) is not None
        for t in study.get_trials(deepcopy=False)
    )


def pruner_chance(
    metric: str, num_classes: int | None, chance: Mapping[str, Any] | None = None
) -> float | None:
    """The objective's chance-level value the pruner reads: of a multi-label target its chance
    loss or accuracy (``chance``), 0.5 for ROC AUC and none for F1; else ``chance_value(K)``."""
    if chance is not None and chance.get("task") == "multilabel":
        value = {
            "val_loss": chance.get("loss"),
            "val_accuracy": chance.get("accuracy"),
            "val_auc": 0.5,
        }.get(metric)
        return float(value) if isinstance(value, (int, float)) and value > 0 else None
    if num_classes is None or num_classes < 2:
        return None
    return chance_value(num_classes, metric)


def complete_creation(
    study: optuna.Study,
    config: StudyConfig,
    num_layers: int,
    data_summary: dict[str, Any],
    *,
    domain_shift: dict[str, Any] | None = None,
    unfreeze_by: str = "layers",
    range_test: dict[str, Any] | None = None,
    model_fingerprint: str | None = None,
    shift_profile: list[dict[str, Any]] | None = None,
    chance: Mapping[str, Any] | None = None,
) -> None:
    """Store the study's attrs and queue the informed start's trials not queued yet.

    ``shift_profile``: the per-layer BatchNorm shift profile (``objectives.shift_profile``),
    stored with the block it points to as ``thaw:shift_profile``.

    ``thaw:config_hash`` is written last: a study without it is half-created, and the next run
    completes it (:func:`create_or_resume`).
    """
    study.set_user_attr(VERSION, __version__)
    study.set_user_attr(CONFIG, config.to_dict())
    study.set_user_attr(OBJECTIVE_METRIC, config.train.metric)
    study.set_user_attr(NUM_LAYERS, num_layers)
    study.set_user_attr(DATA, data_summary)
    if chance is not None:
        study.set_user_attr(TASK, str(chance.get("task", "multiclass")))
        study.set_user_attr(
            CHANCE, {"loss": float(chance["loss"]), "accuracy": float(chance["accuracy"])}
        )
    study.set_user_attr(MANIFEST, manifest())
    if model_fingerprint is not None:
        study.set_user_attr(MODEL_FINGERPRINT, model_fingerprint)
    if domain_shift is not None:
        study.set_user_attr(DOMAIN_SHIFT, domain_shift)
    if range_test is not None:
        study.set_user_attr(RANGE_TEST, range_test)
    else:
        range_test = study.user_attrs.get(RANGE_TEST)
    if shift_profile is not None:
        study.set_user_attr(
            SHIFT_PROFILE, profile_attr(config, num_layers, unfreeze_by, shift_profile)
        )
    profile = profile_shifts(study.user_attrs.get(SHIFT_PROFILE))
    if config.reference_trials:
        queued = {start_label(t) for t in study.get_trials(deepcopy=False)}
        shift = _overall_shift(domain_shift)
        for ref in reference_configurations(
            config, num_layers, shift, unfreeze_by, range_test, profile=profile
        ):
            if ref["strategy"] not in queued:
                study.enqueue_trial(ref["params"], user_attrs=ref["user_attrs"])
    study.set_user_attr(CONFIG_HASH, config.config_hash())


def profile_attr(
    config: StudyConfig, num_layers: int, unfreeze_by: str, groups: list[dict[str, Any]]
) -> dict[str, Any]:
    """``thaw:shift_profile``: the profile's groups and the block it points to for the
    textbook partial trial's number of layers (``search._budget.profile_block``)."""
    shifts = profile_shifts({"groups": groups}) or []
    size = surgical_size(config.space.resolve(num_layers, unfreeze_by))
    start = profile_block(shifts, size)
    block = None
    if start is not None:
        block = {
            "start": start,
            "size": size,
            "first": groups[start].get("name"),
            "last": groups[start + size - 1].get("name"),
            "top": start + size == len(groups),
        }
    return {"unit": unfreeze_by, "groups": groups, "block": block}


def profile_shifts(attr: Any) -> list[float | None] | None:
    """The scores of a stored ``thaw:shift_profile``, bottom to top (None: no profile)."""
    profile = ShiftProfile.from_attr(attr)
    return list(profile.shifts) if profile is not None else None


def _overall_shift(domain_shift: dict[str, Any] | None) -> float | None:
    value = (domain_shift or {}).get("overall")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def reference_configurations(
    config: StudyConfig,
    num_layers: int,
    shift: float | None = None,
    unfreeze_by: str = "layers",
    range_test: dict[str, Any] | None = None,
    *,
    profile: list[float | None] | None = None,
) -> list[dict[str, Any]]:
    """The trials queued at creation: the informed start's portfolio (textbook strategies in
    every BatchNorm mode, at the range test's rates, clamped into the search space), as the
    first screening round (see :func:`informed_start` and :func:`screen_rungs`). Each is
    ``{"strategy": label, "params": ..., "user_attrs": ...}``."""
    space = narrowed_space(config.space.resolve(num_layers, unfreeze_by), range_test)
    start, rungs = fit_start_to_budget(
        informed_start(space, shift, rates=range_test_rates(range_test), profile=profile),
        config.train.epochs,
        config.pruner.reduction_factor,
        config.budget_epochs,
    )
    return [
        {"strategy": t.strategy, "params": params, "user_attrs": attrs}
        for t, (params, attrs) in zip(start, start_queue(start, rungs), strict=True)
    ]


@dataclass
class RunSummary:
    study_name: str
    resumed: bool
    trials_run: int
    counts: dict[str, int]
    prune_reasons: dict[str, int]
    best_number: int | None
    best_value: float | None
    best_params: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False
    best_pruned: bool = False
    epochs_spent: int | None = None
    budget_epochs: int | None = None
    #: "Nothing learnt much: ... Next: ..." when nothing did (the report's first line).
    headline: str | None = None
    #: The best trial's own verdict and what it calls for (the report's Answer says the same).
    advice: str | None = None
    #: The best trial's logged metrics (``metrics: [auc, f1]``) at its best epoch, as the
    #: report's ranking gives them, the objective's own left out (``best_value`` is it).
    best_metrics: dict[str, float | None] = field(default_factory=dict)


def summarise(
    study: optuna.Study, finished_before: int, resumed: bool, interrupted: bool
) -> RunSummary:
    trials = study.get_trials(deepcopy=False, states=FINISHED_STATES)
    counts = Counter(t.state.name.lower() for t in trials)
    reasons = Counter(
        str(t.user_attrs.get("prune_reason", "unknown"))
        for t in trials
        if t.state == TrialState.PRUNED
    )
    best = best_trial(study)
    from thaw.search._budget import epochs_spent

    budget = study.user_attrs.get(BUDGET_EPOCHS)
    from thaw.reports import get_answer_story

    headline = advice = None
    try:
        story = get_answer_story(study, best.trial.number if best else None)
        headline = story.headline
        advice = None if story.advice is None else story.advice.sentence
    except Exception as exc:  # noqa: BLE001 - the summary line must not fail a finished run
        _logger.warning("No diagnosis in the run summary: %s", exc)
    best_metrics: dict[str, float | None] = {}
    if best is not None:
        from thaw.reports import get_ranking_info

        ranking = get_ranking_info(study)
        row = next((r for r in ranking.rows if r.number == best.trial.number), None)
        if row is not None:
            best_metrics = {
                m: row.metrics_at_best.get(m)
                for m in ranking.metric_columns
                if m != ranking.objective_metric
            }
    return RunSummary(
        study_name=study.study_name,
        resumed=resumed,
        trials_run=len(trials) - finished_before,
        counts=dict(sorted(counts.items())),
        prune_reasons=dict(sorted(reasons.items())),
        best_number=best.trial.number if best else None,
        best_value=best.value if best else None,
        best_params=dict(best.trial.params) if best else {},
        interrupted=interrupted,
        best_pruned=best.pruned if best else False,
        epochs_spent=epochs_spent(study),
        budget_epochs=budget if isinstance(budget, int) else None,
        headline=headline,
        advice=advice,
        best_metrics=best_metrics,
    )
