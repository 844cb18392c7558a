"""metrics: [auc, f1]: the metrics on known predictions, from integer labels."""

from __future__ import annotations

import numpy as np
import pytest

LABELS = np.array([0, 1, 2, 0, 1, 2], dtype="int32")
PERFECT = np.eye(3, dtype="float32")[LABELS]
UNIFORM = np.full((6, 3), 1 / 3, dtype="float32")
# predicted [1, 1, 2, 2, 0, 2]: F1 per class 0 (no hit), 0.5 (P 1/2, R 1/2), 0.8 (P 2/3, R 1);
# micro AUC over the 18 one-hot cells: 3 of 6 positives and 3 of 12 negatives scored 1 -> 0.625
HALF = np.eye(3, dtype="float32")[np.array([1, 1, 2, 2, 0, 2])]


@pytest.mark.parametrize(
    ("predictions", "auc", "f1"),
    [(PERFECT, 1.0, 1.0), (UNIFORM, 0.5, None), (HALF, 0.625, (0.0 + 0.5 + 0.8) / 3)],
)
def test_auc_and_f1_from_integer_labels(
    predictions: np.ndarray, auc: float, f1: float | None
) -> None:
    import keras

    from thaw.objectives._metrics import extra_metrics

    got_auc, got_f1 = extra_metrics(("auc", "f1"))
    got_auc.update_state(LABELS, predictions)
    got_f1.update_state(LABELS, predictions)
    assert float(keras.ops.convert_to_numpy(got_auc.result())) == pytest.approx(auc, abs=1e-3)
    if f1 is not None:
        assert float(keras.ops.convert_to_numpy(got_f1.result())) == pytest.approx(f1, abs=1e-6)
