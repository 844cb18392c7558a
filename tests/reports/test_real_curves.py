"""Diagnosis rules on real learning curves (``real_curves.json``).

The curves come from short real Keras runs on a 6-class target (chance level: loss ln 6 = 1.79,
accuracy 0.17) with a 5-layer base. Trials 0-3 are reference ("peer") runs with healthy-ish
settings; trials 4-8 induce one pathology each on purpose, named in ``pathology`` with the
verdict a practitioner expects in ``expected``. ``verdicts_now`` records what the rules said
before they were tuned on these curves and is not used here.

Each trial is diagnosed with all the other trials as peers, as ``diagnose_study`` would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from thaw.reports._diagnosis import (
    BATCHNORM_MISMATCH,
    HEALTHY,
    LR_TOO_HIGH,
    OVERFITTING,
    UNDERFITTING,
    VERDICTS,
    Thresholds,
    TrialCurves,
    Verdict,
    diagnose_trial,
)

REAL_CURVES = Path(__file__).with_name("real_curves.json")
NUM_LAYERS = 5
PEERS = (0, 1, 2, 3)
INDUCED = (4, 5, 6, 7, 8)


def _load() -> dict[int, dict[str, Any]]:
    raw = json.loads(REAL_CURVES.read_text(encoding="utf-8"))
    return {int(k): v for k, v in raw.items()}


RAW = _load()


def _curves(number: int) -> TrialCurves:
    entry = RAW[number]
    return TrialCurves(
        number=number,
        params=entry["params"],
        loss=entry["loss"],
        val_loss=entry["val_loss"],
        accuracy=entry["accuracy"],
        val_accuracy=entry["val_accuracy"],
    )


CURVES = {n: _curves(n) for n in sorted(RAW)}


def _diagnose(number: int) -> list[Verdict]:
    peers = [c for n, c in CURVES.items() if n != number]
    return diagnose_trial(CURVES[number], peers, Thresholds(), num_layers=NUM_LAYERS)


def _names(number: int) -> list[str]:
    return [v.verdict for v in _diagnose(number)]


def test_fixture_is_as_described() -> None:
    assert set(RAW) == set(PEERS) | set(INDUCED)
    for n in PEERS:
        assert RAW[n]["expected"] is None
    for n in INDUCED:
        assert RAW[n]["expected"] in VERDICTS


@pytest.mark.parametrize("number", INDUCED)
def test_induced_pathology_is_found(number: int) -> None:
    verdicts = _diagnose(number)
    names = [v.verdict for v in verdicts]
    expected = RAW[number]["expected"]
    assert expected in names, (RAW[number]["pathology"], [v.evidence for v in verdicts])
    assert HEALTHY not in names
    assert names == sorted(names, key=VERDICTS.index)
    for v in verdicts:
        assert any(ch.isdigit() for ch in v.evidence), v.evidence
        assert v.recommendation


def test_lr_explosion_is_lr_too_high() -> None:
    # lr 1e-1 on all layers: train loss 3.7e6 and val 3715 at epoch 1, ends at chance level.
    (v,) = _diagnose(4)
    assert v.verdict == LR_TOO_HIGH
    assert "3.7e6 at epoch 1" in v.evidence
    assert "best feature-extraction trial 3" in v.evidence  # ended far above its 0.647
    assert "val accuracy stayed at 0.167" in v.evidence
    assert "lower the learning rate to <= 3e-4" in v.recommendation  # as peer trial 0


def test_overfitting_without_lr_false_positive() -> None:
    # The train/val bump at epochs 2-3 recovered within two epochs: not a too-high lr.
    names = _names(5)
    assert LR_TOO_HIGH not in names
    assert names[0] == OVERFITTING


def test_batchnorm_mismatch_is_listed_first() -> None:
    verdicts = _diagnose(6)
    assert verdicts[0].verdict == BATCHNORM_MISMATCH
    assert all(v.confidence <= verdicts[0].confidence for v in verdicts)
    assert "first got clearly above chance at epoch 8" in verdicts[0].evidence


def test_batchnorm_frozen_trial_never_gets_batchnorm_mismatch() -> None:
    entry = RAW[6]
    relabelled = TrialCurves(
        number=6,
        params={**entry["params"], "batchnorm": "frozen"},
        loss=entry["loss"],
        val_loss=entry["val_loss"],
        accuracy=entry["accuracy"],
        val_accuracy=entry["val_accuracy"],
    )
    peers = [c for n, c in CURVES.items() if n != 6]
    verdicts = diagnose_trial(relabelled, peers, num_layers=NUM_LAYERS)
    # BatchNorm layers frozen cannot mismatch; nor is freezing them advised.
    assert BATCHNORM_MISMATCH not in [v.verdict for v in verdicts]
    assert all("batchnorm: frozen" not in v.recommendation for v in verdicts)


def test_genuine_overfitting_is_no_batchnorm_mismatch() -> None:
    # Trial 5: val accuracy 0.67 vs train 0.89 when train accuracy first got high (0.75x).
    assert BATCHNORM_MISMATCH not in _names(5)


@pytest.mark.parametrize("number", [7, 8])
def test_head_only_runs_underfit(number: int) -> None:
    assert _names(number) == [UNDERFITTING]


@pytest.mark.parametrize("number", [0, 2])
def test_good_peers_are_healthy(number: int) -> None:
    assert _names(number) == [HEALTHY]


@pytest.mark.parametrize("number", PEERS)
def test_peers_get_no_lr_or_batchnorm_verdict(number: int) -> None:
    names = _names(number)
    assert LR_TOO_HIGH not in names
    assert BATCHNORM_MISMATCH not in names
    # peer 3 (feature extraction, best val loss 0.647) may legitimately be underfitting
    assert set(names) <= {HEALTHY, UNDERFITTING}
