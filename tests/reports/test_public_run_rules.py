"""Decision tables of the rules that public training runs (bench/public_runs.json) made general:
each row is a real history copied from a public source, or the same curves with the one fact the
rule turns on changed, judged alone as ``thaw diagnose --history`` judges a run."""

from __future__ import annotations

from typing import Any

import pytest

from thaw.reports.diagnosis import (
    BATCHNORM_MISMATCH,
    HEALTHY,
    LR_TOO_HIGH,
    OVERFITTING,
    diagnose_history,
)

# Deep Learning with Python, 4.4: IMDB, Dense 512-512-1, the book's "bigger network" that
# overfits after one epoch; its train loss near zero goes up and down.
NOISY_MEMORISED: dict[str, list[float]] = {
    "loss": [0.4539, 0.2148, 0.1217, 0.0552, 0.0662, 0.0017, 0.1019, 0.0735, 3.4759e-04, 0.0504]
    + [0.0589, 1.9067e-04, 0.0623, 0.0274, 0.0011, 0.0445, 0.0268, 7.7057e-04, 0.0297, 0.0018],
    "accuracy": [0.8011, 0.9151, 0.9544, 0.9835, 0.9888, 0.9998, 0.9882, 0.9896, 1.0, 0.9912]
    + [0.9919, 1.0, 0.9916, 0.9954, 0.9998, 0.9943, 0.9959, 1.0, 0.9962, 0.9998],
    "val_loss": [0.4150, 0.2742, 0.5442, 0.4316, 0.5098, 0.6867, 0.6737, 0.6185, 0.7328, 0.7092]
    + [0.6831, 0.8005, 0.7540, 0.7806, 0.8107, 0.8394, 0.7708, 0.8885, 0.8419, 0.8896],
    "val_accuracy": [0.8229, 0.8901, 0.7975, 0.8842, 0.8822, 0.8811, 0.8800, 0.8772, 0.8818]
    + [0.8791, 0.8785, 0.8784, 0.8740, 0.8670, 0.8783, 0.8702, 0.8745, 0.8738, 0.8728, 0.8682],
}
# The same train loss with the training set far from fitted (train accuracy 0.6-0.7).
NOISY_NOT_FITTED = {
    **NOISY_MEMORISED,
    "accuracy": [0.6, 0.62, 0.63, 0.65, 0.64, 0.66, 0.65, 0.66, 0.67, 0.66]
    + [0.67, 0.68, 0.67, 0.68, 0.69, 0.68, 0.69, 0.70, 0.69, 0.70],
}

# keras.io "Image classification via fine-tuning with EfficientNet": EfficientNetB0 from
# scratch on Stanford Dogs (120 classes); validation accuracy climbs from 0.01 to 0.24 (about
# 28x chance) before the val loss turns up. The example calls it overfitting.
SCRATCH_OVERFIT = {
    "loss": [5.0567, 4.6918, 4.4749, 4.3206, 4.2312, 4.1162, 4.0150, 3.9147, 3.8297, 3.7321]
    + [3.6451, 3.5514, 3.4654, 3.3826, 3.2935, 3.2218, 3.1427, 3.0461, 2.9821, 2.8815]
    + [2.8102, 2.7408, 2.6526, 2.5750, 2.5150, 2.4402, 2.3199, 2.2645, 2.2110, 2.1086]
    + [2.0610, 1.9866, 1.8821, 1.7858, 1.7074, 1.6256, 1.5603, 1.4419, 1.3612, 1.2889],
    "accuracy": [0.0097, 0.0214, 0.0298, 0.0423, 0.0458, 0.0579, 0.0679, 0.0828, 0.0932, 0.1092]
    + [0.1245, 0.1457, 0.1606, 0.1660, 0.1815, 0.1942, 0.2131, 0.2264, 0.2401, 0.2613]
    + [0.2741, 0.2892, 0.3093, 0.3201, 0.3280, 0.3465, 0.3735, 0.3837, 0.3962, 0.4175]
    + [0.4359, 0.4463, 0.4613, 0.4925, 0.5105, 0.5334, 0.5504, 0.5736, 0.6025, 0.6199],
    "val_loss": [4.9278, 5.5380, 4.4576, 4.9898, 4.3210, 4.3371, 3.9759, 4.1641, 3.8985, 3.8618]
    + [3.9584, 3.8184, 3.8059, 3.5726, 3.8134, 3.5051, 3.7206, 3.4122, 3.6481, 3.4767]
    + [3.3183, 3.4887, 3.4622, 3.1873, 3.3391, 3.2679, 3.5687, 3.3592, 3.6071, 3.4161]
    + [3.5957, 3.7263, 3.6929, 3.8351, 4.1941, 4.1464, 4.0215, 4.1604, 4.0505, 4.3660],
    "val_accuracy": [0.0100, 0.0141, 0.0375, 0.0391, 0.0416, 0.0540, 0.0786, 0.0651, 0.0928]
    + [0.0946, 0.0880, 0.1096, 0.1118, 0.1472, 0.1154, 0.1540, 0.1381, 0.1707, 0.1515, 0.1783]
    + [0.1927, 0.1859, 0.1924, 0.2253, 0.2148, 0.2270, 0.2080, 0.2374, 0.2008, 0.2302, 0.2231]
    + [0.2234, 0.2239, 0.2238, 0.1930, 0.2098, 0.2306, 0.2240, 0.2344, 0.2151],
}
# The same losses with the validation accuracy held at chance (1/120) throughout.
SCRATCH_VAL_AT_CHANCE = {**SCRATCH_OVERFIT, "val_accuracy": [0.0083] * 40}

# daniellerch/stegolab#1: a steganalysis CNN from scratch on cover/stego images; validation
# accuracy 0.53-0.63 (binary) while the val loss climbs. The maintainer: "You are overfitting".
STEGO_OVERFIT = {
    "loss": [0.5388, 0.4599, 0.3090, 0.2499, 0.2135],
    "accuracy": [0.7156, 0.7707, 0.8372, 0.8438, 0.8454],
    "val_loss": [0.7477, 0.7986, 1.1656, 1.3593, 1.4827],
    "val_accuracy": [0.5938, 0.6250, 0.5312, 0.5625, 0.5625],
}
STEGO_VAL_AT_CHANCE = {**STEGO_OVERFIT, "val_accuracy": [0.5, 0.51, 0.5, 0.52, 0.5]}

# keras.io EfficientNet example, second run: the ImageNet base frozen, a new head trained at
# lr 1e-2 with augmentation and dropout; the val loss stays below the train loss, drifting up
# 10% from epoch 4. The example presents it as the working first step.
FROZEN_HEAD = {
    "loss": [4.3710, 2.0996, 1.7120, 1.6472, 1.5373, 1.5595, 1.5045, 1.4972, 1.4699, 1.4442]
    + [1.4626, 1.4700, 1.4533, 1.4170, 1.4125, 1.4554, 1.4089, 1.4390, 1.4324, 1.4342]
    + [1.3824, 1.4246, 1.4009, 1.4343, 1.4131],
    "accuracy": [0.2654, 0.4863, 0.5422, 0.5509, 0.5744, 0.5715, 0.5802, 0.5839, 0.5929, 0.6040]
    + [0.5972, 0.5965, 0.6034, 0.6053, 0.6059, 0.5979, 0.6081, 0.6041, 0.6018, 0.6057]
    + [0.6209, 0.6170, 0.6153, 0.6051, 0.6065],
    "val_loss": [1.0875, 0.9072, 0.8574, 0.8457, 0.8649, 0.8736, 0.8675, 0.8647, 0.8634, 0.8480]
    + [0.8879, 0.9409, 0.8922, 0.9119, 0.9205, 0.9120, 0.9305, 0.9644, 0.9129, 0.9463]
    + [0.9503, 0.9606, 0.9520, 0.9403, 0.9307],
    "val_accuracy": [0.6888, 0.7282, 0.7411, 0.7451, 0.7424, 0.7374, 0.7430, 0.7392, 0.7508]
    + [0.7520, 0.7379, 0.7383, 0.7474, 0.7416, 0.7406, 0.7392, 0.7423, 0.7380, 0.7439, 0.7305]
    + [0.7410, 0.7336, 0.7334, 0.7435, 0.7456],
}
# The same val curve with the train loss below it (no regularisation noise on the train side).
FROZEN_HEAD_TRAIN_BELOW = {**FROZEN_HEAD, "loss": [v * 0.4 for v in FROZEN_HEAD["loss"]]}
FROZEN_PARAMS = {"learning_rate": 0.01, "unfrozen_layers": 0, "batchnorm": "frozen"}


@pytest.mark.parametrize(
    ("history", "params", "num_classes", "primary"),
    [
        # Near-zero train loss going up and down on a memorised training set: overfitting.
        (NOISY_MEMORISED, {}, 2, OVERFITTING),
        # The same without K: the raw train accuracy (1.0) says the set is memorised.
        (NOISY_MEMORISED, {}, None, OVERFITTING),
        # The same train loss with the training set not fitted: the learning rate.
        (NOISY_NOT_FITTED, {}, 2, LR_TOO_HIGH),
        # Val accuracy left the chance band (28x chance): a from-scratch net overfitting ...
        (SCRATCH_OVERFIT, {}, 120, OVERFITTING),
        (STEGO_OVERFIT, {}, 2, OVERFITTING),
        # ... while val accuracy held at chance with the same losses stays a BatchNorm mismatch.
        (SCRATCH_VAL_AT_CHANCE, {}, 120, BATCHNORM_MISMATCH),
        (STEGO_VAL_AT_CHANCE, {}, 2, BATCHNORM_MISMATCH),
        # ... and so do the same curves when the run's params say BatchNorm trains: its moving
        # statistics can lag from the first epochs on, before the val accuracy falls.
        (SCRATCH_OVERFIT, {"batchnorm": "train"}, 120, BATCHNORM_MISMATCH),
        (STEGO_OVERFIT, {"batchnorm": "train"}, 2, BATCHNORM_MISMATCH),
        # Val loss below the train loss throughout: its 10% drift is not overfitting.
        (FROZEN_HEAD, FROZEN_PARAMS, 120, HEALTHY),
        # The same val curve above the train loss: overfitting.
        (FROZEN_HEAD_TRAIN_BELOW, FROZEN_PARAMS, 120, OVERFITTING),
    ],
)
def test_public_run_rules(
    history: dict[str, list[float]], params: dict[str, Any], num_classes: int | None, primary: str
) -> None:
    data: dict[str, Any] = {"history": history, "params": params}
    if num_classes is not None:
        data["num_classes"] = num_classes
    verdicts = diagnose_history(data).verdicts
    assert verdicts[0].verdict == primary, verdicts
