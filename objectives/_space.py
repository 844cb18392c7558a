"""The searched parameters and their ranges."""

from __future__ import annotations

from dataclasses import dataclass

import optuna


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    log: bool = False

    def suggest(self, trial: optuna.Trial, name: str) -> float:
        if self.low == self.high:
            return float(trial.suggest_float(name, self.low, self.high))
        return float(trial.suggest_float(name, self.low, self.high, log=self.log))


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int

    def suggest(self, trial: optuna.Trial, name: str) -> int:
        return int(trial.suggest_int(name, self.low, self.high))


@dataclass(frozen=True)
class TrialParams:
    """One configuration: what a trial trains with."""

    unfrozen_layers: int
    learning_rate: float
    dropout: float
    weight_decay: float
    batchnorm: str = "frozen"


@dataclass(frozen=True)
class SearchSpace:
    """Ranges of the four searched parameters, plus the BatchNorm modes to try."""

    unfrozen_layers: IntRange
    learning_rate: FloatRange
    dropout: FloatRange
    weight_decay: FloatRange
    batchnorm: tuple[str, ...] = ("frozen",)

    def suggest(self, trial: optuna.Trial) -> TrialParams:
        batchnorm = self.batchnorm[0]
        if len(self.batchnorm) > 1:
            batchnorm = str(trial.suggest_categorical("batchnorm", list(self.batchnorm)))
        return TrialParams(
            unfrozen_layers=self.unfrozen_layers.suggest(trial, "unfrozen_layers"),
            learning_rate=self.learning_rate.suggest(trial, "learning_rate"),
            dropout=self.dropout.suggest(trial, "dropout"),
            weight_decay=self.weight_decay.suggest(trial, "weight_decay"),
            batchnorm=batchnorm,
        )
