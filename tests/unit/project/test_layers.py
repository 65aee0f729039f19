"""Layers point one way (docs/architecture.md): a wrong-way import anywhere fails here.

Every ``.py`` file of ``pipeline/``, ``secure_runtime/`` and ``workflows/`` is parsed
(never imported) and every import is collected: module level *and* inside functions,
``import x`` and ``from x import y`` (``y`` counts as the module ``x.y`` when it is
one), relative imports resolved against the file's package, and string literals that
name a module of the project (``importlib.import_module("...")``, lazy-import tables).

    ground        pipeline (root), errors, config, _fileio, _process, _pkcs11, _facade, _lru,
                  _json, _pages, _sarif
    core          oci  ->  signing  ->  sealing      (each may import the ones left of it)
    capabilities  distribution, build, scan, charts, policy, admission, release, workflow,
                  deploy, report, and the workflow definitions (workflows/ = pipeline.workflows)
    interface     _cli, cli, __main__

A layer may import its own package, the layers below it, and (capabilities only) the
capabilities listed for it in CAPABILITY_DEPS. ``secure_runtime`` sits beside the
capabilities: ground and core only. Nothing in ``pipeline`` imports ``secure_runtime``.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("pipeline", "secure_runtime", "workflows")

GROUND = frozenset({"pipeline", "pipeline.errors", "pipeline.config", "pipeline._fileio",
                    "pipeline._process", "pipeline._pkcs11", "pipeline._facade",
                    "pipeline._lru", "pipeline._json", "pipeline._pages",
                    "pipeline._sarif"})
#: Core packages in order: each may import only the ones before it.
CORE = ("oci", "signing", "sealing")
#: Capabilities and the other capabilities each may use (a DAG; no entry, no edge).
CAPABILITY_DEPS: dict[str, frozenset[str]] = {
    "distribution": frozenset(),
    "build": frozenset(),
    "scan": frozenset(),
    "charts": frozenset(),  # Helm rendering (pipeline/charts), shared by every chart user
    # The model policy reads model artifacts and their attached signatures (issue 13);
    # charts given to the PR check are rendered through pipeline/charts.
    "policy": frozenset({"distribution", "charts"}),
    "admission": frozenset({"policy"}),
    # The local canary runs on LocalCluster's pods (pipeline/release/cluster_target.py):
    # deploy never imports release, so the edge points one way.
    "release": frozenset({"policy", "charts", "deploy"}),
    # --isolation image runs each step in an image pulled and unpacked by deploy's
    # ImageCache (one unpacker for pods and steps); deploy never imports workflow.
    "workflow": frozenset({"workflows", "deploy"}),
    "workflows": frozenset(),  # the Hera definitions (workflows/, installed as pipeline.workflows)
    # Local deploys render through pipeline/charts (the one render path) and check images
    # against the image policy (--image-policy), as admission would.
    "deploy": frozenset({"charts", "policy"}),
    # The evidence report reads the GitOps repository's records (issue 12).
    "report": frozenset({"release"}),
}
INTERFACE = frozenset({"_cli", "cli", "__main__"})


@dataclass(frozen=True)
class Import:
    """One import found in a source file: who, where, what."""

    source: str  # importing module
    path: str  # file, relative to the repository
    line: int
    target: str  # imported module (resolved, absolute)


# ------------------------------------------------------------------------ collecting


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def known_modules(root: Path = ROOT) -> set[str]:
    names: set[str] = set()
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            names.add(module_name(path, root))
    return names


def _ours(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def _is_import_call(node: ast.Call) -> bool:
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return name in ("import_module", "__import__")


def imports_in(source: str, module: str, is_package: bool, known: set[str],
               path: str = "<string>") -> list[Import]:
    """Every project module ``source`` (the text of ``module``) imports, wherever it does."""
    tree = ast.parse(source)
    package = module if is_package else module.rpartition(".")[0]
    found: list[Import] = []

    def add(node: ast.AST, target: str) -> None:
        item = Import(module, path, getattr(node, "lineno", 0), target)
        if target and _ours(target) and item not in found:
            found.append(item)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(node, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                if node.level > 1:
                    base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            add(node, target)
            for alias in node.names:
                if f"{target}.{alias.name}" in known:
                    add(node, f"{target}.{alias.name}")
        elif isinstance(node, ast.Call) and _is_import_call(node) and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                add(node, first.value)  # importlib.import_module("secure_runtime")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # a dotted module name in a lazy-import table ({"Trust": "pipeline.signing.model"});
            # a bare package name ("secure_runtime") is too often just a word to count
            if "." in node.value and node.value in known and node.value != module:
                add(node, node.value)
        elif isinstance(node, ast.JoinedStr) and node.values:
            first = node.values[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                prefix = first.value.rstrip(".")
                if "." in first.value and prefix in known and prefix != module:
                    add(node, prefix)  # import_module(f"pipeline._cli.{name}")
    return found


def all_imports(root: Path = ROOT) -> list[Import]:
    known = known_modules(root)
    result: list[Import] = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            result.extend(
                imports_in(path.read_text(encoding="utf-8"), module_name(path, root),
                           path.name == "__init__.py", known, str(path.relative_to(root)))
            )
    return result


# ------------------------------------------------------------------------------ rules


def component(module: str) -> tuple[str, str]:
    """``(layer, unit)`` of a module: the unit is what the dependency rules name."""
    parts = module.split(".")
    if parts[0] == "secure_runtime":
        return "runtime", "secure_runtime"
    if parts[0] == "workflows":
        return "capability", "workflows"
    if module in GROUND:
        return "ground", module
    head = parts[1]
    if head == "workflows":  # pipeline.workflows: the definitions, wherever packaging puts them
        return "capability", "workflows"
    if head in CORE:
        return "core", head
    if head in CAPABILITY_DEPS:
        return "capability", head
    if head in INTERFACE:
        return "interface", "interface"
    return "unassigned", module


def violation(source: str, target: str) -> str | None:
    """Why ``source`` may not import ``target`` (None when it may)."""
    s_layer, s_unit = component(source)
    t_layer, t_unit = component(target)
    if s_layer == "unassigned":
        return f"{source} belongs to no layer: add it to tests/unit/project/test_layers.py and docs"
    if t_layer == "unassigned":
        return f"{target} belongs to no layer: add it to tests/unit/project/test_layers.py and docs"
    if s_unit == t_unit:
        return None
    if t_layer == "runtime":
        return "nothing in pipeline imports secure_runtime (the runtime sits on top of core)"
    if t_layer == "ground":
        return None
    if s_layer == "ground":
        return f"ground imports nothing above it ({t_layer} {t_unit})"
    if s_layer == "interface":
        return None
    if t_layer == "interface":
        return "only the interface imports the interface (_cli, cli)"
    if s_layer in ("core", "runtime") and t_layer == "capability":
        return f"{s_layer} may not import the capability {t_unit}"
    if s_layer == "core" and t_layer == "core":
        if CORE.index(t_unit) > CORE.index(s_unit):
            return f"core order is {' -> '.join(CORE)}: {s_unit} may not import {t_unit}"
        return None
    if s_layer == "capability" and t_layer == "capability":
        if t_unit not in CAPABILITY_DEPS[s_unit]:
            return f"capability {s_unit} may not import capability {t_unit} (CAPABILITY_DEPS)"
    return None


def violations(imports: list[Import]) -> list[str]:
    out = []
    for item in imports:
        why = violation(item.source, item.target)
        if why:
            out.append(f"{item.path}:{item.line}: {item.source} imports {item.target}: {why}")
    return sorted(set(out))


# ------------------------------------------------------------------------------ tests


def test_no_wrong_way_import_anywhere() -> None:
    problems = violations(all_imports())
    assert not problems, "wrong-way imports:\n" + "\n".join(problems)


def test_no_import_of_another_package_private_module() -> None:
    """``pipeline.x._private`` is for ``pipeline.x``; everyone else uses its facade."""
    bad = []
    for item in all_imports():
        parts = item.target.split(".")
        for depth, part in enumerate(parts[2:], start=2):
            if part.startswith("_") and not part.startswith("__"):
                owner = ".".join(parts[:depth])
                if item.source != owner and not item.source.startswith(owner + "."):
                    bad.append(f"{item.path}:{item.line}: {item.source} imports {item.target}")
                break
    assert not bad, "\n".join(bad)


def test_every_package_has_a_layer() -> None:
    units = {component(module_name(p))[0] for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    assert "unassigned" not in units


def _importers(prefix: str) -> list[Import]:
    return [i for i in all_imports() if i.source == prefix or i.source.startswith(prefix + ".")]


# The pairs the issue names explicitly (issue 8, "Interface"); the general rule above
# already covers them, these keep them readable and impossible to relax by accident.
FORBIDDEN = [
    ("pipeline.oci", "pipeline.signing"),
    ("pipeline.oci", "pipeline.sealing"),
    ("pipeline.oci", "pipeline.policy"),
    *[("pipeline.oci", f"pipeline.{c}") for c in CAPABILITY_DEPS if c != "workflows"],
    ("pipeline.oci", "pipeline.workflows"),
    ("pipeline.oci", "workflows"),
    ("pipeline.oci", "pipeline._cli"),
    ("pipeline.oci", "pipeline.cli"),
    ("pipeline.signing", "pipeline.sealing"),
    *[("secure_runtime", f"pipeline.{name}") for name in (
        "_cli", "cli", "build", "scan", "policy", "admission", "release", "workflow",
        "distribution")],
]


@pytest.mark.parametrize(("importer", "imported"), FORBIDDEN,
                         ids=[f"{a}-x-{b}" for a, b in FORBIDDEN])
def test_forbidden_pair(importer: str, imported: str) -> None:
    bad = [i for i in _importers(importer)
           if i.target == imported or i.target.startswith(imported + ".")]
    assert not bad, "\n".join(f"{i.path}:{i.line}: {i.source} imports {i.target}" for i in bad)


def runtime_closure() -> set[str]:
    """Every project module importing ``secure_runtime`` can load (functions included)."""
    known = known_modules()
    graph: dict[str, set[str]] = {}
    for item in all_imports():
        graph.setdefault(item.source, set()).add(item.target)
    seen: set[str] = set()
    stack = [m for m in known if m.split(".")[0] == "secure_runtime"]
    while stack:
        module = stack.pop()
        if module in seen or module not in known:
            continue
        seen.add(module)
        parts = module.split(".")
        stack += [".".join(parts[:k]) for k in range(1, len(parts))]  # parent packages run too
        stack += sorted(graph.get(module, ()))
    return seen


def test_the_runtime_image_carries_the_runtime_closure() -> None:
    """The app layer ships the pipeline modules pipeline.build.closure computes; this
    test's own closure (computed independently, above) must need no more, and the image
    carries nothing of the interface or the capabilities."""
    from pipeline.build.app import LIB_DIR, runtime_pipeline_entries

    needed = {m for m in runtime_closure() if m.split(".")[0] == "pipeline"}
    assert needed, "the closure is computed"
    shipped = {module_name(Path(e.path.removeprefix(LIB_DIR + "/")), Path("."))
               for e in runtime_pipeline_entries()}
    missing = sorted(needed - shipped)
    assert not missing, f"the runtime imports these, the image lacks them: {missing}"
    layers = {component(m)[0] for m in shipped}
    assert layers <= {"ground", "core"}, layers
    assert not sorted(shipped - needed), "the image carries modules the runtime never loads"


# The checker itself must see every kind of import, or the tests above prove nothing.
KNOWN = {"pipeline", "pipeline.oci", "pipeline.oci.client", "pipeline.signing",
         "pipeline.signing.model", "pipeline.sealing", "pipeline._cli", "pipeline.errors"}


@pytest.mark.parametrize("snippet", [
    "import pipeline.signing.model",
    "from pipeline.signing import model",
    "from pipeline.signing.model import Trust",
    "def f():\n    from pipeline.signing.model import Trust\n    return Trust",
    "class C:\n    def m(self):\n        import pipeline.signing",
    "from ..signing import model",
    "from ..signing.model import Trust",
    "import importlib\nimportlib.import_module('pipeline.signing.model')",
    "_LAZY = {'Trust': 'pipeline.signing.model'}",
    "try:\n    import pipeline.signing\nexcept ImportError:\n    pass",
])
def test_checker_sees_the_import(snippet: str) -> None:
    found = imports_in(textwrap.dedent(snippet), "pipeline.oci.client", False, KNOWN)
    assert any(i.target.startswith("pipeline.signing") for i in found), found
    assert violations(found), "a wrong-way import went unnoticed"


def test_checker_allows_the_right_way() -> None:
    source = "from pipeline.oci.client import X\nfrom . import client\nimport pipeline.errors"
    found = imports_in(source, "pipeline.signing.model", False, KNOWN)
    assert {i.target for i in found} >= {"pipeline.oci.client", "pipeline.errors"}
    assert not violations(found)
