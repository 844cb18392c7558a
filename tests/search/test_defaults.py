"""The README's defaults table says what the code does, key by key."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from thaw.search import StudyConfig, parse_study

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_defaults() -> dict[str, Any]:
    text = README.read_text(encoding="utf-8")
    block = text.split("<!-- defaults-table: start -->")[1].split("<!-- defaults-table: end -->")[0]
    out: dict[str, Any] = {}
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`([\w.]+)`", cells[0]) if cells and cells[0] else None
        if match and len(cells) >= 2:
            out[match.group(1)] = yaml.safe_load(cells[1].strip("`"))
    return out


def _range(r: Any) -> dict[str, Any]:
    d = {"low": r.low, "high": r.high}
    if r.log:
        d["log"] = True
    return d


def code_defaults(config: StudyConfig) -> dict[str, Any]:
    return {
        "n_trials": config.n_trials,
        "budget_epochs": config.budget_epochs,
        "reference_trials": config.reference_trials,
        "loop": config.loop,
        "lr_range_test": config.lr_range_test,
        "rate_guard": config.rate_guard,
        "search_space.batchnorm": list(config.space.batchnorm),
        "search_space.dropout": _range(config.space.dropout),
        "search_space.learning_rate": _range(config.space.learning_rate),
        "search_space.weight_decay": _range(config.space.weight_decay),
        "search_space.l2sp": config.space.l2sp,
        "search_space.lr_decay": config.space.lr_decay,
        "search_space.augment": config.space.augment,
        "search_space.block_start": config.space.block_start,
        "search_space.lora_rank": config.space.lora_rank,
        "train.epochs": config.train.epochs,
        "train.batch_size": config.train.batch_size,
        "train.probe_images": config.train.probe_images,
        "sampler.name": config.sampler.name,
        "sampler.n_startup_trials": config.sampler.n_startup_trials,
        "pruner.compare": config.pruner.compare,
        "pruner.reduction_factor": config.pruner.reduction_factor,
        "pruner.n_warmup_steps": config.pruner.n_warmup_steps,
        "pruner.patience": config.pruner.patience,
        "pruner.min_delta": config.pruner.min_delta,
        "pruner.n_startup_trials": config.pruner.n_startup_trials,
        "model.cut_at": config.model.cut_at,
    }


def test_readme_table_lists_every_default_key() -> None:
    assert set(readme_defaults()) == set(code_defaults(parse_study({}, Path("x.yaml"))))


@pytest.mark.parametrize("key", sorted(code_defaults(parse_study({}, Path("x.yaml")))))
def test_readme_default_matches_the_code(key: str) -> None:
    assert readme_defaults()[key] == code_defaults(parse_study({}, Path("x.yaml")))[key]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("reference_trials", True),
        ("search_space.batchnorm", ["frozen", "adapt", "train"]),
        ("pruner.compare", "hyperband"),
        ("sampler.name", "tpe"),
    ],
)
def test_the_winning_defaults(key: str, expected: Any) -> None:
    assert code_defaults(parse_study({}, Path("x.yaml")))[key] == expected
