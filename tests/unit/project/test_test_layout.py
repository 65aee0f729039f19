"""Tests mirror the packages: a reader finds a module's tests by its path.

``tests/unit/<package>/`` and ``tests/integration/<package>/`` hold the tests of
``pipeline/<package>/`` (or of ``secure_runtime/``, ``workflows/``); the top of
``tests/unit/`` holds the tests of the top-level ``pipeline`` modules, one file named after
each. ``project/`` holds checks of the tree as a whole, ``helm/`` those of the charts. A test
file anywhere else, or a folder that names no package, fails here so the layout cannot drift.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
WHOLE_TREE = {"project"}  # checks of the tree as a whole (layers, packaging, types)
OTHER_TOP_LEVEL = {"secure_runtime", "workflows", "helm"}


def _package_folders() -> set[str]:
    pipeline = ROOT / "pipeline"
    names = {p.name for p in pipeline.iterdir() if (p / "__init__.py").is_file()}
    names.add("cli")  # pipeline/cli.py and pipeline/_cli/: one command surface
    return names | OTHER_TOP_LEVEL


def _top_level_modules() -> set[str]:
    return {p.stem.lstrip("_") for p in (ROOT / "pipeline").glob("*.py") if p.stem != "__init__"}


@pytest.mark.parametrize("kind", ["unit", "integration"])
def test_every_test_folder_names_a_package(kind: str) -> None:
    allowed = _package_folders() | WHOLE_TREE
    top = ROOT / "tests" / kind
    folders = {p.name for p in top.iterdir() if p.is_dir() and p.name != "__pycache__"}
    strays = sorted(folders - allowed)
    assert strays == [], f"tests/{kind}/ folders that name no package: {strays}"
    for folder in folders:
        assert (top / folder / "__init__.py").is_file(), f"tests/{kind}/{folder} lacks __init__.py"


def test_top_of_unit_holds_only_top_level_module_tests() -> None:
    modules = _top_level_modules()
    strays = []
    for path in (ROOT / "tests" / "unit").glob("test_*.py"):
        subject = path.stem.removeprefix("test_")
        if not any(subject == m or subject.startswith(m + "_") for m in modules):
            strays.append(path.name)
    assert strays == [], f"move these into tests/unit/<package>/: {strays}"


def test_integration_top_holds_only_the_whole_story() -> None:
    tests = sorted(p.name for p in (ROOT / "tests" / "integration").glob("test_*.py"))
    assert tests == ["test_demo.py"], tests


def test_the_layout_check_sees_a_stray(tmp_path: Path) -> None:
    """The rule itself can fail: a test named after no module is caught."""
    modules = _top_level_modules()
    assert "config" in modules and "json" in modules
    subject = "test_nosuchmodule".removeprefix("test_")
    assert not any(subject == m or subject.startswith(m + "_") for m in modules)
