"""train.cache_frozen (auto, the default, or off) and train.probe_images (64, >= 0) in the
study file."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from thaw.search import StudyFileError, parse_study

RAW: dict[str, Any] = {"name": "t", "model": {"source": "demo"}, "data": {"source": "demo"}}


@pytest.mark.parametrize(("value", "expected"), [(None, "auto"), ("auto", "auto"), ("off", "off")])
def test_cache_frozen_is_parsed(tmp_path: Path, value: str | None, expected: str) -> None:
    raw = copy.deepcopy(RAW)
    if value is not None:
        raw["train"] = {"cache_frozen": value}
    assert parse_study(raw, tmp_path / "s.yaml").train.cache_frozen == expected


@pytest.mark.parametrize("value", ["on", True, 1])
def test_bad_cache_frozen_is_refused(tmp_path: Path, value: Any) -> None:
    raw = {**RAW, "train": {"cache_frozen": value}}
    with pytest.raises(StudyFileError, match=r"train\.cache_frozen") as info:
        parse_study(raw, tmp_path / "s.yaml")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("value", "expected"), [(None, 64), (0, 0), (16, 16), (100000, 100000)])
def test_probe_images_is_parsed(tmp_path: Path, value: int | None, expected: int) -> None:
    raw = copy.deepcopy(RAW)
    if value is not None:
        raw["train"] = {"probe_images": value}
    assert parse_study(raw, tmp_path / "s.yaml").train.probe_images == expected


@pytest.mark.parametrize("value", [-1, "all", 2.5, None])
def test_bad_probe_images_is_refused(tmp_path: Path, value: Any) -> None:
    raw = {**RAW, "train": {"probe_images": value}}
    with pytest.raises(StudyFileError, match=r"train\.probe_images") as info:
        parse_study(raw, tmp_path / "s.yaml")
    assert "\n" not in str(info.value)
