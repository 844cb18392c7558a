"""The table that turns a trial's diagnosis into moves (thaw.reports.diagnosis._moves)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from thaw.reports.diagnosis import (
    ShiftProfile,
    cause_of,
    near_chance,
    params_key,
    profile_block,
    propose_moves,
)

DISTS = {
    "unfrozen_layers": IntDistribution(0, 8),
    "learning_rate": FloatDistribution(1e-5, 1e-2, log=True),
    "dropout": FloatDistribution(0.0, 0.6),
    "weight_decay": FloatDistribution(1e-6, 1e-1, log=True),
    "batchnorm": CategoricalDistribution(["frozen", "adapt", "train"]),
}
BASE = {
    "unfrozen_layers": 2,
    "learning_rate": 1e-3,
    "dropout": 0.1,
    "weight_decay": 1e-4,
    "batchnorm": "frozen",
}

# (id, verdicts, prune reason, near chance, expected cause)
CAUSES = [
    ("healthy: nothing to act on", ["healthy"], None, False, None),
    ("below its peers: nothing to act on", [], "below_peers", False, None),
    ("underfitting", ["underfitting"], None, False, "underfitting"),
    ("climbing by the pruner", [], "climbing", False, "climbing"),
    ("diverged first", ["overfitting"], "diverged", False, "diverged"),
    ("lr too high before overfitting", ["lr_too_high", "overfitting"], None, False, "lr_too_high"),
    ("near chance beats underfitting", ["underfitting"], None, True, "near_chance"),
    ("a runaway wrecks the base: lr too high", [], "runaway", False, "lr_too_high"),
    (
        "BatchNorm mismatch before overfitting",
        ["batchnorm_mismatch", "overfitting"],
        None,
        False,
        "batchnorm_mismatch",
    ),
]


@pytest.mark.parametrize(
    ("verdicts", "reason", "chance", "expected"), [pytest.param(*r[1:], id=r[0]) for r in CAUSES]
)
def test_cause_of(
    verdicts: list[str], reason: str | None, chance: bool, expected: str | None
) -> None:
    assert cause_of(verdicts, prune_reason=reason, near_chance=chance) == expected


# (id, verdicts, prune reason, near chance, expected cause), each for a trial whose best value
# came at its last epoch
STILL_FALLING = [
    ("healthy and still falling: train longer", ["healthy"], None, False, "still_improving"),
    ("no verdict, still falling: train longer", [], None, False, "still_improving"),
    ("underfitting comes first", ["underfitting"], None, False, "underfitting"),
    ("overfitting comes first", ["overfitting"], None, False, "overfitting"),
    ("near chance comes first", ["healthy"], None, True, "near_chance"),
    ("a pruned trial is not extended", [], "below_peers", False, None),
]


@pytest.mark.parametrize(
    ("verdicts", "reason", "chance", "expected"),
    [pytest.param(*r[1:], id=r[0]) for r in STILL_FALLING],
)
def test_cause_of_a_trial_still_falling_at_its_last_epoch(
    verdicts: list[str], reason: str | None, chance: bool, expected: str | None
) -> None:
    got = cause_of(verdicts, prune_reason=reason, near_chance=chance, still_falling=True)
    assert got == expected


# (id, own epochs, whole length, epochs left, expected whole length of the move or None)
LONGER = [
    ("twice as long", None, 20, None, 40),
    ("twice as long when it fits", None, 20, 20, 40),
    ("as long as the epochs left allow", None, 20, 15, 35),
    ("half its length left at least", None, 20, 10, 30),
    ("not when less than half its length is left", None, 20, 9, None),
    ("a longer trial extends again", 40, 40, 100, 80),
    ("unknown length: no move", None, None, None, None),
]


@pytest.mark.parametrize(
    ("own", "length", "left", "expected"), [pytest.param(*r[1:], id=r[0]) for r in LONGER]
)
def test_train_longer(
    own: int | None, length: int | None, left: int | None, expected: int | None
) -> None:
    moves = propose_moves(
        BASE, "still_improving", DISTS, epochs=own, length=length, max_epochs=left
    )
    if expected is None:
        assert moves == []
        return
    (move,) = moves
    assert (move.name, move.epochs, move.params) == ("epochs*2", expected, BASE)
    assert move.extends == length  # it may continue from where that trial ended
    assert f"{expected} epochs instead of {length}" in move.words
    assert move.key == (params_key(BASE), expected)


def test_the_other_moves_of_a_longer_trial_train_the_studys_length() -> None:
    moves = propose_moves(BASE, "climbing", DISTS, epochs=40, length=40)
    assert moves and all(m.epochs is None and m.extends is None for m in moves)


# (id, params, cause, expected [(move name, the changed params)])
MOVES = [
    (
        "underfitting: raise the rate, unfreeze more, train BatchNorm",
        BASE,
        "underfitting",
        [
            ("lr*3", {"learning_rate": 3e-3}),
            ("more_layers", {"unfrozen_layers": 4}),
            ("batchnorm=train", {"batchnorm": "train"}),
        ],
    ),
    (
        "climbing: lower the rate and regularise, fewer layers, BatchNorm frozen",
        {**BASE, "batchnorm": "train"},
        "climbing",
        [
            ("lr/3", {"learning_rate": 1e-3 / 3}),
            ("dropout+", {"dropout": 0.3}),
            ("weight_decay*10", {"weight_decay": 1e-3}),
            ("fewer_layers", {"unfrozen_layers": 1}),
            ("batchnorm=frozen", {"batchnorm": "frozen"}),
        ],
    ),
    ("diverged: the rate 10x lower", BASE, "diverged", [("lr/10", {"learning_rate": 1e-4})]),
    (
        "near chance: a larger move",
        BASE,
        "near_chance",
        [
            ("lr*10", {"learning_rate": 1e-2}),
            ("all_layers+batchnorm=train", {"unfrozen_layers": 8, "batchnorm": "train"}),
            ("batchnorm=other", {"batchnorm": "adapt"}),
            ("batchnorm=other", {"batchnorm": "train"}),
        ],
    ),
    (
        "BatchNorm mismatch: the other modes, re-estimated first",
        {**BASE, "batchnorm": "train"},
        "batchnorm_mismatch",
        [("batchnorm=other", {"batchnorm": "adapt"}), ("batchnorm=other", {"batchnorm": "frozen"})],
    ),
    (
        "feature extraction underfits: the top quarter unfrozen",
        {**BASE, "unfrozen_layers": 0},
        "underfitting",
        [
            ("lr*3", {"learning_rate": 3e-3}),
            ("more_layers", {"unfrozen_layers": 2}),
            ("batchnorm=train", {"batchnorm": "train"}),
        ],
    ),
    (
        "at the bounds: the rate clamps, a move that changes nothing is left out",
        {**BASE, "learning_rate": 1e-2, "unfrozen_layers": 8, "batchnorm": "train"},
        "underfitting",
        [],
    ),
    (
        "clamped, not dropped: 5e-3 x3 stops at the top of the range",
        {**BASE, "learning_rate": 5e-3},
        "underfitting",
        [
            ("lr*3", {"learning_rate": 1e-2}),
            ("more_layers", {"unfrozen_layers": 4}),
            ("batchnorm=train", {"batchnorm": "train"}),
        ],
    ),
    ("no cause: no move", BASE, None, []),
]


@pytest.mark.parametrize(
    ("params", "cause", "expected"), [pytest.param(*r[1:], id=r[0]) for r in MOVES]
)
def test_propose_moves(
    params: dict[str, Any], cause: str | None, expected: list[tuple[str, dict[str, Any]]]
) -> None:
    moves = propose_moves(params, cause, DISTS)
    assert [m.name for m in moves] == [name for name, _ in expected]
    for move, (_, changed) in zip(moves, expected, strict=True):
        assert move.cause == cause
        assert move.params.keys() == params.keys()
        for key, value in move.params.items():
            want = changed.get(key, params[key])
            if isinstance(want, float):
                assert math.isclose(value, want, rel_tol=1e-9), key
            else:
                assert value == want, key
        assert move.words  # said in words, e.g. "raise the learning rate 3x, to 0.003"


METHOD_DISTS = {
    **DISTS,
    "augment": FloatDistribution(0.0, 0.6),
    "l2sp": FloatDistribution(1e-4, 1e-1, log=True),
    "lr_decay": FloatDistribution(0.5, 1.0),
}
METHOD_BASE = {**BASE, "augment": 0.2, "l2sp": 1e-3, "lr_decay": 0.8}
#: The moves climbing makes on BASE (test_propose_moves), before the methods' moves.
CLIMBING_MOVES = ["lr/3", "dropout+", "weight_decay*10", "fewer_layers"]
METHOD_NAMES = ("block=profile", "augment+", "l2sp*10", "lr_decay-", "lr_decay+", "lora_rank-")

# (id, params, distributions, cause, expected moves, the methods' changed params)
METHOD_MOVES = [
    (
        "overfitting with all searched: augment more, L2-SP 10x, a lower rate decay",
        METHOD_BASE,
        METHOD_DISTS,
        "overfitting",
        CLIMBING_MOVES + ["augment+", "l2sp*10", "lr_decay-"],
        [{"augment": 0.45}, {"l2sp": 1e-2}, {"lr_decay": 0.64}],
    ),
    (
        "climbing: the same",
        METHOD_BASE,
        METHOD_DISTS,
        "climbing",
        CLIMBING_MOVES + ["augment+", "l2sp*10", "lr_decay-"],
        [{"augment": 0.45}, {"l2sp": 1e-2}, {"lr_decay": 0.64}],
    ),
    (
        "at their bounds: clamped, or left out when nothing changes",
        {**METHOD_BASE, "augment": 0.5, "l2sp": 1e-1, "lr_decay": 0.5},
        METHOD_DISTS,
        "overfitting",
        CLIMBING_MOVES + ["augment+"],
        [{"augment": 0.6}],
    ),
    (
        "not searched: no method move",
        BASE,
        DISTS,
        "overfitting",
        CLIMBING_MOVES,
        [],
    ),
    (
        "underfitting: only the rate decay moves, back toward 1",
        METHOD_BASE,
        METHOD_DISTS,
        "underfitting",
        ["lr*3", "more_layers", "batchnorm=train", "lr_decay+"],
        [{"lr_decay": 1.0}],
    ),
]


@pytest.mark.parametrize(
    ("params", "dists", "cause", "names", "changes"),
    [pytest.param(*r[1:], id=r[0]) for r in METHOD_MOVES],
)
def test_method_moves_follow_the_regularising_moves(
    params: dict[str, Any],
    dists: dict[str, Any],
    cause: str,
    names: list[str],
    changes: list[dict[str, float]],
) -> None:
    moves = propose_moves(params, cause, dists)
    assert [m.name for m in moves] == names
    method_moves = [m for m in moves if m.name in METHOD_NAMES]
    assert len(method_moves) == len(changes)
    for move, changed in zip(method_moves, changes, strict=True):
        for key, value in changed.items():
            assert math.isclose(move.params[key], value, rel_tol=1e-9), key
        assert {k: v for k, v in move.params.items() if k not in changed} == {
            k: v for k, v in params.items() if k not in changed
        }


def test_moves_without_batchnorm_in_the_space_leave_batchnorm_alone() -> None:
    dists = {k: v for k, v in DISTS.items() if k != "batchnorm"}
    params = {k: v for k, v in BASE.items() if k != "batchnorm"}
    moves = propose_moves(params, "batchnorm_mismatch", dists)
    assert moves == []
    assert all("batchnorm" not in m.params for m in propose_moves(params, "underfitting", dists))


def test_an_unknown_cause_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown cause 'boredom'"):
        propose_moves(BASE, "boredom", DISTS)


@pytest.mark.parametrize(
    ("loss", "classes", "expected"),
    [
        (1.60, 5, True),  # ln 5 = 1.61
        (1.44, 5, False),  # left the plateau (below 0.9 ln 5 = 1.45)
        (1.46, 5, True),
        (3.5, 5, True),  # far above chance is not "learnt"
        (0.2, 5, False),
        (None, 5, False),
        (1.6, None, False),
        (float("nan"), 5, False),
    ],
)
def test_near_chance(loss: float | None, classes: int | None, expected: bool) -> None:
    assert near_chance(loss, classes) is expected


def test_params_key_treats_rates_that_train_alike_as_one() -> None:
    assert params_key({**BASE, "learning_rate": 1e-3}) == params_key(
        {**BASE, "learning_rate": 1.0001e-3}
    )
    assert params_key({**BASE, "learning_rate": 1e-3}) != params_key(
        {**BASE, "learning_rate": 3e-3}
    )


def test_params_key_treats_l2sp_strengths_on_a_log_scale() -> None:
    # 1e-4 and 3e-4 differ 3x (as two rates do) though both round to 0.00 on a linear scale
    assert params_key({**METHOD_BASE, "l2sp": 1e-4}) != params_key({**METHOD_BASE, "l2sp": 3e-4})
    assert params_key({**METHOD_BASE, "l2sp": 1e-4}) == params_key(
        {**METHOD_BASE, "l2sp": 1.0001e-4}
    )


LORA_DISTS = {**DISTS, "lora_rank": CategoricalDistribution([0, 4, 8, 16])}

# (id, rank before, cause, distributions, the LoRA move's name and rank after; None: no move)
LORA_MOVES = [
    ("overfitting at rank 8: a lower rank", 8, "overfitting", LORA_DISTS, ("lora_rank-", 4)),
    ("overfitting at the lowest rank: none", 4, "overfitting", LORA_DISTS, None),
    ("overfitting, LoRA off: the highest rank", 0, "overfitting", LORA_DISTS, ("lora_rank-", 16)),
    ("climbing: as overfitting", 16, "climbing", LORA_DISTS, ("lora_rank-", 8)),
    (
        "weak regularisation: as overfitting",
        8,
        "weak_regularisation",
        LORA_DISTS,
        ("lora_rank-", 4),
    ),
    ("underfitting at rank 4: a higher rank", 4, "underfitting", LORA_DISTS, ("lora_rank+", 8)),
    (
        "underfitting at the highest rank: LoRA off",
        16,
        "underfitting",
        LORA_DISTS,
        ("lora_rank+", 0),
    ),
    ("underfitting, LoRA off already: none", 0, "underfitting", LORA_DISTS, None),
    (
        "underfitting at the highest rank, off not searched: none",
        16,
        "underfitting",
        {**DISTS, "lora_rank": CategoricalDistribution([4, 16])},
        None,
    ),
    ("diverged: no LoRA move", 8, "diverged", LORA_DISTS, None),
]


@pytest.mark.parametrize(
    ("rank", "cause", "dists", "expected"),
    [pytest.param(*r[1:], id=r[0]) for r in LORA_MOVES],
)
def test_lora_moves(
    rank: int, cause: str, dists: dict[str, Any], expected: tuple[str, int] | None
) -> None:
    params = {**BASE, "lora_rank": rank}
    moves = propose_moves(params, cause, dists)
    lora = [m for m in moves if m.name.startswith("lora_rank")]
    if expected is None:
        assert lora == []
        return
    (move,) = lora
    assert (move.name, move.params["lora_rank"]) == expected
    assert {k: v for k, v in move.params.items() if k != "lora_rank"} == BASE
    assert str(expected[1]) in move.words or "off" in move.words
    # the methods' moves come after the others
    assert moves[-1] is move


def test_lora_moves_without_lora_in_the_space() -> None:
    for cause in ("overfitting", "underfitting"):
        assert not [m for m in propose_moves(BASE, cause, DISTS) if "lora" in m.name]


DECAY_DISTS = {**DISTS, "lr_decay": FloatDistribution(0.5, 1.0)}

# (id, rate decay before, unfrozen layers, cause, distributions, the decay move's name and
# factor after; None: no decay move)
LR_DECAY_MOVES = [
    ("overfitting: 0.8x lower", 0.8, 3, "overfitting", DECAY_DISTS, ("lr_decay-", 0.64)),
    ("climbing: as overfitting", 0.9, 3, "climbing", DECAY_DISTS, ("lr_decay-", 0.72)),
    (
        "weak regularisation: as overfitting",
        1.0,
        4,
        "weak_regularisation",
        DECAY_DISTS,
        ("lr_decay-", 0.8),
    ),
    ("near the low bound: clamped to it", 0.55, 3, "overfitting", DECAY_DISTS, ("lr_decay-", 0.5)),
    ("at the low bound: none", 0.5, 3, "overfitting", DECAY_DISTS, None),
    ("one unfrozen layer: the factor changes nothing", 0.8, 1, "overfitting", DECAY_DISTS, None),
    ("feature extraction: none", 0.8, 0, "overfitting", DECAY_DISTS, None),
    ("not searched: none", 0.8, 3, "overfitting", DISTS, None),
    ("underfitting: back toward 1", 0.64, 3, "underfitting", DECAY_DISTS, ("lr_decay+", 0.8)),
    ("underfitting near 1: clamped to 1", 0.9, 3, "underfitting", DECAY_DISTS, ("lr_decay+", 1.0)),
    ("underfitting at 1: none", 1.0, 3, "underfitting", DECAY_DISTS, None),
    ("underfitting with one layer: none", 0.64, 1, "underfitting", DECAY_DISTS, None),
    ("diverged: no decay move", 0.8, 3, "diverged", DECAY_DISTS, None),
    ("lr too high: no decay move", 0.8, 3, "lr_too_high", DECAY_DISTS, None),
]


@pytest.mark.parametrize(
    ("decay", "layers", "cause", "dists", "expected"),
    [pytest.param(*r[1:], id=r[0]) for r in LR_DECAY_MOVES],
)
def test_layer_wise_rate_decay_moves(
    decay: float,
    layers: int,
    cause: str,
    dists: dict[str, Any],
    expected: tuple[str, float] | None,
) -> None:
    params = {**BASE, "unfrozen_layers": layers, "lr_decay": decay}
    moves = propose_moves(params, cause, dists)
    found = [m for m in moves if m.name.startswith("lr_decay")]
    if expected is None:
        assert found == []
        return
    (move,) = found
    assert move.name == expected[0]
    assert math.isclose(move.params["lr_decay"], expected[1], rel_tol=1e-9)
    assert {k: v for k, v in move.params.items() if k != "lr_decay"} == {
        k: v for k, v in params.items() if k != "lr_decay"
    }
    verb = "raise" if move.name == "lr_decay+" else "lower"
    assert move.words.startswith(f"{verb} the layer-wise rate decay to {expected[1]:.2g}")
    assert moves[-1] is move  # the methods' moves come after the others


def test_the_decay_words_say_what_the_lowest_layer_trains_at() -> None:
    params = {**BASE, "unfrozen_layers": 3, "lr_decay": 0.9}
    (move,) = [
        m for m in propose_moves(params, "overfitting", DECAY_DISTS) if m.name == "lr_decay-"
    ]
    # 0.72 ** 2 = 0.5184: the lowest of three layers at about half the top one's rate
    assert move.words == (
        "lower the layer-wise rate decay to 0.72: the lowest of the 3 unfrozen layers trains at "
        "0.52x the top one's rate"
    )


#: An input-level shift: the statistics change in the first layers, the deeper ones inherit it.
INPUT_SHIFT = (0.4, 0.45, 0.5, 0.5, 0.52, 0.52, 0.53, 0.53)
#: A feature-level shift: it arises at the top.
TOP_SHIFT = (None, 0.01, 0.02, 0.02, 0.03, 0.1, 0.3, 0.5)
NAMES = tuple(f"conv{i}" for i in range(1, 9))
BLOCK_DISTS = {**DISTS, "block_start": IntDistribution(0, 8)}
#: Three layers unfrozen from the top of eight (``block_start`` 8: the top, as the textbook
#: trials start).
FROM_TOP = {**BASE, "unfrozen_layers": 3, "block_start": 8}


def profile(
    shifts: tuple[float | None, ...] = INPUT_SHIFT, unit: str = "layers", names: bool = True
) -> ShiftProfile:
    return ShiftProfile(shifts, unit, NAMES if names else ())


# (id, params, cause, distributions, profile, the block move's block_start; None: no move)
BLOCK_MOVES = [
    (
        "overfitting at the top: the bottom block",
        FROM_TOP,
        "overfitting",
        BLOCK_DISTS,
        profile(),
        0,
    ),
    ("climbing: as overfitting", FROM_TOP, "climbing", BLOCK_DISTS, profile(), 0),
    (
        "weak regularisation: as overfitting",
        FROM_TOP,
        "weak_regularisation",
        BLOCK_DISTS,
        profile(),
        0,
    ),
    (
        "BatchNorm mismatch: after the modes",
        FROM_TOP,
        "batchnorm_mismatch",
        BLOCK_DISTS,
        profile(),
        0,
    ),
    (
        "the start of a top block below the range's top still counts as the top",
        {**FROM_TOP, "block_start": 5},
        "overfitting",
        BLOCK_DISTS,
        profile(),
        0,
    ),
    (
        "a range that starts above the block: clamped into it",
        {**FROM_TOP, "block_start": 6},
        "overfitting",
        {**BLOCK_DISTS, "block_start": IntDistribution(2, 8)},
        profile(),
        2,
    ),
    ("no profile: none", FROM_TOP, "overfitting", BLOCK_DISTS, None, None),
    (
        "the shift arises at the top: none",
        FROM_TOP,
        "overfitting",
        BLOCK_DISTS,
        profile(TOP_SHIFT),
        None,
    ),
    (
        "nothing measured: none",
        FROM_TOP,
        "overfitting",
        BLOCK_DISTS,
        profile((None,) * 8),
        None,
    ),
    (
        "block_start not searched: none",
        {**BASE, "unfrozen_layers": 3},
        "overfitting",
        DISTS,
        profile(),
        None,
    ),
    (
        "already a block below the top: none",
        {**FROM_TOP, "block_start": 2},
        "overfitting",
        BLOCK_DISTS,
        profile(),
        None,
    ),
    (
        "every layer unfrozen: no block to move",
        {**FROM_TOP, "unfrozen_layers": 8},
        "overfitting",
        BLOCK_DISTS,
        profile(),
        None,
    ),
    (
        "feature extraction: nothing to move",
        {**FROM_TOP, "unfrozen_layers": 0},
        "overfitting",
        BLOCK_DISTS,
        profile(),
        None,
    ),
    ("underfitting: none", FROM_TOP, "underfitting", BLOCK_DISTS, profile(), None),
    ("diverged: none", FROM_TOP, "diverged", BLOCK_DISTS, profile(), None),
]


@pytest.mark.parametrize(
    ("params", "cause", "dists", "shift", "expected"),
    [pytest.param(*r[1:], id=r[0]) for r in BLOCK_MOVES],
)
def test_block_moves(
    params: dict[str, Any],
    cause: str,
    dists: dict[str, Any],
    shift: ShiftProfile | None,
    expected: int | None,
) -> None:
    moves = propose_moves(params, cause, dists, profile=shift)
    found = [m for m in moves if m.name == "block=profile"]
    if expected is None:
        assert found == []
        return
    (move,) = found
    assert move.params == {**params, "block_start": expected}
    layers = params["unfrozen_layers"]
    assert f"layers {expected + 1}-{expected + layers} of 8" in move.words
    assert move.words.endswith(f"instead of the top {layers}")
    # the first of the methods' moves, after the plain ones
    names = [m.name for m in moves]
    assert all(n not in METHOD_NAMES for n in names[: names.index("block=profile")])


# (id, profile, the block move's words)
BLOCK_WORDS = [
    (
        "names from the profile",
        profile(),
        "unfreeze layers 1-3 of 8 (conv1 to conv3, where the BatchNorm shift arises most) "
        "instead of the top 3",
    ),
    (
        "no names stored",
        profile(names=False),
        "unfreeze layers 1-3 of 8 (where the BatchNorm shift arises most) instead of the top 3",
    ),
    (
        "counted in blocks",
        profile(unit="blocks"),
        "unfreeze blocks 1-3 of 8 (conv1 to conv3, where the BatchNorm shift arises most) "
        "instead of the top 3",
    ),
]


@pytest.mark.parametrize(("shift", "words"), [pytest.param(*r[1:], id=r[0]) for r in BLOCK_WORDS])
def test_the_block_move_in_words(shift: ShiftProfile, words: str) -> None:
    (move,) = [
        m
        for m in propose_moves(FROM_TOP, "overfitting", BLOCK_DISTS, profile=shift)
        if m.name == "block=profile"
    ]
    assert move.words == words


def test_a_clamped_block_says_it_is_the_nearest_searched() -> None:
    dists = {**BLOCK_DISTS, "block_start": IntDistribution(2, 8)}
    (move,) = [
        m
        for m in propose_moves(FROM_TOP, "overfitting", dists, profile=profile())
        if m.name == "block=profile"
    ]
    assert move.words.startswith(
        "unfreeze layers 3-5 of 8 (conv3 to conv5, the searched block nearest to where"
    )


def test_the_profile_reads_what_creation_stores() -> None:
    attr = {
        "unit": "blocks",
        "groups": [
            {"name": "stem", "shift": 0.4, "batchnorm": 1},
            {"name": "block_1", "shift": None, "batchnorm": 0},
            {"name": "block_2", "shift": float("nan"), "batchnorm": 2},
            {"name": "block_3", "shift": True, "batchnorm": 2},
        ],
        "block": {"start": 0, "size": 1, "first": "stem", "last": "stem", "top": False},
    }
    read = ShiftProfile.from_attr(attr)
    assert read == ShiftProfile(
        (0.4, None, None, None), "blocks", ("stem", "block_1", "block_2", "block_3")
    )
    assert read.depth == 4 and read.block(1) == profile_block([0.4, None, None, None], 1) == 0


@pytest.mark.parametrize("attr", [None, {}, {"groups": "no"}, {"groups": []}, "thaw:shift_profile"])
def test_no_profile_stored_reads_as_none(attr: Any) -> None:
    assert ShiftProfile.from_attr(attr) is None
