"""``thaw run`` and ``thaw report`` end to end: real training, real SQLite storage, real files.

Most tests call ``thaw.search._cli.main`` in-process; a few run ``python -m thaw.search._cli`` in a
subprocess. The demo study (3 trials of 2 epochs) is run once per module and copied where a
test changes it.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import pytest
import yaml
from optuna.trial import TrialState

from thaw._keys import PROPOSED_BY, RANGE_TEST
from thaw.objectives import DataSource, load_data
from thaw.search import FOLLOW_UP_ATTR, load_study_file, reference_configurations
from thaw.search._cli import main

if TYPE_CHECKING:
    from conftest import CliResult  # tests/search/conftest.py, a fixture module

optuna.logging.set_verbosity(optuna.logging.WARNING)

REPO = Path(__file__).resolve().parents[2]
STRATEGIES = ["full fine-tuning", "partial fine-tuning", "feature extraction"]

DEMO_STUDY: dict[str, Any] = {
    "name": "cli-demo",
    "seed": 0,
    "n_trials": 3,
    "storage": "sqlite:///cli.db",  # relative: next to the study file
    "model": {"source": "demo"},
    "data": {"source": "demo"},
    "search_space": {
        "unfrozen_layers": {"low": 0, "high": "all"},
        "learning_rate": {"low": 1e-3, "high": 1e-2, "log": True},
        "dropout": {"low": 0.0, "high": 0.3},
        "weight_decay": {"low": 1e-6, "high": 1e-3, "log": True},
        "batchnorm": ["frozen"],
    },
    "train": {"epochs": 2, "batch_size": 32},
    "sampler": {"name": "random"},
    "pruner": {"compare": "none", "patience": 5, "n_warmup_steps": 0},
    "reference_trials": True,
}


def write_study(folder: Path, study: dict[str, Any], name: str = "study.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(study, sort_keys=False), encoding="utf-8")
    return path


def edited(study: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of ``study`` with dotted keys (``search_space__dropout``) set."""
    out = json.loads(json.dumps(study))
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return out


def studies_in(db: Path) -> list[str]:
    if not db.exists():
        return []
    return sorted(s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{db}"))


def trials_in(db: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}").get_trials()


@dataclass
class DemoRun:
    folder: Path
    study_file: Path
    db: Path
    result: CliResult

    def copy_to(self, dest: Path) -> tuple[Path, Path]:
        shutil.copytree(self.folder, dest)
        return dest / self.study_file.name, dest / self.db.name


@pytest.fixture(scope="module")
def demo_run(
    tmp_path_factory: pytest.TempPathFactory, demo_model_path: Path, thaw: Callable[..., CliResult]
) -> DemoRun:
    """``thaw run`` on the tiny demo study, once for the module."""
    folder = tmp_path_factory.mktemp("cli-demo")
    study_file = write_study(folder, DEMO_STUDY)
    result = thaw("run", study_file, "--no-progress")
    return DemoRun(folder, study_file, folder / "cli.db", result)


# ------------------------------------------------------------------------------ thaw run


@pytest.mark.slow
def test_run_creates_the_study_with_config_and_reference_trials(demo_run: DemoRun) -> None:
    assert demo_run.result.rc == 0, demo_run.result.err
    out = demo_run.result.out
    assert "Created study 'cli-demo'" in out and "0 trials finished, running 3 more" in out
    assert "5 layers with weights" in out
    assert "Study 'cli-demo': 3 trials run now; in all 3 completed, 0 pruned, 0 failed." in out
    assert f"Write the report: thaw report {demo_run.study_file}" in out

    assert studies_in(demo_run.db) == ["cli-demo"]
    study = optuna.load_study(study_name="cli-demo", storage=f"sqlite:///{demo_run.db}")
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert f"Best so far: trial {study.best_trial.number}, value {study.best_value:.4f}" in out

    config = load_study_file(demo_run.study_file)
    attrs = study.user_attrs
    assert attrs["thaw:config"] == config.to_dict()
    assert attrs["thaw:config_hash"] == config.config_hash()
    assert attrs["thaw:num_layers"] == 5
    assert attrs["thaw:objective_metric"] == "val_loss"
    assert attrs["thaw:data"]["fingerprint"] == load_data(DataSource("demo")).fingerprint()

    # the informed start ran first, in the order the domain shift chose, parameters clamped
    shift = attrs["thaw:domain_shift"]["overall"]
    refs = reference_configurations(config, 5, shift)
    assert sorted(r["strategy"] for r in refs) == sorted(STRATEGIES)
    assert [t.user_attrs.get("strategy") for t in trials] == [r["strategy"] for r in refs]
    assert [t.params for t in trials] == [r["params"] for r in refs]
    for t in trials:
        assert t.user_attrs["epochs_run"] == 2
        assert sorted(t.intermediate_values) == [1, 2]
        assert t.value == pytest.approx(min(t.user_attrs["history"]["val_loss"]))


@pytest.mark.slow
def test_run_again_resumes_without_new_trials(
    demo_run: DemoRun, tmp_path: Path, thaw: Callable[..., CliResult]
) -> None:
    study_file, db = demo_run.copy_to(tmp_path / "copy")
    result = thaw("run", study_file, "--no-progress")
    assert result.rc == 0, result.err
    assert "Resuming study 'cli-demo'" in result.out
    assert "3 trials finished, running 0 more" in result.out
    assert "0 trials run now" in result.out
    assert len(trials_in(db, "cli-demo")) == 3


@pytest.mark.slow
def test_run_with_n_trials_adds_trials(
    demo_run: DemoRun, tmp_path: Path, thaw: Callable[..., CliResult]
) -> None:
    study_file, db = demo_run.copy_to(tmp_path / "copy")
    result = thaw("run", study_file, "--n-trials", "1", "--no-progress")
    assert result.rc == 0, result.err
    assert "running 1 more" in result.out and "1 trials run now" in result.out
    trials = trials_in(db, "cli-demo")
    assert len(trials) == 4
    assert trials[3].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert "strategy" not in trials[3].user_attrs  # not a reference trial
    # With the closed loop on, the trial after the informed start is a move proposed by the
    # diagnosis of one of its trials, or (when no verdict calls for a move) sampled; never the
    # gradual-unfreezing step, which is what the loop replaces.
    assert FOLLOW_UP_ATTR not in trials[3].user_attrs
    origin = trials[3].user_attrs.get(PROPOSED_BY)
    if origin is not None:
        assert origin["trial"] in (0, 1, 2)
        assert trials[3].params != trials[origin["trial"]].params
    assert studies_in(db) == ["cli-demo"]


@pytest.mark.slow
def test_run_with_changed_search_space_is_refused(
    demo_run: DemoRun, tmp_path: Path, thaw: Callable[..., CliResult]
) -> None:
    study_file, db = demo_run.copy_to(tmp_path / "copy")
    changed = edited(DEMO_STUDY, search_space__learning_rate={"low": 1e-5, "high": 1e-2})
    write_study(study_file.parent, changed)
    result = thaw("run", study_file, "--no-progress")
    assert result.rc == 2
    assert result.error_line == (
        "thaw: error: study 'cli-demo' was created with a different search space "
        "(learning_rate.low 0.001 -> 1e-05); use a new study name or restore the file"
    )
    assert len(trials_in(db, "cli-demo")) == 3


@pytest.mark.slow
def test_storage_override_on_the_command_line(
    demo_run: DemoRun,
    tmp_path: Path,
    thaw: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # --storage resolves a relative SQLite path against the current folder, not the study's
    monkeypatch.chdir(tmp_path)
    result = thaw("report", demo_run.study_file, "--storage", "sqlite:///elsewhere.db")
    assert result.rc == 2
    assert "no storage at" in result.error_line
    assert str(tmp_path / "elsewhere.db") in result.error_line
    assert not (tmp_path / "elsewhere.db").exists()

    shutil.copy(demo_run.db, tmp_path / "elsewhere.db")
    result = thaw(
        "report",
        demo_run.study_file,
        "--storage",
        "sqlite:///elsewhere.db",
        "--out",
        tmp_path / "out",
    )
    assert result.rc == 0, result.err


# --------------------------------------------------------------------------- thaw report


@pytest.mark.slow
def test_report_writes_all_files_with_one_row_per_trial(
    demo_run: DemoRun, tmp_path: Path, thaw: Callable[..., CliResult]
) -> None:
    out = tmp_path / "report"
    result = thaw("report", demo_run.study_file, "--out", out)
    assert result.rc == 0, result.err
    names = ["report.md", "report.html", "trials.csv", "summary.json"]
    for name in names:
        assert (out / name).is_file() and (out / name).stat().st_size > 0
        assert str(out / name) in result.out
    assert f"Report for study 'cli-demo' written to {out}/" in result.out

    trials = trials_in(demo_run.db, "cli-demo")
    with (out / "trials.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sorted(int(r["number"]) for r in rows) == [t.number for t in trials]
    by_number = {int(r["number"]): r for r in rows}
    for t in trials:
        assert by_number[t.number]["strategy"] == t.user_attrs["strategy"]
        assert float(by_number[t.number]["objective_value"]) == pytest.approx(t.value)

    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["study_name"] == "cli-demo"
    assert summary["n_trials"] == len(trials)
    assert "cli-demo" in (out / "report.md").read_text(encoding="utf-8")
    assert "cli-demo" in (out / "report.html").read_text(encoding="utf-8")


@pytest.mark.slow
def test_report_default_folder(
    demo_run: DemoRun,
    tmp_path: Path,
    thaw: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    result = thaw("report", demo_run.study_file)
    assert result.rc == 0, result.err
    # Beside the study file, not in the working folder.
    out = Path(demo_run.study_file).parent / "cli-demo-report"
    assert (out / "report.html").is_file()
    assert not (tmp_path / "thaw-report").exists()


@pytest.mark.slow
def test_report_of_an_unknown_study(
    demo_run: DemoRun, tmp_path: Path, thaw: Callable[..., CliResult]
) -> None:
    other = write_study(
        tmp_path, edited(DEMO_STUDY, name="other", storage=f"sqlite:///{demo_run.db}")
    )
    result = thaw("report", other, "--out", tmp_path / "out")
    assert result.rc == 2
    assert "no study named 'other'" in result.error_line
    assert result.error_line.endswith("studies there: cli-demo")
    assert studies_in(demo_run.db) == ["cli-demo"]
    assert not (tmp_path / "out").exists()


def test_report_with_out_pointing_at_a_file(tmp_path: Path, thaw: Callable[..., CliResult]) -> None:
    study_file = write_study(tmp_path, DEMO_STUDY)
    target = tmp_path / "taken.txt"
    target.write_text("x")
    result = thaw("report", study_file, "--out", target)
    assert result.rc == 2
    assert f"--out {target} is a file; give a folder" in result.error_line
    assert target.read_text() == "x"


def test_report_without_storage_creates_nothing(
    tmp_path: Path, thaw: Callable[..., CliResult]
) -> None:
    study_file = write_study(tmp_path, DEMO_STUDY)
    result = thaw("report", study_file, "--out", tmp_path / "out")
    assert result.rc == 2
    assert "no storage at sqlite:///" in result.error_line
    assert "run 'thaw run' first" in result.error_line
    assert not (tmp_path / "cli.db").exists()
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------- bad inputs

# (id, changes to the demo study, extra CLI args, fragment of the error line, fixture needed)
BAD_RUNS: list[tuple[str, dict[str, Any], list[str], str, str | None]] = [
    ("budget zero", {}, ["--budget-epochs", "0"], "--budget-epochs must be >= 1", None),
    ("budget negative", {}, ["--budget-epochs", "-5"], "--budget-epochs must be >= 1", None),
    (
        "budget not a number",
        {},
        ["--budget-epochs", "lots"],
        "--budget-epochs must be a whole number of epochs >= 1, such as 200, got 'lots'",
        None,
    ),
    ("budget fraction", {}, ["--budget-epochs", "2.5"], "got '2.5'", None),
    ("budget in file zero", {"budget_epochs": 0}, [], "budget_epochs must be >= 1", None),
    ("budget in file text", {"budget_epochs": "many"}, [], "budget_epochs must be a whole", None),
    ("unknown key", {"epochz": 3}, [], "unknown key 'epochz'; expected one of: name, seed", None),
    ("unknown nested key", {"train__epoch": 3}, [], "unknown key 'train.epoch'", None),
    (
        "low > high",
        {"search_space__learning_rate": {"low": 1e-2, "high": 1e-3}},
        [],
        "search_space.learning_rate: low=0.01 > high=0.001; swap them",
        None,
    ),
    (
        "missing model file",
        {"model": {"source": "file", "path": "missing.keras"}},
        [],
        "missing.keras' does not exist; check the path",
        None,
    ),
    (
        "storage folder missing",
        {"storage": "sqlite:////nonexistent-dir/x.db"},
        [],
        "cannot open storage sqlite:////nonexistent-dir/x.db: folder /nonexistent-dir does not "
        "exist",
        None,
    ),
    ("storage not a URL", {"storage": "cli.db"}, [], "storage must be a database URL", None),
    (
        "--storage not a URL",
        {},
        ["--storage", "x.db"],
        "--storage must be a database URL such as sqlite:///demo.db, got 'x.db'",
        None,
    ),
    ("--n-trials 0", {}, ["--n-trials", "0"], "--n-trials must be >= 1, got 0", None),
    ("--timeout 0", {}, ["--timeout", "0"], "--timeout must be > 0 seconds", None),
    (
        "unfrozen above the model",
        {"search_space__unfrozen_layers": [0, 9]},
        [],
        "high=9 but the model has only 5 layers with weights",
        "demo_model_path",
    ),
    (
        "corrupt model file",
        {"model": {"source": "file", "path": "bad.keras"}},
        [],
        "bad.keras is not a Keras model file",
        "corrupt_model",
    ),
]


@pytest.fixture
def corrupt_model(tmp_path: Path) -> Path:
    path = tmp_path / "bad.keras"
    path.write_bytes(b"not a zip")
    return path


@pytest.mark.parametrize(
    ("changes", "args", "fragment", "needs"),
    [pytest.param(*row[1:], id=row[0]) for row in BAD_RUNS],
)
def test_bad_run_input_is_one_line_exit_2_and_creates_no_study(
    tmp_path: Path,
    thaw: Callable[..., CliResult],
    request: pytest.FixtureRequest,
    changes: dict[str, Any],
    args: list[str],
    fragment: str,
    needs: str | None,
) -> None:
    if needs:
        request.getfixturevalue(needs)
    study_file = write_study(tmp_path, edited(DEMO_STUDY, **changes))
    result = thaw("run", study_file, *args, "--no-progress")
    assert result.rc == 2
    assert fragment in result.error_line
    assert studies_in(tmp_path / "cli.db") == []
    assert not (tmp_path / "nonexistent-dir").exists()


def test_run_of_a_missing_study_file(tmp_path: Path, thaw: Callable[..., CliResult]) -> None:
    result = thaw("run", tmp_path / "nope.yaml")
    assert result.rc == 2
    assert result.error_line == f"thaw: error: study file '{tmp_path / 'nope.yaml'}' does not exist"


def test_run_of_invalid_yaml(tmp_path: Path, thaw: Callable[..., CliResult]) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nsearch_space: {dropout: [0, 1\n")
    result = thaw("run", path)
    assert result.rc == 2
    assert "broken.yaml: not valid YAML at line" in result.error_line


@pytest.mark.parametrize("args", [("--version",), ("-v", "--version")])
def test_version_prints_the_version_and_exits_0(
    args: tuple[str, ...], thaw: Callable[..., CliResult]
) -> None:
    from thaw._version import __version__

    result = thaw(*args)
    assert result.rc == 0
    assert result.out == f"thaw {__version__}\n"
    assert result.err == ""


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["walk", "x.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("thaw: error: argument command: invalid choice: 'walk'")
    assert err.endswith("; see 'thaw --help'\n") and err.count("\n") == 1


# ---------------------------------------------------------------- a study on a model file


@pytest.fixture
def file_study(
    tmp_path: Path, tiny_cnn: Callable[..., Any], tiny_arrays: Callable[..., dict[str, np.ndarray]]
) -> Path:
    """A tiny saved Keras model with BatchNorm, .npz data, and a study file using both."""
    tiny_cnn().save(tmp_path / "tiny.keras")
    np.savez(tmp_path / "data.npz", **tiny_arrays())
    return write_study(
        tmp_path,
        {
            "name": "tiny",
            "n_trials": 2,
            "storage": "sqlite:///tiny.db",
            "model": {"source": "file", "path": "tiny.keras", "cut_at": "features"},
            "data": {"source": "npz", "path": "data.npz", "class_names": ["a", "b", "c"]},
            "search_space": {"unfrozen_layers": [0, "all"], "batchnorm": ["frozen", "train"]},
            "train": {"epochs": 2, "batch_size": 8},
            "sampler": {"name": "random"},
            "pruner": {"compare": "none"},
            "reference_trials": False,
        },
    )


@pytest.mark.slow
def test_run_study_on_a_model_file_with_npz_data(
    file_study: Path, thaw: Callable[..., CliResult], tiny_arrays: Callable[..., dict[str, Any]]
) -> None:
    result = thaw("run", file_study, "--no-progress")
    assert result.rc == 0, result.err
    assert "Model: tiny.keras, cut at 'features', 2 layers with weights" in result.out
    assert "data: 24 training and 12 validation images, 3 classes" in result.out

    db = file_study.parent / "tiny.db"
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{db}")
    assert study.user_attrs["thaw:num_layers"] == 2
    assert study.user_attrs["thaw:data"]["class_names"] == ["a", "b", "c"]
    assert study.user_attrs["thaw:data"]["train_counts"] == [8, 8, 8]
    trials = study.get_trials()
    assert len(trials) == 2
    for t in trials:
        assert t.state == TrialState.COMPLETE
        assert 0 <= t.params["unfrozen_layers"] <= 2
        assert t.params["batchnorm"] in ("frozen", "train")

    # same path, other arrays: resuming would mix data, so it is refused
    np.savez(file_study.parent / "data.npz", **tiny_arrays(seed=1))
    again = thaw("run", file_study, "--n-trials", "1", "--no-progress")
    assert again.rc == 2
    assert "study 'tiny' was run on different data" in again.error_line
    assert len(optuna.load_study(study_name="tiny", storage=f"sqlite:///{db}").trials) == 2


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        (
            {"model": {"source": "file", "path": "tiny.keras", "cut_at": "fc7"}},
            "the model 'tiny_cnn' has no layer named 'fc7'",
        ),
        (
            {"search_space": {"unfrozen_layers": [3, "all"]}},
            "search_space.unfrozen_layers: low=3 > high=2",
        ),
    ],
    ids=["unknown cut_at", "low above the cut model"],
)
def test_bad_model_file_settings(
    file_study: Path, thaw: Callable[..., CliResult], changes: dict[str, Any], fragment: str
) -> None:
    raw = yaml.safe_load(file_study.read_text())
    write_study(file_study.parent, {**raw, **changes})
    result = thaw("run", file_study, "--no-progress")
    assert result.rc == 2
    assert fragment in result.error_line
    assert studies_in(file_study.parent / "tiny.db") == []


def test_image_shape_mismatch_is_a_user_error(
    file_study: Path, thaw: Callable[..., CliResult], tiny_arrays: Callable[..., dict[str, Any]]
) -> None:
    np.savez(file_study.parent / "data.npz", **tiny_arrays(shape=(10, 10, 3)))
    result = thaw("run", file_study, "--no-progress")
    assert result.rc == 2
    assert "images have shape (10, 10, 3) but the model expects (8, 8, 3)" in result.error_line
    assert studies_in(file_study.parent / "tiny.db") == []


@pytest.mark.slow
def test_ctrl_c_during_a_trial_exits_130_and_keeps_finished_trials(
    file_study: Path, thaw: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    from thaw.objectives._objective import FineTuneObjective

    real_fit = FineTuneObjective.fit

    def fit_then_ctrl_c(self: Any, trial: optuna.Trial, *args: Any) -> Any:
        if trial.number == 1:
            raise KeyboardInterrupt  # what Ctrl-C raises in the main thread
        return real_fit(self, trial, *args)

    monkeypatch.setattr(FineTuneObjective, "fit", fit_then_ctrl_c)
    result = thaw("run", file_study, "--no-progress")
    assert result.rc == 130
    assert "Interrupted: the running trial was marked failed" in result.out
    trials = trials_in(file_study.parent / "tiny.db", "tiny")
    # the interrupted trial is queued again with its parameters; it does not count
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert trials[1].user_attrs["fail_reason"] == "interrupted by the user (Ctrl-C)"
    assert trials[2].user_attrs["thaw:retry_of"]["trial"] == 1
    assert trials[2].system_attrs["fixed_params"] == trials[1].params

    monkeypatch.setattr(FineTuneObjective, "fit", real_fit)
    again = thaw("run", file_study, "--no-progress")
    assert again.rc == 0, again.err
    assert "1 trials finished, running 1 more" in again.out
    trials = trials_in(file_study.parent / "tiny.db", "tiny")
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[2].params == trials[1].params


# ------------------------------------------------------------------------- subprocesses


def run_module(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "thaw.search._cli", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_subprocess_bad_input_prints_exactly_one_line(tmp_path: Path) -> None:
    study_file = write_study(tmp_path, edited(DEMO_STUDY, search_space__dropout=[0.0, 1.0]))
    proc = run_module("run", study_file, "--no-progress", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"thaw: error: {study_file}: search_space.dropout: high=1.0 must be < 1"
    ]
    assert proc.stdout == ""
    assert not (tmp_path / "cli.db").exists()


@pytest.mark.slow
def test_subprocess_run_then_report(tmp_path: Path, demo_model_path: Path) -> None:
    study_file = write_study(
        tmp_path / "studies", edited(DEMO_STUDY, n_trials=2, reference_trials=False)
    )
    run = run_module("run", study_file, "--no-progress", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Created study 'cli-demo'" in run.stdout
    db = tmp_path / "studies" / "cli.db"  # relative storage: next to the study file, not cwd
    finished = (TrialState.COMPLETE, TrialState.PRUNED)  # a runaway may be stopped early
    assert [t.state in finished for t in trials_in(db, "cli-demo")] == [True] * 2
    assert not (tmp_path / "cli.db").exists()

    report = run_module("report", study_file, cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-2000:]
    out = tmp_path / "studies" / "cli-demo-report"  # beside the study file
    with (out / "trials.csv").open(newline="", encoding="utf-8") as f:
        assert len(list(csv.DictReader(f))) == 2
    assert json.loads((out / "summary.json").read_text())["n_trials"] == 2


@pytest.mark.slow
def test_the_range_test_counts_in_the_epoch_budget(
    tmp_path: Path, demo_model_path: Path, thaw: Callable[..., CliResult]
) -> None:
    study_file = write_study(tmp_path, edited(DEMO_STUDY, n_trials=50))
    result = thaw("run", study_file, "--budget-epochs", "6", "--no-progress")
    assert result.rc == 0, result.err
    assert "Learning-rate range test (" in result.out
    study = optuna.load_study(study_name="cli-demo", storage=f"sqlite:///{tmp_path / 'cli.db'}")
    tested = math.ceil(study.user_attrs[RANGE_TEST]["epochs"] - 1e-9)
    assert 1 <= tested <= 2  # at most 2 epochs for the one BatchNorm mode searched
    trained = sum(t.user_attrs.get("epochs_run", 0) for t in study.get_trials())
    assert tested + trained == study.user_attrs["thaw:epochs_spent"] == 6


@pytest.mark.slow
def test_budget_epochs_stops_the_study_and_records_the_epochs_spent(
    tmp_path: Path, demo_model_path: Path, thaw: Callable[..., CliResult]
) -> None:
    # 2 epochs per trial, a budget of 5: trials of 2, 2, then 1 (capped), then the study stops.
    study_file = write_study(tmp_path, edited(DEMO_STUDY, n_trials=50, lr_range_test=False))
    result = thaw("run", study_file, "--budget-epochs", "5", "--no-progress")
    assert result.rc == 0, result.err
    trials = trials_in(tmp_path / "cli.db", "cli-demo")
    assert [t.user_attrs["epochs_run"] for t in trials] == [2, 2, 1]
    assert trials[2].user_attrs["epoch_cap"] == 1
    study = optuna.load_study(study_name="cli-demo", storage=f"sqlite:///{tmp_path / 'cli.db'}")
    assert study.user_attrs["thaw:epochs_spent"] == 5
    assert study.user_attrs["thaw:budget_epochs"] == 5
    assert "Epochs spent: 5 of a budget of 5." in result.out
    # resuming with the budget spent runs nothing more
    again = thaw("run", study_file, "--budget-epochs", "5", "--no-progress")
    assert again.rc == 0, again.err
    assert len(trials_in(tmp_path / "cli.db", "cli-demo")) == 3
