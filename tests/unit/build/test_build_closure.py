"""The runtime image's first-party files are the import closure of ``secure_runtime``.

A tree of small packages is written for each case: the closure must follow imports at
module level and inside functions, relative imports, ``from pkg import module``,
``importlib.import_module`` with a literal name and lazy tables, pull in parent packages,
and never follow third-party names. On the real sources it must reach the modules the
runtime needs (``pipeline._fileio`` was once missing from the image) and nothing of the
CLI, build, release, policy or admission code.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pipeline.build.app import LIB_DIR, runtime_pipeline_entries
from pipeline.build.closure import find_modules, import_closure, runtime_modules
from pipeline.errors import BuildError


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def _closure(root: Path, *roots: str) -> set[str]:
    return import_closure(roots, find_modules(root))


def test_function_level_relative_and_literal_imports_are_followed(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "secure_runtime/__init__.py": "",
        "secure_runtime/main.py": """
            import json
            from . import helper

            def late():
                from pipeline.sealing import open as opener
                return opener
        """,
        "secure_runtime/helper.py": """
            import importlib

            def plugin():
                return importlib.import_module("pipeline.oci.client")
        """,
        "pipeline/__init__.py": "",
        "pipeline/errors.py": "",
        "pipeline/_cli/__init__.py": "import pipeline.build",
        "pipeline/build/__init__.py": "",
        "pipeline/sealing/__init__.py": "",
        "pipeline/sealing/open.py": "from ..errors import BuildError\n",
        "pipeline/oci/__init__.py": '_LAZY = {"Thing": "pipeline.oci.thing"}\n',
        "pipeline/oci/client.py": "import requests\n",
        "pipeline/oci/thing.py": "",
    })
    closure = _closure(root, "secure_runtime.main")
    assert closure == {
        "secure_runtime", "secure_runtime.main", "secure_runtime.helper",
        "pipeline", "pipeline.errors", "pipeline.sealing", "pipeline.sealing.open",
        "pipeline.oci", "pipeline.oci.client", "pipeline.oci.thing",
    }


def test_unreached_and_third_party_modules_stay_out(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "secure_runtime/__init__.py": "import numpy\nfrom pipeline import __version__\n",
        "pipeline/__init__.py": "__version__ = '1'\n",
        "pipeline/cli.py": "import pipeline._cli\n",
        "pipeline/_cli/__init__.py": "",
    })
    assert _closure(root, "secure_runtime") == {"secure_runtime", "pipeline"}


def test_a_file_that_does_not_parse_is_a_build_error(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"secure_runtime/__init__.py": "def broken(:\n"})
    with pytest.raises(BuildError, match="import closure"):
        runtime_modules(root)


def test_no_runtime_package_is_a_build_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="no secure_runtime"):
        runtime_modules(_tree(tmp_path, {"pipeline/__init__.py": ""}))


def test_the_real_runtime_closure() -> None:
    names = {m.name for m in runtime_modules()}
    # What pulling a model by digest needs, including the module the old list forgot.
    for needed in ("pipeline._fileio", "pipeline.oci.registry", "pipeline.sealing.artifact",
                   "pipeline.signing.model", "secure_runtime.__main__"):
        assert needed in names
    heads = {n.split(".")[1] for n in names if n.startswith("pipeline.")}
    assert not heads & {"_cli", "cli", "__main__", "build", "release", "policy", "admission",
                        "scan", "workflow", "workflows", "deploy", "distribution", "charts"}


def test_the_app_layer_ships_exactly_the_closure() -> None:
    shipped = {e.path.removeprefix(LIB_DIR + "/") for e in runtime_pipeline_entries()}
    expected = {m.relative for m in runtime_modules() if m.name.split(".")[0] == "pipeline"}
    assert shipped == expected
    assert not any(p.startswith(("pipeline/_cli/", "pipeline/build/")) for p in shipped)
    assert "pipeline/cli.py" not in shipped
