"""Surgical fine-tuning as data: the BatchNorm shift profile stored at creation
(``thaw:shift_profile``), the block it points to, and how the unfrozen blocks tried
(``thaw:unfrozen_block``) compare with unfreezing as many layers from the top.

Reads storage only; the sentences are composed here, the report renders them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from thaw._keys import SCREEN, SHIFT_PROFILE, TRIAL_EPOCHS, UNFROZEN_BLOCK
from thaw.reports._attrs import as_float, as_int, as_str
from thaw.reports.diagnosis import trial_score


@dataclass(frozen=True)
class ProfileGroup:
    """One layer (or block) of the profile, bottom to top."""

    name: str
    shift: float | None
    batchnorm: int
    in_block: bool


@dataclass(frozen=True)
class SurgicalComparison:
    """The best block of ``layers`` layers tried below the top, against the top ones."""

    layers: int
    first: str
    last: str
    start: int
    block_trial: int
    block_value: float
    top_trial: int | None
    top_value: float | None
    sentence: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": self.layers,
            "first": self.first,
            "last": self.last,
            "start": self.start,
            "block_trial": self.block_trial,
            "block_value": self.block_value,
            "top_trial": self.top_trial,
            "top_value": self.top_value,
            "sentence": self.sentence,
        }


@dataclass(frozen=True)
class SurgicalInfo:
    """The profile (bottom to top), where it points, and the blocks against the top."""

    unit: str
    groups: tuple[ProfileGroup, ...]
    sentence: str
    comparisons: tuple[SurgicalComparison, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "groups": [
                {"name": g.name, "shift": g.shift, "batchnorm": g.batchnorm, "in_block": g.in_block}
                for g in self.groups
            ],
            "sentence": self.sentence,
            "comparisons": [c.to_dict() for c in self.comparisons],
        }


def profile_groups(attr: Any) -> tuple[str, tuple[ProfileGroup, ...], str]:
    """The unit, the groups and the sentence of a stored ``thaw:shift_profile``."""
    if not isinstance(attr, Mapping) or not isinstance(attr.get("groups"), list):
        return "layers", (), "The BatchNorm shift profile was not measured."
    unit = as_str(attr.get("unit")) or "layers"
    block = attr.get("block") if isinstance(attr.get("block"), Mapping) else None
    start = as_int(block.get("start")) if block else None
    size = as_int(block.get("size")) if block else None
    span = range(start, start + size) if start is not None and size is not None else range(0)
    groups = tuple(
        ProfileGroup(
            name=as_str(g.get("name")) or "?",
            shift=as_float(g.get("shift")),
            batchnorm=as_int(g.get("batchnorm")) or 0,
            in_block=i in span,
        )
        for i, g in enumerate(g for g in attr["groups"] if isinstance(g, Mapping))
    )
    if not any(g.shift is not None for g in groups):
        return unit, groups, "No BatchNorm layer was measured: the profile points nowhere."
    if not span or span.stop > len(groups):
        return unit, groups, "The BatchNorm shift profile points to no block."
    where = f"{unit} {span.start + 1}-{span.stop} of {len(groups)} from the bottom"
    names = f"{groups[span.start].name} to {groups[span.stop - 1].name}"
    if span.stop == len(groups):
        sentence = (
            f"The BatchNorm shift arises most in the top {len(span)} {unit} ({names}): "
            "unfreezing from the top already trains them."
        )
    else:
        sentence = (
            f"The BatchNorm shift arises most in {names} ({where}): surgical fine-tuning "
            f"unfreezes that block of {len(span)} instead of the top {len(span)}."
        )
    return unit, groups, sentence


def _length(trial: FrozenTrial) -> int | None:
    """How long the trial was meant to train: its screening round, its own length, or the
    study's (None)."""
    screen = trial.user_attrs.get(SCREEN)
    if isinstance(screen, Mapping) and as_int(screen.get("rung")) is not None:
        return as_int(screen.get("rung"))
    return as_int(trial.user_attrs.get(TRIAL_EPOCHS))


def _comparisons(
    trials: Sequence[FrozenTrial], maximize: bool, unit: str
) -> tuple[SurgicalComparison, ...]:
    blocks: dict[int, list[tuple[FrozenTrial, float]]] = {}
    tops: dict[tuple[int, int | None], list[tuple[FrozenTrial, float]]] = {}
    for trial in trials:
        if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        value = trial_score(trial, maximize)
        layers = as_int(trial.params.get("unfrozen_layers"))
        if value is None or layers is None or layers < 1:
            continue
        block = trial.user_attrs.get(UNFROZEN_BLOCK)
        if isinstance(block, Mapping) and block.get("top") is False:
            blocks.setdefault(layers, []).append((trial, value))
        else:
            tops.setdefault((layers, _length(trial)), []).append((trial, value))
    out = []
    sign = -1.0 if maximize else 1.0
    for layers, tried in sorted(blocks.items()):
        trial, value = min(tried, key=lambda tv: (sign * tv[1], tv[0].number))
        attr = trial.user_attrs[UNFROZEN_BLOCK]
        first = as_str(attr.get("first")) or "?"
        last = as_str(attr.get("last")) or "?"
        start = as_int(attr.get("start")) or 0
        peers = tops.get((layers, _length(trial)), [])
        what = (
            f"Surgical fine-tuning: the best block of {layers} {unit} below the top, {first} to "
            f"{last} ({unit} {start + 1}-{start + layers} from the bottom), reached {value:.4g} "
            f"(trial {trial.number}"
            + (f", best of {len(tried)} block trials" if len(tried) > 1 else "")
            + ")"
        )
        if not peers:
            sentence = (
                f"{what}; no trial unfroze the top {layers} {unit} for as long, so the two "
                "do not compare yet."
            )
            out.append(
                SurgicalComparison(
                    layers, first, last, start, trial.number, value, None, None, sentence
                )
            )
            continue
        top_trial, top_value = min(peers, key=lambda tv: (sign * tv[1], tv[0].number))
        better = value > top_value if maximize else value < top_value
        word = "better than" if better else ("equal to" if value == top_value else "worse than")
        sentence = (
            f"{what}, {word} the top {layers} {unit} at {top_value:.4g} (trial "
            f"{top_trial.number}, trained as long): "
            + (
                "the block the shift profile points to won."
                if better
                else "unfreezing from the top won."
                if value != top_value
                else "neither won."
            )
        )
        out.append(
            SurgicalComparison(
                layers,
                first,
                last,
                start,
                trial.number,
                value,
                top_trial.number,
                top_value,
                sentence,
            )
        )
    return tuple(out)


def get_surgical_info(study: optuna.Study) -> SurgicalInfo | None:
    """The profile and the block comparisons of ``study``; None when it has neither."""
    unit, groups, sentence = profile_groups(study.user_attrs.get(SHIFT_PROFILE))
    maximize = study.direction == StudyDirection.MAXIMIZE
    comparisons = _comparisons(study.get_trials(deepcopy=False), maximize, unit)
    if not groups and not comparisons:
        return None
    return SurgicalInfo(unit, groups, sentence, comparisons)
