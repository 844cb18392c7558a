"""Spending a search budget well: the informed start, the sampler, and the epoch budget.

* :func:`informed_start` — the first trials: the three textbook fine-tuning strategies in every
  BatchNorm mode (variants at the rates of the learning-rate range test), screened at low
  fidelity by successive halving (:func:`screen_rungs`, :class:`ScreenedStart`) before the
  survivor trains at full length (with ``rate_guard: on``, beside the best faster-rate
  configuration, :func:`rate_guard`).
* :func:`make_sampler` — multivariate TPE conditioned on those trials, ``constant_liar`` when
  several workers share the study; its seed depends on how many trials the study already holds
  (:func:`sampler_seed`), so a resumed study continues the search instead of repeating it.
* :class:`EpochBudget` — stops the study once ``budget_epochs`` training epochs (every trial,
  pruned and failed ones included) are spent, and caps each trial at what is left.
* :func:`best_trial` — the best trial over complete *and* pruned trials, by their best value.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from thaw._keys import BUDGET_EPOCHS, EPOCHS_SPENT, RANGE_TEST, SCREEN, SCREEN_WINNER
from thaw.objectives import SearchSpace
from thaw.reports._attrs import as_float, as_int
from thaw.reports.diagnosis import profile_block
from thaw.search._config import SamplerConfig
from thaw.search._pruners import FOLLOW_UP_ATTR, REFERENCE_ATTR

_logger = logging.getLogger(__name__)

#: Domain-shift score (0..1, mean Hellinger distance of BatchNorm statistics) from which the
#: BatchNorm variants that change the statistics (``adapt``, ``train``) go first.
HIGH_SHIFT = 0.25

FULL = "full fine-tuning"
PARTIAL = "partial fine-tuning"
FEATURES = "feature extraction"
#: Surgical fine-tuning (Lee et al., 2023): as many layers as partial fine-tuning, in the block
#: the BatchNorm shift profile points to (:func:`profile_block`), when ``block_start`` is searched.
SURGICAL = "surgical fine-tuning"
#: The three textbook strategies: (name, unfrozen layers from the top (None: all), learning rate).
TEXTBOOK: tuple[tuple[str, int | None, float], ...] = (
    (FULL, None, 1e-3),
    (PARTIAL, 3, 1e-4),
    (FEATURES, 0, 1e-3),
)

#: Study user attr holding the training epochs spent so far (all trials).
EPOCHS_SPENT_ATTR = EPOCHS_SPENT
BUDGET_ATTR = BUDGET_EPOCHS


@dataclass(frozen=True)
class StartTrial:
    """One trial of the informed start: a strategy label and its parameters."""

    strategy: str
    params: dict[str, Any]


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def textbook_params(space: SearchSpace, strategy: str, batchnorm: str | None) -> dict[str, Any]:
    """The parameters of a textbook ``strategy``, clamped into ``space``."""
    ul, lr = space.unfrozen_layers, space.learning_rate
    for name, layers, rate in TEXTBOOK:
        if name == strategy:
            n = ul.high if layers is None else _clamp(min(layers, ul.high), ul.low, ul.high)
            params: dict[str, Any] = {
                "unfrozen_layers": int(n),
                "learning_rate": _clamp(rate, lr.low, lr.high),
                "dropout": _clamp(0.0, space.dropout.low, space.dropout.high),
                "weight_decay": space.weight_decay.low,
            }
            if len(space.batchnorm) > 1 and batchnorm is not None:
                params["batchnorm"] = batchnorm
            # the optional methods searched, at their weakest: the textbook has none of them
            for method, bounds, weakest in (
                ("l2sp", space.l2sp, "low"),
                ("lr_decay", space.lr_decay, "high"),
                ("augment", space.augment, "low"),
                ("block_start", space.block_start, "high"),  # the top when the range reaches it
            ):
                if bounds is not None:
                    params[method] = getattr(bounds, weakest)
            if space.lora_rank:  # LoRA off where the space allows it, else its largest rank
                params["lora_rank"] = 0 if 0 in space.lora_rank else max(space.lora_rank)
            return params
    raise ValueError(f"unknown strategy {strategy!r}; expected one of {[t[0] for t in TEXTBOOK]}")


def surgical_size(space: SearchSpace) -> int:
    """The layers the surgical trial unfreezes: those of the textbook partial trial."""
    return int(textbook_params(space, PARTIAL, None)["unfrozen_layers"])


def surgical_start(space: SearchSpace, shifts: Sequence[float | None] | None) -> int | None:
    """The ``block_start`` of the informed start's surgical trial: where the profile points
    for the partial trial's number of layers, clamped into the searched range; None when
    ``block_start`` is not searched, the profile points nowhere, or the block would be the top
    (the partial trial already is that)."""
    if space.block_start is None or not shifts:
        return None
    size = surgical_size(space)
    start = profile_block(shifts, size)
    if start is None:
        return None
    start = int(_clamp(start, space.block_start.low, space.block_start.high))
    if start >= len(shifts) - size:
        return None
    return start


def portfolio_order(shift: float | None, modes: tuple[str, ...]) -> list[tuple[str, str]]:
    """(strategy, BatchNorm mode) pairs of the informed start, best bets first.

    The three textbook strategies always appear. Under a large shift (``shift >= HIGH_SHIFT``)
    the BatchNorm statistics of the source are wrong for the target: re-estimated (``adapt``)
    and trained (``train``) variants go first. Under a small or unknown shift the plain
    strategies go first, with one ``adapt`` and one ``train`` variant after them.
    """
    high = shift is not None and math.isfinite(shift) and shift >= HIGH_SHIFT
    if high:
        wanted = [
            (FEATURES, "adapt"),
            (FULL, "adapt"),
            (PARTIAL, "train"),
            (PARTIAL, "adapt"),
            (FULL, "train"),
            (FEATURES, "frozen"),
            (PARTIAL, "frozen"),
            (FULL, "frozen"),
        ]
    else:
        wanted = [
            (FULL, "frozen"),
            (PARTIAL, "frozen"),
            (FEATURES, "frozen"),
            (FEATURES, "adapt"),
            (PARTIAL, "train"),
        ]
    out: list[tuple[str, str]] = []
    for strategy, mode in wanted:
        chosen = mode if mode in modes else modes[0]
        if (strategy, chosen) not in out:
            out.append((strategy, chosen))
    # Every textbook strategy appears at least once.
    for strategy, _, _ in TEXTBOOK:
        if not any(s == strategy for s, _ in out):
            out.append((strategy, modes[0]))
    return out


#: The BatchNorm variants are the configurations that work under a shift, not a textbook replay:
#: the target is small, so they regularise (dropout 0.2, weight decay 1e-4), and their learning
#: rates suit the part that trains. A head alone on fixed features learns slowly at 1e-3 (1e-2);
#: unfrozen pretrained layers whose statistics change (``adapt``/``train``) are wrecked by 1e-3
#: and crawl at 1e-4 (3e-4). The plain textbook trials keep the textbook values, so the report
#: still compares the search with them. A learning-rate range test replaces these rates by what
#: it measured for the mode (:func:`variant_params`, ``rates``).
VARIANT_DROPOUT = 0.2
VARIANT_WEIGHT_DECAY = 1e-4
VARIANT_LEARNING_RATE = {FULL: 3e-4, PARTIAL: 3e-4, FEATURES: 1e-2}
#: A head alone on fixed features takes this many times the rate the range test found for
#: training the whole network.
HEAD_RATE_FACTOR = 10.0


def variant_params(
    space: SearchSpace,
    strategy: str,
    batchnorm: str,
    *,
    textbook: dict[str, Any],
    rate: float | None = None,
) -> dict[str, Any]:
    """A BatchNorm variant of a textbook ``strategy``: its layers, a rate and regularisation
    suited to the shifted statistics (see ``VARIANT_*``), clamped into ``space``. ``rate``: the
    learning rate a range test suggested for ``batchnorm`` (the head alone takes
    ``HEAD_RATE_FACTOR`` times it)."""
    lr, do, wd = space.learning_rate, space.dropout, space.weight_decay
    params = dict(textbook)
    chosen = VARIANT_LEARNING_RATE[strategy]
    if rate is not None and math.isfinite(rate) and rate > 0:
        chosen = rate * (HEAD_RATE_FACTOR if strategy == FEATURES else 1.0)
    params["learning_rate"] = _clamp(chosen, lr.low, lr.high)
    params["dropout"] = _clamp(VARIANT_DROPOUT, do.low, do.high)
    params["weight_decay"] = _clamp(VARIANT_WEIGHT_DECAY, wd.low, wd.high)
    if len(space.batchnorm) > 1:
        params["batchnorm"] = batchnorm
    return params


def informed_start(
    space: SearchSpace,
    shift: float | None,
    *,
    rates: dict[str, float] | None = None,
    profile: Sequence[float | None] | None = None,
) -> list[StartTrial]:
    """The portfolio of the informed start: every textbook strategy in every BatchNorm mode of
    the space, best bets first (see :func:`portfolio_order`).

    Plain (``frozen``) trials keep the textbook values; the other modes are variants
    (:func:`variant_params`), at the rates of the learning-rate range test when ``rates``
    (BatchNorm mode -> suggested rate) holds one. A large domain-shift score orders the modes
    that change the statistics first, but keeps ``frozen``: the score says the statistics
    differ, not which mode wins. The portfolio is screened at low fidelity
    (:func:`screen_rungs`, :class:`ScreenedStart`) before one survivor trains at full length.

    With ``block_start`` searched and a BatchNorm shift ``profile`` (bottom to top), a surgical
    trial follows the first partial one: the same parameters, its layers the block the profile
    points to (:func:`surgical_start`), so the two compare.
    """
    modes = tuple(space.batchnorm)
    block = surgical_start(space, profile)
    order = portfolio_order(shift, modes)
    for strategy, _, _ in TEXTBOOK:
        for mode in modes:
            if (strategy, mode) not in order:
                order.append((strategy, mode))
    out: list[StartTrial] = []
    for strategy, mode in order:
        if strategy == FEATURES and mode == "train" and len(modes) > 1:
            continue  # nothing unfrozen: no BatchNorm layer trains, it is the frozen one
        params = textbook_params(space, strategy, mode)
        plain = mode == "frozen" or len(modes) == 1
        if not plain:
            rate = (rates or {}).get(mode)
            params = variant_params(space, strategy, mode, textbook=params, rate=rate)
        if not plain and any(t.params == params for t in out):
            continue  # a variant that clamps onto a trial already there
        label = strategy if plain else f"{strategy}, BatchNorm {mode}"
        if any(t.strategy == label for t in out):
            continue
        out.append(StartTrial(label, params))
        if strategy == PARTIAL and block is not None and all(t.strategy != SURGICAL for t in out):
            out.append(StartTrial(SURGICAL, {**params, "block_start": block}))
    return out


#: Trials shorter than this are not screened: a round would save at most an epoch or so per
#: configuration and cost a trial's set-up (building, probes) each.
MIN_SCREEN_EPOCHS = 4


def screen_rungs(
    epochs: int,
    n_configs: int,
    reduction_factor: int = 3,
    budget_epochs: int | None = None,
) -> tuple[int, ...]:
    """The epochs each screening round of the informed start trains (successive halving).

    Round ``k`` trains the survivors of round ``k - 1`` (the best ``1 / reduction_factor``)
    for ``r0 * reduction_factor**k`` epochs, while more than one survives and a round stays at
    most half the full length; then the one survivor trains at full length. ``r0`` is a tenth
    of the epochs (at least 1), and 1 under an epoch budget of fewer than 10 full trials. Empty
    when no round fits, or for trials shorter than ``MIN_SCREEN_EPOCHS`` (each configuration
    then trains at full length).
    """
    if epochs < 1 or n_configs < 1 or reduction_factor < 2:
        raise ValueError(
            f"screen_rungs needs epochs, n_configs >= 1 and reduction_factor >= 2, got "
            f"{epochs}, {n_configs}, {reduction_factor}"
        )
    if epochs < MIN_SCREEN_EPOCHS:
        return ()
    first = max(1, epochs // 10)
    if budget_epochs is not None and budget_epochs < 10 * epochs:
        first = 1
    rungs: list[int] = []
    alive, rung = n_configs, first
    while alive > 1 and 2 * rung <= epochs:
        rungs.append(rung)
        alive = math.ceil(alive / reduction_factor)
        rung *= reduction_factor
    return tuple(rungs)


def fit_start_to_budget(
    start: list[StartTrial],
    epochs: int,
    reduction_factor: int,
    budget_epochs: int | None,
) -> tuple[list[StartTrial], tuple[int, ...]]:
    """The portfolio and its screen's rungs, cut so that the screen (its survivor at full length
    included) takes at most half of ``budget_epochs``: the last bets go first, at least 2 stay.
    Without a budget, everything stays. The screen's :func:`rate_guard` is not counted: when
    there is one, it trains on top of this until it falls behind the survivor."""
    rungs = screen_rungs(epochs, len(start), reduction_factor, budget_epochs=budget_epochs)
    if budget_epochs is None:
        return start, rungs
    kept = list(start)
    while len(kept) > 2 and screen_epochs(rungs, len(kept), reduction_factor, epochs) > (
        budget_epochs // 2
    ):
        kept.pop()
        rungs = screen_rungs(epochs, len(kept), reduction_factor, budget_epochs=budget_epochs)
    return kept, rungs


def screen_epochs(
    rungs: tuple[int, ...], n_configs: int, reduction_factor: int, epochs: int
) -> int:
    """Training epochs the screened start spends, its full-length survivor included."""
    total, alive = 0, n_configs
    for rung in rungs:
        total += alive * rung
        alive = math.ceil(alive / reduction_factor)
    return total + (epochs if rungs else n_configs * epochs)


def start_queue(
    trials: list[StartTrial],
    rungs: tuple[int, ...],
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(params, user attrs) of the trials queued when a study is created: the screen's first
    round (``thaw:screen``), or, with no round, every portfolio trial at full length."""
    if not rungs:
        return [(t.params, {REFERENCE_ATTR: t.strategy}) for t in trials]
    return [
        (
            t.params,
            {SCREEN: {"strategy": t.strategy, "round": 0, "rung": rungs[0], "rungs": list(rungs)}},
        )
        for t in trials
    ]


def start_label(trial: FrozenTrial) -> str | None:
    """The strategy label of a trial of the informed start (screen or full length)."""
    screen = trial.user_attrs.get(SCREEN)
    if isinstance(screen, dict) and isinstance(screen.get("strategy"), str):
        return str(screen["strategy"])
    label = trial.user_attrs.get(REFERENCE_ATTR)
    return label if isinstance(label, str) else None


class ScreenedStart:
    """Successive halving over the informed start's portfolio (an ``optimize_exactly``
    ``before_trial`` hook, run under the study's slot lock).

    Once every trial of a screening round has finished, the best ``1 / reduction_factor`` of
    them (at least one) are queued for the next round, which trains them longer; after the last
    round the best one is queued at full length, labelled with its strategy (``strategy``) and
    the screen trial it came from (``thaw:screen_winner``). A round whose trials all failed
    ends the screen; the sampler goes on.

    With ``rate_guard`` (``rate_guard: on`` in the study file; off by default), each round
    also passes on its :func:`rate_guard`, the best configuration that trains pretrained
    layers ``GUARD_RATE_FACTOR`` times faster than every survivor or more (``"guard": "rate"``
    in its attrs): after the last round it trains at full length beside the winner, and is
    stopped from ``GUARD_HORIZON`` times the screen's longest rung on (``judged_from``) once it
    is behind the winner at the same epoch (``thaw.search._pruners.guard_decision``).
    """

    def __init__(self, reduction_factor: int = 3, rate_guard: bool = False) -> None:
        if reduction_factor < 2:
            raise ValueError(f"reduction_factor must be >= 2, got {reduction_factor}")
        self.reduction_factor = reduction_factor
        self.rate_guard = rate_guard

    def __call__(self, study: optuna.Study) -> None:
        trials = study.get_trials(deepcopy=False)
        screen = [t for t in trials if isinstance(t.user_attrs.get(SCREEN), dict)]
        if not screen or any(SCREEN_WINNER in t.user_attrs for t in trials):
            return
        last = max(int(t.user_attrs[SCREEN].get("round", 0)) for t in screen)
        current = [t for t in screen if int(t.user_attrs[SCREEN].get("round", 0)) == last]
        if any(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in current):
            return
        maximize = study.direction == StudyDirection.MAXIMIZE
        scored = [(v, t) for t in current if (v := trial_best_value(t, maximize)) is not None]
        if not scored:
            return
        scored.sort(key=lambda pair: (-pair[0] if maximize else pair[0], pair[1].number))
        info = dict(current[0].user_attrs[SCREEN])
        rungs = [int(r) for r in info.get("rungs", [])]
        keep = math.ceil(len(current) / self.reduction_factor)
        step = last + 1
        if step < len(rungs) and keep > 1:
            survivors = [trial for _, trial in scored[:keep]]
            guard = rate_guard(scored, survivors) if self.rate_guard else None
            for trial in [*survivors, *([guard] if guard is not None else [])]:
                attrs = dict(trial.user_attrs[SCREEN])
                attrs.update(round=step, rung=rungs[step], of=trial.number)
                attrs.pop("guard", None)
                if trial is guard:
                    attrs["guard"] = "rate"
                study.enqueue_trial(trial.params, user_attrs={SCREEN: attrs})
            _logger.info(
                "Screen round %d done: %d of %d configurations go on to %d epochs%s",
                last,
                keep + (guard is not None),
                len(current),
                rungs[step],
                "" if guard is None else f" (trial {guard.number} for its faster rate)",
            )
            return
        _, winner = scored[0]
        guard = rate_guard(scored, [winner]) if self.rate_guard else None
        for trial in [winner, *([guard] if guard is not None else [])]:
            label = start_label(trial) or "informed start"
            origin: dict[str, Any] = {"of": trial.number, "round": last}
            if trial is guard:
                origin["guard"] = "rate"
                origin["judged_from"] = GUARD_HORIZON * max(rungs or [1])
            study.enqueue_trial(
                trial.params, user_attrs={REFERENCE_ATTR: label, SCREEN_WINNER: origin}
            )
            _logger.info("Screen done: %s (trial %d) trains at full length", label, trial.number)


#: The parameter whose value tells whether a configuration trains pretrained layers.
_UNFROZEN = "unfrozen_layers"
#: A rate counts as faster for :func:`rate_guard` from this multiple of the survivors' on: the
#: closed loop's step for the learning rate, so a rate a few percent higher is not "faster".
GUARD_RATE_FACTOR = 3.0
#: The guard at full length is compared with the screen's survivor from this multiple of the
#: screen's longest rung on (``judged_from``; ``thaw.search._pruners.guard_decision``): twice
#: the horizon that cut it, not the full length for free.
GUARD_HORIZON = 2


def _rate(trial: FrozenTrial) -> float | None:
    value = as_float(trial.params.get("learning_rate"))
    return value if value is not None and value > 0 else None


def _trains_layers(trial: FrozenTrial) -> bool:
    layers = as_int(trial.params.get(_UNFROZEN))
    return layers is not None and layers > 0


def rate_guard(
    scored: Sequence[tuple[float, FrozenTrial]], survivors: Sequence[FrozenTrial]
) -> FrozenTrial | None:
    """The screen round's guard against short-horizon bias, or None.

    Runs of a few epochs favour small learning rates (Wu et al., 2018, "Understanding
    short-horizon bias"): a pretrained network trained at a higher rate first loses some of
    what it knew, then overtakes. On two of the bench's cases, full fine-tuning at 1e-3 was
    behind partial fine-tuning at 1e-4 for its first 4 epochs and far ahead at 20, so the
    screen's 1- and 3-epoch rungs cut the configuration that won.

    The guard is the best (``scored``: best first) configuration that trains pretrained layers
    (``unfrozen_layers`` > 0) at a learning rate at least ``GUARD_RATE_FACTOR`` times every such
    survivor's (any rate when no survivor trains layers); None when no configuration is that
    much faster. A head alone is left out: its rate is not comparable (it takes
    ``HEAD_RATE_FACTOR`` times the network's).
    """
    kept = {t.number for t in survivors}
    rates = [r for t in survivors if _trains_layers(t) and (r := _rate(t)) is not None]
    fastest = max(rates) if rates else None
    for _, trial in scored:
        rate = _rate(trial)
        if trial.number in kept or rate is None or not _trains_layers(trial):
            continue
        if fastest is None or rate >= fastest * GUARD_RATE_FACTOR * (1 - 1e-9):
            return trial
    return None


def sampler_seed(seed: int, n_existing_trials: int, salt: int = 0) -> int:
    """The sampler seed for a process that finds ``n_existing_trials`` in the study.

    A fresh study uses ``seed`` itself (reproducible); a resumed one (or another worker, via
    ``salt``) gets a different stream, so it does not replay the configurations already tried.
    """
    if n_existing_trials == 0 and salt == 0:
        return seed
    return (seed * 1_000_003 + n_existing_trials * 7919 + salt * 104_729) % (2**31 - 1)


def make_sampler(
    config: SamplerConfig, seed: int, n_workers: int = 1, n_start: int = 0
) -> BaseSampler:
    """Multivariate TPE (``constant_liar`` with several workers), or random search.

    ``n_start`` informed-start trials stand in for TPE's random start-up trials: TPE models the
    results as soon as they are in (after ``min(n_startup_trials, n_start)`` trials), instead of
    spending the budget on random configurations first.
    """
    if config.name == "random":
        return RandomSampler(seed=seed)
    startup = config.n_startup_trials
    if n_start > 0:
        startup = min(startup, n_start)
    return TPESampler(
        seed=seed,
        n_startup_trials=startup,
        multivariate=True,
        constant_liar=n_workers > 1,
    )


# ------------------------------------------------------------------------------ the budget


def epochs_spent(study: optuna.Study) -> int:
    """Training epochs spent by every trial of the study, pruned and failed ones included, and
    by the learning-rate range test before them."""
    from thaw.reports.diagnosis import trial_length
    from thaw.search._range import range_test_epochs

    trials = sum(trial_length(t) for t in study.get_trials(deepcopy=False))
    return trials + range_test_epochs(study.user_attrs.get(RANGE_TEST))


class EpochBudget:
    """Stop the study once ``budget`` training epochs are spent (an ``optimize`` callback).

    Also caps each new trial at the epochs left (:meth:`remaining`), so the last trial does not
    overshoot, and records the epochs spent on the study (``thaw:epochs_spent``).
    """

    def __init__(self, budget: int) -> None:
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise ValueError(f"budget must be a whole number of epochs >= 1, got {budget!r}")
        self.budget = budget

    def remaining(self, study: optuna.Study) -> int:
        return max(0, self.budget - epochs_spent(study))

    def exhausted(self, study: optuna.Study) -> bool:
        return self.remaining(study) <= 0

    def record(self, study: optuna.Study) -> int:
        spent = epochs_spent(study)
        study.set_user_attr(EPOCHS_SPENT_ATTR, spent)
        study.set_user_attr(BUDGET_ATTR, self.budget)
        return spent

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        spent = self.record(study)
        if spent >= self.budget:
            _logger.info("Epoch budget spent (%d of %d epochs): stopping.", spent, self.budget)
            study.stop()


# ------------------------------------------------------------------------------- the best


@dataclass(frozen=True)
class BestTrial:
    trial: FrozenTrial
    value: float
    pruned: bool


def trial_best_value(trial: FrozenTrial, maximize: bool) -> float | None:
    """A trial's best value: its value when complete; its best epoch's value when pruned."""
    from thaw.reports.diagnosis import trial_score

    return trial_score(trial, maximize)


def best_trial(study: optuna.Study) -> BestTrial | None:
    """The best trial over complete and pruned trials, by their best value (ties: completed)."""
    maximize = study.direction == StudyDirection.MAXIMIZE
    best: BestTrial | None = None
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        value = trial_best_value(trial, maximize)
        if value is None:
            continue
        candidate = BestTrial(trial, value, trial.state == TrialState.PRUNED)
        if best is None:
            best = candidate
            continue
        better = value > best.value if maximize else value < best.value
        if better or (value == best.value and best.pruned and not candidate.pruned):
            best = candidate
    return best


def gradual_unfreezing(
    study: optuna.Study, space: SearchSpace
) -> tuple[dict[str, Any], int] | None:
    """(parameters, number of the trial they extend) of the gradual-unfreezing step, or None.

    Once every trial of the informed start (user attr ``strategy``) has finished, the best of
    them is run again with one more layer (or block) unfrozen from the top, its learning rate,
    regularisation and BatchNorm mode kept: gradual unfreezing (Howard and Ruder, 2018), the
    textbook next step once a head on frozen features (or a few top layers) has learnt. None
    while a start trial is still queued or running, when the best already trains every layer
    the space allows, when the step was taken already, or when no start trial has a value.
    """
    trials = study.get_trials(deepcopy=False)
    start = [t for t in trials if REFERENCE_ATTR in t.user_attrs]
    if not start or any(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in start):
        return None
    if any(FOLLOW_UP_ATTR in t.user_attrs for t in trials):
        return None
    maximize = study.direction == StudyDirection.MAXIMIZE
    scored = [(v, t) for t in start if (v := trial_best_value(t, maximize)) is not None]
    if not scored:
        return None
    _, best = (max if maximize else min)(scored, key=lambda pair: pair[0])
    layers = best.params.get("unfrozen_layers")
    if not isinstance(layers, int) or layers >= space.unfrozen_layers.high:
        return None
    params = {**best.params, "unfrozen_layers": layers + 1}
    if any(t.params == params for t in trials):
        return None
    return params, best.number


class GradualUnfreezing:
    """Queues the gradual-unfreezing step (:func:`gradual_unfreezing`) once the informed start
    has finished. The run loop calls it right before it starts a trial, under the study's slot
    lock (``search._faults.TrialSlots``), so the step is queued once across workers and only
    when a trial is about to run (never left waiting at the end of a run)."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def __call__(self, study: optuna.Study) -> None:
        step = gradual_unfreezing(study, self.space)
        if step is None:
            return
        params, of = step
        study.enqueue_trial(
            params,
            user_attrs={FOLLOW_UP_ATTR: {"of": of, "unfrozen_layers": params["unfrozen_layers"]}},
        )
        _logger.info(
            "Informed start done: trial %d, the best of it, queued again with %d layers unfrozen "
            "(gradual unfreezing)",
            of,
            params["unfrozen_layers"],
        )
