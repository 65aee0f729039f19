"""What ``pip install`` puts where: ``workflows/`` is ``pipeline.workflows``, nothing else moves.

Why: the top-level ``workflows/`` folder stays (the layout is fixed) but must not claim
the generic top-level name ``workflows`` in site-packages. setuptools' ``package-dir``
maps it; that needs an explicit package list, so this checks the list against the tree,
and checks both installs users get: the editable one (from any working directory) and
the wheel.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _setuptools() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "setuptools"]


def _tree_packages() -> set[str]:
    found = {"pipeline.build.locks"}  # data-only folder (no __init__.py), listed on purpose
    for top in ("pipeline", "secure_runtime"):
        for init in (ROOT / top).rglob("__init__.py"):
            if "__pycache__" not in init.parts:
                found.add(".".join(init.parent.relative_to(ROOT).parts))
    for init in (ROOT / "workflows").rglob("__init__.py"):
        found.add(".".join(("pipeline", *init.parent.relative_to(ROOT).parts)))
    return found


def test_the_package_list_is_the_tree() -> None:
    config = _setuptools()
    assert config["package-dir"] == {"pipeline.workflows": "workflows"}
    assert set(config["packages"]) == _tree_packages()


def test_no_code_imports_a_top_level_workflows_package() -> None:
    offenders = []
    for folder in ("pipeline", "secure_runtime", "workflows", "tests", "examples", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] if isinstance(node, ast.ImportFrom)
                         and node.level == 0 else [])
                offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names
                              if n == "workflows" or n.startswith("workflows.")]
    assert offenders == []


def test_editable_install_from_another_directory(tmp_path: Path) -> None:
    code = ("import importlib.util, pipeline.workflows as w, pipeline.workflows.catalog as c; "
            "print(w.__file__); print(sorted(c.WORKFLOWS)); "
            "print(importlib.util.find_spec('workflows'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    origin, names, top_level = out.stdout.splitlines()
    assert Path(origin) == ROOT / "workflows" / "__init__.py"
    assert names == "['pr-check', 'release', 'rollback']"
    assert top_level == "None"  # no top-level "workflows" outside the repository root


@pytest.mark.slow
def test_the_wheel_installs_workflows_under_pipeline(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps",
                    "--no-build-isolation", "-q", "-w", str(tmp_path)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("secure_model_pipeline-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"pipeline", "secure_runtime"}
    expected = {f"pipeline/workflows/{p.name}" for p in (ROOT / "workflows").glob("*.py")}
    assert expected <= names and "pipeline/workflows/catalog.py" in names
    assert "pipeline/build/locks/debian-base.lock" in names
    assert "secure_runtime/proto/grpc_predict_v2_pb2.pyi" in names
    # It runs from the wheel alone: unpacked on a path with no repository in sight.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import pipeline.workflows.catalog as c, sys; "
            "assert c.__file__.startswith(sys.argv[1]), c.__file__; print(sorted(c.WORKFLOWS))")
    out = subprocess.run([sys.executable, "-c", code, str(site)], cwd=tmp_path,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "['pr-check', 'release', 'rollback']", out.stderr


def test_the_runtime_extra_and_the_runtime_image_ask_for_the_same_packages() -> None:
    """``[runtime]`` (venv installs) and the runtime image's list (pipeline/build/app.py,
    resolved into the project's lock) must not drift: a floor raised in one only would
    test one set of versions and ship another. torch is the project's choice in images."""
    from pipeline.build.app import RUNTIME_REQUIREMENTS

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extra = {r.split("#")[0].strip() for r in project["optional-dependencies"]["runtime"]}
    assert extra - set(RUNTIME_REQUIREMENTS) == {"torch==2.13.0"}
    assert not any(r.split(">=")[0].split("==")[0] in {"torch", "fastapi", "uvicorn", "grpcio"}
                   for r in project["dependencies"])
