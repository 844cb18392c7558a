"""``thaw diagnose --history FILE.json``: a Keras History.history diagnosed alone."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

GUIDE = Path(__file__).parents[1] / "fixtures" / "keras_guide_phase2.json"


def _write(tmp_path: Path, payload: Any) -> Path:
    path = tmp_path / "history.json"
    text = payload if isinstance(payload, str) else json.dumps(payload)
    path.write_text(text, encoding="utf-8")
    return path


def test_keras_guide_phase2_is_overfitting(thaw: Any) -> None:
    result = thaw("diagnose", "--history", GUIDE, "--json")
    assert result.rc == 0, result.err
    out = json.loads(result.out)
    assert out["primary"] == "overfitting"
    assert out["epochs"] == 10 and out["num_classes"] == 2
    assert out["chance"] == {"accuracy": 0.5, "loss": round(math.log(2), 6)}
    (first, *_) = out["verdicts"]
    assert set(first) == {"verdict", "confidence", "evidence", "recommendation"}
    assert "epoch 3" in first["evidence"] and "stop at epoch 3" in first["recommendation"]
    # BatchNorm was frozen in the guide (training=False): never advise freezing it.
    assert all(v["verdict"] != "batchnorm_mismatch" for v in out["verdicts"])


def test_text_output_names_verdict_evidence_and_recommendation(thaw: Any) -> None:
    result = thaw("diagnose", "--history", GUIDE)
    assert result.rc == 0, result.err
    assert "overfitting (confidence" in result.out
    assert "evidence:" in result.out and "recommendation:" in result.out


@pytest.mark.parametrize(
    ("history", "params", "verdict"),
    [
        # Explosive first epoch: lr_too_high alone, without peers.
        (
            {
                "loss": [1.2e6, 40.0, 3.1, 2.0, 1.9, 1.8],
                "val_loss": [9.0e3, 12.0, 2.2, 1.9, 1.85, 1.8],
                "accuracy": [0.2, 0.2, 0.18, 0.17, 0.17, 0.17],
                "val_accuracy": [0.17, 0.17, 0.16, 0.17, 0.17, 0.17],
            },
            {"learning_rate": 0.1, "unfrozen_layers": 5},
            "lr_too_high",
        ),
        # Never leaves the chance band (ln 6 = 1.79, accuracy 1/6): never healthy.
        (
            {
                "loss": [1.85, 1.82, 1.8, 1.8, 1.79, 1.79],
                "val_loss": [1.84, 1.81, 1.8, 1.79, 1.79, 1.79],
                "accuracy": [0.17, 0.18, 0.18, 0.19, 0.18, 0.19],
                "val_accuracy": [0.16, 0.17, 0.18, 0.17, 0.18, 0.17],
            },
            {"learning_rate": 1e-5, "unfrozen_layers": 0, "batchnorm": "frozen"},
            "underfitting",
        ),
    ],
)
def test_histories_alone_get_their_verdict(
    thaw: Any, tmp_path: Path, history: dict[str, Any], params: dict[str, Any], verdict: str
) -> None:
    path = _write(tmp_path, {**history, "params": params, "num_classes": 6})
    result = thaw("diagnose", "--history", path, "--json")
    assert result.rc == 0, result.err
    assert json.loads(result.out)["primary"] == verdict


GOOD = {"loss": [1.0, 0.8, 0.7], "val_loss": [1.1, 0.9, 0.85]}


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ({"loss": [1.0, 0.8, 0.7], "val_loss": [1.1, 0.9]}, "different lengths"),
        ({"loss": [1.0, 0.8, 0.7], "accuracy": [0.5, 0.6, 0.7]}, "no 'val_loss'"),
        ('{"loss": [NaN, NaN], "val_loss": [NaN, NaN]}', "no finite value"),
        ('{"loss": [1.0, 0.8], "val_loss": [null, null]}', "no finite value"),
        ("loss: [1, 2]\nval_loss: [1, 2]", "is not JSON"),
        ("[1.0, 2.0]", "expected a JSON object"),
        ({"loss": [1.0], "val_loss": ["high"]}, "epoch 1 is 'high'"),
        ({**GOOD, "params": {"learnig_rate": 1e-3}}, "unknown params learnig_rate"),
        ({**GOOD, "params": {"batchnorm": "on"}}, "params.batchnorm must be one of"),
        ({**GOOD, "num_classes": 1}, "num_classes must be an integer >= 2"),
    ],
)
def test_bad_history_gets_one_line_and_exit_2(
    thaw: Any, tmp_path: Path, payload: Any, match: str
) -> None:
    path = _write(tmp_path, payload)
    result = thaw("diagnose", "--history", path)
    assert result.rc == 2
    assert match in result.error_line
    assert result.out == ""


def test_history_and_study_file_are_exclusive(thaw: Any, tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    result = thaw("diagnose", "studies/demo.yaml", "--history", path)
    assert result.rc == 2 and "--history takes no study file" in result.error_line
    missing = thaw("diagnose", "--history", tmp_path / "missing.json")
    assert missing.rc == 2 and "cannot read history file" in missing.error_line
