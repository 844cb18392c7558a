"""What to try next: a trial's diagnosis turned into explicit moves on its configuration.

One table, used by every view that names a next step: the closed loop of ``thaw run`` queues
these moves as trials, and the report's Answer names the first one when nothing learnt much.

A trial's *cause* is read from its verdicts, how it was pruned and whether it ever left the
chance level (:func:`cause_of`); each cause maps to moves, most promising first
(:data:`MOVES_BY_CAUSE`):

======================  ==================================================================
cause                   moves
======================  ==================================================================
``diverged``            learning rate ÷10
``lr_too_high``         learning rate ÷10, fewer unfrozen layers
``near_chance``         a larger move: learning rate ×10, every layer unfrozen with
                        BatchNorm training, another BatchNorm mode
``underfitting``        learning rate ×3, more unfrozen layers, BatchNorm training, then
                        (where searched) a higher LoRA rank, or LoRA off above the highest,
                        and a layer-wise rate decay closer to 1 (÷0.8)
``climbing``            learning rate ÷3, more dropout, more weight decay, fewer unfrozen
``overfitting``         layers, BatchNorm frozen, then (where searched) the block the
``weak_regularisation`` BatchNorm shift profile points to instead of the top, more
                        augmentation, L2-SP ×10, a lower layer-wise rate decay (×0.8) and a
                        lower LoRA rank, or LoRA in place of training the unfrozen layers
                        fully (the same moves for these three)
``batchnorm_mismatch``  another BatchNorm mode (re-estimated first), then (where searched) the
                        block the BatchNorm shift profile points to instead of the top
``still_improving``     the same configuration trained up to twice as long (a completed trial
                        whose validation loss was best at its last epoch, with no other cause);
                        ``thaw run`` continues it from where it ended when it can
======================  ==================================================================

A move that the search space does not allow (the rate already at its bound, no BatchNorm mode
searched) is left out. Bounds come from the trial's own Optuna distributions, so the moves stay
inside the space the sampler searches. A move that trains longer is left out when the trial's
length is unknown or fewer than half its epochs are left (``max_epochs``).

The methods' moves: the layer-wise rate decay moves only for a trial that unfreezes more than
one layer (with one, it changes nothing). The block move (surgical fine-tuning, Lee et al.,
2023) reads the study's BatchNorm shift profile (:class:`ShiftProfile`, passed in by the
caller): for a trial that unfreezes its layers from the top, the same number of layers in the
block where the shift arises most (:func:`profile_block`, clamped into the searched
``block_start`` range as the informed start's surgical trial is), when that block is below the
top. Under an input-level shift (blur, noise, colour) the statistics change in the early
layers, and Lee et al. found tuning those beats tuning the top.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from thaw.reports.diagnosis._profile import ShiftProfile

__all__ = [
    "CAUSES",
    "CAUSE_WORDS",
    "MOVES_BY_CAUSE",
    "Candidate",
    "Move",
    "TriedKey",
    "cause_of",
    "first_untried_move",
    "near_chance",
    "params_key",
    "propose_moves",
]

DIVERGED = "diverged"
LR_TOO_HIGH = "lr_too_high"
NEAR_CHANCE = "near_chance"
UNDERFITTING = "underfitting"
CLIMBING = "climbing"
OVERFITTING = "overfitting"
WEAK_REGULARISATION = "weak_regularisation"
BATCHNORM_MISMATCH = "batchnorm_mismatch"
STILL_IMPROVING = "still_improving"

#: Causes in the order they are looked for: the first that applies to a trial is its cause.
CAUSES: tuple[str, ...] = (
    DIVERGED,
    LR_TOO_HIGH,
    NEAR_CHANCE,
    BATCHNORM_MISMATCH,
    CLIMBING,
    OVERFITTING,
    WEAK_REGULARISATION,
    UNDERFITTING,
    STILL_IMPROVING,
)

#: Each cause in words, as the Answer and the notes say it.
CAUSE_WORDS: Mapping[str, str] = {
    DIVERGED: "it diverged",
    LR_TOO_HIGH: "its rate was too high",
    NEAR_CHANCE: "it stayed near chance",
    UNDERFITTING: "it underfit",
    CLIMBING: "its validation loss climbed",
    OVERFITTING: "it overfit",
    WEAK_REGULARISATION: "it needed more regularisation",
    BATCHNORM_MISMATCH: "its BatchNorm statistics did not match",
    STILL_IMPROVING: "it was still improving at its last epoch",
}

#: The optional methods' regularising moves, after the others: taken only where the space
#: searches the method (``search_space.block_start`` with a shift profile,
#: ``search_space.augment``, ``search_space.l2sp``, ``search_space.lr_decay``,
#: ``search_space.lora_rank``).
_METHODS = ("block=profile", "augment+", "l2sp*10", "lr_decay-", "lora_rank-")
_REGULARISE = (
    "lr/3",
    "dropout+",
    "weight_decay*10",
    "fewer_layers",
    "batchnorm=frozen",
    *_METHODS,
)

#: Moves per cause, most promising first (names of :data:`_MOVE_WORDS`).
MOVES_BY_CAUSE: Mapping[str, tuple[str, ...]] = {
    DIVERGED: ("lr/10",),
    LR_TOO_HIGH: ("lr/10", "fewer_layers"),
    NEAR_CHANCE: ("lr*10", "all_layers+batchnorm=train", "batchnorm=other"),
    UNDERFITTING: ("lr*3", "more_layers", "batchnorm=train", "lora_rank+", "lr_decay+"),
    CLIMBING: _REGULARISE,
    OVERFITTING: _REGULARISE,
    WEAK_REGULARISATION: ("dropout+", "weight_decay*10", "lr/3", "fewer_layers", *_METHODS),
    BATCHNORM_MISMATCH: ("batchnorm=other", "block=profile"),
    STILL_IMPROVING: ("epochs*2",),
}

#: A best validation loss at or above this fraction of the chance level (ln K) has not left the
#: chance plateau: the trial learnt next to nothing.
NEAR_CHANCE_FRACTION = 0.9

#: How much "more dropout" adds.
DROPOUT_STEP = 0.2

#: "Train longer" continues a trial of ``n`` epochs for up to ``n`` more (twice as long in all),
#: as many as the epochs left allow, and only when at least ``LONGER_MIN_EXTRA`` times ``n`` fit
#: (a few more epochs would tell little).
LONGER_MIN_EXTRA = 0.5

#: How much "more augmentation" adds to the strength (in [0, 1]).
AUGMENT_STEP = 0.25

#: The factor a lower layer-wise rate decay multiplies it by (a higher one divides by it).
LR_DECAY_STEP = 0.8


@dataclass(frozen=True)
class Move:
    """One proposed configuration.

    Attributes:
        name: The move, e.g. ``lr*3`` or ``batchnorm=train``.
        cause: What in the trial called for it (one of :data:`CAUSES`).
        params: The whole configuration to try.
        words: The move in plain words, with the new values ("raise the learning rate 3x, to
            0.003").
        epochs: The epochs the new trial trains, when the move changes them (None: the
            study's ``train.epochs``).
        extends: For "train longer", the epochs the trial it extends trained: the new trial
            may continue from where that one ended.
    """

    name: str
    cause: str
    params: dict[str, Any]
    words: str
    epochs: int | None = None
    extends: int | None = None

    @property
    def key(self) -> tuple[tuple[tuple[str, Any], ...], int | None]:
        """The configuration and length this move tries (see :func:`trial_key`)."""
        return params_key(self.params), self.epochs


def near_chance(
    best_val_loss: Any, num_classes: int | None, chance_loss: float | None = None
) -> bool:
    """Whether a best validation loss never left the chance plateau (>= 0.9 of the chance
    loss: ``chance_loss`` when given, such as a multi-label target's, else ln K)."""
    if not isinstance(best_val_loss, (int, float)) or isinstance(best_val_loss, bool):
        return False
    if not math.isfinite(best_val_loss):
        return False
    if chance_loss is None:
        if num_classes is None or num_classes < 2:
            return False
        chance_loss = math.log(num_classes)
    return float(best_val_loss) >= NEAR_CHANCE_FRACTION * chance_loss


def cause_of(
    verdicts: Sequence[str],
    *,
    prune_reason: str | None = None,
    near_chance: bool = False,
    still_falling: bool = False,
) -> str | None:
    """The cause the closed loop acts on, from a trial's verdict names (most important first),
    how it was pruned (``climbing``, ``diverged``, ``runaway``, ...), whether its best value
    stayed near the chance level and whether it completed with its best value at its last
    epoch (``still_falling``). None: nothing to act on (healthy and done, or pruned for being
    below its peers)."""
    found = set(verdicts)
    if still_falling and prune_reason is None:
        found.add(STILL_IMPROVING)
    if prune_reason == DIVERGED:
        found.add(DIVERGED)
    if prune_reason in ("climbing", "runaway"):
        found.add(CLIMBING)
    if near_chance:
        found.add(NEAR_CHANCE)
    if prune_reason == "runaway" and LR_TOO_HIGH not in found:
        found.add(LR_TOO_HIGH)  # far above chance at the first rung: the rate wrecks the base
    return next((cause for cause in CAUSES if cause in found), None)


def _float_bounds(dist: BaseDistribution | None) -> tuple[float, float] | None:
    if isinstance(dist, FloatDistribution):
        return float(dist.low), float(dist.high)
    return None


def _clamp(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])


def _fmt(value: float) -> str:
    return f"{value:.2g}"


def _modes(dist: BaseDistribution | None) -> tuple[str, ...]:
    if isinstance(dist, CategoricalDistribution):
        return tuple(str(c) for c in dist.choices)
    return ()


def _other_modes(current: str | None, modes: tuple[str, ...]) -> list[str]:
    """The BatchNorm modes other than ``current``, re-estimated statistics first."""
    preference = ("adapt", "frozen", "train")
    ordered = sorted(modes, key=lambda m: preference.index(m) if m in preference else 9)
    return [m for m in ordered if m != current]


def _apply(
    name: str,
    params: Mapping[str, Any],
    dists: Mapping[str, BaseDistribution],
    profile: ShiftProfile | None = None,
) -> list[tuple[dict[str, Any], str]]:
    """(new params, words) of one move on ``params``; empty when the space does not allow it.
    ``profile``: the study's BatchNorm shift profile, which the block move needs."""
    out: list[tuple[dict[str, Any], str]] = []
    new = dict(params)
    lr = params.get("learning_rate")
    lr_bounds = _float_bounds(dists.get("learning_rate"))
    layers = params.get("unfrozen_layers")
    layer_dist = dists.get("unfrozen_layers")
    modes = _modes(dists.get("batchnorm"))
    mode = params.get("batchnorm")

    def rate(factor: float, verb: str) -> None:
        if not isinstance(lr, (int, float)) or lr_bounds is None:
            return
        value = _clamp(float(lr) * factor, lr_bounds)
        if not math.isclose(value, float(lr), rel_tol=1e-6):
            new["learning_rate"] = value
            shown = f"{factor:g}x" if factor > 1 else f"{1 / factor:g}x"
            out.append((new, f"{verb} the learning rate {shown}, to {_fmt(value)}"))

    if name in ("lr*3", "lr*10"):
        rate(3.0 if name == "lr*3" else 10.0, "raise")
    elif name in ("lr/3", "lr/10"):
        rate(1 / 3 if name == "lr/3" else 0.1, "lower")
    elif name in ("more_layers", "fewer_layers", "all_layers+batchnorm=train"):
        if not isinstance(layers, int) or not isinstance(layer_dist, IntDistribution):
            return out
        low, high = int(layer_dist.low), int(layer_dist.high)
        if name == "more_layers":
            value = min(high, max(layers + 1, 2 * layers if layers else math.ceil(high / 4)))
            words = f"unfreeze more layers, {value} of {high}"
        elif name == "fewer_layers":
            value = max(low, layers // 2)
            words = f"unfreeze fewer layers, {value} of {high}"
        else:
            value = high
            words = f"unfreeze every layer ({high})"
            if "train" in modes and mode != "train":
                new["batchnorm"] = "train"
                words += " with BatchNorm training"
        if value != layers or new.get("batchnorm") != mode:
            new["unfrozen_layers"] = value
            out.append((new, words))
    elif name == "dropout+":
        bounds = _float_bounds(dists.get("dropout"))
        dropout = params.get("dropout")
        if bounds is not None and isinstance(dropout, (int, float)):
            raised = _clamp(float(dropout) + DROPOUT_STEP, bounds)
            if raised > float(dropout) + 1e-9:
                new["dropout"] = raised
                out.append((new, f"raise dropout to {_fmt(raised)}"))
    elif name == "weight_decay*10":
        bounds = _float_bounds(dists.get("weight_decay"))
        decay = params.get("weight_decay")
        if bounds is not None and isinstance(decay, (int, float)):
            stronger = _clamp(float(decay) * 10, bounds)
            if stronger > float(decay) * (1 + 1e-6):
                new["weight_decay"] = stronger
                out.append((new, f"raise weight decay 10x, to {_fmt(stronger)}"))
    elif name == "augment+":
        bounds = _float_bounds(dists.get("augment"))
        strength = params.get("augment")
        if bounds is not None and isinstance(strength, (int, float)):
            raised = _clamp(float(strength) + AUGMENT_STEP, bounds)
            if raised > float(strength) + 1e-9:
                new["augment"] = raised
                out.append((new, f"augment more, strength {_fmt(raised)}"))
    elif name == "l2sp*10":
        bounds = _float_bounds(dists.get("l2sp"))
        strength = params.get("l2sp")
        if bounds is not None and isinstance(strength, (int, float)):
            stronger = _clamp(float(strength) * 10, bounds)
            if stronger > float(strength) * (1 + 1e-6):
                new["l2sp"] = stronger
                out.append((new, f"raise L2-SP 10x, to {_fmt(stronger)}"))
    elif name in ("lr_decay-", "lr_decay+"):
        moved_decay = _lr_decay_move(params, dists, name == "lr_decay+")
        if moved_decay is not None:
            new["lr_decay"] = moved_decay[0]
            out.append((new, moved_decay[1]))
    elif name == "block=profile":
        block = _profile_block_move(params, dists, profile)
        if block is not None:
            new["block_start"] = block[0]
            out.append((new, block[1]))
    elif name in ("lora_rank-", "lora_rank+"):
        moved = _lora_move(params.get("lora_rank"), dists.get("lora_rank"), name == "lora_rank+")
        if moved is not None:
            new["lora_rank"] = moved[0]
            out.append((new, moved[1]))
    elif name == "batchnorm=train" or name == "batchnorm=frozen":
        target = name.split("=", 1)[1]
        if target in modes and mode != target:
            new["batchnorm"] = target
            out.append((new, f"BatchNorm {target}"))
    elif name == "batchnorm=other":
        for other in _other_modes(mode if isinstance(mode, str) else None, modes):
            out.append(({**params, "batchnorm": other}, f"BatchNorm {other}"))
    else:
        raise ValueError(f"unknown move {name!r}")
    return out


def _lr_decay_move(
    params: Mapping[str, Any], dists: Mapping[str, BaseDistribution], higher: bool
) -> tuple[float, str] | None:
    """The layer-wise rate decay a move goes to (×``LR_DECAY_STEP`` lower, ÷ it higher,
    clamped to the trial's range), and its words; None where ``lr_decay`` is not searched, the
    trial unfreezes at most one layer (the factor changes nothing) or the bound is reached."""
    bounds = _float_bounds(dists.get("lr_decay"))
    decay = params.get("lr_decay")
    layers = params.get("unfrozen_layers")
    if bounds is None or isinstance(decay, bool) or not isinstance(decay, (int, float)):
        return None
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 2:
        return None
    factor = 1 / LR_DECAY_STEP if higher else LR_DECAY_STEP
    value = _clamp(float(decay) * factor, bounds)
    if abs(value - float(decay)) < 1e-9 or (value > float(decay)) != higher:
        return None
    verb = "raise" if higher else "lower"
    head = f"{verb} the layer-wise rate decay to {_fmt(value)}"
    if value >= 1.0:
        return value, f"{head}: every unfrozen layer trains at the top one's rate"
    lowest = value ** (layers - 1)
    return value, (
        f"{head}: the lowest of the {layers} unfrozen layers trains at {_fmt(lowest)}x the top "
        "one's rate"
    )


def _profile_block_move(
    params: Mapping[str, Any],
    dists: Mapping[str, BaseDistribution],
    profile: ShiftProfile | None,
) -> tuple[int, str] | None:
    """The ``block_start`` of the block move, and its words: for a trial that unfreezes its
    layers from the top, as many layers in the block the shift profile points to. None where
    ``block_start`` is not searched, there is no profile, the trial's block is not the top, or
    the profile points to the top. A block outside the searched range is clamped into it, as
    the informed start's surgical trial is."""
    dist = dists.get("block_start")
    start = params.get("block_start")
    layers = params.get("unfrozen_layers")
    if profile is None or not isinstance(dist, IntDistribution):
        return None
    if isinstance(start, bool) or not isinstance(start, int):
        return None
    if isinstance(layers, bool) or not isinstance(layers, int):
        return None
    depth = profile.depth
    if not 1 <= layers < depth or start < depth - layers:
        return None  # nothing unfrozen, everything unfrozen, or already a block below the top
    pointed = profile.block(layers)
    if pointed is None:
        return None
    block = min(max(pointed, int(dist.low)), int(dist.high))  # as the informed start does
    if block >= depth - layers:
        return None  # the shift arises most at the top: the trial already trains it
    unit = profile.unit
    names = profile.names
    where = "where the BatchNorm shift arises most"
    if block != pointed:
        where = f"the searched block nearest to {where}"
    if len(names) == depth and names[block] and names[block + layers - 1]:
        first, last = names[block], names[block + layers - 1]
        where = f"{first}, {where}" if layers == 1 else f"{first} to {last}, {where}"
    span = f"{block + 1}" if layers == 1 else f"{block + 1}-{block + layers}"
    noun = unit[:-1] if layers == 1 else unit
    top = "the top one" if layers == 1 else f"the top {layers}"
    words = f"unfreeze {noun} {span} of {depth} ({where}) instead of {top}"
    return block, words


def _lora_move(rank: Any, dist: BaseDistribution | None, higher: bool) -> tuple[int, str] | None:
    """The LoRA rank a move goes to, and its words; None where the space has no such rank.

    Lower (regularising): the next lower rank above 0, or from 0 (the unfrozen layers trained
    fully) the highest rank. Higher: the next higher rank, or from the highest, 0 (LoRA off)."""
    if not isinstance(dist, CategoricalDistribution) or isinstance(rank, bool):
        return None
    if not isinstance(rank, int):
        return None
    ranks = sorted(int(c) for c in dist.choices if isinstance(c, int) and c > 0)
    if not ranks:
        return None
    if higher:
        if rank <= 0:
            return None
        above = [r for r in ranks if r > rank]
        if above:
            return above[0], f"raise the LoRA rank to {above[0]}"
        if 0 in dist.choices:
            return 0, "LoRA off: train the unfrozen layers fully"
        return None
    if rank <= 0:
        return ranks[-1], f"LoRA rank {ranks[-1]} instead of training the unfrozen layers fully"
    below = [r for r in ranks if r < rank]
    return (below[-1], f"lower the LoRA rank to {below[-1]}") if below else None


def propose_moves(
    params: Mapping[str, Any],
    cause: str | None,
    distributions: Mapping[str, BaseDistribution],
    *,
    epochs: int | None = None,
    length: int | None = None,
    max_epochs: int | None = None,
    profile: ShiftProfile | None = None,
) -> list[Move]:
    """The moves for a trial with ``params`` whose cause is ``cause``, most promising first,
    each inside ``distributions`` (the trial's own). Empty for no cause.

    ``epochs``: the trial's own length when it had one (a longer trial the loop queued; None:
    the study's ``train.epochs``); the other moves train the study's length (a new
    configuration starts short; only "train longer" sets a length). ``length``: its whole
    length in epochs,
    which "train longer" extends. ``max_epochs``: the epochs left, which the extra epochs must
    fit (at least ``LONGER_MIN_EXTRA`` times ``length``; None: no limit). ``profile``: the
    study's BatchNorm shift profile (``thaw:shift_profile``), which the block move reads (None:
    no block move)."""
    if cause is None:
        return []
    if cause not in MOVES_BY_CAUSE:
        raise ValueError(f"unknown cause {cause!r}; expected one of {', '.join(CAUSES)}")
    moves: list[Move] = []
    seen = {(params_key(params), epochs)}
    for name in MOVES_BY_CAUSE[cause]:
        if name == "epochs*2":
            longer = _longer(length, max_epochs)
            if longer is not None and (params_key(params), longer) not in seen:
                seen.add((params_key(params), longer))
                words = f"train the same configuration longer, {longer} epochs instead of {length}"
                moves.append(Move(name, cause, dict(params), words, longer, extends=length))
            continue
        for new, words in _apply(name, params, distributions, profile):
            key = (params_key(new), None)
            if key in seen:
                continue
            seen.add(key)
            moves.append(Move(name=name, cause=cause, params=new, words=words))
    return moves


def _longer(length: int | None, max_epochs: int | None) -> int | None:
    """The whole length of "train longer" after a trial of ``length`` epochs: up to ``length``
    more, within ``max_epochs`` more (the epochs left; None: no limit)."""
    if length is None or length < 1:
        return None
    extra = length if max_epochs is None else min(length, max_epochs)
    if extra < max(1, LONGER_MIN_EXTRA * length):
        return None
    return length + extra


def params_key(params: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A key under which two configurations that train alike are equal: rates and decays to 2
    significant digits on a log scale, dropout to 2 decimals."""
    out = []
    for name in sorted(params):
        value = params[name]
        if isinstance(value, float) and name in ("learning_rate", "weight_decay", "l2sp"):
            value = round(math.log10(value), 2) if value > 0 else value
        elif isinstance(value, float):
            value = round(value, 2)
        out.append((name, value))
    return tuple(out)


#: A tried configuration and length: ``params_key`` and the trial's own epochs (None: the
#: study's ``train.epochs``).
TriedKey = tuple[tuple[tuple[str, Any], ...], int | None]


@dataclass(frozen=True)
class Candidate:
    """A finished trial the loop may expand: its number, params, cause and distributions, its
    own length when it had one (``epochs``) and the epochs it trained (``length``)."""

    number: int
    params: Mapping[str, Any]
    cause: str | None
    distributions: Mapping[str, BaseDistribution]
    epochs: int | None = None
    length: int | None = None


def first_untried_move(
    candidates: Sequence[Candidate],
    tried: set[TriedKey],
    max_epochs: int | None = None,
    profile: ShiftProfile | None = None,
) -> tuple[int, Move] | None:
    """The move the closed loop takes next: the first move not in ``tried`` (configurations
    and lengths already run) of the first candidate that has one, best candidate first.
    ``max_epochs``: the epochs left; ``profile``: the study's BatchNorm shift profile (see
    :func:`propose_moves`)."""
    for c in candidates:
        moves = propose_moves(
            c.params,
            c.cause,
            c.distributions,
            epochs=c.epochs,
            length=c.length,
            max_epochs=max_epochs,
            profile=profile,
        )
        for move in moves:
            if move.key not in tried:
                return c.number, move
    return None
