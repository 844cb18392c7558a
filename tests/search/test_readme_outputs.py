"""Outputs the README shows come from running their commands now."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from thaw.search._cli import main

REPO = Path(__file__).resolve().parents[2]


def test_the_readme_diagnose_history_example_is_what_the_command_prints(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```\n\$ (thaw diagnose --history [^\n]+)\n(.*?)```", readme, re.S)
    assert block is not None, "the README's thaw diagnose --history example is gone"
    command, shown = block.group(1), block.group(2)
    monkeypatch.chdir(REPO)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(command.split()[1:])
    assert rc == 0
    assert out.getvalue() == shown
