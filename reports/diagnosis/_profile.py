"""The BatchNorm shift profile as the moves read it: the scores stored at creation
(``thaw:shift_profile``) and the block they point to for a number of unfrozen layers.

Pure Python: the search's informed start (``search._budget``) and the closed loop's surgical
move (``_moves``) use the same rule (:func:`profile_block`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ShiftProfile", "profile_block"]


def profile_block(shifts: Sequence[float | None], size: int) -> int | None:
    """Where a BatchNorm shift profile points: the lowest group (0 = bottom) of the contiguous
    block of ``size`` groups in which the shift *arises* most.

    The profile (bottom to top, one score per layer or block; None where no BatchNorm layer
    normalises it) is read as increments: each group adds ``max(0, score - score below)`` (the
    score below the first measured group is 0; a group without a score adds 0 and passes the
    score below on). The block is the window of ``size`` groups with the largest sum of
    increments; ties go to the lowest window. An input-level shift (blur, noise, colour)
    changes the statistics of the first layers and the deeper ones inherit it: the block is
    the bottom. None when ``size`` is not in ``1..len(shifts)`` or nothing was measured.
    """
    if not 1 <= size <= len(shifts) or all(v is None for v in shifts):
        return None
    below = 0.0
    rises: list[float] = []
    for value in shifts:
        if value is None or not math.isfinite(value):
            rises.append(0.0)
            continue
        rises.append(max(0.0, float(value) - below))
        below = float(value)
    sums = [sum(rises[i : i + size]) for i in range(len(shifts) - size + 1)]
    best = max(sums)
    return next(i for i, total in enumerate(sums) if total >= best - 1e-12)


@dataclass(frozen=True)
class ShiftProfile:
    """A study's BatchNorm shift profile, bottom to top.

    Attributes:
        shifts: One score per layer (or block) that "unfrozen layers" counts; None where no
            BatchNorm layer normalises it.
        unit: ``layers`` or ``blocks``, as "unfrozen layers" counts them.
        names: The name of each layer (or block), when stored.
    """

    shifts: tuple[float | None, ...]
    unit: str = "layers"
    names: tuple[str, ...] = ()

    @classmethod
    def from_attr(cls, attr: Any) -> ShiftProfile | None:
        """The profile of a stored ``thaw:shift_profile`` (None: none stored, or no group)."""
        if not isinstance(attr, Mapping) or not isinstance(attr.get("groups"), list):
            return None
        groups = [g if isinstance(g, Mapping) else {} for g in attr["groups"]]
        if not groups:
            return None
        shifts: list[float | None] = []
        for group in groups:
            value = group.get("shift")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                shifts.append(float(value) if math.isfinite(value) else None)
            else:
                shifts.append(None)
        names = tuple(str(g.get("name")) if g.get("name") is not None else "" for g in groups)
        unit = attr.get("unit")
        return cls(tuple(shifts), unit if unit in ("layers", "blocks") else "layers", names)

    @property
    def depth(self) -> int:
        """How many layers (or blocks) the profile covers: the base's depth in its unit."""
        return len(self.shifts)

    def block(self, size: int) -> int | None:
        """The lowest group of the block of ``size`` the profile points to (None: nowhere)."""
        return profile_block(self.shifts, size)
