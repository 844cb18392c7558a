"""The study file schema: the README documents only accepted keys; `thaw schema` publishes it."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from thaw.search import StudyFileError, parse_study
from thaw.search._schema import StudyFile, study_file_schema

REPO = Path(__file__).resolve().parents[2]
_KEY = re.compile(r"^(?P<indent> *)(?:# )?(?P<key>[a-z_]+):(?P<value>.*)$")


def readme_keys() -> list[str]:
    """Dotted keys of the README's study-file reference, commented-out ones included."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split("## Study file reference", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    keys: list[str] = []
    section = ""
    for line in block.splitlines():
        match = _KEY.match(line)
        if not match:
            continue
        key, indent, value = match["key"], len(match["indent"]), match["value"].strip()
        if indent == 0:
            section = key
            keys.append(key)
            if value.startswith("{") and key != "diagnosis":  # a flow mapping: its keys
                keys += [f"{key}.{k}" for k in re.findall(r"([a-z_]+):", value.split("}")[0])]
        else:
            keys.append(f"{section}.{key}")
    return keys


def schema_accepts(dotted: str) -> bool:
    model: Any = StudyFile
    for part in dotted.split("."):
        if not (isinstance(model, type) and part in getattr(model, "model_fields", {})):
            return False
        model = model.model_fields[part].annotation
    return True


def test_the_readme_reference_is_read() -> None:
    keys = readme_keys()
    assert len(keys) > 40
    assert {"data.max_memory_mb", "train.warmup_epochs", "sampler.n_startup_trials"} <= set(keys)


@pytest.mark.parametrize("key", readme_keys())
def test_every_readme_key_is_accepted(key: str) -> None:
    assert schema_accepts(key), f"README documents {key!r} but the study-file schema refuses it"


def test_schema_refuses_what_it_does_not_know() -> None:
    assert not schema_accepts("data.max_memory")
    assert not schema_accepts("train.epochs.low")


def test_max_memory_mb_is_accepted_and_checked(tmp_path: Path) -> None:
    config = parse_study({"data": {"max_memory_mb": 512}}, tmp_path / "s.yaml")
    assert config.data.max_memory_mb == 512
    with pytest.raises(StudyFileError, match=r"data\.max_memory_mb must be >= 1, got 0"):
        parse_study({"data": {"max_memory_mb": 0}}, tmp_path / "s.yaml")


DID_YOU_MEAN = [
    ({"n_trial": 3}, r"unknown key 'n_trial'; expected one of: .*; did you mean 'n_trials'\?$"),
    ({"train": {"epoch": 3}}, r"unknown key 'train\.epoch'; .*did you mean 'epochs'\?$"),
    ({"data": {"max_memory": 3}}, r"unknown key 'data\.max_memory'.*did you mean 'max_memory_mb'"),
    (
        {"search_space": {"dropout": {"low": 0, "high": 0.1, "lg": True}}},
        r"unknown key 'search_space\.dropout\.lg'; expected one of: low, high, log; did you mean "
        r"'log'\?",
    ),
    ({"zzzz": 1}, r"unknown key 'zzzz'; expected one of: [a-z_, ]+$"),
]


@pytest.mark.parametrize(("raw", "match"), DID_YOU_MEAN)
def test_unknown_keys_suggest_the_closest(tmp_path: Path, raw: dict[str, Any], match: str) -> None:
    with pytest.raises(StudyFileError, match=match):
        parse_study(raw, tmp_path / "s.yaml")


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"train": {"callbacks": "x.Y"}}, r"train\.callbacks must be a list of import paths"),
        ({"train": {"callbacks": ["nodots"]}}, r"train\.callbacks must be a list of import"),
        ({"train": {"tensorboard": "yes"}}, r"train\.tensorboard must be true or false"),
        ({"keep_best": 1}, r"keep_best must be true or false, got 1"),
        ({"model": {"source": "kerashub"}}, r"model\.preset is required when model\.source is"),
        ({"model": {"preset": "x"}}, r"model\.preset is only used with model\.source: kerashub"),
        ({"data": {"val_fraction": 1.5}}, r"data\.val_fraction must be a number between 0 and 1"),
    ],
)
def test_new_keys_are_validated(tmp_path: Path, raw: dict[str, Any], match: str) -> None:
    with pytest.raises(StudyFileError, match=match) as info:
        parse_study(raw, tmp_path / "s.yaml")
    assert "\n" not in str(info.value)


def test_every_study_file_shipped_is_valid() -> None:
    paths = sorted((REPO / "studies").glob("*.yaml"))
    assert paths
    for path in paths:
        StudyFile.model_validate(yaml.safe_load(path.read_text()))


def test_thaw_schema_prints_the_published_schema(thaw: Callable[..., Any]) -> None:
    result = thaw("schema")
    assert result.rc == 0
    printed = json.loads(result.out)
    assert printed == study_file_schema()
    assert printed["additionalProperties"] is False
    assert printed["$defs"]["TrainSection"]["additionalProperties"] is False
    published = json.loads((REPO / "docs" / "study-file.schema.json").read_text())
    assert published == printed, "docs/study-file.schema.json is stale: thaw schema > it"
