"""What ``pip install`` puts on the path, and that the declared dependencies are the used ones."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
CODE_DIRS = ("thaw", "search", "objectives", "reports")
#: distribution -> import name, where they differ
IMPORT_NAMES = {
    "pyyaml": "yaml",
    "pillow": "PIL",
    "optuna-dashboard": "optuna_dashboard",
    "keras-tuner": "keras_tuner",
    "keras-hub": "keras_hub",
    "psycopg": "psycopg",
    "grpcio": "grpc",
    "tensorflow-cpu": "tensorflow",
}
#: declared for the benchmark (bench/), not imported by the package itself
BENCH_ONLY = {"keras-tuner"}
#: imported only when the user picked that Keras backend and installed it themselves
USER_INSTALLED = {"torch"}


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~\[;]", requirement, maxsplit=1)[0].lower()


def _imported(module: str, dirs: tuple[str, ...]) -> bool:
    pattern = re.compile(rf"^\s*(import|from)\s+{re.escape(module)}\b", re.MULTILINE)
    return any(
        pattern.search(path.read_text(encoding="utf-8"))
        for d in dirs
        for path in (REPO / d).rglob("*.py")
    )


@pytest.mark.parametrize("requirement", _pyproject()["project"]["dependencies"])
def test_every_declared_dependency_is_imported(requirement: str) -> None:
    name = _name(requirement)
    module = IMPORT_NAMES.get(name, name.replace("-", "_"))
    dirs = ("bench",) if name in BENCH_ONLY else CODE_DIRS
    if name in BENCH_ONLY and not _imported(module, dirs):
        pytest.skip(f"{name} is kept for the KerasTuner comparison bench, not in this tree yet")
    assert _imported(module, dirs), f"{name} is declared but {module} is never imported"


def _third_party_imports() -> set[str]:
    modules: set[str] = set()
    for d in CODE_DIRS:
        for path in (REPO / d).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    modules |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules.add(node.module.split(".")[0])
    return {m for m in modules if m not in sys.stdlib_module_names and m != "thaw"}


def _declared_imports() -> set[str]:
    project = _pyproject()["project"]
    requirements = [*project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        requirements += extra
    return {IMPORT_NAMES.get(_name(r), _name(r).replace("-", "_")) for r in requirements}


@pytest.mark.parametrize("module", sorted(_third_party_imports()))
def test_every_imported_package_is_declared(module: str) -> None:
    if module in USER_INSTALLED:
        pytest.skip(f"{module} is a Keras backend the user installs")
    assert module in _declared_imports(), (
        f"{module} is imported but neither a dependency nor in an extra of pyproject.toml"
    )


@pytest.mark.parametrize(
    ("extra", "module"),
    [
        ("postgres", "psycopg"),
        ("cluster", "grpc"),
        ("kerashub", "keras_hub"),
        ("parquet", "pyarrow"),
    ],
)
def test_optional_parts_are_extras_imported_lazily(extra: str, module: str) -> None:
    extras = _pyproject()["project"]["optional-dependencies"]
    assert extra in extras
    declared = {_name(r) for r in _pyproject()["project"]["dependencies"]}
    assert not {_name(r) for r in extras[extra]} & declared


@pytest.mark.slow
def test_the_wheel_installs_only_the_thaw_package(tmp_path: Path) -> None:
    # Build from a copy, so no build/ folder is left in the repository.
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name if source.exists() else _mkdir(source) / name)
    for name in CODE_DIRS:
        shutil.copytree(REPO / name, source / name, ignore=ignore)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(tmp_path),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("thaw_keras-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/", 1)[0] for name in names}
    dist_info = {t for t in top if t.endswith(".dist-info")}
    assert top - dist_info == {"thaw"}, sorted(top)
    for module in (
        "thaw/__init__.py",
        "thaw/_api.py",
        "thaw/search/_config.py",
        "thaw/objectives/_objective.py",
        "thaw/reports/__init__.py",
    ):
        assert module in names
    (info,) = dist_info
    assert f"{info}/entry_points.txt" in names


def test_the_mypy_link_tree_mirrors_the_installed_layout() -> None:
    tree = REPO / ".mypy" / "thaw"
    expected = {p.name for p in (REPO / "thaw").glob("*.py")} | {"search", "objectives", "reports"}
    assert {p.name for p in tree.iterdir()} == expected, "update .mypy/thaw (links)"
    for name in expected:
        link = tree / name
        target = REPO / "thaw" / name if name.endswith(".py") else REPO / name
        assert link.is_symlink() and link.resolve() == target.resolve(), name


def _readme_extras_table() -> list[dict[str, str]]:
    """The rows of the README's install table: extra, what it is for, how to install it."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("### Installing TensorFlow and the extras", 1)[1].split("\n#", 1)[0]
    lines = [line.strip() for line in section.splitlines() if line.strip().startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == ["extra", "for", "install"], header
    return [
        dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=True))
        for line in lines[2:]  # after the header and its --- row
    ]


def test_the_readme_install_table_lists_every_extra() -> None:
    rows = _readme_extras_table()
    listed = [row["extra"].strip("`") for row in rows]
    assert len(listed) == len(set(listed)), f"an extra is listed twice: {listed}"
    assert set(listed) == set(_pyproject()["project"]["optional-dependencies"])


@pytest.mark.parametrize("row", _readme_extras_table(), ids=lambda row: row["extra"].strip("`"))
def test_each_readme_extra_says_what_it_is_for_and_installs_it(row: dict[str, str]) -> None:
    extra = row["extra"].strip("`")
    assert len(row["for"]) > 10, f"{extra}: say what the extra is for"
    match = re.search(r"pip install -e '\.\[([a-z,-]+)\]'", row["install"])
    assert match and extra in match[1].split(","), f"{extra}: {row['install']!r}"
    assert set(match[1].split(",")) <= set(_pyproject()["project"]["optional-dependencies"])
