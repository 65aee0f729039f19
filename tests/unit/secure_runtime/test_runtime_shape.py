"""The runtime keeps KServe's shape: one data plane, thin adapters, start-up on top.

Imports (module level and inside functions) must point one way:
``startup`` → ``rest`` / ``grpc_service`` / ``repository`` → ``dataplane``. A
transport import in the data plane, or an adapter reaching back into start-up or
into the other adapter, is the circle ``grpc_service`` → ``server`` that this layout
replaced.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[3] / "secure_runtime"

#: module → names it must never import (anywhere in the file).
FORBIDDEN = {
    "dataplane": {"fastapi", "starlette", "uvicorn", "grpc", "secure_runtime.rest",
                  "secure_runtime.grpc_service", "secure_runtime.startup",
                  "secure_runtime.repository", "secure_runtime.proto"},
    "rest": {"grpc", "uvicorn", "secure_runtime.grpc_service", "secure_runtime.startup",
             "secure_runtime.repository", "secure_runtime.proto"},
    "grpc_service": {"fastapi", "starlette", "uvicorn", "secure_runtime.rest",
                     "secure_runtime.startup", "secure_runtime.repository"},
    "repository": {"fastapi", "starlette", "uvicorn", "grpc", "secure_runtime.rest",
                   "secure_runtime.grpc_service", "secure_runtime.startup"},
}


def imported(path: Path) -> set[str]:
    """Every module an ``import`` or ``from … import`` in ``path`` names, at any depth."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module if node.level == 0 else f"secure_runtime.{node.module}"
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _hits(names: set[str], banned: set[str]) -> list[str]:
    return sorted(n for n in names for b in banned if n == b or n.startswith(b + "."))


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_imports_point_one_way(module: str) -> None:
    assert _hits(imported(PACKAGE / f"{module}.py"), FORBIDDEN[module]) == []


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from secure_runtime.startup import serve\n    import grpc\n")
    assert _hits(imported(probe), FORBIDDEN["rest"]) == ["grpc", "secure_runtime.startup",
                                                         "secure_runtime.startup.serve"]


def test_the_public_names_import() -> None:
    from pipeline.signing.model import Trust as SigningTrust
    from secure_runtime import Trust, load_sealed
    from secure_runtime.loader import load_sealed as loader_load_sealed

    assert Trust is SigningTrust
    assert load_sealed is loader_load_sealed


def test_a_missing_runtime_extra_is_a_config_error_naming_it() -> None:
    """``python -m secure_runtime`` where the [runtime] extra is absent: exit 3, one line."""
    import subprocess
    import sys

    script = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'uvicorn':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from secure_runtime.__main__ import main\n"
        "sys.exit(main(['--model', '/nonexistent']))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 3, out.stderr
    assert "'secure-model-pipeline[runtime]'" in out.stderr and "Traceback" not in out.stderr
