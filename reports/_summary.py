"""The answer of a study, its pruning savings and its manifest, computed from a ranking."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from thaw._keys import CONFIG, CONFIG_HASH, DATA, MANIFEST, NUM_LAYERS, OBJECTIVE_METRIC, VERSION
from thaw.reports._attrs import as_int, as_str, dig
from thaw.reports._findings import get_determinism_info
from thaw.reports._ranking import RankingInfo, RankingRow

_logger = logging.getLogger(__name__)

PRUNE_REASONS = ("climbing", "below_peers", "diverged")
"""Known prune reasons in display order; unknown ones follow alphabetically."""

UNSPECIFIED_REASON = "unspecified"
NOT_RECORDED = "not recorded"

STRATEGIES = ("full fine-tuning", "partial fine-tuning", "feature extraction")
"""Textbook reference strategies in display order; unknown ones follow alphabetically."""

MANIFEST_KEYS = (
    "thaw",
    "python",
    "keras",
    "backend",
    "tensorflow",
    "jax",
    "optuna",
    "numpy",
    "device",
)

_SEED_PATHS = (
    ("seed",),
    ("search", "seed"),
    ("study", "seed"),
    ("sampler", "seed"),
    ("search", "sampler", "seed"),
    ("train", "seed"),
)
_SAMPLER_PATHS = (("sampler",), ("search", "sampler"), ("study", "sampler"))
_PRUNER_PATHS = (("pruner",), ("search", "pruner"), ("study", "pruner"))
_EPOCHS_PATH = ("train", "epochs")
_MODEL_PATHS = (("model",),)


@dataclass(frozen=True)
class StrategyComparison:
    """A textbook reference trial next to the best searched configuration."""

    strategy: str
    number: int
    state: str
    rank: int | None
    score: float | None
    best_val_loss: float | None
    val_accuracy_at_best: float | None
    search_advantage: float | None
    """How much better the best searched trial's score is (positive: the search wins)."""
    loss_ratio: float | None = None
    """The strategy's best val loss divided by the answer's (2.0: the answer's loss is half)."""
    accuracy_difference: float | None = None
    """The answer's val accuracy at its best epoch minus the strategy's (positive: better)."""


@dataclass(frozen=True)
class AnswerInfo:
    """What the study found, in the order the report states it."""

    best: RankingRow | None
    """Best COMPLETE trial; ``None`` when no trial completed."""
    best_overall: RankingRow | None
    """Rank-1 trial of any state (may be a pruned trial that got lower before stopping)."""
    best_searched: RankingRow | None
    """Best COMPLETE trial that is not a textbook strategy trial."""
    strategies: tuple[StrategyComparison, ...]
    prune_counts: tuple[tuple[str, int], ...]
    n_trials: int
    n_complete: int
    n_pruned: int
    n_failed: int
    n_unfinished: int
    num_layers: int | None
    score_label: str
    maximize: bool


@dataclass(frozen=True)
class PruneReasonSummary:
    reason: str
    n_trials: int
    epochs_run: int
    epochs_saved: int | None


@dataclass(frozen=True)
class PruningInfo:
    """Epochs spent against the epochs a search without pruning would have spent."""

    configured_epochs: int | None
    epochs_source: str
    n_finished: int
    """COMPLETE plus PRUNED trials."""
    epochs_spent: int
    epochs_unpruned: int | None
    epochs_saved: int | None
    fraction_saved: float | None
    n_missing_epochs: int
    """Finished trials that recorded no epoch count (counted as 0 epochs spent)."""
    by_reason: tuple[PruneReasonSummary, ...]


@dataclass(frozen=True)
class ManifestInfo:
    """Provenance of the study as ``(label, text)`` pairs in display order."""

    entries: tuple[tuple[str, str], ...]
    data_fingerprint: str | None
    config_hash: str | None
    seed: str | None
    storage_url: str | None
    values: Mapping[str, Any] = field(default_factory=dict)
    """The manifest as typed data under stable snake_case keys (summary.json)."""


def get_answer_info(ranking: RankingInfo, study_attrs: Mapping[str, Any]) -> AnswerInfo:
    """The best configuration, how it compares with textbook strategies, pruned counts."""
    best = ranking.best_complete
    ranked = ranking.ranked
    best_searched = next(
        (row for row in ranked if row.state == "COMPLETE" and row.strategy is None), None
    )
    strategies = tuple(
        _compare(row, best_searched, ranking.maximize, best)
        for row in sorted(
            (r for r in ranking.rows if r.strategy is not None),
            key=lambda r: (_strategy_order(r.strategy), r.strategy or "", r.number),
        )
    )
    reasons = Counter(
        row.prune_reason or UNSPECIFIED_REASON for row in ranking.rows if row.state == "PRUNED"
    )
    unfinished = ranking.count("RUNNING") + ranking.count("WAITING")
    score_label = f"best {ranking.objective_metric}" if ranking.maximize else "best val loss"
    return AnswerInfo(
        best=best,
        best_overall=ranked[0] if ranked else None,
        best_searched=best_searched,
        strategies=strategies,
        prune_counts=tuple((reason, reasons[reason]) for reason in _reason_order(reasons)),
        n_trials=ranking.n_trials,
        n_complete=ranking.count("COMPLETE"),
        n_pruned=ranking.count("PRUNED"),
        n_failed=ranking.count("FAIL"),
        n_unfinished=unfinished,
        num_layers=as_int(study_attrs.get(NUM_LAYERS)),
        score_label=score_label,
        maximize=ranking.maximize,
    )


def get_pruning_info(ranking: RankingInfo, study_attrs: Mapping[str, Any]) -> PruningInfo:
    """Epochs spent by finished trials against ``n_finished * configured epochs``.

    The configured epoch count comes from ``thaw:config["train"]["epochs"]``; without it the
    most epochs any trial ran stands in.
    """
    finished = [row for row in ranking.rows if row.state in ("COMPLETE", "PRUNED")]
    configured = as_int(dig(study_attrs.get(CONFIG), *_EPOCHS_PATH))
    source = "thaw:config train.epochs"
    if configured is None or configured <= 0:
        runs = [row.epochs_run for row in finished if row.epochs_run is not None]
        configured = max(runs) if runs else None
        source = "most epochs run by any trial" if configured is not None else "unknown"
    spent = sum(row.epochs_run or 0 for row in finished)
    missing = sum(1 for row in finished if row.epochs_run is None)
    unpruned = None if configured is None else configured * len(finished)
    saved = None if unpruned is None else unpruned - spent
    fraction = None if saved is None or not unpruned else saved / unpruned

    pruned = [row for row in finished if row.state == "PRUNED"]
    groups: dict[str, list[RankingRow]] = {}
    for row in pruned:
        groups.setdefault(row.prune_reason or UNSPECIFIED_REASON, []).append(row)
    by_reason = tuple(
        PruneReasonSummary(
            reason=reason,
            n_trials=len(groups[reason]),
            epochs_run=sum(row.epochs_run or 0 for row in groups[reason]),
            epochs_saved=None
            if configured is None
            else sum(max(configured - (row.epochs_run or 0), 0) for row in groups[reason]),
        )
        for reason in _reason_order(groups)
    )
    return PruningInfo(
        configured_epochs=configured,
        epochs_source=source,
        n_finished=len(finished),
        epochs_spent=spent,
        epochs_unpruned=unpruned,
        epochs_saved=saved,
        fraction_saved=fraction,
        n_missing_epochs=missing,
        by_reason=by_reason,
    )


def get_manifest_info(
    study_name: str, study_attrs: Mapping[str, Any], storage_url_masked: str | None = None
) -> ManifestInfo:
    """Provenance: versions, device, config hash, data fingerprint, seed, sampler, pruner.

    ``storage_url_masked`` is shown as given; the caller must have masked any password.
    """
    config = study_attrs.get(CONFIG)
    data = study_attrs.get(DATA)
    manifest = study_attrs.get(MANIFEST)

    fingerprint = as_str(dig(data, "fingerprint"))
    config_hash = as_str(study_attrs.get(CONFIG_HASH))
    seed_value = _first(config, _SEED_PATHS)
    seed = None if seed_value is None else manifest_text(seed_value)

    entries: list[tuple[str, str]] = [("study name", study_name)]
    if not (isinstance(manifest, Mapping) and "thaw" in manifest):
        # The manifest's own "thaw" row says it otherwise; only older or hand-made studies lack it.
        entries.append(("thaw version", manifest_text(study_attrs.get(VERSION))))
    entries += [
        ("objective metric", manifest_text(study_attrs.get(OBJECTIVE_METRIC))),
        ("config hash", manifest_text(config_hash)),
        ("data fingerprint", manifest_text(fingerprint)),
    ]
    class_names = dig(data, "class_names")
    if isinstance(class_names, list):
        entries.append(("classes", f"{len(class_names)}: {', '.join(map(str, class_names))}"))
    for key in ("train_counts", "val_counts"):
        counts = dig(data, key)
        if isinstance(counts, list) and all(isinstance(c, int) for c in counts):
            label = key.replace("_counts", " images")
            entries.append((label, f"{sum(counts)} ({', '.join(map(str, counts))})"))
    entries += [
        ("seed", manifest_text(seed)),
        ("sampler", manifest_text(_first(config, _SAMPLER_PATHS))),
        ("pruner", manifest_text(_first(config, _PRUNER_PATHS))),
        ("model", manifest_text(_first(config, _MODEL_PATHS))),
        ("layers with weights", manifest_text(study_attrs.get(NUM_LAYERS))),
        ("deterministic", get_determinism_info(study_attrs).label),
        ("storage", manifest_text(storage_url_masked)),
    ]
    if isinstance(manifest, Mapping):
        keys = [k for k in MANIFEST_KEYS if k in manifest]
        keys += sorted(str(k) for k in manifest if k not in MANIFEST_KEYS)
        entries += [(key, manifest_text(manifest[key])) for key in keys]
    else:
        entries.append(("versions", manifest_text(None)))
    determinism = get_determinism_info(study_attrs)
    values: dict[str, Any] = {
        "study_name": study_name,
        "thaw_version": _json_value(study_attrs.get(VERSION)),
        "objective_metric": as_str(study_attrs.get(OBJECTIVE_METRIC)),
        "config_hash": config_hash,
        "data_fingerprint": fingerprint,
        "class_names": [str(c) for c in class_names] if isinstance(class_names, list) else None,
        "train_counts": _int_list(dig(data, "train_counts")),
        "val_counts": _int_list(dig(data, "val_counts")),
        "seed": _json_value(seed_value),
        "sampler": _json_value(_first(config, _SAMPLER_PATHS)),
        "pruner": _json_value(_first(config, _PRUNER_PATHS)),
        "model": _json_value(_first(config, _MODEL_PATHS)),
        "num_layers": as_int(study_attrs.get(NUM_LAYERS)),
        "deterministic": determinism.deterministic,
        "determinism_reason": determinism.reason,
        "storage_url": storage_url_masked,
        "versions": {_snake(str(k)): _json_value(v) for k, v in manifest.items()}
        if isinstance(manifest, Mapping)
        else None,
    }
    return ManifestInfo(
        entries=tuple(entries),
        data_fingerprint=fingerprint,
        config_hash=config_hash,
        seed=seed,
        storage_url=storage_url_masked,
        values=values,
    )


def _snake(key: str) -> str:
    """A stable snake_case identifier for a manifest key (``Device Name`` -> ``device_name``)."""
    return re.sub(r"[^0-9a-z]+", "_", key.lower()).strip("_") or "key"


def _int_list(value: Any) -> list[int] | None:
    if isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return list(value)
    return None


def _json_value(value: Any) -> Any:
    """``value`` as typed JSON data: a string holding a JSON object or list is parsed."""
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in ("{", "[") and text[-1:] in ("}", "]"):
            try:
                return json.loads(text)
            except ValueError:
                return value
        return value
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return str(value)


def _compare(
    row: RankingRow,
    best_searched: RankingRow | None,
    maximize: bool,
    best: RankingRow | None = None,
) -> StrategyComparison:
    ratio: float | None = None
    accuracy: float | None = None
    if best is not None:
        if (
            best.best_val_loss is not None
            and row.best_val_loss is not None
            and best.best_val_loss > 0
        ):
            ratio = row.best_val_loss / best.best_val_loss
        if best.val_accuracy_at_best is not None and row.val_accuracy_at_best is not None:
            accuracy = best.val_accuracy_at_best - row.val_accuracy_at_best
    advantage: float | None = None
    if best_searched is not None and best_searched.score is not None and row.score is not None:
        diff = best_searched.score - row.score
        advantage = diff if maximize else -diff
    return StrategyComparison(
        strategy=row.strategy or "",
        number=row.number,
        state=row.state,
        rank=row.rank,
        score=row.score,
        best_val_loss=row.best_val_loss,
        val_accuracy_at_best=row.val_accuracy_at_best,
        search_advantage=advantage,
        loss_ratio=ratio,
        accuracy_difference=accuracy,
    )


def _strategy_order(strategy: str | None) -> int:
    return STRATEGIES.index(strategy) if strategy in STRATEGIES else len(STRATEGIES)


def _reason_order(reasons: Mapping[str, Any]) -> list[str]:
    known = [r for r in PRUNE_REASONS if r in reasons]
    return known + sorted(r for r in reasons if r not in PRUNE_REASONS)


def _first(data: Any, paths: tuple[tuple[str, ...], ...]) -> Any:
    for path in paths:
        value = dig(data, *path)
        if value is not None:
            return value
    return None


def manifest_text(value: Any) -> str:
    """Display text for a manifest value; structured values become compact sorted JSON."""
    if value is None:
        return NOT_RECORDED
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, sort_keys=True, separators=(", ", ": "), default=str)
    except (TypeError, ValueError):
        _logger.debug("manifest value %r is not JSON-able", value)
        return str(value)
