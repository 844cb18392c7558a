"""Storage keys shared by ``thaw.search``, ``thaw.objectives`` and ``thaw.reports``.

Dependency-free, so every package can import it. Trial user attrs hold what one trial is and
why it was run; study user attrs hold what was measured before the search.
"""

from __future__ import annotations

__all__ = [
    "GRADUAL_UNFREEZING",
    "PROPOSED_BY",
    "RANGE_TEST",
    "SCREEN",
    "SCREEN_WINNER",
]

#: Trial attr of a trial the closed loop queued: ``{"trial": n, "cause": ..., "move": ...,
#: "words": ..., "best_before": value or None}`` (the trial whose diagnosis proposed it, the
#: cause read from that diagnosis, the move, and the study's best value when it was queued).
PROPOSED_BY = "thaw:proposed_by"

#: Trial attr of a trial of the screened informed start: ``{"strategy": label, "round": k,
#: "rung": epochs, "of": n or None}`` (round k trains ``rung`` epochs; ``of`` is the trial of
#: the round before that it continues). The survivor of the last round trains at full length
#: and carries the ``strategy`` attr instead.
SCREEN = "thaw:screen"

#: Study attr: the learning-rate range test run before the search, per BatchNorm mode
#: (``{"modes": {mode: result}, "epochs": spent, "window": [low, high] or None}``).
RANGE_TEST = "thaw:range_test"

#: Trial attr of the screen's survivor, the informed start's trial at full length:
#: ``{"of": n, "round": k}`` (the screen trial it continues, and that trial's round).
SCREEN_WINNER = "thaw:screen_winner"

#: Trial attr of the gradual-unfreezing step after the informed start (closed loop off):
#: ``{"of": n, "unfrozen_layers": k}``.
GRADUAL_UNFREEZING = "thaw:gradual_unfreezing_of"
