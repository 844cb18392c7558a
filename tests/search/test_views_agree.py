"""One verdict per trial everywhere: report, summary.json, trial notes, study note and
``thaw diagnose`` give every trial of a real small study the same verdicts.

The study holds the learning curves of nine real Keras fine-tuning runs on the demo's 6-class
target (``tests/reports/real_curves.json``), stored trial by trial through the same publisher
``thaw run`` uses (stored verdicts, trial notes, study note), in real SQLite storage.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore

from thaw.reports import diagnose_study, write_report
from thaw.reports._notes import _VERDICT_TITLES
from thaw.search._publish import TrialPublisher, open_artifact_store

REAL_CURVES = Path(__file__).parents[1] / "reports" / "real_curves.json"
CLASSES = ["circle", "square", "triangle", "cross", "ring", "bar"]


def _objective(raw: dict[str, dict[str, Any]]) -> Callable[[optuna.Trial], float]:
    def objective(trial: optuna.Trial) -> float:
        entry = raw[str(trial.number)]
        trial.suggest_int("unfrozen_layers", 0, 5)
        trial.suggest_float("learning_rate", 1e-6, 1.0, log=True)
        trial.suggest_float("dropout", 0.0, 0.6)
        trial.suggest_float("weight_decay", 1e-7, 0.1, log=True)
        trial.suggest_categorical("batchnorm", ["frozen", "adapt", "train"])
        history = {k: entry[k] for k in ("loss", "val_loss", "accuracy", "val_accuracy")}
        trial.set_user_attr("history", history)
        for epoch, value in enumerate(history["val_loss"], start=1):
            trial.report(value, epoch)
        return float(min(history["val_loss"]))

    return objective


def _study_detail(study: optuna.Study, artifact_dir: Path) -> dict[str, Any]:
    from optuna_dashboard import wsgi

    app = wsgi(study._storage, artifact_store=FileSystemArtifactStore(artifact_dir))
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    environ["PATH_INFO"] = f"/api/studies/{study._study_id}"
    status: list[str] = []
    body = b"".join(app(environ, lambda s, h, e=None: status.append(s)))
    assert status[0].startswith("200"), status
    return dict(json.loads(body))


@pytest.fixture(scope="module")
def agreed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("agree")
    raw = json.loads(REAL_CURVES.read_text(encoding="utf-8"))
    storage = f"sqlite:///{tmp / 'thaw.db'}"
    study = optuna.create_study(study_name="agree", storage=storage)
    study.set_user_attr("thaw:objective_metric", "val_loss")
    study.set_user_attr("thaw:num_layers", 5)
    study.set_user_attr("thaw:data", {"class_names": CLASSES})
    for number in sorted(raw, key=int):
        study.enqueue_trial(raw[number]["params"])
    publisher = TrialPublisher(open_artifact_store(tmp / "artifacts"), study_note_every_s=0)
    study.optimize(publisher.wrap(_objective(raw)), n_trials=len(raw), callbacks=[publisher])
    publisher.finish(study)
    return {"study": study, "tmp": tmp, "storage": storage}


def _expected(study: optuna.Study) -> dict[int, list[str]]:
    return {t.number: [v.verdict for v in t.verdicts] for t in diagnose_study(study).trials}


def test_report_and_summary_json_agree(agreed: dict[str, Any]) -> None:
    study = agreed["study"]
    expected = _expected(study)
    files = write_report(study, agreed["tmp"] / "report")
    summary = json.loads(files.summary_json.read_text(encoding="utf-8"))
    ranked = {r["number"]: [v["verdict"] for v in r["verdicts"]] for r in summary["ranking"]}
    assert ranked == expected  # schema 2: each verdict with its evidence
    counts = Counter(n for names in expected.values() for n in names)
    assert _find_key(summary, "verdict_mix") == dict(counts)


def _find_key(tree: Any, key: str) -> Any:
    if isinstance(tree, dict):
        if key in tree:
            return tree[key]
        for value in tree.values():
            found = _find_key(value, key)
            if found is not None:
                return found
    return None


def test_trial_and_study_notes_agree(agreed: dict[str, Any]) -> None:
    study = agreed["study"]
    expected = _expected(study)
    detail = _study_detail(study, agreed["tmp"] / "artifacts")
    by_title = {title: name for name, title in _VERDICT_TITLES.items()}
    for trial in detail["trials"]:
        body = trial["note"]["body"]
        titles = re.findall(r"^\*\*([A-Za-z ]+)\*\* \(confidence", body, flags=re.M)
        assert [by_title[t] for t in titles] == expected[trial["number"]], trial["number"]
    note = detail["note"]["body"]
    line = next(x for x in note.splitlines() if x.startswith("- **Verdicts:**"))
    for name, title in _VERDICT_TITLES.items():
        numbers = sorted(n for n, names in expected.items() if name in names)
        if numbers:
            trials = ", ".join(str(n) for n in numbers)
            assert f"{title} {len(numbers)} (trials {trials})" in line, (name, line)
        else:
            assert f"{title} " not in line


def _study_file(agreed: dict[str, Any], folder: Path) -> Path:
    study_file = folder / "agree.yaml"
    study_file.write_text(
        "name: agree\nobjective: val_loss\nmodel: {source: demo}\ndata: {source: demo}\n"
        f"storage: {agreed['storage']}\n",
        encoding="utf-8",
    )
    return study_file


def test_thaw_diagnose_agrees(agreed: dict[str, Any], tmp_path: Path, thaw: Any) -> None:
    study = agreed["study"]
    expected = _expected(study)
    study_file = _study_file(agreed, tmp_path)
    result = thaw("diagnose", study_file, "--json")
    assert result.rc == 0, result.err
    found = {
        t["number"]: [v["verdict"] for v in t["verdicts"]] for t in json.loads(result.out)["trials"]
    }
    assert found == expected
    for number in (4, 6, 7):
        one = thaw("diagnose", study_file, "--trial", str(number), "--json")
        assert one.rc == 0, one.err
        assert [v["verdict"] for v in json.loads(one.out)["verdicts"]] == expected[number]


def test_the_real_study_gets_the_practitioners_verdicts(agreed: dict[str, Any]) -> None:
    raw = json.loads(REAL_CURVES.read_text(encoding="utf-8"))
    expected = _expected(agreed["study"])
    for number, entry in raw.items():
        if entry.get("expected"):
            assert expected[int(number)][0] == entry["expected"], (number, expected[int(number)])
        else:
            assert expected[int(number)] != [], number


def test_the_answer_states_its_recommended_trials_own_verdict(agreed: dict[str, Any]) -> None:
    """The Answer names the recommended trial with the verdict every other view gives it, and
    that verdict's advice, in the same line."""
    from thaw.reports import get_report_info, render_markdown

    study = agreed["study"]
    expected = _expected(study)
    info = get_report_info(study)
    assert info.answer.best is not None and info.story is not None
    advice = info.story.advice
    number = info.answer.best.number
    assert advice is not None and advice.number == number
    assert advice.verdict == expected[number][0]
    answer = render_markdown(info).split("## Answer", 1)[1]
    lead = next(line for line in answer.splitlines() if f"trial {number}:" in line)
    assert advice.sentence in lead
    if advice.cause is not None:
        assert advice.move is not None or "allows no move" in advice.sentence


def test_thaw_report_and_the_api_write_the_same_files(
    agreed: dict[str, Any], tmp_path: Path, thaw: Any
) -> None:
    import thaw as api

    study_file = _study_file(agreed, tmp_path)
    result = thaw("report", study_file, "--out", tmp_path / "cli")
    assert result.rc == 0, result.err
    files = api.report(study_file, tmp_path / "api")
    names = ["report.md", "report.html", "trials.csv", "summary.json"]
    assert [p.name for p in files.written] == names
    for name in names:
        assert str(tmp_path / "cli" / name) in result.out
        cli = (tmp_path / "cli" / name).read_bytes()
        assert cli == (tmp_path / "api" / name).read_bytes(), name
    assert "agree" in (tmp_path / "api" / "report.md").read_text(encoding="utf-8")


# ------------------------------------------------- the stored demo and glyphs studies

#: Real runs of the embedded cases, stored as ``thaw run`` left them: the shortened demo the
#: README shows (``docs/example``) and a shortened glyphs study (``tests/fixtures``).
STORED = {
    "demo": Path(__file__).parents[2] / "docs" / "example" / "demo.db",
    "glyphs": Path(__file__).parents[1] / "fixtures" / "glyphs.db",
}


def _markdown_verdicts(report_md: str) -> dict[int, list[str]]:
    """Trial number -> the verdicts of its row in the report's ranking table."""
    lines = report_md.splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith("| rank | trial |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    found: dict[int, list[str]] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
        text = cells.get("verdicts", "-")
        names = [] if text == "-" else [v.strip().rstrip("*") for v in text.split(",")]
        found[int(cells["trial"])] = names
    return found


def _text_verdicts(out: str) -> list[str]:
    """The verdict names ``thaw diagnose --trial N`` prints."""
    return re.findall(r"^  ([a-z_]+) \(confidence [0-9.]+\)$", out, flags=re.M)


@pytest.mark.parametrize("case", sorted(STORED))
def test_every_view_of_a_stored_real_study_agrees(case: str, tmp_path: Path, thaw: Any) -> None:
    """Report rows (Markdown and summary.json), trial notes, ``thaw diagnose --trial N`` and the
    Answer give each trial of a real demo or glyphs study the same verdicts."""
    db = tmp_path / f"{case}.db"
    shutil.copyfile(STORED[case], db)
    study_file = tmp_path / f"{case}.yaml"
    study_file.write_text(
        f"name: {case}\nobjective: val_loss\nmodel: {{source: {case}}}\n"
        f"data: {{source: {case}}}\nstorage: sqlite:///{db}\n",
        encoding="utf-8",
    )
    result = thaw("report", study_file, "--out", tmp_path / "report")
    assert result.rc == 0, result.err
    study = optuna.load_study(study_name=case, storage=f"sqlite:///{db}")
    expected = {n: names for n, names in _expected(study).items() if names}
    assert len(expected) >= 5, expected

    report_md = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    rows = _markdown_verdicts(report_md)
    summary = json.loads((tmp_path / "report" / "summary.json").read_text(encoding="utf-8"))
    ranked = {r["number"]: [v["verdict"] for v in r["verdicts"]] for r in summary["ranking"]}
    detail = _study_detail(study, tmp_path / "artifacts")
    by_title = {title: name for name, title in _VERDICT_TITLES.items()}
    notes = {
        t["number"]: [
            by_title[x]
            for x in re.findall(r"^\*\*([A-Za-z ]+)\*\* \(confidence", t["note"]["body"], re.M)
        ]
        for t in detail["trials"]
        if t.get("note", {}).get("body")
    }
    for number, names in expected.items():
        one = thaw("diagnose", study_file, "--trial", str(number))
        assert one.rc == 0, one.err
        views = {
            "report.md": rows[number],
            "summary.json": ranked[number],
            "note": notes[number],
            "thaw diagnose --trial": _text_verdicts(one.out),
        }
        assert all(v == names for v in views.values()), (number, names, views)

    from thaw.reports import get_report_info, render_markdown

    info = get_report_info(study)
    assert info.answer.best is not None and info.story is not None
    advice = info.story.advice
    assert advice is not None and advice.number == info.answer.best.number
    assert summary["best"]["number"] == advice.number
    assert advice.verdict == expected[advice.number][0]
    # The line that names the recommended (or best-so-far) trial's configuration states its
    # own verdict and that verdict's advice.
    answer = render_markdown(info).split("## Answer", 1)[1].split("\n## ", 1)[0]
    lead = next(line for line in answer.splitlines() if advice.sentence in line)
    assert f"trial {advice.number}: unfrozen_layers" in lead
    assert f"Its own verdict is {advice.verdict}" in lead
