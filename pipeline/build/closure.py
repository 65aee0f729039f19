"""Which first-party modules the runtime image carries: the import closure of ``secure_runtime``.

Why a closure and not a list: a hand-written list of ``pipeline`` parts drifted from what
the runtime imports (``pipeline._fileio`` was missing, so pulling a model by digest
failed inside the image while every test that ran the runtime from the venv passed), and
it carried whole packages the runtime never loads. The closure is computed from the
sources, never by importing them: every ``import``/``from ... import`` at module level
*and* inside functions, relative imports resolved against the file's package, ``from x
import y`` counted as the module ``x.y`` when that is one, and string literals that name a
first-party module (``importlib.import_module("...")`` and the lazy facades' tables in
``pipeline/_facade.py`` style ``__init__`` files), plus every parent package of a module
(its ``__init__`` runs first). Only first-party packages (``pipeline``, ``secure_runtime``)
are followed; third-party code comes from the locked wheels.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import BuildError

#: The packages whose sources are searched; everything else is third party (the lock).
FIRST_PARTY = ("pipeline", "secure_runtime")
_SKIP_DIRS = frozenset({"__pycache__"})


@dataclass(frozen=True)
class SourceModule:
    """One first-party module: its dotted name, its file, and its path below the source root."""

    name: str
    path: Path
    relative: str  # e.g. "pipeline/oci/__init__.py"

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"


def source_root() -> Path:
    """The directory that holds ``pipeline/`` and ``secure_runtime/`` (the repository)."""
    return Path(__file__).resolve().parents[2]


def find_modules(root: Path, packages: Iterable[str] = FIRST_PARTY) -> dict[str, SourceModule]:
    """Every ``.py`` file of ``packages`` under ``root``, by dotted module name."""
    found: dict[str, SourceModule] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root)
            if any(part in _SKIP_DIRS or part.startswith(".") for part in rel.parts):
                continue
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join(parts)
            found[name] = SourceModule(name, path, rel.as_posix())
    return found


def _relative_base(module: SourceModule, level: int, name: str | None) -> str:
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    base = package.split(".") if package else []
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, *([name] if name else [])])


def imports_of(module: SourceModule, known: Mapping[str, SourceModule]) -> set[str]:
    """First-party modules ``module`` may import, wherever in the file the import is."""
    try:
        tree = ast.parse(module.path.read_bytes(), filename=str(module.path))
    except SyntaxError as exc:
        raise BuildError(f"{module.relative}: cannot parse for the import closure: {exc}") from None
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = (_relative_base(module, node.level, node.module) if node.level
                    else node.module or "")
            targets.add(base)
            # ``from pkg import mod`` imports the module pkg.mod when there is one.
            targets.update(f"{base}.{alias.name}" for alias in node.names
                           if f"{base}.{alias.name}" in known)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # import_module("pipeline.x"), __import__, lazy tables: a literal that names a
            # first-party module is an import the AST cannot otherwise see.
            if node.value in known:
                targets.add(node.value)
    return {t for t in targets if t.split(".")[0] in FIRST_PARTY}


def import_closure(roots: Iterable[str], known: Mapping[str, SourceModule]) -> set[str]:
    """Every module of ``known`` that loading ``roots`` can load, parent packages included.

    A name that is not a module of ``known`` (an attribute imported with ``import
    pipeline.x.Name`` spelled as a module, a module that does not exist) is ignored for the
    walk; its parent packages still count.
    """
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        name = stack.pop()
        parts = name.split(".")
        stack += [".".join(parts[:k]) for k in range(1, len(parts)) if ".".join(parts[:k])
                  not in seen]
        if name in seen or name not in known:
            continue
        seen.add(name)
        stack += sorted(imports_of(known[name], known) - seen)
    return seen


def runtime_modules(root: Path | None = None) -> list[SourceModule]:
    """The first-party modules the runtime image carries, sorted by path.

    Roots: every module of ``secure_runtime`` (the runtime package ships whole); the
    ``pipeline`` part is whatever those reach.
    """
    base = root or source_root()
    known = find_modules(base)
    roots = [name for name in known if name.split(".")[0] == "secure_runtime"]
    if not roots:
        raise BuildError(f"{base}: no secure_runtime package to compute the closure from")
    closure = import_closure(roots, known)
    return sorted((known[name] for name in closure), key=lambda m: m.relative)
