"""Fixtures for the CLI tests.

- ``thaw`` (session): runs the CLI in-process, ``thaw("run", path, "--no-progress")``, and
  returns a :class:`CliResult` with the exit status and what went to stdout and stderr.
  Session-scoped, so module-scoped fixtures that run a study once can use it too.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from thaw.search._cli import main


@dataclass(frozen=True)
class CliResult:
    rc: int
    out: str
    err: str

    @property
    def error_line(self) -> str:
        """The single stderr line of a refused command."""
        lines = self.err.splitlines()
        assert len(lines) == 1, f"expected exactly one line on stderr, got {lines!r}"
        assert lines[0].startswith("thaw: error: "), lines[0]
        return lines[0]


def run_thaw(*args: str | Path) -> CliResult:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return CliResult(rc, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def thaw() -> Callable[..., CliResult]:
    return run_thaw
