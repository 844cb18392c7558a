"""Keep the best-epoch models of a study's top trials as ``.keras`` files while it runs."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from pathlib import Path

import keras
import optuna

_logger = logging.getLogger(__name__)

MODEL_FILE = "trial-{number}.keras"


def kept_model_file(folder: Path | str, number: int) -> Path:
    """Where :class:`BestModelKeeper` keeps trial ``number``'s model."""
    return Path(folder) / MODEL_FILE.format(number=number)


def best_stored_value(trial: optuna.trial.FrozenTrial, metric: str, maximize: bool) -> float | None:
    """The best finite value of ``metric`` in the trial's stored per-epoch ``history``."""
    history = trial.user_attrs.get("history")
    values = history.get(metric) if isinstance(history, dict) else None
    finite = [
        float(v)
        for v in values or ()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ]
    if not finite:
        return None
    return max(finite) if maximize else min(finite)


class BestModelKeeper:
    """Saves a trial's best-epoch model if the trial is among the study's ``top_k`` so far.

    Trials (finished, pruned or running) are ranked by the best value of ``metric`` in their
    stored history; files of trials that drop out of the top ``top_k`` are deleted. Called by
    :class:`FineTuneObjective` (``on_trial_model``) when a trial's training ends.
    """

    def __init__(
        self,
        folder: Path | str,
        metric: str,
        maximize: bool,
        top_k: int = 3,
        prepare: Callable[[keras.Model], None] | None = None,
    ) -> None:
        """``prepare``: called with a model right before it is saved (the objective's
        ``compile_if_deferred``: a trial that trained only the top of its model on cached
        activations left the model uncompiled; only a saved one is compiled)."""
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.prepare = prepare
        self.folder = Path(folder)
        self.metric = metric
        self.maximize = maximize
        self.top_k = top_k

    def top_numbers(self, study: optuna.Study, number: int, value: float) -> list[int]:
        scored: dict[int, float] = {}
        for t in study.get_trials(deepcopy=False):
            if t.state == optuna.trial.TrialState.FAIL:
                continue
            best = best_stored_value(t, self.metric, self.maximize)
            if best is not None:
                scored[t.number] = best
        scored[number] = value
        sign = -1.0 if self.maximize else 1.0
        ranked = sorted(scored, key=lambda n: (sign * scored[n], n))
        return ranked[: self.top_k]

    def __call__(self, trial: optuna.Trial, model: keras.Model, value: float) -> None:
        top = self.top_numbers(trial.study, trial.number, value)
        self.folder.mkdir(parents=True, exist_ok=True)
        if trial.number in top:
            path = kept_model_file(self.folder, trial.number)
            tmp = path.with_name(f".{path.stem}.tmp.keras")
            if self.prepare is not None:
                self.prepare(model)
            model.save(tmp)
            os.replace(tmp, path)
            trial.set_user_attr("kept_model", path.name)
            _logger.info("Kept trial %d's best-epoch model in %s", trial.number, path)
        for path in self.folder.glob(MODEL_FILE.format(number="*")):
            number = path.stem.removeprefix("trial-")
            if number.isdigit() and int(number) not in top:
                path.unlink(missing_ok=True)
