"""Outputs the README shows come from running their commands now.

The study examples are of ``docs/example/demo.yaml``, whose storage (``demo.db``) ships beside
it: the commands run on a copy of both, laid out as in the repository.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
from pathlib import Path

import pytest

from thaw.search._cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = Path("docs") / "example"
README = (REPO / "README.md").read_text(encoding="utf-8")


def _run(command: str) -> str:
    """What ``command`` (``thaw ...``) prints, run in the working folder; it must succeed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(command.split()[1:])
    assert rc == 0, command
    return out.getvalue()


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the example study and its storage, the working folder at its root."""
    shutil.copytree(REPO / EXAMPLE, tmp_path / EXAMPLE, ignore=shutil.ignore_patterns("*-report"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_readme_diagnose_history_example_is_what_the_command_prints(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    block = re.search(r"```\n\$ (thaw diagnose --history [^\n]+)\n(.*?)```", README, re.S)
    assert block is not None, "the README's thaw diagnose --history example is gone"
    monkeypatch.chdir(REPO)
    assert _run(block.group(1)) == block.group(2)


def test_the_readme_diagnose_trial_example_is_what_the_command_prints(example: Path) -> None:
    block = re.search(r"```\n\$ (thaw diagnose \S+\.yaml --trial \d+)\n(.*?)```", README, re.S)
    assert block is not None, "the README's thaw diagnose --trial example is gone"
    assert f" {EXAMPLE.as_posix()}/" in block.group(1)
    assert _run(block.group(1)) == block.group(2)


def test_the_readme_report_excerpt_is_the_answer_the_report_writes(example: Path) -> None:
    command = re.search(r"`(thaw report docs/example/\S+\.yaml)`", README)
    assert command is not None, "the README no longer names the example report's command"
    _run(command.group(1))
    written = (example / EXAMPLE / "demo-report" / "report.md").read_text(encoding="utf-8")
    answer = re.search(r"^## Answer\n.*?(?=^## )", written, re.S | re.M)
    assert answer is not None
    shown = re.search(r"```\n(## Answer\n.*?)```", README, re.S)
    assert shown is not None, "the README's example report is gone"
    assert shown.group(1) == answer.group(0).rstrip("\n") + "\n"
