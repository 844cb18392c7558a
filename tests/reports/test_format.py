from __future__ import annotations

import ast
from pathlib import Path

import pytest

from thaw.reports._format import fmt_num, fmt_seconds, fmt_value, md_escape, md_table, md_table_code

REPORTS_DIR = Path(__file__).resolve().parents[2] / "reports"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "-"),
        (3, "3"),
        (0.38, "0.38"),
        (0.123456, "0.1235"),
        (3e-4, "0.0003"),
        (1.5e-5, "1.5e-05"),
        (1234567.0, "1.235e+06"),
        (-0.0, "0"),
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        (True, "True"),
    ],
)
def test_fmt_num(value: float | int | None, expected: str) -> None:
    assert fmt_num(value) == expected


def test_fmt_value_and_seconds() -> None:
    assert fmt_value("adapt") == "adapt"
    assert fmt_value(None) == "-"
    assert fmt_value(0.30000000000000004) == "0.3"
    assert fmt_seconds(610.5) == "610" and fmt_seconds(5.0) == "5.0"
    assert fmt_seconds(None) == "-"


def test_md_escape() -> None:
    assert md_escape("a|b\nc\r\nd") == "a\\|b c d"
    assert md_escape("<img src=x>") == "\\<img src=x\\>"
    assert md_escape("[x](javascript:1) `code` *em*") == "\\[x\\](javascript:1) \\`code\\` \\*em\\*"
    assert md_escape("learning_rate") == "learning_rate"  # readable in a terminal
    assert md_escape("back\\slash") == "back\\\\slash"


def test_md_table_code() -> None:
    assert md_table_code("sqlite:///a|b.db") == "`sqlite:///a\\|b.db`"
    assert md_table_code("has `tick`") == "has \\`tick\\`"


def test_md_table_aligns_columns() -> None:
    table = md_table(["name", "n"], [["a", "1"], ["longer", "123"]], ["left", "right"])
    assert table.splitlines() == [
        "| name   |   n |",
        "| ------ | --: |",
        "| a      |   1 |",
        "| longer | 123 |",
    ]
    with pytest.raises(ValueError, match="2 cells for 1 columns"):
        md_table(["x"], [["a", "b"]])


def test_reports_imports_no_training_code() -> None:
    """``reports/`` reads storage only: no Keras, TensorFlow, JAX, objectives or search."""
    forbidden = ("keras", "tensorflow", "jax", "objectives", "search", "matplotlib")
    for path in sorted(REPORTS_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"
