"""Metrics beyond the loss and accuracy: ``auc`` and ``f1`` of a softmax classifier trained on
integer labels.

Keras' ``AUC`` and ``F1Score`` take one-hot labels; these take the integer labels the fit gets
(one-hot inside, the number of classes read off the predictions). ``auc`` is the micro-averaged
ROC AUC over the classes (0.5: chance), ``f1`` the macro-averaged F1 score of the predicted
class. Each is logged as ``auc``/``val_auc`` and ``f1``/``val_f1``.

A multi-label target (rows of 0/1, a sigmoid per label) gets Keras' own: ``auc`` is
``AUC(multi_label=True)``, the ROC AUC of each label averaged over the labels, and ``f1`` is
``F1Score(average="macro", threshold=0.5)``, each label's F1 at threshold 0.5 averaged over the
labels.
"""

from __future__ import annotations

from typing import Any

import keras

#: Names accepted by ``metrics:`` (and, with ``val_``, by ``objective:``).
EXTRA_METRICS: tuple[str, ...] = ("auc", "f1")


def _one_hot(y_true: Any, y_pred: Any) -> Any:
    classes = int(y_pred.shape[-1])
    labels = keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1,))
    return keras.ops.one_hot(labels, classes)


class SparseAUC(keras.metrics.AUC):
    """ROC AUC from integer labels and class probabilities."""

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        return super().update_state(_one_hot(y_true, y_pred), y_pred, sample_weight)


class SparseF1(keras.metrics.F1Score):
    """Macro F1 of the predicted class (argmax) from integer labels."""

    def __init__(self, name: str = "f1", **kwargs: Any) -> None:
        super().__init__(average="macro", name=name, **kwargs)

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        classes = int(y_pred.shape[-1])
        predicted = keras.ops.one_hot(keras.ops.argmax(y_pred, axis=-1), classes)
        return super().update_state(_one_hot(y_true, y_pred), predicted, sample_weight)


def extra_metrics(names: tuple[str, ...], multilabel: bool = False) -> list[keras.metrics.Metric]:
    """Fresh metric objects for ``names`` (each compile gets its own); ``multilabel``: of a
    sigmoid-per-label model on rows of 0/1."""
    made: list[keras.metrics.Metric] = []
    for name in names:
        if multilabel and name == "auc":
            made.append(keras.metrics.AUC(multi_label=True, name="auc"))
        elif multilabel and name == "f1":
            made.append(keras.metrics.F1Score(average="macro", threshold=0.5, name="f1"))
        elif name == "auc":
            made.append(SparseAUC(name="auc"))
        elif name == "f1":
            made.append(SparseF1(name="f1"))
        else:
            raise ValueError(f"metric {name!r}; expected one of {EXTRA_METRICS}")
    return made
