"""``thaw inspect``: what each value of ``unfrozen_layers`` unfreezes, top first.

The CLI runs in-process (``thaw.search._cli.main``) on the demo CNN, a real MobileNetV2 (random
weights) and a saved ``.keras`` file; one bad source runs as a real subprocess.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from thaw.objectives import (
    APPLICATION_NAMES,
    ModelSource,
    count_trainable_weights,
    freeze,
    load_pretrained,
)

if TYPE_CHECKING:
    from conftest import CliResult  # tests/search/conftest.py, a fixture module

ROW = re.compile(r"^\s*(\d+)\s+(\S+)\s+(.+?)\s+([\d,]+)\s+([\d,]+)$")


@dataclass
class Row:
    unfrozen: int
    name: str
    kind: str
    params: int
    cumulative: int


def header(result: CliResult) -> str:
    """The first line of ``thaw inspect``'s output: the model, its input and its layer count."""
    return result.out.splitlines()[0]


def table(result: CliResult) -> list[Row]:
    """The rows of ``thaw inspect``'s table, top layer (or block) first."""
    lines = result.out.splitlines()
    assert lines[1].startswith("(BatchNorm layers are not counted")
    assert lines[2].split() == ["unfrozen", "name", "kind", "params", "trainable", "if", "unfrozen"]
    rows = []
    for line in lines[3:]:
        if line.split()[0] == "cut" or line.startswith("The top classifier"):
            continue  # the source classifier cut off by default, marked, not counted
        match = ROW.match(line)
        assert match, f"not a table row: {line!r}"
        u, name, kind, params, cumulative = match.groups()
        rows.append(
            Row(
                int(u),
                name,
                kind.strip(),
                int(params.replace(",", "")),
                int(cumulative.replace(",", "")),
            )
        )
    return rows


@pytest.fixture
def inspect(thaw: Callable[..., CliResult]) -> Callable[..., CliResult]:
    return functools.partial(thaw, "inspect")


def assert_cumulative(rows: list[Row]) -> None:
    assert [r.unfrozen for r in rows] == list(range(1, len(rows) + 1))
    total = 0
    for row in rows:
        assert row.params > 0
        total += row.params
        assert row.cumulative == total
    assert all(a.cumulative < b.cumulative for a, b in zip(rows, rows[1:], strict=False))


MOBILENET_ARGS = ("MobileNetV2", "--weights", "none", "--input-shape", "96,96,3", "--alpha", "0.35")


# --------------------------------------------------------------------------------- sources


def test_inspect_demo(demo_model_path: Path, inspect: Callable[..., CliResult]) -> None:
    result = inspect("demo")
    assert result.rc == 0, result.err
    assert result.err == ""
    assert header(result).startswith("demo CNN pretrained on the source domain (seed 0)")
    assert header(result).endswith(": input (32, 32, 3), 5 layers with weights")
    rows = table(result)
    assert [r.name for r in rows] == [
        "top_conv",
        "block4_conv",
        "block3_conv",
        "block2_conv",
        "block1_conv",
    ]
    assert {r.kind for r in rows} == {"Conv2D"}
    assert_cumulative(rows)

    # each row's cumulative count is what freeze() really makes trainable
    pretrained = load_pretrained(ModelSource("demo"))
    for row in rows:
        base = pretrained.instantiate()
        freeze(base, row.unfrozen)
        assert count_trainable_weights(base) == row.cumulative, row


def test_inspect_mobilenet_by_blocks(inspect: Callable[..., CliResult]) -> None:
    result = inspect(*MOBILENET_ARGS, "--unfreeze-by", "blocks")
    assert result.rc == 0, result.err
    assert header(result) == (
        "keras.applications.MobileNetV2 (weights: None): input (96, 96, 3), 19 blocks with weights"
    )
    rows = table(result)
    names = [r.name for r in rows]
    assert names[0] == "Conv_1"
    assert names[-1] == "Conv1"
    for i in range(1, 16):
        assert names.index(f"block_{i + 1}") < names.index(f"block_{i}")
    assert names.index("block_16") == 1
    assert all(rows[names.index(f"block_{i}")].kind == "3 layers" for i in range(1, 17))
    assert len(set(names)) == len(names)  # a block is one row, never split over rows
    assert_cumulative(rows)

    pretrained = load_pretrained(
        ModelSource(
            kind="application",
            name="MobileNetV2",
            weights=None,
            input_shape=(96, 96, 3),
            alpha=0.35,
            unfreeze_by="blocks",
        )
    )
    assert pretrained.num_layers == len(rows)  # what 'unfrozen_layers: all' means in a study
    base = pretrained.instantiate()
    freeze(base, 2, unfreeze_by="blocks")
    assert count_trainable_weights(base) == rows[1].cumulative


def test_inspect_mobilenet_by_layers_has_more_rows(inspect: Callable[..., CliResult]) -> None:
    layers = inspect(*MOBILENET_ARGS)
    blocks = inspect(*MOBILENET_ARGS, "--unfreeze-by", "blocks")
    assert layers.rc == blocks.rc == 0
    assert header(layers).endswith("52 layers with weights")
    assert [r.name for r in table(layers)[:4]] == [
        "Conv_1",
        "block_16_project",
        "block_16_depthwise",
        "block_16_expand",
    ]
    assert len(table(blocks)) < len(table(layers))
    # the same weights in all: the last cumulative counts are the whole base
    assert table(layers)[-1].cumulative == table(blocks)[-1].cumulative


def test_inspect_a_saved_keras_file(
    tmp_path: Path, tiny_cnn: Callable[..., Any], inspect: Callable[..., CliResult]
) -> None:
    path = tmp_path / "tiny.keras"
    tiny_cnn().save(path)

    default = inspect(path)
    assert default.rc == 0, default.err
    assert header(default) == (
        "tiny.keras, top classifier 'old_head' (Dense, softmax, 3 outputs) cut: input (8, 8, 3), "
        "2 layers with weights"
    )
    marked = [line.split() for line in default.out.splitlines() if line.split()[:1] == ["cut"]]
    assert marked == [["cut", "old_head", "Dense", "softmax", "21", "(not", "in", "the", "base)"]]
    assert [r.name for r in table(default)] == ["conv2", "conv1"]
    assert "--cut-at none keeps the whole model" in default.out

    whole = inspect(path, "--cut-at", "none")
    assert whole.rc == 0, whole.err
    assert header(whole) == "tiny.keras: input (8, 8, 3), 3 layers with weights"
    assert [(r.name, r.kind, r.params) for r in table(whole)] == [
        ("old_head", "Dense", 6 * 3 + 3),
        ("conv2", "Conv2D", 3 * 3 * 4 * 6 + 6),
        ("conv1", "Conv2D", 3 * 3 * 3 * 4 + 4),
    ]
    assert_cumulative(table(whole))

    cut = inspect(path, "--cut-at", "features")
    assert cut.rc == 0, cut.err
    assert header(cut) == "tiny.keras, cut at 'features': input (8, 8, 3), 2 layers with weights"
    assert [(r.name, r.cumulative) for r in table(cut)] == [("conv2", 222), ("conv1", 334)]


# ------------------------------------------------------------------------------ bad input


def test_unknown_source_is_one_line(tmp_path: Path, inspect: Callable[..., CliResult]) -> None:
    result = inspect(tmp_path / "nope.keras")
    assert result.rc == 2
    assert result.out == ""
    assert f"'{tmp_path / 'nope.keras'}' is neither 'demo', a keras.applications name" in (
        result.error_line
    )
    assert ", ".join(APPLICATION_NAMES) in result.error_line
    assert result.error_line.endswith("nor an existing model file")


@pytest.mark.parametrize("shape", ["96,96", "96,96,3,1", "a,b,c", ""])
def test_bad_input_shape(inspect: Callable[..., CliResult], shape: str) -> None:
    result = inspect("MobileNetV2", "--input-shape", shape)
    if shape == "":
        # an empty value means "not given": the default 224x224 input
        assert result.rc == 0, result.err
        assert "input (224, 224, 3)" in header(result)
        return
    assert result.rc == 2
    assert result.error_line == (
        f"thaw: error: --input-shape must be H,W,C such as 96,96,3, got {shape!r}"
    )


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("demo", "--cut-at", "fc7"), "has no layer named 'fc7'"),
        (("MobileNetV2", "--weights", "/nonexistent/w.h5"), "weights file /nonexistent/w.h5 does"),
        (("ResNet50", "--alpha", "0.5", "--input-shape", "64,64,3"), "ResNet50 has no 'alpha'"),
        (("MobileNetV2", "--input-shape", "20,20,3"), "cannot build MobileNetV2: Input size must"),
    ],
    ids=["unknown cut", "missing weights", "alpha without alpha", "too small input"],
)
def test_bad_model_settings(
    demo_model_path: Path, inspect: Callable[..., CliResult], args: tuple[str, ...], fragment: str
) -> None:
    result = inspect(*args)
    assert result.rc == 2
    assert result.out == ""
    assert fragment in result.error_line


def run_inspect(path: Path) -> subprocess.CompletedProcess[str]:
    """``python -m thaw.search._cli inspect PATH`` with a plain shell's TensorFlow variables."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")
    }
    return subprocess.run(
        [sys.executable, "-m", "thaw.search._cli", "inspect", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_missing_file_is_one_line_in_a_real_process(tmp_path: Path) -> None:
    proc = run_inspect(tmp_path / "gone.keras")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1
    assert proc.stderr.startswith(f"thaw: error: '{tmp_path / 'gone.keras'}' is neither 'demo'")


def test_not_a_keras_file_is_one_line_in_a_real_process(tmp_path: Path) -> None:
    path = tmp_path / "notes.keras"
    path.write_text("these are my notes, not a model\n")
    proc = run_inspect(path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"thaw: error: {path} is not a Keras model file (not a .keras zip archive)"
    ]
