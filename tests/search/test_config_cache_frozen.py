"""train.cache_frozen (auto, the default, or off; YAML's unquoted off too) and
train.probe_images (64, >= 0) in the study file."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from thaw.search import StudyFileError, load_study_file, parse_study

RAW: dict[str, Any] = {"name": "t", "model": {"source": "demo"}, "data": {"source": "demo"}}


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, "auto"), ("auto", "auto"), ("off", "off"), ("Off", "off"), (False, "off")],
)
def test_cache_frozen_is_parsed(tmp_path: Path, value: str | None, expected: str) -> None:
    raw = copy.deepcopy(RAW)
    if value is not None:
        raw["train"] = {"cache_frozen": value}
    assert parse_study(raw, tmp_path / "s.yaml").train.cache_frozen == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("on", "train.cache_frozen is on; expected one of: auto, off"),
        (True, "train.cache_frozen is on; expected one of: auto, off"),
        (1, "train.cache_frozen is 1; expected one of: auto, off"),
        ("always", "train.cache_frozen is 'always'; expected one of: auto, off"),
    ],
)
def test_bad_cache_frozen_is_refused(tmp_path: Path, value: Any, fragment: str) -> None:
    raw = {**RAW, "train": {"cache_frozen": value}}
    with pytest.raises(StudyFileError) as info:
        parse_study(raw, tmp_path / "s.yaml")
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


UNQUOTED = [
    ("train: {cache_frozen: off}", "off", "auto"),
    ("train: {cache_frozen: 'off'}", "off", "auto"),
    ("train: {cache_frozen: no}", "off", "auto"),
    ("train: {cache_frozen: auto}", "auto", "auto"),
    ("train: {mixed_precision: off}", "auto", "off"),
    ("train: {mixed_precision: on}", "auto", "on"),
    ("train:\n  cache_frozen: off\n  mixed_precision: off", "off", "off"),
]


@pytest.mark.parametrize(("text", "cache_frozen", "mixed_precision"), UNQUOTED)
def test_unquoted_off_in_yaml_is_off(
    tmp_path: Path, text: str, cache_frozen: str, mixed_precision: str
) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(f"name: t\nmodel: {{source: demo}}\ndata: {{source: demo}}\n{text}\n")
    train = load_study_file(path).train
    assert (train.cache_frozen, train.mixed_precision) == (cache_frozen, mixed_precision)


def test_cache_frozen_unquoted_on_in_yaml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: t\nmodel: {source: demo}\ntrain: {cache_frozen: on}\n")
    with pytest.raises(StudyFileError, match="train.cache_frozen is on; expected one of"):
        load_study_file(path)


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


@pytest.mark.parametrize(
    ("text", "accepted"),
    [(t, True) for t, _, _ in UNQUOTED]
    + [
        ("train: {cache_frozen: on}", False),
        ("train: {cache_frozen: always}", False),
    ],
)
def test_the_published_json_schema_agrees(text: str, accepted: bool) -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is a dev dependency")
    from thaw.search._schema import study_file_schema

    errors = list(
        jsonschema.Draft202012Validator(study_file_schema()).iter_errors(yaml.safe_load(text))
    )
    assert not errors if accepted else errors
