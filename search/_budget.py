"""Spending a search budget well: the informed start, the sampler, and the epoch budget.

* :func:`informed_start` — the first trials: the three textbook fine-tuning strategies and
  BatchNorm variants of them, ordered by the BatchNorm domain-shift score measured before the
  search (a large shift puts the ``adapt`` and ``train`` variants first).
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
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from thaw.objectives import SearchSpace
from thaw.search._config import SamplerConfig
from thaw.search._pruners import FOLLOW_UP_ATTR, REFERENCE_ATTR

_logger = logging.getLogger(__name__)

#: Domain-shift score (0..1, mean Hellinger distance of BatchNorm statistics) from which the
#: BatchNorm variants that change the statistics (``adapt``, ``train``) go first.
HIGH_SHIFT = 0.25

FULL = "full fine-tuning"
PARTIAL = "partial fine-tuning"
FEATURES = "feature extraction"
#: The three textbook strategies: (name, unfrozen layers from the top (None: all), learning rate).
TEXTBOOK: tuple[tuple[str, int | None, float], ...] = (
    (FULL, None, 1e-3),
    (PARTIAL, 3, 1e-4),
    (FEATURES, 0, 1e-3),
)

#: Study user attr holding the training epochs spent so far (all trials).
EPOCHS_SPENT_ATTR = "thaw:epochs_spent"
BUDGET_ATTR = "thaw:budget_epochs"


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
            return params
    raise ValueError(f"unknown strategy {strategy!r}; expected one of {[t[0] for t in TEXTBOOK]}")


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


#: Trials of the informed start under a large shift (the rest are left to the sampler).
PORTFOLIO_SIZE_HIGH_SHIFT = 6
PORTFOLIO_SIZE_LOW_SHIFT = 5

#: The BatchNorm variants are the configurations that work under a shift, not a textbook replay:
#: the target is small, so they regularise (dropout 0.2, weight decay 1e-4), and their learning
#: rates suit the part that trains. A head alone on fixed features learns slowly at 1e-3 (1e-2);
#: unfrozen pretrained layers whose statistics change (``adapt``/``train``) are wrecked by 1e-3
#: and crawl at 1e-4 (3e-4). The plain textbook trials keep the textbook values, so the report
#: still compares the search with them.
VARIANT_DROPOUT = 0.2
VARIANT_WEIGHT_DECAY = 1e-4
VARIANT_LEARNING_RATE = {FULL: 3e-4, PARTIAL: 3e-4, FEATURES: 1e-2}


def variant_params(
    space: SearchSpace, strategy: str, batchnorm: str, *, textbook: dict[str, Any]
) -> dict[str, Any]:
    """A BatchNorm variant of a textbook ``strategy``: its layers, a rate and regularisation
    suited to the shifted statistics (see ``VARIANT_*``), clamped into ``space``."""
    lr, do, wd = space.learning_rate, space.dropout, space.weight_decay
    params = dict(textbook)
    params["learning_rate"] = _clamp(VARIANT_LEARNING_RATE[strategy], lr.low, lr.high)
    params["dropout"] = _clamp(VARIANT_DROPOUT, do.low, do.high)
    params["weight_decay"] = _clamp(VARIANT_WEIGHT_DECAY, wd.low, wd.high)
    if len(space.batchnorm) > 1:
        params["batchnorm"] = batchnorm
    return params


def informed_start(
    space: SearchSpace,
    shift: float | None,
    *,
    budget_epochs: int | None = None,
    epochs_per_trial: int | None = None,
) -> list[StartTrial]:
    """The first trials of a study: textbook strategies and BatchNorm variants of them.

    With an epoch budget, the start takes at most a quarter of it at full length (at least 2
    trials), best bets first: the budget is left to the sampler and the rungs rather than spent
    replaying every textbook strategy. Without one, every plain textbook strategy is kept (the
    report compares the search with them). Feature extraction, the cheapest trial, goes first
    under a large shift.
    """
    modes = tuple(space.batchnorm)
    high = shift is not None and math.isfinite(shift) and shift >= HIGH_SHIFT
    size = PORTFOLIO_SIZE_HIGH_SHIFT if high else PORTFOLIO_SIZE_LOW_SHIFT
    out: list[StartTrial] = []
    for strategy, mode in portfolio_order(shift, modes):
        params = textbook_params(space, strategy, mode)
        plain = mode == "frozen" or len(modes) == 1
        if not plain:
            params = variant_params(space, strategy, mode, textbook=params)
            if any(t.params == params for t in out):
                continue  # a variant that clamps onto a trial already there
        out.append(StartTrial(strategy if plain else f"{strategy}, BatchNorm {mode}", params))
    if budget_epochs is not None and epochs_per_trial:
        fits = max(2, budget_epochs // (4 * epochs_per_trial))
        return out[:fits]
    # Cut to size, keeping each plain textbook strategy (the report compares with them).
    head = out[:size]
    for trial in out[size:]:
        if trial.strategy in (FULL, PARTIAL, FEATURES):
            head.append(trial)
    return head


def enqueue_informed_start(study: optuna.Study, trials: list[StartTrial]) -> None:
    """Enqueue the start trials in order, each labelled with its ``strategy`` user attr."""
    for trial in trials:
        study.enqueue_trial(trial.params, user_attrs={"strategy": trial.strategy})


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


def trial_epochs(trial: FrozenTrial) -> int:
    """Training epochs a trial has spent (its ``epochs_run``; else its reported steps)."""
    value = trial.user_attrs.get("epochs_run")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return len(trial.intermediate_values)


def epochs_spent(study: optuna.Study) -> int:
    """Training epochs spent by every trial of the study, pruned and failed ones included."""
    return sum(trial_epochs(t) for t in study.get_trials(deepcopy=False))


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
    if trial.state == TrialState.COMPLETE and trial.value is not None:
        return float(trial.value)
    if trial.state != TrialState.PRUNED:
        return None
    stored = trial.user_attrs.get("best_value")
    if isinstance(stored, (int, float)) and math.isfinite(stored):
        return float(stored)
    finite = [v for v in trial.intermediate_values.values() if math.isfinite(v)]
    if not finite:
        return None
    return max(finite) if maximize else min(finite)


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
