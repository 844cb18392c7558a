"""Study-file validation: every bad value is refused with one line naming the key and the fix."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from thaw.objectives import FloatRange, IntRange
from thaw.search import SpaceConfig, StudyFileError, load_study_file, mask_url, parse_study
from thaw.search._config import resolve_storage_url

REPO = Path(__file__).resolve().parents[2]
DEMO_YAML = REPO / "studies" / "demo.yaml"

BASE: dict[str, Any] = {
    "name": "t",
    "seed": 0,
    "n_trials": 4,
    "objective": "val_loss",
    "storage": "sqlite:///t.db",
    "model": {"source": "demo"},
    "data": {"source": "demo"},
    "search_space": {
        "unfrozen_layers": {"low": 0, "high": "all"},
        "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
        "dropout": {"low": 0.0, "high": 0.5},
        "weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
    },
    "train": {"epochs": 3, "batch_size": 8},
    "sampler": {"name": "tpe", "n_startup_trials": 2},
    "pruner": {"compare": "median", "patience": 2, "min_delta": 0.01},
}

_DELETE = object()


def edited(**changes: Any) -> dict[str, Any]:
    """BASE with dotted keys set (``search_space__dropout`` -> search_space.dropout)."""
    raw = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = raw
        for p in parents:
            node = node.setdefault(p, {})
        if value is _DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    return raw


def parse(raw: Any, folder: Path) -> Any:
    return parse_study(raw, folder / "study.yaml")


# ------------------------------------------------------------------------------- valid files


def test_demo_yaml_parses_with_its_documented_values() -> None:
    config = load_study_file(DEMO_YAML)
    assert config.name == "demo"
    assert config.n_trials == 30
    assert config.direction == "minimize"
    assert config.reference_trials is True
    assert config.model.kind == "demo" and config.data.kind == "demo"
    assert config.space.unfrozen_low == 0 and config.space.unfrozen_high == "all"
    assert config.space.learning_rate == FloatRange(1e-4, 1e-2, log=True)
    assert config.space.dropout == FloatRange(0.0, 0.6, log=False)
    assert config.train.epochs == 20 and config.train.batch_size == 16
    assert config.sampler.name == "tpe" and config.pruner.compare == "hyperband"
    # storage defaults to <study folder>/<name>.db
    assert config.storage == f"sqlite:///{(DEMO_YAML.parent / 'demo.db').resolve()}"


def test_minimal_file_gets_defaults(tmp_path: Path) -> None:
    config = parse({"name": "m"}, tmp_path)
    assert config.n_trials == 20
    assert config.train.metric == "val_loss" and config.direction == "minimize"
    assert config.space.unfrozen_high == "all"
    assert config.space.batchnorm == ("frozen", "adapt", "train")
    assert config.reference_trials is True and config.budget_epochs is None
    assert config.pruner.compare == "hyperband"
    assert config.storage == f"sqlite:///{(tmp_path / 'm.db').resolve()}"


def test_name_defaults_to_file_stem(tmp_path: Path) -> None:
    assert parse_study({}, tmp_path / "flowers.yaml").name == "flowers"


def test_val_accuracy_objective_maximizes(tmp_path: Path) -> None:
    assert parse(edited(objective="val_accuracy"), tmp_path).direction == "maximize"


def test_batchnorm_modes_accept_string_and_deduplicate(tmp_path: Path) -> None:
    assert parse(edited(search_space__batchnorm="train"), tmp_path).space.batchnorm == ("train",)
    config = parse(edited(search_space__batchnorm=["adapt", "frozen", "adapt"]), tmp_path)
    assert config.space.batchnorm == ("adapt", "frozen")


def test_list_bounds_are_accepted(tmp_path: Path) -> None:
    config = parse(
        edited(search_space__dropout=[0.1, 0.2], search_space__unfrozen_layers=[1, 3]), tmp_path
    )
    assert config.space.dropout == FloatRange(0.1, 0.2, log=False)
    assert (config.space.unfrozen_low, config.space.unfrozen_high) == (1, 3)


def test_optional_methods_are_off_unless_their_range_is_given(tmp_path: Path) -> None:
    config = parse(BASE, tmp_path)
    assert (config.space.l2sp, config.space.lr_decay, config.space.augment) == (None, None, None)
    config = parse(
        edited(
            search_space__l2sp=[1e-4, 1e-1],
            search_space__lr_decay=[0.5, 1.0],
            search_space__augment={"low": 0.0, "high": 0.5},
        ),
        tmp_path,
    )
    assert config.space.l2sp == FloatRange(1e-4, 1e-1, log=True)
    assert config.space.lr_decay == FloatRange(0.5, 1.0, log=False)
    assert config.space.augment == FloatRange(0.0, 0.5, log=False)
    space = config.space.resolve(3)
    assert (space.l2sp, space.lr_decay, space.augment) == (
        config.space.l2sp,
        config.space.lr_decay,
        config.space.augment,
    )


@pytest.mark.parametrize(
    ("value", "ranks"),
    [([8, 0, 4, 4], (0, 4, 8)), (16, (16,)), ([0], (0,)), (None, None)],
    ids=["list, sorted, each once", "one rank", "off only", "absent"],
)
def test_lora_ranks_are_read_as_the_choices_searched(
    tmp_path: Path, value: Any, ranks: tuple[int, ...] | None
) -> None:
    import optuna

    config = parse(edited(search_space__lora_rank=value), tmp_path)
    assert config.space.lora_rank == ranks
    space = config.space.resolve(3)
    assert space.lora_rank == ranks
    trial = optuna.create_study().ask()
    params = space.suggest(trial)
    assert ("lora_rank" in trial.params) == (ranks is not None)
    assert params.lora_rank in (ranks or (0,))
    assert ("lora_rank" in config.search_relevant()["search_space"]) == (ranks is not None)


@pytest.mark.parametrize("path", sorted(DEMO_YAML.parent.glob("*.yaml")), ids=lambda p: p.name)
def test_todays_study_files_search_the_same_space(path: Path, tmp_path: Path) -> None:
    import optuna
    import yaml

    # the file's own search space (its model and data may need files not here)
    raw = yaml.safe_load(path.read_text())
    config = parse({**BASE, "search_space": raw.get("search_space")}, tmp_path)
    # the hash (resuming a study checks it) sees the same search_space as before the methods
    assert set(config.search_relevant()["search_space"]) == {
        "unfrozen_low",
        "unfrozen_high",
        "learning_rate",
        "dropout",
        "weight_decay",
        "batchnorm",
    }
    space = config.space.resolve(200)
    trial = optuna.create_study().ask()
    params = space.suggest(trial)
    expected = {"unfrozen_layers", "learning_rate", "dropout", "weight_decay"}
    if len(space.batchnorm) > 1:
        expected.add("batchnorm")
    assert set(trial.params) == expected
    assert (params.l2sp, params.lr_decay, params.augment) == (0.0, 1.0, 0.0)


# ------------------------------------------------------------------------------ error table

ERRORS: list[tuple[str, dict[str, Any], str]] = [
    # unknown keys: name the key and list what is allowed
    (
        "unknown top key",
        {"nam": "x"},
        r"unknown key 'nam'; expected one of: name, seed, n_trials, objective, metrics, storage, "
        r"model",
    ),
    (
        "unknown nested key",
        {"search_space__learning_rat": [1e-4, 1e-2]},
        r"unknown key 'search_space.learning_rat'; expected one of: unfrozen_layers, "
        r"learning_rate, dropout, weight_decay, batchnorm, l2sp, lr_decay, augment, block_start, "
        r"lora_rank",
    ),
    (
        "unknown bounds key",
        {"search_space__dropout": {"low": 0.0, "high": 0.5, "lg": True}},
        r"unknown key 'search_space.dropout.lg'; expected one of: low, high, log",
    ),
    (
        "unknown train key",
        {"train__epoch": 3},
        r"unknown key 'train.epoch'; expected one of: epochs, batch_size",
    ),
    ("unknown pruner key", {"pruner__patients": 3}, r"unknown key 'pruner.patients'"),
    # low > high
    (
        "lr low>high",
        {"search_space__learning_rate": {"low": 1e-2, "high": 1e-4}},
        r"search_space\.learning_rate: low=0\.01 > high=0\.0001; swap them",
    ),
    (
        "dropout low>high",
        {"search_space__dropout": [0.5, 0.1]},
        r"search_space\.dropout: low=0\.5 > high=0\.1",
    ),
    (
        "weight decay low>high",
        {"search_space__weight_decay": [1e-2, 1e-6]},
        r"search_space\.weight_decay: low=0\.01 > high=1e-06",
    ),
    (
        "unfrozen low>high",
        {"search_space__unfrozen_layers": {"low": 5, "high": 2}},
        r"search_space\.unfrozen_layers: low=5 > high=2",
    ),
    # log scale needs low > 0
    (
        "lr log low 0",
        {"search_space__learning_rate": {"low": 0, "high": 1e-2, "log": True}},
        r"search_space\.learning_rate: low=0 must be > 0 on a log scale",
    ),
    (
        "wd log by default",
        {"search_space__weight_decay": [0.0, 1e-2]},
        r"search_space\.weight_decay: low=0\.0 must be > 0 on a log scale",
    ),
    (
        "dropout log low 0",
        {"search_space__dropout": {"low": 0.0, "high": 0.5, "log": True}},
        r"search_space\.dropout: low=0\.0 must be > 0 on a log scale",
    ),
    (
        "negative lr",
        {"search_space__learning_rate": {"low": -1e-3, "high": 1e-2, "log": False}},
        r"search_space\.learning_rate: low=-0\.001 is below 0",
    ),
    (
        "unfrozen log",
        {"search_space__unfrozen_layers": {"low": 0, "high": 3, "log": True}},
        r"unfrozen_layers cannot be log-scaled",
    ),
    # the optional methods, each inside its range
    (
        "l2sp above 1",
        {"search_space__l2sp": [1e-4, 2.0]},
        r"search_space\.l2sp: high=2\.0 is above 1\.0",
    ),
    (
        "l2sp log from 0",
        {"search_space__l2sp": [0.0, 0.1]},
        r"search_space\.l2sp: low=0\.0 must be > 0 on a log scale",
    ),
    (
        "l2sp linear from 0",
        {"search_space__l2sp": {"low": 0.0, "high": 0.1, "log": False}},
        r"search_space\.l2sp: low=0\.0 must be > 0 \(remove l2sp to turn it off\)",
    ),
    (
        "lr_decay below 0.5",
        {"search_space__lr_decay": [0.1, 0.9]},
        r"search_space\.lr_decay: low=0\.1 is below 0\.5",
    ),
    (
        "lr_decay above 1",
        {"search_space__lr_decay": [0.5, 1.5]},
        r"search_space\.lr_decay: high=1\.5 is above 1\.0",
    ),
    (
        "lr_decay low>high",
        {"search_space__lr_decay": [0.9, 0.6]},
        r"search_space\.lr_decay: low=0\.9 > high=0\.6",
    ),
    (
        "augment above 1",
        {"search_space__augment": [0.0, 1.1]},
        r"search_space\.augment: high=1\.1 is above 1\.0",
    ),
    (
        "augment negative",
        {"search_space__augment": [-0.1, 0.5]},
        r"search_space\.augment: low=-0\.1 is below 0\.0",
    ),
    (
        "augment string",
        {"search_space__augment": ["strong", 0.5]},
        r"search_space\.augment\.low must be a finite number, got 'strong'",
    ),
    (
        "lora_rank negative",
        {"search_space__lora_rank": [-1, 4]},
        r"search_space\.lora_rank: -1 is outside 0\.\.256; use ranks from 0 \(off\)",
    ),
    (
        "lora_rank above 256",
        {"search_space__lora_rank": 512},
        r"search_space\.lora_rank: 512 is outside 0\.\.256",
    ),
    (
        "lora_rank float",
        {"search_space__lora_rank": [4.0]},
        r"search_space\.lora_rank: 4\.0 is not a whole number",
    ),
    (
        "lora_rank true",
        {"search_space__lora_rank": True},
        r"search_space\.lora_rank: True is not a whole number",
    ),
    (
        "lora_rank a range",
        {"search_space__lora_rank": {"low": 0, "high": 8}},
        r"search_space\.lora_rank: \{'low': 0, 'high': 8\} is not a whole number",
    ),
    (
        "lora_rank empty",
        {"search_space__lora_rank": []},
        r"search_space\.lora_rank is an empty list",
    ),
    # dropout must stay below 1
    (
        "dropout high 1",
        {"search_space__dropout": [0.0, 1.0]},
        r"search_space\.dropout: high=1\.0 must be < 1",
    ),
    ("dropout high 1.5", {"search_space__dropout": [0.2, 1.5]}, r"high=1\.5 must be < 1"),
    # types
    ("epochs string", {"train__epochs": "10"}, r"train\.epochs must be an integer, got '10'"),
    ("epochs float", {"train__epochs": 2.5}, r"train\.epochs must be an integer, got 2\.5"),
    ("n_trials bool", {"n_trials": True}, r"n_trials must be an integer, got True"),
    ("batch bool", {"train__batch_size": False}, r"train\.batch_size must be an integer"),
    ("epochs zero", {"train__epochs": 0}, r"train\.epochs must be >= 1, got 0"),
    (
        "precise batchnorm word",
        {"train__precise_batchnorm": "sometimes"},
        r"train\.precise_batchnorm must be true or false, got 'sometimes'",
    ),
    (
        "schedule misspelt",
        {"train__schedule": "linar"},
        r"train\.schedule is 'linar'; expected one of: constant, linear, cosine",
    ),
    ("seed negative", {"seed": -1}, r"seed must be >= 0, got -1"),
    (
        "lr low string",
        {"search_space__learning_rate": ["a", 1e-2]},
        r"search_space\.learning_rate\.low must be a finite number, got 'a'",
    ),
    (
        "dropout high bool",
        {"search_space__dropout": [0.0, True]},
        r"search_space\.dropout\.high must be a finite number, got True",
    ),
    (
        "lr inf",
        {"search_space__learning_rate": [1e-4, float("inf")]},
        r"learning_rate\.high must be a finite number, got inf",
    ),
    (
        "unfrozen low bool",
        {"search_space__unfrozen_layers": [True, 3]},
        r"unfrozen_layers\.low must be an integer >= 0, got True",
    ),
    (
        "unfrozen low negative",
        {"search_space__unfrozen_layers": [-1, 3]},
        r"unfrozen_layers\.low must be an integer >= 0, got -1",
    ),
    (
        "unfrozen high word",
        {"search_space__unfrozen_layers": [0, "most"]},
        r"unfrozen_layers\.high must be an integer or 'all', got 'most'",
    ),
    (
        "bounds of three",
        {"search_space__dropout": [0.0, 0.1, 0.2]},
        r"search_space\.dropout must be \[low, high\]",
    ),
    (
        "bounds missing high",
        {"search_space__dropout": {"low": 0.0}},
        r"search_space\.dropout needs both 'low' and 'high'",
    ),
    (
        "bounds log string",
        {"search_space__learning_rate": {"low": 1e-4, "high": 1, "log": "y"}},
        r"learning_rate\.log must be true or false, got 'y'",
    ),
    ("section not mapping", {"train": [3, 8]}, r"train must be a mapping of keys, got list"),
    ("min_delta string", {"pruner__min_delta": "x"}, r"pruner\.min_delta must be a number"),
    ("min_delta nan", {"pruner__min_delta": float("nan")}, r"pruner\.min_delta must be finite"),
    (
        "reference_trials string",
        {"reference_trials": "yes"},
        r"reference_trials must be true or false, got 'yes'",
    ),
    ("loop misspelt", {"loop": "of"}, r"loop must be on or off, got 'of'"),
    ("loop a list", {"loop": ["on"]}, r"loop must be on or off, got \['on'\]"),
    (
        "batchnorm unknown",
        {"search_space__batchnorm": ["frozen", "warm"]},
        r"search_space\.batchnorm must be a list drawn from \['frozen', 'adapt', 'train'\]",
    ),
    ("batchnorm empty", {"search_space__batchnorm": []}, r"batchnorm must be a list drawn from"),
    # model and data sources
    (
        "file without path",
        {"model": {"source": "file"}},
        r"model\.path is required when model\.source is 'file'",
    ),
    (
        "path with demo",
        {"model": {"source": "demo", "path": "m.keras"}},
        r"model\.path is only used with model\.source: file",
    ),
    (
        "model source unknown",
        {"model__source": "hub"},
        r"model\.source is 'hub'; expected one of: demo, file",
    ),
    ("cut_at not a name", {"model__cut_at": 3}, r"model\.cut_at must be a layer name, got 3"),
    ("npz without path", {"data": {"source": "npz"}}, r"data\.path is required"),
    (
        "data source unknown",
        {"data__source": "folder"},
        r"data\.source is 'folder'; expected one of: demo, npz",
    ),
    (
        "class names not strings",
        {"data__class_names": [1, 2]},
        r"data\.class_names must be a list of strings",
    ),
    # choices
    (
        "objective unknown",
        {"objective": "accuracy"},
        r"objective is 'accuracy'; expected one of: val_loss, val_accuracy",
    ),
    (
        "sampler unknown",
        {"sampler__name": "cmaes"},
        r"sampler\.name is 'cmaes'; expected one of: tpe, random",
    ),
    (
        "pruner unknown",
        {"pruner__compare": "patient"},
        r"pruner\.compare is 'patient'; expected one of: median, hyperband, "
        r"successive_halving, none",
    ),
    ("name empty", {"name": ""}, r"name must be a non-empty string"),
    # storage
    (
        "storage not url",
        {"storage": "demo.db"},
        r"storage must be a database URL such as 'sqlite:///demo\.db'.*got 'demo\.db'",
    ),
    ("storage number", {"storage": 5}, r"storage must be a database URL.*got 5"),
]


@pytest.mark.parametrize(("changes", "match"), [pytest.param(c, m, id=i) for i, c, m in ERRORS])
def test_invalid_study_is_refused_with_one_line(
    tmp_path: Path, changes: dict[str, Any], match: str
) -> None:
    with pytest.raises(StudyFileError, match=match) as info:
        parse(edited(**changes), tmp_path)
    assert "\n" not in str(info.value)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(StudyFileError, match=r"the study file must be a mapping of keys, got list"):
        parse(["name", "x"], tmp_path)


def test_unknown_key_reports_the_alphabetically_first_of_several(tmp_path: Path) -> None:
    with pytest.raises(StudyFileError, match=r"unknown key 'aaa'"):
        parse(edited(zzz=1, aaa=2), tmp_path)


def test_nonexistent_model_path_is_refused(tmp_path: Path) -> None:
    raw = edited(model={"source": "file", "path": "missing.keras"})
    missing = str((tmp_path / "missing.keras").resolve())
    with pytest.raises(StudyFileError, match=r"model\.path .* does not exist") as info:
        parse(raw, tmp_path)
    assert missing in str(info.value)


def test_nonexistent_data_path_is_refused(tmp_path: Path) -> None:
    raw = edited(data={"source": "npz", "path": "nowhere/d.npz"})
    with pytest.raises(StudyFileError, match=r"data\.path .*nowhere/d\.npz' does not exist"):
        parse(raw, tmp_path)


def test_model_and_data_paths_resolve_against_the_study_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "studies"
    (folder / "assets").mkdir(parents=True)
    (folder / "assets" / "m.keras").write_bytes(b"x")
    (folder / "assets" / "d.npz").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)  # a cwd-relative lookup would miss both files
    config = parse_study(
        edited(
            model={"source": "file", "path": "assets/m.keras", "cut_at": "features"},
            data={"source": "npz", "path": "assets/d.npz", "class_names": ["a", "b"]},
        ),
        folder / "s.yaml",
    )
    assert config.model.path == (folder / "assets" / "m.keras").resolve()
    assert config.model.cut_at == "features"
    assert config.data.path == str((folder / "assets" / "d.npz").resolve())
    assert config.data.class_names == ("a", "b")


# ------------------------------------------------------------------------- load_study_file


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StudyFileError, match=r"study file .*nope\.yaml' does not exist"):
        load_study_file(tmp_path / "nope.yaml")


def test_load_folder(tmp_path: Path) -> None:
    with pytest.raises(StudyFileError, match=r"is a folder; give a study file"):
        load_study_file(tmp_path)


def test_load_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nmodel: [unclosed\n")
    with pytest.raises(StudyFileError, match=r"bad\.yaml: not valid YAML at line \d+") as info:
        load_study_file(path)
    assert "\n" not in str(info.value)


def test_load_prefixes_errors_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: s\ntrain: {epochs: ten}\n")
    with pytest.raises(StudyFileError, match=r"^.*s\.yaml: train\.epochs must be an integer"):
        load_study_file(path)


# --------------------------------------------------------------------- SpaceConfig.resolve


def _space(low: int, high: int | str) -> SpaceConfig:
    return SpaceConfig(
        unfrozen_low=low,
        unfrozen_high=high,
        learning_rate=FloatRange(1e-4, 1e-2, log=True),
        dropout=FloatRange(0.0, 0.5),
        weight_decay=FloatRange(1e-6, 1e-2, log=True),
    )


@pytest.mark.parametrize(
    ("low", "high", "num_layers", "expected"),
    [
        (0, "all", 5, IntRange(0, 5)),
        (2, "all", 7, IntRange(2, 7)),
        (1, 3, 5, IntRange(1, 3)),
        (0, 5, 5, IntRange(0, 5)),
        (4, "all", 4, IntRange(4, 4)),
    ],
)
def test_resolve_unfrozen_layers(
    low: int, high: int | str, num_layers: int, expected: IntRange
) -> None:
    space = _space(low, high).resolve(num_layers)
    assert space.unfrozen_layers == expected
    assert space.learning_rate == FloatRange(1e-4, 1e-2, log=True)


def test_resolve_high_above_num_layers() -> None:
    with pytest.raises(
        StudyFileError, match=r"high=6 but the model has only 5 layers with weights"
    ):
        _space(0, 6).resolve(5)


def test_resolve_low_above_all() -> None:
    with pytest.raises(StudyFileError, match=r"low=4 > high=3"):
        _space(4, "all").resolve(3)


# -------------------------------------------------------------------------------- storage


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///x.db", "sqlite:///{folder}/x.db"),
        ("sqlite:///sub/x.db", "sqlite:///{folder}/sub/x.db"),
        ("sqlite:///../x.db", "sqlite:///{parent}/x.db"),
        ("sqlite:////abs/x.db", "sqlite:////abs/x.db"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("postgresql://u:p@h/db", "postgresql://u:p@h/db"),
    ],
)
def test_relative_sqlite_storage_resolves_against_the_study_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, expected: str
) -> None:
    folder = tmp_path / "studies"
    folder.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = parse_study(edited(storage=url), folder / "s.yaml")
    assert config.storage == expected.format(folder=folder.resolve(), parent=tmp_path.resolve())
    assert resolve_storage_url(url, folder) == config.storage


# ---------------------------------------------------------------------------- config hash


@pytest.mark.parametrize(
    "changes",
    [
        {"search_space__learning_rate": {"low": 1e-5, "high": 1e-2, "log": True}},
        {"search_space__unfrozen_layers": [1, "all"]},
        {"search_space__dropout": [0.0, 0.4]},
        {"search_space__batchnorm": ["frozen", "train"]},
        {"search_space__l2sp": [1e-4, 1e-1]},
        {"search_space__lr_decay": [0.5, 1.0]},
        {"search_space__augment": [0.0, 1.0]},
        {"search_space__lora_rank": [0, 8]},
        {"train__epochs": 4},
        {"train__precise_batchnorm": True},
        {"train__schedule": "linear"},
        {"objective": "val_accuracy"},
        {"data__seed": 1},
        {"model__cut_at": "block3_relu"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_config_hash_changes_with_search_relevant_settings(
    tmp_path: Path, changes: dict[str, Any]
) -> None:
    assert parse(edited(**changes), tmp_path).config_hash() != parse(BASE, tmp_path).config_hash()


@pytest.mark.parametrize(
    "changes",
    [
        {"sampler": {"name": "random", "n_startup_trials": 0}},
        {"pruner": {"compare": "none", "patience": 5}},
        {"n_trials": 100},
        {"seed": 7},
        {"storage": "sqlite:///other.db"},
        {"reference_trials": True},
        {"name": "renamed"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_config_hash_ignores_run_settings(tmp_path: Path, changes: dict[str, Any]) -> None:
    assert parse(edited(**changes), tmp_path).config_hash() == parse(BASE, tmp_path).config_hash()


def test_a_file_written_before_precise_batchnorm_hashes_as_its_default(tmp_path: Path) -> None:
    off = parse(edited(train__precise_batchnorm=False), tmp_path)
    assert off.train.precise_batchnorm is False
    assert parse(BASE, tmp_path).train.precise_batchnorm is False
    assert off.config_hash() == parse(BASE, tmp_path).config_hash()


def test_config_hash_is_stable_across_parses(tmp_path: Path) -> None:
    a, b = parse(BASE, tmp_path), parse(copy.deepcopy(BASE), tmp_path)
    assert a.config_hash() == b.config_hash()
    assert len(a.config_hash()) == 64


# ------------------------------------------------------------------------------- masking


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:secret@h/db",
        "postgresql+psycopg2://u:secret@h:5432/db",
        "mysql://root:secret@localhost/x",
    ],
)
def test_mask_url_hides_password(url: str) -> None:
    masked = mask_url(url)
    assert "secret" not in masked
    assert masked == url.replace(":secret@", ":***@")


def test_mask_url_leaves_sqlite_alone() -> None:
    assert mask_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def test_mask_url_never_echoes_an_unparseable_url() -> None:
    assert "secret" not in mask_url("::not a url secret::")


def test_to_dict_masks_the_storage_password(tmp_path: Path) -> None:
    config = parse(edited(storage="postgresql://u:secret@h/db"), tmp_path)
    blob = json.dumps(config.to_dict())
    assert "secret" not in blob
    assert config.to_dict()["storage"] == "postgresql://u:***@h/db"
    # the in-memory config still carries the real URL, for connecting
    assert config.storage == "postgresql://u:secret@h/db"


@pytest.mark.parametrize(
    ("text", "loop"),
    [
        ("loop: off", False),
        ("loop: on", True),
        ('loop: "off"', False),
        ("loop: no", False),
        ("", True),
    ],
)
def test_loop_switch_reads_yaml_as_written(tmp_path: Path, text: str, loop: bool) -> None:
    study = tmp_path / "s.yaml"
    study.write_text(f"name: s\n{text}\nlr_range_test: off\n", encoding="utf-8")
    config = load_study_file(study)
    assert config.loop is loop
    assert config.lr_range_test is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: a\nname: b\n", "key 'name' is given twice (lines 1 and 2); keep one"),
        (
            "name: a\ntrain:\n  epochs: 3\n  batch_size: 8\n  epochs: 5\n",
            "key 'epochs' is given twice (lines 3 and 5); keep one",
        ),
    ],
)
def test_a_key_given_twice_is_refused_naming_both_lines(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(StudyFileError) as caught:
        load_study_file(path)
    assert str(caught.value) == f"{path}: {message}"


def test_a_file_written_before_the_schedule_hashes_as_its_default(tmp_path: Path) -> None:
    constant = parse(edited(train__schedule="constant"), tmp_path)
    assert constant.train.schedule == "constant"
    assert parse(BASE, tmp_path).train.schedule == "constant"
    assert constant.config_hash() == parse(BASE, tmp_path).config_hash()
