"""Opening storage, creating and resuming studies, and the textbook reference trials."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from thaw._keys import SCREEN
from thaw.search import (
    StorageError,
    StudyMismatchError,
    create_or_resume,
    load_existing_study,
    open_storage,
    parse_study,
    reference_configurations,
)
from thaw.search._budget import start_label
from thaw.search._study import summarise

optuna.logging.set_verbosity(optuna.logging.WARNING)

NUM_LAYERS = 5
DATA = {
    "fingerprint": "f" * 64,
    "class_names": ["a", "b"],
    "train_counts": [4, 4],
    "val_counts": [2, 2],
}

RAW: dict[str, Any] = {
    "name": "s",
    "storage": "sqlite:///s.db",
    "search_space": {
        "unfrozen_layers": {"low": 1, "high": "all"},
        "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
        "dropout": {"low": 0.1, "high": 0.5},
        "weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
        "batchnorm": ["frozen"],
    },
    "train": {"epochs": 4},
    "sampler": {"name": "random"},
}


def config_in(folder: Path, **changes: Any) -> Any:
    raw = copy.deepcopy(RAW)
    for key, value in changes.items():
        section, _, sub = key.partition("__")
        if sub:
            raw.setdefault(section, {})[sub] = value
        else:
            raw[key] = value
    return parse_study(raw, folder / "s.yaml")


def search_space_objective(config: Any):  # type: ignore[no-untyped-def]
    space = config.space.resolve(NUM_LAYERS)

    def objective(trial: optuna.Trial) -> float:
        params = space.suggest(trial)
        return params.learning_rate

    return objective


# --------------------------------------------------------------------------------- storage


def test_open_storage_creates_sqlite_file(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    storage = open_storage(f"sqlite:///{db}")
    assert db.is_file()
    assert storage.get_all_studies() == []


def test_open_storage_missing_folder(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/missing/x.db"
    with pytest.raises(
        StorageError, match=r"cannot open storage .*: folder .*missing does not exist"
    ):
        open_storage(url)
    assert not (tmp_path / "missing").exists()


def test_open_storage_must_exist(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"no storage at .*absent\.db: the file does not exist"):
        open_storage(f"sqlite:///{tmp_path}/absent.db", must_exist=True)
    assert not (tmp_path / "absent.db").exists()


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # heartbeat
def test_open_storage_unknown_dialect() -> None:
    with pytest.raises(StorageError, match=r"^cannot open storage notadb://h/x: "):
        open_storage("notadb://h/x")


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # heartbeat
def test_open_storage_error_masks_the_password() -> None:
    url = "postgresql://u:secret@127.0.0.1:1/db"
    with pytest.raises(StorageError) as info:
        open_storage(url)
    message = str(info.value)
    assert "secret" not in message
    assert "postgresql://u:***@127.0.0.1:1/db" in message
    assert "\n" not in message


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # heartbeat
def test_plain_postgresql_url_reaches_the_server() -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(StorageError) as info:
        open_storage("postgresql://u:secret@127.0.0.1:1/db")  # nothing listens on port 1
    assert "DB access module" not in str(info.value)
    assert "ImportError" not in str(info.value)


# ------------------------------------------------------------------------ create / resume


def test_create_stores_the_documented_study_attrs(tmp_path: Path) -> None:
    config = config_in(tmp_path, objective="val_accuracy")
    storage = open_storage(config.storage)
    study, resumed = create_or_resume(config, storage, NUM_LAYERS, DATA)
    assert resumed is False
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    attrs = optuna.load_study(study_name="s", storage=config.storage).user_attrs
    assert attrs["thaw:config_hash"] == config.config_hash()
    assert attrs["thaw:config"] == config.to_dict()
    assert attrs["thaw:objective_metric"] == "val_accuracy"
    assert attrs["thaw:num_layers"] == NUM_LAYERS
    assert attrs["thaw:data"] == DATA
    assert attrs["thaw:version"] == attrs["thaw:manifest"]["thaw"]
    assert {"python", "keras", "backend", "optuna", "numpy", "device"} <= set(
        attrs["thaw:manifest"]
    )


def test_resume_same_config(tmp_path: Path) -> None:
    config = config_in(tmp_path, reference_trials=False)
    storage = open_storage(config.storage)
    first, _ = create_or_resume(config, storage, NUM_LAYERS, DATA)
    first.optimize(search_space_objective(config), n_trials=2)
    again, resumed = create_or_resume(config, open_storage(config.storage), NUM_LAYERS, DATA)
    assert resumed is True
    assert again._study_id == first._study_id
    assert len(again.trials) == 2
    assert len(storage.get_all_studies()) == 1


def test_resume_with_other_sampler_and_pruner(tmp_path: Path) -> None:
    config = config_in(tmp_path)
    create_or_resume(config, open_storage(config.storage), NUM_LAYERS, DATA)
    changed = config_in(tmp_path, sampler={"name": "tpe"}, pruner={"compare": "none"}, n_trials=50)
    _, resumed = create_or_resume(changed, open_storage(changed.storage), NUM_LAYERS, DATA)
    assert resumed is True


@pytest.mark.parametrize(
    ("changes", "difference"),
    [
        (
            {"search_space__learning_rate": {"low": 1e-4, "high": 3e-2, "log": True}},
            "a different search space (learning_rate.high 0.01 -> 0.03)",
        ),
        ({"search_space__dropout": [0.0, 0.5]}, "a different search space (dropout.low 0.1 -> 0)"),
        ({"train__epochs": 9}, "a different training settings (epochs 4 -> 9)"),
        ({"data__seed": 3}, "different data (seed 0 -> 3)"),
        ({"model__seed": 3}, "a different model (seed 0 -> 3)"),
    ],
)
def test_resume_with_changed_config_is_refused_naming_the_difference(
    tmp_path: Path, changes: dict[str, Any], difference: str
) -> None:
    config = config_in(tmp_path)
    create_or_resume(config, open_storage(config.storage), NUM_LAYERS, DATA)
    changed = config_in(tmp_path, **changes)
    with pytest.raises(StudyMismatchError) as caught:
        create_or_resume(changed, open_storage(changed.storage), NUM_LAYERS, DATA)
    assert str(caught.value) == (
        f"study 's' was created with {difference}; use a new study name or restore the file"
    )


def test_resume_with_different_data_is_refused(tmp_path: Path) -> None:
    config = config_in(tmp_path)
    create_or_resume(config, open_storage(config.storage), NUM_LAYERS, DATA)
    other = {**DATA, "fingerprint": "0" * 64}
    with pytest.raises(
        StudyMismatchError,
        match=r"run on different data \(fingerprint "
        r"ffffffffffff -> 000000000000 now\); use a new study name or restore the data$",
    ):
        create_or_resume(config, open_storage(config.storage), NUM_LAYERS, other)


def test_resume_with_a_different_model_file_is_refused(tmp_path: Path) -> None:
    config = config_in(tmp_path)
    storage = open_storage(config.storage)
    create_or_resume(config, storage, NUM_LAYERS, DATA, model_fingerprint="a" * 64)
    _, resumed = create_or_resume(config, storage, NUM_LAYERS, DATA, model_fingerprint="a" * 64)
    assert resumed
    with pytest.raises(
        StudyMismatchError,
        match=r"^study 's' was created with a different model \(fingerprint aaaaaaaaaaaa -> "
        r"bbbbbbbbbbbb now\); use a new study name or restore the model file$",
    ):
        create_or_resume(config, storage, NUM_LAYERS, DATA, model_fingerprint="b" * 64)


def test_a_study_moved_to_another_folder_resumes(tmp_path: Path) -> None:
    """Paths are out of the study's identity: the same study file and files elsewhere."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first = parse_study({**RAW, "storage": url}, tmp_path / "a" / "s.yaml")
    moved = parse_study({**RAW, "storage": url}, tmp_path / "b" / "deeper" / "s.yaml")
    storage = open_storage(url)
    create_or_resume(first, storage, NUM_LAYERS, DATA, model_fingerprint="a" * 64)
    _, resumed = create_or_resume(moved, storage, NUM_LAYERS, DATA, model_fingerprint="a" * 64)
    assert resumed


def test_a_study_stored_with_paths_in_its_hash_resumes_and_is_upgraded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A study thaw 0.2.0 stored (absolute paths in its hash, no model fingerprint) resumes
    from another folder with a warning, and is identified by content from then on."""
    from thaw._keys import CONFIG_HASH, MODEL_FINGERPRINT

    url = f"sqlite:///{tmp_path / 'old.db'}"
    config = parse_study({**RAW, "storage": url}, tmp_path / "a" / "s.yaml")
    storage = open_storage(url)
    study, _ = create_or_resume(config, storage, NUM_LAYERS, DATA)
    study.set_user_attr(CONFIG_HASH, "0" * 64)  # an old hash over other absolute paths
    moved = parse_study({**RAW, "storage": url}, tmp_path / "b" / "s.yaml")
    with caplog.at_level("WARNING"):
        again, resumed = create_or_resume(
            moved, storage, NUM_LAYERS, DATA, model_fingerprint="a" * 64
        )
    assert resumed
    assert "stored by thaw 0.2.0 or earlier" in caplog.text
    assert again.user_attrs[CONFIG_HASH] == moved.config_hash()
    assert again.user_attrs[MODEL_FINGERPRINT] == "a" * 64
    with pytest.raises(StudyMismatchError, match="a different model"):
        create_or_resume(moved, storage, NUM_LAYERS, DATA, model_fingerprint="b" * 64)


def test_foreign_study_with_the_same_name_is_refused(tmp_path: Path) -> None:
    config = config_in(tmp_path)
    foreign = optuna.create_study(study_name="s", storage=config.storage)
    foreign.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)  # empty: half-created
    with pytest.raises(StudyMismatchError, match=r"exists in .* but was not created by thaw"):
        create_or_resume(config, open_storage(config.storage), NUM_LAYERS, DATA)


def test_load_existing_study_names_the_studies_there(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    storage = open_storage(url)
    with pytest.raises(StorageError, match=r"no study named 'b' in .*x\.db; it holds no study"):
        load_existing_study(storage, "b", url)
    optuna.create_study(study_name="a", storage=storage)
    optuna.create_study(study_name="c", storage=storage)
    with pytest.raises(StorageError, match=r"no study named 'b' in .*; studies there: a, c$"):
        load_existing_study(storage, "b", url)
    assert load_existing_study(storage, "c", url).study_name == "c"


# ------------------------------------------------------------------------ reference trials

STRATEGIES = ["full fine-tuning", "partial fine-tuning", "feature extraction"]


@pytest.mark.parametrize(
    ("space", "num_layers", "expected"),
    [
        # (unfrozen_layers, learning_rate) per strategy; dropout and weight decay at their lows
        ({}, 5, [(5, 1e-3), (3, 1e-4), (1, 1e-3)]),
        ({}, 2, [(2, 1e-3), (2, 1e-4), (1, 1e-3)]),
        (
            {"learning_rate": [5e-4, 5e-3], "unfrozen_layers": [0, 4]},
            9,
            [(4, 1e-3), (3, 5e-4), (0, 1e-3)],
        ),
        (
            {"learning_rate": [2e-3, 5e-3], "unfrozen_layers": [4, "all"]},
            6,
            [(6, 2e-3), (4, 2e-3), (4, 2e-3)],
        ),
    ],
)
def test_reference_configurations_are_clamped_into_the_space(
    tmp_path: Path, space: dict[str, Any], num_layers: int, expected: list[tuple[int, float]]
) -> None:
    raw_space = {**RAW["search_space"], **space}
    config = config_in(tmp_path, search_space=raw_space)
    refs = reference_configurations(config, num_layers)
    assert [r["strategy"] for r in refs] == STRATEGIES
    assert [(r["params"]["unfrozen_layers"], r["params"]["learning_rate"]) for r in refs] == (
        expected
    )
    for r in refs:
        assert r["params"]["dropout"] == config.space.dropout.low
        assert r["params"]["weight_decay"] == config.space.weight_decay.low
        assert "batchnorm" not in r["params"]


def test_reference_trials_are_enqueued_in_order_and_run_first(tmp_path: Path) -> None:
    config = config_in(tmp_path, reference_trials=True)
    study, _ = create_or_resume(config, open_storage(config.storage), NUM_LAYERS, DATA)
    waiting = study.get_trials(states=(TrialState.WAITING,))
    # The first screening round: every strategy for 1 epoch (4 epochs per trial).
    assert [start_label(t) for t in waiting] == STRATEGIES
    assert all(t.user_attrs[SCREEN]["rung"] == 1 for t in waiting)

    study.optimize(search_space_objective(config), n_trials=4)
    trials = optuna.load_study(study_name="s", storage=config.storage).get_trials()
    assert [start_label(t) for t in trials] == [*STRATEGIES, None]
    expected = reference_configurations(config, NUM_LAYERS)
    for trial, ref in zip(trials, expected, strict=False):
        assert trial.params == ref["params"]

    # resuming does not enqueue them again
    resumed, flag = create_or_resume(config, open_storage(config.storage), NUM_LAYERS, DATA)
    assert flag is True
    assert resumed.get_trials(states=(TrialState.WAITING,)) == []


def test_pinned_batchnorm_mode_is_used_by_every_start_trial(tmp_path: Path) -> None:
    space = {**RAW["search_space"], "batchnorm": ["train"]}
    config = config_in(tmp_path, search_space=space, reference_trials=True)
    refs = reference_configurations(config, 4, shift=0.9)
    assert [r["strategy"] for r in refs] == [
        "feature extraction",
        "full fine-tuning",
        "partial fine-tuning",
    ]
    assert all("batchnorm" not in r["params"] for r in refs)


def test_no_reference_trials_when_switched_off(tmp_path: Path) -> None:
    config = config_in(tmp_path, reference_trials=False)
    study, _ = create_or_resume(config, open_storage(config.storage), NUM_LAYERS, DATA)
    assert study.get_trials() == []


# ----------------------------------------------------------------------- summary, Ctrl-C


def test_summarise_counts_reasons_and_best(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/x.db", study_name="x")
    study.add_trial(optuna.trial.create_trial(value=0.7, params={}, distributions={}))
    finished_before = 1
    study.add_trial(optuna.trial.create_trial(value=0.3, params={}, distributions={}))
    study.add_trial(
        optuna.trial.create_trial(state=TrialState.PRUNED, user_attrs={"prune_reason": "climbing"})
    )
    study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED))
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.FAIL, user_attrs={"fail_reason": "ValueError: x"}
        )
    )

    summary = summarise(study, finished_before, resumed=True, interrupted=False)
    assert summary.trials_run == 4
    assert summary.counts == {"complete": 2, "fail": 1, "pruned": 2}
    assert summary.prune_reasons == {"climbing": 1, "unknown": 1}
    assert (summary.best_number, summary.best_value) == (1, 0.3)
    assert summary.resumed is True and summary.interrupted is False


def test_summarise_without_completed_trials(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/x.db", study_name="x")
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))
    summary = summarise(study, 0, resumed=False, interrupted=True)
    assert summary.best_number is None and summary.best_params == {}
    assert summary.interrupted is True
