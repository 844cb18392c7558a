"""Decision tables of the per-trial rules: absolute facts (chance level ln K and 1/K), the
trial's own params and probes; every rule works for a trial alone."""

from __future__ import annotations

import math
from typing import Any

import pytest

from thaw.reports.diagnosis import (
    BATCHNORM_MISMATCH,
    HEALTHY,
    LR_TOO_HIGH,
    OVERFITTING,
    UNDERFITTING,
    TrialCurves,
    Verdict,
    diagnose_trial,
)

K = 6
CHANCE = math.log(K)


def _curves(
    loss: list[float],
    val_loss: list[float],
    accuracy: list[float],
    val_accuracy: list[float],
    *,
    probes: dict[str, Any] | None = None,
    k: int | None = K,
    **params: Any,
) -> TrialCurves:
    base = {"unfrozen_layers": 3, "learning_rate": 1e-3, "dropout": 0.2, "weight_decay": 1e-4}
    return TrialCurves(
        number=0,
        params={**base, **params},
        loss=loss,
        val_loss=val_loss,
        accuracy=accuracy,
        val_accuracy=val_accuracy,
        num_classes=k,
        probes=probes or {},
    )


def _alone(c: TrialCurves) -> list[Verdict]:
    return diagnose_trial(c, (), num_layers=5)


AT_CHANCE = dict(
    loss=[1.84, 1.82, 1.81, 1.8, 1.8, 1.79, 1.79, 1.79],
    val_loss=[1.83, 1.81, 1.8, 1.8, 1.79, 1.79, 1.79, 1.79],
    accuracy=[0.17, 0.18, 0.18, 0.19, 0.18, 0.2, 0.19, 0.2],
    val_accuracy=[0.16, 0.17, 0.18, 0.17, 0.18, 0.17, 0.18, 0.17],
)
HEALTHY_RUN = dict(
    loss=[1.5, 1.1, 0.8, 0.6, 0.48, 0.42, 0.38, 0.36],
    val_loss=[1.4, 1.0, 0.75, 0.6, 0.52, 0.48, 0.46, 0.45],
    accuracy=[0.45, 0.6, 0.72, 0.8, 0.85, 0.87, 0.88, 0.89],
    val_accuracy=[0.5, 0.63, 0.74, 0.79, 0.82, 0.83, 0.84, 0.84],
)
TINY_OVERFIT = dict(  # 3 images per class: train accuracy 1, val loss 1.7 -> 5.6
    loss=[1.6, 0.9, 0.4, 0.15, 0.06, 0.03, 0.02, 0.01, 0.01, 0.01],
    val_loss=[1.75, 1.7, 1.9, 2.4, 3.0, 3.6, 4.2, 4.8, 5.2, 5.6],
    accuracy=[0.4, 0.7, 0.9, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
    val_accuracy=[0.3, 0.42, 0.45, 0.46, 0.45, 0.45, 0.44, 0.45, 0.44, 0.44],
)
EXPLOSIVE = dict(
    loss=[1.0e6, 35.0, 2.5, 1.9, 1.85, 1.8],
    val_loss=[4.0e4, 9.0, 2.1, 1.85, 1.8, 1.8],
    accuracy=[0.17, 0.17, 0.17, 0.17, 0.17, 0.17],
    val_accuracy=[0.17, 0.17, 0.17, 0.17, 0.17, 0.17],
)
BN_TRAIN_VAL_AT_CHANCE = dict(  # train accuracy only 0.7, validation at chance throughout
    loss=[1.7, 1.4, 1.2, 1.0, 0.9, 0.85, 0.8, 0.78],
    val_loss=[2.2, 2.5, 2.6, 2.7, 2.75, 2.8, 2.8, 2.85],
    accuracy=[0.3, 0.45, 0.55, 0.62, 0.66, 0.68, 0.7, 0.7],
    val_accuracy=[0.17, 0.18, 0.17, 0.18, 0.19, 0.18, 0.18, 0.18],
)

# Real demo runs (bench/labelled_runs.json): 3 images per class memorised while the val loss
# still falls; head only with BatchNorm frozen, stopped before converging.
MEMORISED = dict(
    loss=[2.73, 1.98, 3.1, 2.44, 1.73, 1.69, 1.7, 1.59, 1.38, 1.19, 1.13, 1.08, 0.94, 0.82, 0.75]
    + [0.68, 0.65, 0.6, 0.52, 0.47, 0.44, 0.41, 0.37, 0.33, 0.3, 0.27, 0.25, 0.23, 0.21, 0.19],
    val_loss=[2.14, 3.15, 2.46, 1.79, 1.73, 1.74, 1.65, 1.45, 1.27, 1.24, 1.21, 1.1, 1.02, 0.99]
    + [0.95, 0.94, 0.91, 0.87, 0.86, 0.84, 0.82, 0.8, 0.78, 0.77, 0.75, 0.75, 0.75, 0.75]
    + [0.74, 0.74],
    accuracy=[0.17, 0.33, 0.17, 0.11, 0.17, 0.17, 0.28, 0.28, 0.33, 0.44, 0.56, 0.44, 0.61, 0.61]
    + [0.72, 0.72, 0.78, 0.78, 0.89, 0.94, 0.89, 0.94, 0.94, 0.94]
    + [1.0] * 6,
    val_accuracy=[0.19, 0.17, 0.17, 0.18, 0.19, 0.21, 0.28, 0.36, 0.48, 0.5, 0.48, 0.55, 0.56]
    + [0.59, 0.6, 0.6, 0.63, 0.65, 0.63, 0.68, 0.69, 0.71, 0.72, 0.74, 0.74, 0.74, 0.75, 0.75]
    + [0.76, 0.75],
)
NOT_CONVERGED = dict(
    loss=[2.19, 1.93, 1.71, 1.54, 1.4, 1.28, 1.19, 1.11, 1.04, 0.99],
    val_loss=[2.07, 1.83, 1.63, 1.47, 1.34, 1.23, 1.15, 1.07, 1.02, 0.97],
    accuracy=[0.13, 0.17, 0.22, 0.35, 0.5, 0.67, 0.68, 0.71, 0.72, 0.73],
    val_accuracy=[0.11, 0.15, 0.21, 0.36, 0.55, 0.65, 0.67, 0.7, 0.7, 0.72],
)


@pytest.mark.parametrize(
    ("case", "params", "primary"),
    [
        # A run that never leaves the chance band is never healthy.
        (AT_CHANCE, {"learning_rate": 1e-5}, UNDERFITTING),
        (AT_CHANCE, {"batchnorm": "frozen", "unfrozen_layers": 0}, UNDERFITTING),
        (AT_CHANCE, {"learning_rate": 0.1}, LR_TOO_HIGH),
        (HEALTHY_RUN, {}, HEALTHY),
        # Explosive losses are lr_too_high alone, whatever K.
        (EXPLOSIVE, {"learning_rate": 0.3}, LR_TOO_HIGH),
        # Overfitting a tiny set is overfitting, whatever the BatchNorm mode.
        (TINY_OVERFIT, {"batchnorm": "frozen"}, OVERFITTING),
        (TINY_OVERFIT, {"batchnorm": "train"}, OVERFITTING),
        # Real mismatch: BatchNorm trains, train accuracy 0.7, val at chance.
        (BN_TRAIN_VAL_AT_CHANCE, {"batchnorm": "train"}, BATCHNORM_MISMATCH),
        # The same curves with BatchNorm frozen cannot be a BatchNorm mismatch.
        (BN_TRAIN_VAL_AT_CHANCE, {"batchnorm": "frozen"}, OVERFITTING),
        # Memorised with a wide accuracy gap: overfitting before the val loss turns up.
        (MEMORISED, {"batchnorm": "frozen", "dropout": 0.0}, OVERFITTING),
        # Train accuracy 0.73 and the val loss still falling 15% over the last epochs.
        (NOT_CONVERGED, {"batchnorm": "frozen", "unfrozen_layers": 0}, UNDERFITTING),
    ],
)
def test_primary_verdict_alone(
    case: dict[str, list[float]], params: dict[str, Any], primary: str
) -> None:
    verdicts = _alone(_curves(**case, **params))
    assert verdicts[0].verdict == primary, verdicts
    assert HEALTHY not in [v.verdict for v in verdicts] or primary == HEALTHY


@pytest.mark.parametrize(
    ("params", "cause", "advice"),
    [
        ({"learning_rate": 1e-6}, "too low", "raise the learning rate"),
        ({"batchnorm": "frozen"}, "BatchNorm frozen", "batchnorm: adapt"),
        ({"unfrozen_layers": 0}, "too few layers", "switch from feature extraction"),
    ],
)
def test_not_learning_names_the_cause_from_the_params(
    params: dict[str, Any], cause: str, advice: str
) -> None:
    (v,) = _alone(_curves(**AT_CHANCE, **params))
    assert v.verdict == UNDERFITTING
    assert f"ln {K} = {CHANCE:.3g}" in v.evidence and cause in v.evidence
    assert advice in v.recommendation


@pytest.mark.parametrize(
    ("params", "forbidden"),
    [
        ({"batchnorm": "frozen"}, "batchnorm: frozen"),
        ({"batchnorm": "adapt", "learning_rate": 1e-3}, "batchnorm: adapt"),
        ({"unfrozen_layers": 5}, "unfreeze more"),
        ({"learning_rate": 1e-3}, "raise the learning rate from 0.001"),
    ],
)
def test_never_advises_what_the_trial_already_does(params: dict[str, Any], forbidden: str) -> None:
    for case in (AT_CHANCE, TINY_OVERFIT, BN_TRAIN_VAL_AT_CHANCE, HEALTHY_RUN):
        for v in _alone(_curves(**case, **params)):
            assert forbidden not in v.recommendation, (case, v)


@pytest.mark.parametrize(
    ("probes", "expected"),
    [
        # The probe shows the mismatch directly, even where the curves look healthy.
        ({"val_loss_moving_stats": 1.4, "val_loss_batch_stats": 0.45}, BATCHNORM_MISMATCH),
        # The probe clears BatchNorm: the same curves are then something else.
        ({"val_loss_moving_stats": 2.8, "val_loss_batch_stats": 2.7}, OVERFITTING),
    ],
)
def test_batchnorm_probe_decides(probes: dict[str, float], expected: str) -> None:
    case = HEALTHY_RUN if expected == BATCHNORM_MISMATCH else BN_TRAIN_VAL_AT_CHANCE
    verdicts = _alone(_curves(**case, batchnorm="train", probes=probes))
    assert verdicts[0].verdict == expected, verdicts


@pytest.mark.parametrize(
    ("batchnorm", "expected"), [("train", BATCHNORM_MISMATCH), ("adapt", OVERFITTING)]
)
def test_training_set_at_chance_in_inference_mode_is_a_batchnorm_mismatch(
    batchnorm: str, expected: str
) -> None:
    """Accuracy 1.0 on the training images during training but 0.18 on the same images in
    inference mode: the moving statistics do not fit (only where BatchNorm trains)."""
    probes = {"train_accuracy": 0.18, "train_loss": 2.4}
    verdicts = _alone(_curves(**TINY_OVERFIT, batchnorm=batchnorm, probes=probes))
    assert verdicts[0].verdict == expected, verdicts
    if expected == BATCHNORM_MISMATCH:
        assert "0.18 in inference mode" in verdicts[0].evidence


def test_weight_drift_probe_is_evidence_for_lr_too_high() -> None:
    probes = {"weight_drift": {"block4_conv": 2.5, "top_conv": 1.2}}
    (v,) = _alone(_curves(**AT_CHANCE, learning_rate=0.05, probes=probes))
    assert v.verdict == LR_TOO_HIGH and "block4_conv moved 2.50x" in v.evidence


def test_peers_only_refine() -> None:
    """A peer can sharpen the recommendation but the verdict of a run at chance stays."""
    alone = _alone(_curves(**AT_CHANCE, learning_rate=1e-5))
    peer = TrialCurves(
        number=1, params={"unfrozen_layers": 3, "learning_rate": 1e-3}, num_classes=K, **HEALTHY_RUN
    )
    with_peer = diagnose_trial(_curves(**AT_CHANCE, learning_rate=1e-5), [peer], num_layers=5)
    assert [v.verdict for v in alone] == [v.verdict for v in with_peer] == [UNDERFITTING]


# Still improving at the last epoch with val close to train (the glyphs run's shape, K = 5):
# loss falls steadily, train accuracy ends about half-way from chance to perfect.
IMPROVING = dict(
    loss=[2.5, 1.7, 1.49, 1.45, 1.41, 1.31, 1.25, 1.22, 1.14, 1.11, 1.03, 0.97],
    val_loss=[1.74, 1.57, 1.54, 1.45, 1.45, 1.42, 1.38, 1.37, 1.31, 1.31, 1.26, 1.2],
    val_accuracy=[0.3, 0.27, 0.29, 0.34, 0.3, 0.35, 0.35, 0.38, 0.43, 0.42, 0.42, 0.45],
)
FIT_HALF = [0.23, 0.28, 0.34, 0.38, 0.35, 0.45, 0.45, 0.49, 0.52, 0.53, 0.61, 0.6]
FIT_POOR = [0.2, 0.21, 0.22, 0.24, 0.25, 0.27, 0.28, 0.3, 0.31, 0.33, 0.34, 0.36]


@pytest.mark.parametrize(
    ("accuracy", "batchnorm", "verdict", "words"),
    [
        (FIT_HALF, "adapt", HEALTHY, "healthy, stopped early: train longer"),
        (FIT_HALF, None, HEALTHY, "healthy, stopped early: train longer"),
        (FIT_POOR, "adapt", UNDERFITTING, "train for more epochs"),  # the train fit is poor
        (FIT_HALF, "frozen", UNDERFITTING, "batchnorm: adapt"),  # a named handicap
    ],
)
def test_still_improving_is_not_underfitting(
    accuracy: list[float], batchnorm: str | None, verdict: str, words: str
) -> None:
    extra = {} if batchnorm is None else {"batchnorm": batchnorm}
    c = _curves(accuracy=accuracy, k=5, **IMPROVING, **extra)  # type: ignore[arg-type]
    (found, *_) = _alone(c)
    assert found.verdict == verdict, found
    assert words in found.recommendation
    if verdict == HEALTHY:
        assert "still improving" in found.evidence
