"""Pruners: stop trials whose validation loss climbs, composed with Optuna's comparative pruners.

Like Optuna's ``PatientPruner(wrapped, ...)``, :class:`ClimbingPruner` wraps another pruner: it
prunes on its own evidence first (a non-finite value, a climb), then asks the wrapped pruner
whether the trial is below its peers. Whichever decides keeps why until the objective, which
holds the live trial, records it there (``prune_reason``, ``prune_epoch``, ``prune_detail`` user
attrs; :func:`thaw.objectives.record_prune_reason`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.pruners import BasePruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from thaw._keys import GRADUAL_UNFREEZING, SCREEN, SCREEN_WINNER, TRIAL_EPOCHS
from thaw.objectives import ExplainingPruner

_logger = logging.getLogger(__name__)

CLIMBING = "climbing"
BELOW_PEERS = "below_peers"
DIVERGED = "diverged"
#: Far above the chance level at the first rung: the rate wrecks the pretrained weights.
RUNAWAY = "runaway"
#: A trial of the screened informed start, stopped at its round's rung by design.
SCREENED = "screened"
#: The user attr that marks a trial of the informed start (its strategy label).
REFERENCE_ATTR = "strategy"
#: The user attr of the gradual-unfreezing step that follows the informed start
#: (``search._budget.gradual_unfreezing``): ``{"of": trial number, "unfrozen_layers": n}``.
FOLLOW_UP_ATTR = GRADUAL_UNFREEZING


def is_informed(trial: FrozenTrial) -> bool:
    """Whether ``trial`` belongs to the informed start (its screen included) or its
    gradual-unfreezing step."""
    attrs = trial.user_attrs
    return REFERENCE_ATTR in attrs or FOLLOW_UP_ATTR in attrs or SCREEN in attrs


PRUNE_REASONS: tuple[str, ...] = (CLIMBING, RUNAWAY, BELOW_PEERS, DIVERGED, SCREENED)

#: A best value this many times the chance-level loss at the first rung is a runaway.
RUNAWAY_FACTOR = 1.5
#: While a curve has not left the chance plateau, "worse than its best" means worse by more than
#: this fraction of the chance level as well: a short curve's own noise estimate cannot see the
#: wobble of a plateau, and a slow starter wobbles there before it learns.
PLATEAU_TOLERANCE = 0.05


@dataclass(frozen=True)
class PruneDecision:
    reason: str
    epoch: int
    detail: str

    def user_attrs(self) -> dict[str, str | int]:
        """What the trial records about it."""
        return {"prune_reason": self.reason, "prune_epoch": self.epoch, "prune_detail": self.detail}


class DecisionLog:
    """The decisions a pruner made, each kept until the live trial takes it to record
    (:class:`thaw.objectives.ExplainingPruner`)."""

    def __init__(self) -> None:
        self._pending: dict[int, PruneDecision] = {}

    def keep(self, trial: FrozenTrial, decision: PruneDecision) -> None:
        _logger.info("Pruning trial %d: %s", trial.number, decision.detail)
        self._pending[trial.number] = decision

    def take_reason(self, trial_number: int) -> dict[str, str | int] | None:
        decision = self._pending.pop(trial_number, None)
        return None if decision is None else decision.user_attrs()


def climbing_decision(
    values: list[tuple[int, float]], patience: int, min_delta: float, maximize: bool = False
) -> PruneDecision | None:
    """Decide from ``(step, value)`` pairs, oldest first, whether the curve climbs or diverged.

    Climbing: the best value lies at least ``patience`` steps back, and each of the last
    ``patience`` values is worse than it by more than ``min_delta``. A new best resets the count,
    so a noisy but improving curve is never climbing.
    """
    if not values:
        return None
    step, last = values[-1]
    if not math.isfinite(last):
        return PruneDecision(DIVERGED, step, f"the value became {last} at epoch {step}")
    sign = -1.0 if maximize else 1.0
    best_i = min(range(len(values)), key=lambda i: (sign * values[i][1], i))
    best_step, best = values[best_i]
    since = values[best_i + 1 :]
    if len(since) < patience:
        return None
    if all(sign * (v - best) > min_delta for _, v in since[-patience:]):
        return PruneDecision(
            CLIMBING,
            step,
            f"worse than its best {best:.4g} (epoch {best_step}) for {len(since)} epochs, "
            f"now {last:.4g}",
        )
    return None


#: A curve whose best lies ``patience + STALE_EXTRA`` epochs back and that ends worse than it is
#: stopped even when noise hid the climb from the patience rule (Keras's ``EarlyStopping`` with
#: that patience): no trial that ends above its best trains more than ``patience + 2`` epochs
#: past it, on the chance plateau too. (The plateau's wobble excused this once; in 27 studies of
#: the bench's cases a, b, c, e and f, 230 trials, it kept 4 going and none beat its best again.)
STALE_EXTRA = 2


def stale_decision(
    values: list[tuple[int, float]], limit: int, min_delta: float, maximize: bool = False
) -> PruneDecision | None:
    """Climbing by staleness: no new best for ``limit`` epochs and the last value worse than the
    best by more than ``min_delta``."""
    if not values:
        return None
    sign = -1.0 if maximize else 1.0
    best_i = min(range(len(values)), key=lambda i: (sign * values[i][1], i))
    best_step, best = values[best_i]
    step, last = values[-1]
    since = len(values) - 1 - best_i
    if since >= limit and sign * (last - best) > min_delta:
        return PruneDecision(
            CLIMBING,
            step,
            f"no better than its best {best:.4g} (epoch {best_step}) for {since} epochs, "
            f"now {last:.4g}",
        )
    return None


def curve_noise(values: list[float]) -> float:
    """Epoch-to-epoch noise of a curve: half the median absolute second difference.

    A steady trend (a straight descent or climb) has second differences of 0, so its noise is 0
    however steep it is; a curve that zig-zags by ``a`` from one epoch to the next has noise
    ``a``. Fewer than 4 finite values: 0 (unknown).
    """
    finite = [v for v in values if math.isfinite(v)]
    second = [c - 2 * b + a for a, b, c in zip(finite, finite[1:], finite[2:], strict=False)]
    if len(second) < 2:
        return 0.0
    return _median([abs(d) for d in second]) / 2


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def chance_value(num_classes: int, metric: str = "val_loss") -> float:
    """The value a classifier that has learnt nothing reaches: ln K for the loss, 1/K accuracy
    (and macro F1), 0.5 ROC AUC."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if metric == "val_auc":
        return 0.5
    return math.log(num_classes) if metric == "val_loss" else 1.0 / num_classes


#: A curve has left the chance plateau once it is this fraction of the way from chance to perfect
#: (loss: below 0.9 ln K; accuracy: above 1/K + 0.1 (1 - 1/K)).
PLATEAU_MARGIN = 0.1


def plateau_exit(
    values: list[tuple[int, float]], chance: float | None, maximize: bool = False
) -> int | None:
    """Index of the first value that has left the chance plateau (None: still on it).

    With ``chance`` None every curve has left it at its first value.
    """
    if chance is None:
        return 0 if values else None
    for i, (_, v) in enumerate(values):
        if not math.isfinite(v):
            continue
        if maximize and v >= chance + PLATEAU_MARGIN * (1.0 - chance):
            return i
        if not maximize and v <= chance * (1.0 - PLATEAU_MARGIN):
            return i
    return None


class ClimbingPruner(BasePruner):
    """Prune a trial whose value has been worse than its own best for ``patience`` epochs.

    Args:
        wrapped: a comparative pruner (e.g. ``MedianPruner``) consulted when the trial does not
            climb; ``None`` for no comparison.
        patience: epochs the value must stay worse than the best before pruning.
        min_delta: how much worse than the best counts as worse.
        n_warmup_steps: no climbing decision before this epoch (divergence prunes at any epoch).
        chance: the chance-level value (``chance_value(K)``); when given, a curve still on the
            chance plateau must rise by more than ``PLATEAU_TOLERANCE`` of it to count as
            climbing (slow starters wobble there before they learn), and a loss whose best is
            ``RUNAWAY_FACTOR`` times chance at the end of the warm-up is pruned as a runaway.
            A curve that never gets below chance is judged all the same: validation loss that
            rises after transfer learning is stopped wherever it starts.
        noise_aware: when true, "worse" means worse by more than the curve's own epoch-to-epoch
            noise (``curve_noise``) as well as ``min_delta``. Whatever the noise, a curve whose
            best lies ``patience + 2`` epochs back and that ends worse than it is climbing
            (:func:`stale_decision`), on the chance plateau too.
    """

    def __init__(
        self,
        wrapped: BasePruner | None = None,
        patience: int = 2,
        min_delta: float = 0.0,
        n_warmup_steps: int = 0,
        chance: float | None = None,
        noise_aware: bool = False,
    ) -> None:
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta}")
        if n_warmup_steps < 0:
            raise ValueError(f"n_warmup_steps must be >= 0, got {n_warmup_steps}")
        self._wrapped = wrapped
        self._patience = patience
        self._min_delta = min_delta
        self._n_warmup_steps = n_warmup_steps
        self._chance = chance
        self._noise_aware = noise_aware
        self._decisions = DecisionLog()

    def decide(self, study: optuna.Study, trial: FrozenTrial) -> PruneDecision | None:
        values = sorted(trial.intermediate_values.items())
        if not values:
            return None
        maximize = study.direction == StudyDirection.MAXIMIZE
        decision = None
        if not math.isfinite(values[-1][1]):
            decision = climbing_decision(values[-1:], self._patience, self._min_delta, maximize)
        else:
            decision = self._climbing(values, maximize)
        if decision is None:
            decision = self._runaway(values, maximize)
        if decision is not None and (
            decision.reason in (DIVERGED, RUNAWAY) or decision.epoch > self._n_warmup_steps
        ):
            return decision
        if self._wrapped is not None and self._wrapped.prune(study, trial):
            step, value = values[-1]
            return PruneDecision(
                BELOW_PEERS,
                step,
                f"{value:.4g} at epoch {step} is worse than its peers at that epoch "
                f"({type(self._wrapped).__name__})",
            )
        return None

    def _climbing(self, values: list[tuple[int, float]], maximize: bool) -> PruneDecision | None:
        """Climbing over the whole curve, on the chance plateau or off it: worse than its own
        best by more than ``min_delta`` and its noise for ``patience`` epochs. While the curve
        has not left the plateau (``chance`` given), its noise is at least
        ``PLATEAU_TOLERANCE`` of the chance level."""
        on_plateau = (
            self._chance is not None and plateau_exit(values, self._chance, maximize) is None
        )
        floor = self._min_delta
        if on_plateau:
            floor = max(floor, PLATEAU_TOLERANCE * abs(self._chance or 0.0))
        min_delta = floor
        if self._noise_aware:
            min_delta = max(min_delta, curve_noise([v for _, v in values]))
        decision = climbing_decision(values, self._patience, min_delta, maximize)
        if decision is None:
            # As Keras's EarlyStopping(patience=patience + 2) would: no new best for that long
            # and worse than the best at all, on the chance plateau or off it.
            decision = stale_decision(values, self._patience + STALE_EXTRA, 0.0, maximize)
        return decision

    def _runaway(self, values: list[tuple[int, float]], maximize: bool) -> PruneDecision | None:
        """A loss whose best is ``RUNAWAY_FACTOR`` times the chance level by the first epoch a
        decision may be made (the warm-up's end): the rate wrecks what was pretrained."""
        if maximize or self._chance is None or self._chance <= 0:
            return None
        step = values[-1][0]
        if step != max(1, self._n_warmup_steps):
            return None
        best = min(v for _, v in values)
        if best < RUNAWAY_FACTOR * self._chance:
            return None
        return PruneDecision(
            RUNAWAY,
            step,
            f"its best {best:.3g} by epoch {step} is {best / self._chance:.2g}x the chance "
            f"level {self._chance:.3g}",
        )

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        decision = self.decide(study, trial)
        if decision is None:
            return False
        self._decisions.keep(trial, decision)
        return True

    def take_reason(self, trial_number: int) -> dict[str, str | int] | None:
        """Why ``trial_number`` was pruned, for the live trial to record (then forgotten)."""
        return self._decisions.take_reason(trial_number)


class ScreenPruner(BasePruner):
    """Stops a trial of the screened informed start (user attr ``thaw:screen``) once it has
    trained its round's rung; every other decision is ``wrapped``'s.

    Successive halving over the start's portfolio: each round trains its trials a few epochs,
    and ``search._budget.ScreenedStart`` carries the best third into the next round.

    The screen's rate guard (``thaw:screen_winner`` with ``"guard": "rate"``), which trains at
    full length beside the screen's survivor, is stopped (``below_peers``) at the first epoch
    from its ``judged_from`` on where its best so far is behind the survivor's best by that
    epoch by more than its own epoch-to-epoch noise (:func:`guard_decision`).
    """

    def __init__(self, wrapped: BasePruner) -> None:
        self._wrapped = wrapped
        self._decisions = DecisionLog()

    def take_reason(self, trial_number: int) -> Mapping[str, Any] | None:
        """Why ``trial_number`` was pruned (by the screen or ``wrapped``), for the live trial to
        record (then forgotten)."""
        own = self._decisions.take_reason(trial_number)
        if own is None and isinstance(self._wrapped, ExplainingPruner):
            return self._wrapped.take_reason(trial_number)
        return own

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        screen = trial.user_attrs.get(SCREEN)
        step = trial.last_step
        if isinstance(screen, dict) and step is not None:
            rung = screen.get("rung")
            if isinstance(rung, int) and step >= rung:
                self._decisions.keep(
                    trial,
                    PruneDecision(
                        SCREENED,
                        step,
                        f"screened: round {screen.get('round', 0)} of the informed start trains "
                        f"{rung} epochs",
                    ),
                )
                return True
        origin = trial.user_attrs.get(SCREEN_WINNER)
        if isinstance(origin, dict) and origin.get("guard") == "rate" and step is not None:
            decision = guard_decision(study, trial, origin)
            if decision is not None:
                self._decisions.keep(trial, decision)
                return True
        return self._wrapped.prune(study, trial)


def guard_decision(
    study: optuna.Study, trial: FrozenTrial, origin: Mapping[str, Any]
) -> PruneDecision | None:
    """Whether the screen's rate guard ``trial`` is behind the screen's survivor (the trial of
    the same round with ``thaw:screen_winner`` and no guard) at its last epoch: from
    ``origin["judged_from"]`` on, its best so far worse than the survivor's best by the same
    epoch by more than ``trial``'s own noise (:func:`curve_noise`). None: it goes on (the
    survivor has not reached that epoch yet, or there is none). A survivor that finished
    sooner counts with its best."""
    step = trial.last_step
    start = origin.get("judged_from")
    if step is None or not isinstance(start, int) or isinstance(start, bool) or step < start:
        return None
    survivor = next(
        (
            t
            for t in study.get_trials(deepcopy=False)
            if t.number != trial.number
            and isinstance(w := t.user_attrs.get(SCREEN_WINNER), dict)
            and "guard" not in w
            and w.get("round") == origin.get("round")
            and ((t.last_step or 0) >= step or t.state in (TrialState.COMPLETE, TrialState.PRUNED))
        ),
        None,
    )
    if survivor is None:
        return None
    maximize = study.direction == StudyDirection.MAXIMIZE
    own = _best_until(trial.intermediate_values, step, maximize)
    theirs = _best_until(survivor.intermediate_values, step, maximize)
    if theirs is None:
        return None
    margin = curve_noise([v for _, v in sorted(trial.intermediate_values.items())])
    if own is not None and (own - theirs if not maximize else theirs - own) <= margin:
        return None
    shown = "nothing finite" if own is None else f"{own:.4g}"
    return PruneDecision(
        BELOW_PEERS,
        step,
        f"behind the screen's survivor (trial {survivor.number}) by epoch {step}: best {shown} "
        f"against {theirs:.4g}; it went on for its faster rate, not its value",
    )


class RungPruner(BasePruner):
    """Asynchronous successive halving over epochs (ASHA), or Hyperband as several brackets of it.

    Rungs lie at ``min_resource * reduction_factor**k`` epochs (below ``max_resource``). At a rung
    a trial continues when its best value so far is among the top ``1 / reduction_factor`` of the
    best values so far of every other trial that reached that epoch; otherwise it is pruned. A
    decision needs at least ``reduction_factor`` peers at the rung, and a trial is never pruned
    for a gap smaller than its own epoch-to-epoch noise (:func:`curve_noise`).

    With ``n_brackets`` > 1 (Hyperband), bracket ``b``'s first rung is
    ``min_resource * reduction_factor**b``: some trials are judged early, others only after more
    epochs, so slow starters are not all cut at the first rung. Trials are dealt to brackets in
    Hyperband's proportions (:func:`bracket_weights`: the early-judged brackets, whose trials are
    cheap, get more of them), interleaved so every bracket is represented from the first trials on.

    The trials of the informed start (user attr ``strategy``) and its gradual-unfreezing step
    (:func:`is_informed`) are the references the others are measured against: they are judged
    only at the last rung of the last bracket, and the dealing of brackets starts with the first
    trial after them. With ``chance`` (``chance_value(K)``), at a rung where no trial has left
    the chance plateau yet, the trials are ranked by how much each has improved since its first
    epoch instead of by their values (a ranking of values that have learnt nothing is noise).
    A trial the closed loop queued to train longer (user attr ``thaw:epochs``) repeats a
    configuration that already passed the rungs: it is not judged at them again (a rung would
    compare its seed's noise, not its configuration); the climbing rule still watches it.
    """

    def __init__(
        self,
        min_resource: int = 1,
        reduction_factor: int = 3,
        max_resource: int | None = None,
        n_brackets: int = 1,
        noise_aware: bool = True,
        chance: float | None = None,
    ) -> None:
        if min_resource < 1:
            raise ValueError(f"min_resource must be >= 1, got {min_resource}")
        if reduction_factor < 2:
            raise ValueError(f"reduction_factor must be >= 2, got {reduction_factor}")
        if n_brackets < 1:
            raise ValueError(f"n_brackets must be >= 1, got {n_brackets}")
        self.min_resource = min_resource
        self.reduction_factor = reduction_factor
        self.max_resource = max_resource
        self.n_brackets = n_brackets
        self.noise_aware = noise_aware
        self.chance = chance

    def rungs(self, bracket: int = 0) -> list[int]:
        """The epochs at which a trial of ``bracket`` is compared with its peers."""
        out = []
        r = self.min_resource * self.reduction_factor**bracket
        while self.max_resource is None or r < self.max_resource:
            out.append(r)
            r *= self.reduction_factor
            if self.max_resource is None and len(out) >= 32:
                break
        return out

    def bracket_of(self, index: int) -> int:
        """The bracket of the ``index``-th trial after the informed start (0 for the first)."""
        pattern = bracket_pattern(bracket_weights(self.n_brackets, self.reduction_factor))
        return pattern[index % len(pattern)]

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or TRIAL_EPOCHS in trial.user_attrs:
            return False
        trials = study.get_trials(deepcopy=False)
        if is_informed(trial):
            bracket = self.n_brackets - 1
            rungs = self.rungs(bracket)[-1:]
        else:
            before = sum(t.number < trial.number and is_informed(t) for t in trials)
            bracket = self.bracket_of(trial.number - before)
            rungs = self.rungs(bracket)
        if step not in rungs:
            return False
        maximize = study.direction == StudyDirection.MAXIMIZE
        own = _best_until(trial.intermediate_values, step, maximize)
        if own is None:
            return True  # nothing finite by this rung: it diverged
        peers = []
        gains = []
        for other in trials:
            if other.state not in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
                continue
            if other.number == trial.number or (other.last_step or 0) < step:
                continue
            value = _best_until(other.intermediate_values, step, maximize)
            if value is not None:
                peers.append(value)
                gains.append(_gain_until(other.intermediate_values, step, maximize))
        margin = (
            curve_noise([v for _, v in sorted(trial.intermediate_values.items())])
            if self.noise_aware
            else 0.0
        )
        if self.chance is not None and not any(
            plateau_exit([(step, v)], self.chance, maximize) is not None for v in [own, *peers]
        ):
            # Nobody has left the chance level yet: the values alone would rank noise, so the
            # trials are ranked by how much each has improved since its first epoch.
            own_gain = _gain_until(trial.intermediate_values, step, maximize)
            return rung_decision(
                -own_gain, [-g for g in gains], self.reduction_factor, margin=margin
            )
        return rung_decision(own, peers, self.reduction_factor, margin=margin, maximize=maximize)


def bracket_weights(n_brackets: int, reduction_factor: int) -> list[int]:
    """Trials per bracket in one Hyperband round, bracket 0 (judged earliest) first.

    Hyperband's ``n = ceil((s_max + 1) / (s + 1) * eta**s)`` with ``s = s_max - bracket``: every
    bracket spends about the same epochs, so the brackets that stop trials early run more of them.
    """
    s_max = n_brackets - 1
    return [
        math.ceil((s_max + 1) / (s + 1) * reduction_factor**s)
        for s in (s_max - b for b in range(n_brackets))
    ]


def bracket_pattern(weights: list[int]) -> list[int]:
    """One round of brackets, each ``weights[b]`` times, interleaved (smooth weighted
    round-robin), so the first trials already visit every bracket."""
    current = [0] * len(weights)
    total = sum(weights)
    out: list[int] = []
    for _ in range(total):
        for b, w in enumerate(weights):
            current[b] += w
        chosen = max(range(len(weights)), key=lambda b: (current[b], -b))
        current[chosen] -= total
        out.append(chosen)
    return out


def _best_until(values: dict[int, float], step: int, maximize: bool) -> float | None:
    finite = [v for s, v in values.items() if s <= step and math.isfinite(v)]
    if not finite:
        return None
    return max(finite) if maximize else min(finite)


def _gain_until(values: dict[int, float], step: int, maximize: bool) -> float:
    """How much a curve has improved from its first finite value to its best by ``step``."""
    finite = sorted((s, v) for s, v in values.items() if s <= step and math.isfinite(v))
    if not finite:
        return 0.0
    first = finite[0][1]
    best = max(v for _, v in finite) if maximize else min(v for _, v in finite)
    return best - first if maximize else first - best


def rung_decision(
    own: float,
    peers: list[float],
    reduction_factor: int,
    margin: float = 0.0,
    maximize: bool = False,
) -> bool:
    """Whether a trial whose best so far is ``own`` is pruned at a rung where ``peers`` stand.

    It continues when it is within ``margin`` of the top ``1 / reduction_factor`` (counting
    itself). With fewer than ``reduction_factor`` peers the top is the best one, as in Optuna's
    ``SuccessiveHalvingPruner``: the first trials at a rung are already compared with the
    informed start. Without peers it continues.
    """
    if not peers:
        return False
    sign = -1.0 if maximize else 1.0
    ranked = sorted([sign * v for v in [*peers, own]])
    keep = max(1, len(ranked) // reduction_factor)
    cutoff = ranked[keep - 1]
    return sign * own > cutoff + margin
