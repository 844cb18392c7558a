"""Why a trial is pruned, recorded by the live trial.

A pruner sees only a ``FrozenTrial``, which cannot store anything. A pruner that explains its
decisions (:class:`ExplainingPruner`) keeps each one until the objective, which holds the live
``optuna.Trial``, asks for it right after ``should_prune()`` said yes and records it with
``set_user_attr`` (:func:`record_prune_reason`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import optuna


@runtime_checkable
class ExplainingPruner(Protocol):
    """A pruner that says why it pruned a trial: the user attrs to store on it."""

    def take_reason(self, trial_number: int) -> Mapping[str, Any] | None:
        """The user attrs explaining the last decision to prune ``trial_number`` (None when
        it has none); forgotten once taken."""
        ...


def record_prune_reason(trial: optuna.Trial) -> None:
    """Store on ``trial`` why its study's pruner pruned it, if the pruner says.

    Call right after ``trial.should_prune()`` returned true, before raising ``TrialPruned``.
    """
    pruner = trial.study.pruner
    if not isinstance(pruner, ExplainingPruner):
        return
    for key, value in (pruner.take_reason(trial.number) or {}).items():
        trial.set_user_attr(key, value)
