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
    #: L2-SP strength (0: off; plain weight decay then acts on the base too).
    l2sp: float = 0.0
    #: Layer-wise learning-rate decay factor per unfrozen group below the top (1: off).
    lr_decay: float = 1.0
    #: Augmentation strength in [0, 1] (0: none).
    augment: float = 0.0
    #: Surgical fine-tuning: the lowest unfrozen layer (or block), counted from the bottom
    #: (None: the unfrozen layers are the top ones). See ``objectives._model.unfrozen_span``.
    block_start: int | None = None
    #: LoRA rank on the unfrozen Dense, EinsumDense and Conv layers (0: off, trained fully).
    lora_rank: int = 0


@dataclass(frozen=True)
class SearchSpace:
    """Ranges of the four searched parameters, plus the BatchNorm modes to try and the optional
    methods (L2-SP strength, layer-wise rate decay factor, augmentation strength, LoRA rank)."""

    unfrozen_layers: IntRange
    learning_rate: FloatRange
    dropout: FloatRange
    weight_decay: FloatRange
    batchnorm: tuple[str, ...] = ("frozen",)
    #: Optional methods, searched only when their range is given (None: off, not searched).
    l2sp: FloatRange | None = None
    lr_decay: FloatRange | None = None
    augment: FloatRange | None = None
    #: Surgical fine-tuning: the range of the unfrozen block's lowest layer (None: the top).
    block_start: IntRange | None = None
    #: LoRA ranks to choose from (0: off), searched only when given (None: off, not searched).
    lora_rank: tuple[int, ...] | None = None

    def suggest(self, trial: optuna.Trial) -> TrialParams:
        batchnorm = self.batchnorm[0]
        if len(self.batchnorm) > 1:
            batchnorm = str(trial.suggest_categorical("batchnorm", list(self.batchnorm)))
        methods = {
            name: bounds.suggest(trial, name)
            for name, bounds in (
                ("l2sp", self.l2sp),
                ("lr_decay", self.lr_decay),
                ("augment", self.augment),
            )
            if bounds is not None
        }
        lora_rank = 0
        if self.lora_rank:
            lora_rank = int(trial.suggest_categorical("lora_rank", list(self.lora_rank)))
        return TrialParams(
            unfrozen_layers=self.unfrozen_layers.suggest(trial, "unfrozen_layers"),
            learning_rate=self.learning_rate.suggest(trial, "learning_rate"),
            dropout=self.dropout.suggest(trial, "dropout"),
            weight_decay=self.weight_decay.suggest(trial, "weight_decay"),
            batchnorm=batchnorm,
            block_start=(
                None if self.block_start is None else self.block_start.suggest(trial, "block_start")
            ),
            lora_rank=lora_rank,
            **methods,
        )
