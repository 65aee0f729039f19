"""Every third-party import of the code the app layer ships for ``secure_runtime`` is installed.

Why: the runtime image carries ``secure_runtime/`` and the part of ``pipeline`` it imports
at /app/lib, and only the requirements the builder adds for it. A module imported there but missing
from those requirements (``model_signing``, ``grpc`` were) makes the real image fail at
start while every test that runs the runtime from the venv passes. This check is the fast
guard; ``tests/integration/secure_runtime/test_runtime_image.py`` is the proof.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
from pathlib import Path

from packaging.requirements import Requirement

from pipeline.build.app import RUNTIME_REQUIREMENTS
from pipeline.build.closure import runtime_modules

ROOT = Path(__file__).resolve().parents[3]
#: Imports a runtime image need not satisfy from the runtime's own requirements, and why.
NOT_FROM_RUNTIME = {
    "torch": "the project's runtime.torch / python_packages choose the torch build",
    "grpc_tools": "secure_runtime/proto/regenerate.py is a developer tool, not run in images",
    "zstandard": "pipeline/oci/layer_codec.py imports it only to read zstd image layers "
                 "(deploy, scan, build); the runtime pulls models, never image layers",
}


def _shipped_files() -> list[Path]:
    return [module.path for module in runtime_modules(ROOT)]


def _top_level_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(requirements: tuple[str, ...]) -> set[str]:
    """Distributions the requirements pull in, read from this venv's installed metadata."""
    seen: set[str] = set()
    queue = [Requirement(r) for r in requirements]
    while queue:
        req = queue.pop()
        name = _norm(req.name)
        if name in seen or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        queue += [Requirement(r) for r in md.requires(req.name) or ()]
    return seen


def test_every_runtime_import_is_a_runtime_requirement() -> None:
    imports: set[str] = set()
    for path in _shipped_files():
        imports |= _top_level_imports(path)
    third_party = sorted(
        name for name in imports
        if name not in sys.stdlib_module_names
        and name not in {"secure_runtime", "pipeline", "__future__"}
        and name not in NOT_FROM_RUNTIME
    )
    assert "model_signing" in third_party and "grpc" in third_party  # the check sees them
    provided = _closure(RUNTIME_REQUIREMENTS)
    distributions = md.packages_distributions()
    missing = {
        name: distributions.get(name, ["?"])
        for name in third_party
        if not any(_norm(d) in provided for d in distributions.get(name, []))
    }
    assert missing == {}, f"imported by the shipped runtime code, not installed: {missing}"
