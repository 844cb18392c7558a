"""TrialPublisher, notes and artifact helpers, on real SQLite studies (no Keras, no server).

What optuna-dashboard would show is read through its own WSGI app, in process.
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta
from optuna.trial import TrialState

from thaw.reports._notes import (
    note_escape,
    render_history_csv,
    render_trial_curves_svg,
    render_trial_note,
)
from thaw.search._publish import (
    TrialPublisher,
    default_artifact_dir,
    open_artifact_store,
    publish_report_artifacts,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

XSS = "<img src=x onerror=alert(1)>"
EPOCHS = 8


def _history(kind: str) -> dict[str, list[float]]:
    if kind == "overfit":
        val = [1.0 - 0.15 * e if e < 4 else 0.4 + 0.12 * (e - 4) for e in range(EPOCHS)]
    else:
        val = [1.2 * math.exp(-0.3 * e) + 0.3 for e in range(EPOCHS)]
    train = [1.3 * math.exp(-0.4 * e) + 0.1 for e in range(EPOCHS)]
    return {
        "loss": train,
        "val_loss": val,
        "accuracy": [0.5 + 0.05 * e for e in range(EPOCHS)],
        "val_accuracy": [0.4 + 0.04 * e for e in range(EPOCHS)],
    }


def objective(trial: optuna.Trial) -> float:
    """Healthy, overfitting, pruned, failed, in turn; the shape of what thaw stores."""
    trial.suggest_int("unfrozen_layers", 0, 10)
    trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)
    kind = ("healthy", "overfit", "pruned", "fail")[trial.number % 4]
    if kind == "fail":
        trial.set_user_attr("fail_reason", f"ValueError: {XSS}")
        raise ValueError("boom")
    history = _history(kind)
    seen: dict[str, list[float | None]] = {k: [] for k in history}
    for epoch in range(1, EPOCHS + 1):
        for key, values in history.items():
            seen[key].append(values[epoch - 1])
        trial.set_user_attr("history", seen)
        trial.report(float(history["val_loss"][epoch - 1] or 0.0), epoch)
        if kind == "pruned" and epoch == 5:
            trial.set_user_attr("prune_reason", "climbing")
            trial.set_user_attr("prune_epoch", epoch)
            trial.set_user_attr("prune_detail", f"climbed {XSS}")
            raise optuna.TrialPruned()
    val = [v for v in history["val_loss"] if v is not None]
    trial.set_user_attr("best_epoch", val.index(min(val)) + 1)
    trial.set_user_attr("epochs_run", EPOCHS)
    return min(val)


def make_study(tmp_path: Path, name: str = "pub") -> optuna.Study:
    study = optuna.create_study(
        study_name=name,
        storage=f"sqlite:///{tmp_path / 'thaw.db'}",
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    study.set_user_attr("thaw:objective_metric", "val_loss")
    study.set_user_attr("thaw:num_layers", 10)
    study.set_user_attr("thaw:data", {"class_names": ["cat", XSS]})
    return study


def study_detail(study: optuna.Study, artifact_dir: Path) -> dict[str, Any]:
    """``GET /api/studies/<id>`` of optuna-dashboard's WSGI app."""
    from optuna_dashboard import wsgi

    app = wsgi(study._storage, artifact_store=FileSystemArtifactStore(artifact_dir))
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    environ["PATH_INFO"] = f"/api/studies/{study._study_id}"
    status: list[str] = []
    body = b"".join(app(environ, lambda s, h, e=None: status.append(s)))
    assert status[0].startswith("200"), status
    return dict(json.loads(body))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------------- artifact folder


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:////x/y/demo.db", "/x/y/artifacts"),
        ("sqlite:///demo.db", "/study/dir/artifacts"),
        ("sqlite:///sub/demo.db", "/study/dir/sub/artifacts"),
        ("sqlite:///:memory:", "/study/dir/artifacts"),
        ("postgresql://thaw:secret@db/thaw", "/study/dir/artifacts"),
    ],
)
def test_default_artifact_dir(url: str, expected: str) -> None:
    assert default_artifact_dir(url, Path("/study/dir")) == Path(expected)


def test_open_artifact_store_creates_the_folder_and_refuses_a_file(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "artifacts"
    open_artifact_store(folder)
    assert folder.is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(RuntimeError, match="not a folder|cannot create"):
        open_artifact_store(tmp_path / "file")


# --------------------------------------------------------------------------- publishing


def test_wrapped_objective_and_callback_publish_everything(tmp_path: Path) -> None:
    study = make_study(tmp_path)
    artifacts = tmp_path / "artifacts"
    publisher = TrialPublisher(open_artifact_store(artifacts), study_note_every_s=0)
    study.optimize(
        publisher.wrap(objective), n_trials=4, callbacks=[publisher], catch=(ValueError,)
    )
    publisher.finish(study)

    trials = study.get_trials()
    states = [t.state for t in trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    names = [[v["verdict"] for v in t.user_attrs["verdicts"]] for t in trials]
    assert names[0] == ["healthy"]
    assert "overfitting" in names[1]
    assert names[3] == []
    # Artifacts through optuna.artifacts.upload_artifact: visible to Optuna itself.
    for t in trials[:3]:
        metas = get_all_artifact_meta(t, storage=study._storage)
        assert sorted(m.filename for m in metas) == [
            f"trial-{t.number}-history.csv",
            f"trial-{t.number}-learning-curves.svg",
        ]
        for meta in metas:
            stored = (artifacts / meta.artifact_id).read_text(encoding="utf-8")
            if meta.filename.endswith(".svg"):
                assert meta.mimetype == "image/svg+xml"
                assert stored == render_trial_curves_svg(t)
            else:
                assert stored == render_history_csv(t)
    assert get_all_artifact_meta(trials[3], storage=study._storage) == []

    detail = study_detail(study, artifacts)
    notes = [t["note"]["body"] for t in detail["trials"]]
    assert notes[1].startswith("### Trial 1: complete")
    assert "**Overfitting**" in notes[1] and "Evidence" in notes[1]
    assert "pruned at epoch 5 (climbing)" in notes[2]
    assert "**Why it failed:** ValueError: \\<img src=x onerror=alert(1)\\>" in notes[3]
    assert [len(t["artifacts"]) for t in detail["trials"]] == [2, 2, 2, 0]
    study_note = detail["note"]["body"]
    assert "#### Diagnosis" in study_note and "#### Ranking (top 3 of 3" in study_note
    assert "Classes (2): cat, \\<img src=x onerror=alert(1)\\>." in study_note


def test_dashboard_gets_metric_name_verdict_column_config_table_and_pruned_best(
    tmp_path: Path,
) -> None:
    study = make_study(tmp_path)
    study.set_user_attr("thaw:config", {"train": {"epochs": EPOCHS, "batch_size": 16}, "name": XSS})
    artifacts = tmp_path / "artifacts"
    publisher = TrialPublisher(open_artifact_store(artifacts), study_note_every_s=0)
    study.optimize(publisher.wrap(objective), n_trials=3, callbacks=[publisher])
    publisher.finish(study)

    assert study.metric_names == ["val_loss"]  # not "Objective 0"
    trials = study.get_trials()
    assert trials[0].user_attrs["verdict"] == "healthy"
    assert "overfitting" in trials[1].user_attrs["verdict"].split(", ")
    detail = study_detail(study, artifacts)
    note = detail["note"]["body"]
    assert "#### Configuration" in note and "| train.epochs | 8 |" in note
    assert "| name | \\<img src=x onerror=alert(1)\\> |" in note  # escaped
    pruned = detail["trials"][2]["note"]["body"]
    best = min(trials[2].intermediate_values.values())
    assert f"The best val loss it reached: {best:.4g} at epoch" in pruned
    assert "stopped at epoch 5" in pruned

    # Readable per-trial names beside the id-named files.
    link = artifacts / "by-trial" / "pub" / "trial-0-learning-curves.svg"
    assert link.is_symlink()
    assert link.read_text(encoding="utf-8") == render_trial_curves_svg(trials[0])


def test_artifacts_are_replaced_not_piled_up_when_a_study_is_recreated(tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first = make_study(tmp_path / "one")
    publisher = TrialPublisher(open_artifact_store(artifacts), study_note_every_s=0)
    first.optimize(publisher.wrap(objective), n_trials=2, callbacks=[publisher])
    files = sorted(p.name for p in artifacts.iterdir() if p.is_file())
    assert len(files) == 4  # 2 trials x (chart, history)
    # The same study name again (the database was deleted and the study rerun).
    second = make_study(tmp_path / "two")
    second.optimize(publisher.wrap(objective), n_trials=2, callbacks=[publisher])
    again = sorted(p.name for p in artifacts.iterdir() if p.is_file())
    assert len(again) == 4 and not set(again) & set(files)
    for meta in get_all_artifact_meta(second.get_trials()[1], storage=second._storage):
        assert (artifacts / meta.artifact_id).is_file()


def test_callback_alone_still_attaches_artifacts_and_verdicts_in_the_note(
    tmp_path: Path,
) -> None:
    study = make_study(tmp_path)
    artifacts = tmp_path / "artifacts"
    publisher = TrialPublisher(open_artifact_store(artifacts), study_note_every_s=0)
    study.optimize(objective, n_trials=2, callbacks=[publisher])

    detail = study_detail(study, artifacts)
    for trial in detail["trials"]:
        assert sorted(a["filename"] for a in trial["artifacts"]) == [
            f"trial-{trial['number']}-history.csv",
            f"trial-{trial['number']}-learning-curves.svg",
        ]
        assert "#### Verdicts" in trial["note"]["body"]
    assert "**Overfitting**" in detail["trials"][1]["note"]["body"]


class BrokenStore:
    def open_reader(self, artifact_id: str) -> Any:
        raise OSError("disk on fire")

    def write(self, artifact_id: str, content_body: Any) -> None:
        raise OSError("disk on fire")

    def remove(self, artifact_id: str) -> None:
        raise OSError("disk on fire")


def test_a_failure_to_publish_is_logged_and_never_stops_the_study(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import thaw.search._publish as publish

    def broken_diagnosis(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("diagnosis exploded")

    monkeypatch.setattr(publish, "diagnose_study", broken_diagnosis)
    study = make_study(tmp_path)
    publisher = TrialPublisher(BrokenStore(), study_note_every_s=0)
    with caplog.at_level(logging.WARNING, logger="thaw.search._publish"):
        study.optimize(publisher.wrap(objective), n_trials=3, callbacks=[publisher])
        publisher.finish(study)
    assert len(study.get_trials()) == 3
    assert [t.state for t in study.get_trials()][:2] == [TrialState.COMPLETE] * 2
    messages = [r.getMessage() for r in caplog.records]
    assert any("Could not publish trial 0" in m and "disk on fire" in m for m in messages)
    assert any("Could not publish the study note" in m for m in messages)
    # Notes do not need the artifact store: they are still there.
    detail = study_detail(study, tmp_path)
    assert "#### Verdicts" in detail["trials"][0]["note"]["body"]


def test_ctrl_c_passes_through_the_wrapper_without_publishing(tmp_path: Path) -> None:
    study = make_study(tmp_path)
    publisher = TrialPublisher(open_artifact_store(tmp_path / "artifacts"))

    def interrupted(trial: optuna.Trial) -> float:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        study.optimize(publisher.wrap(interrupted), n_trials=1)
    assert "verdicts" not in study.get_trials()[0].user_attrs


def test_study_note_is_throttled_and_finish_always_refreshes(tmp_path: Path) -> None:
    from optuna_dashboard import get_note

    study = make_study(tmp_path)
    clock = Clock()
    publisher = TrialPublisher(
        open_artifact_store(tmp_path / "artifacts"), study_note_every_s=30, clock=clock
    )
    study.optimize(publisher.wrap(objective), n_trials=1, callbacks=[publisher])
    assert "1 trials (1 complete)" in get_note(study)
    study.optimize(publisher.wrap(objective), n_trials=1, callbacks=[publisher])
    assert "1 trials (1 complete)" in get_note(study)  # throttled
    clock.now += 31
    study.optimize(publisher.wrap(objective), n_trials=1, callbacks=[publisher])
    assert "3 trials (2 complete, 1 pruned)" in get_note(study)
    study.optimize(
        publisher.wrap(objective), n_trials=1, callbacks=[publisher], catch=(ValueError,)
    )
    publisher.finish(study)
    assert "4 trials (2 complete, 1 fail, 1 pruned)" in get_note(study)


def test_report_artifacts_are_replaced_not_duplicated(tmp_path: Path) -> None:
    study = make_study(tmp_path)
    store = open_artifact_store(tmp_path / "artifacts")
    report = tmp_path / "report.md"
    report.write_text("first", encoding="utf-8")
    odd = tmp_path / f"{XSS}.txt"
    odd.write_text("odd", encoding="utf-8")
    first = publish_report_artifacts(study, store, [report, odd])
    report.write_text("second", encoding="utf-8")
    second = publish_report_artifacts(study, store, [report])
    assert second["report.md"] == first["report.md"]
    metas = get_all_artifact_meta(study)
    assert sorted(m.filename for m in metas) == sorted(["report.md", f"{XSS}.txt"])
    path = tmp_path / "artifacts" / first["report.md"]
    assert path.read_text(encoding="utf-8") == "second"


# --------------------------------------------------------------------------------- notes


def _decode(markdown: str) -> tuple[str, str]:
    """(the text a reader sees, the unescaped characters outside code spans)."""
    seen: list[str] = []
    outside: list[str] = []
    i = 0
    while i < len(markdown):
        char = markdown[i]
        if char == "\\" and i + 1 < len(markdown):
            seen.append(markdown[i + 1])
            i += 2
            continue
        if char == "`":
            fence = re.match(r"`+", markdown[i:])
            assert fence is not None
            end = markdown.index(fence[0], i + len(fence[0]))
            inner = markdown[i + len(fence[0]) : end]
            if inner.startswith(" ") and inner.endswith(" ") and inner.strip():
                inner = inner[1:-1]
            seen.append(inner)
            i = end + len(fence[0])
            continue
        seen.append(char)
        outside.append(char)
        i += 1
    return "".join(seen), "".join(outside)


@pytest.mark.parametrize(
    "text",
    [
        XSS,
        "<script>alert(1)</script>",
        "[click](http://evil.example) ![i](http://evil.example/x.png)",
        "see http://evil.example, www.evil.example or mail a@evil.example",
        "**bold** _it_ `code` ~~strike~~ | cell | &lt;b&gt;",
        "``a@b`` and `x://y`",
        "# heading",
        "1. list",
        "- list",
        "> quote",
        "line one\n\n# line two",
    ],
)
def test_note_escape_leaves_no_markup(text: str) -> None:
    escaped = note_escape(text)
    assert "\n" not in escaped
    seen, outside = _decode(escaped)
    assert seen == text.replace("\n", " ")
    for char in "<>[]`*_|~&":
        assert char not in outside, (char, escaped)
    for linkish in ("://", "www.", "@"):
        assert linkish not in outside.lower(), (linkish, escaped)
    assert not re.match(r"[#>+\-=]|\d+[.)]", escaped)


def test_trial_note_escapes_untrusted_attrs(tmp_path: Path) -> None:
    study = make_study(tmp_path)
    study.optimize(objective, n_trials=3)
    pruned = study.get_trials()[2]
    note = render_trial_note(
        pruned,
        [
            {
                "verdict": "overfitting",
                "confidence": 0.9,
                "evidence": f"class {XSS}",
                "recommendation": "raise dropout; stop early",
            },
        ],
    )
    assert "<img" not in note.replace("\\<img", "")
    assert "**Why pruned:** climbed \\<img src=x onerror=alert(1)\\>" in note
    assert "- Recommendation:\n  - raise dropout\n  - stop early" in note


@pytest.mark.parametrize(
    ("attr", "line"),
    [
        (
            {"of": 0, "unfrozen_layers": 1},
            "Gradual unfreezing: trial 0, the best of the informed start, with 1 layer unfrozen",
        ),
        (
            {"of": 2, "unfrozen_layers": 3},
            "Gradual unfreezing: trial 2, the best of the informed start, with 3 layers unfrozen",
        ),
        ({"of": XSS, "unfrozen_layers": 1}, None),  # not a number: no line, nothing rendered
        (XSS, None),
    ],
)
def test_trial_note_names_the_gradual_unfreezing_step(
    tmp_path: Path, attr: object, line: str | None
) -> None:
    study = make_study(tmp_path)
    study.optimize(objective, n_trials=1)
    trial = study.get_trials()[0]
    trial.user_attrs["thaw:gradual_unfreezing_of"] = attr
    note = render_trial_note(trial, [])
    if line is None:
        assert "Gradual unfreezing" not in note and "<img" not in note
    else:
        assert line in note


@pytest.mark.parametrize(
    ("attr", "line"),
    [
        (
            "augmented images change every epoch",
            "Trained without cached activations: augmented images change every epoch",
        ),
        (XSS, "Trained without cached activations: \\<img src=x onerror=alert(1)\\>"),
        (None, None),
    ],
)
def test_trial_note_says_when_a_trial_trained_without_cached_activations(
    tmp_path: Path, attr: object, line: str | None
) -> None:
    study = make_study(tmp_path)
    study.optimize(objective, n_trials=1)
    trial = study.get_trials()[0]
    if attr is not None:
        trial.user_attrs["cache_off"] = attr
    note = render_trial_note(trial, [])
    if line is None:
        assert "cached activations" not in note
    else:
        assert line in note


def test_svg_artifact_is_a_standalone_svg_file(tmp_path: Path) -> None:
    study = make_study(tmp_path)
    study.optimize(objective, n_trials=1)
    svg = render_trial_curves_svg(study.get_trials()[0])
    assert svg.startswith(
        '<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" '
    )
    import xml.etree.ElementTree as ET

    root = ET.fromstring(svg.split("\n", 1)[1])
    assert root.tag == "{http://www.w3.org/2000/svg}svg"


def test_history_csv(tmp_path: Path) -> None:
    study = make_study(tmp_path)
    study.optimize(objective, n_trials=3)
    csv_text = render_history_csv(study.get_trials()[2])
    lines = csv_text.splitlines()
    assert lines[0] == "epoch,loss,val_loss,accuracy,val_accuracy,intermediate_value"
    assert len(lines) == 1 + 5
    assert lines[1].startswith("1,")
