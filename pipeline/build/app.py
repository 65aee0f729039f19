"""The app layer: the project's serving code (never its weights), and the secure runtime.

Why weights never enter: they are a separate sealed, signed artifact that the runtime
pulls and decrypts in memory; an image carrying them in plaintext would undo that. So
``model.weights`` and every file with a weight suffix are left out, as are hidden files
(``.env``, ``.git``) and caches. Files are read into memory once, so the bytes hashed for
the cache key are the bytes packed.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
from pathlib import Path

from pipeline.build._tarlayer import DIR, REG, Entry
from pipeline.build.closure import runtime_modules
from pipeline.build.project import ProjectSpec
from pipeline.errors import BuildError

MODEL_DIR = "app/model"
LIB_DIR = "app/lib"
WEIGHT_SUFFIXES = (
    ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".gguf", ".h5", ".pb",
    ".msgpack", ".sealed",
)
#: The runtime's requirements when ``secure_runtime/requirements.in`` does not exist: what
#: ``secure_runtime`` and the part of ``pipeline`` it carries import (gRPC endpoint, model
#: signature verification, registry pulls, PKCS#11 key provider), with pyproject's floors.
#: ``tests/unit/build/test_build_runtime_requirements.py`` checks every such import is covered.
RUNTIME_REQUIREMENTS = (
    "cryptography>=45.0", "pyyaml>=6.0", "fastapi>=0.110", "uvicorn>=0.29",
    "safetensors>=0.4.5", "numpy>=1.26", "prometheus-client>=0.20", "grpcio>=1.85.1",
    "protobuf>=7.35.1", "model-signing>=1.1.1", "pyopenssl>=24.0", "requests>=2.31",
    "python-pkcs11>=0.7",
)
_SKIP_DIRS = frozenset({"__pycache__", "node_modules"})
_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _package_root(name: str) -> Path:
    return Path(__file__).resolve().parents[2] / name


def _wanted(rel: str, spec: ProjectSpec | None) -> bool:
    parts = rel.split("/")
    if any(p.startswith(".") or p in _SKIP_DIRS for p in parts):
        return False
    if rel.endswith((".pyc", ".pyo")) or rel.lower().endswith(WEIGHT_SUFFIXES):
        return False
    if spec is None:
        return True
    if rel in {w.lstrip("./") for w in spec.weights}:
        return False
    return not any(fnmatch.fnmatch(rel, pat) or fnmatch.fnmatch(parts[-1], pat)
                   for pat in spec.exclude)


def _tree(root: Path, dest: str, spec: ProjectSpec | None) -> list[Entry]:
    """Regular files under ``root`` (sorted walk) as entries under ``dest``."""
    entries: list[Entry] = []
    real_root = root.resolve()
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        base = Path(dirpath)
        for name in sorted(files):
            path = base / name
            rel = path.relative_to(root).as_posix()
            if not _wanted(rel, spec):
                continue
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(real_root):
                    raise BuildError(f"{path}: symlink points outside {root}")
                # What gets packed is the target: an innocent name must not carry weights,
                # hidden files (.env, .git) or excluded files into the image.
                target_rel = target.relative_to(real_root).as_posix()
                if not _wanted(target_rel, spec):
                    raise BuildError(
                        f"{path}: symlink to {target_rel}, which the app layer leaves out "
                        "(weights, hidden or excluded files)"
                    )
            if not path.is_file():
                continue
            entries.append(Entry(f"{dest}/{rel}", REG, 0o644, path.read_bytes()))
    return entries


def runtime_pipeline_entries() -> list[Entry]:
    """The part of ``pipeline`` the runtime imports, at ``/app/lib/pipeline``.

    Exactly the ``pipeline`` modules of the import closure of ``secure_runtime``
    (:mod:`pipeline.build.closure`): no CLI, build, release, policy or admission code.
    """
    return [
        Entry(f"{LIB_DIR}/{module.relative}", REG, 0o644, module.path.read_bytes())
        for module in runtime_modules(_package_root("pipeline").parent)
        if module.name.split(".")[0] == "pipeline"
    ]


def app_entries(spec: ProjectSpec) -> list[Entry]:
    """Everything of the app layer: ``/app/model`` and, for the secure runtime, ``/app/lib``."""
    entries = [Entry("app", DIR, 0o755), Entry(MODEL_DIR, DIR, 0o755)]
    entries += _tree(spec.root, MODEL_DIR, spec)
    if spec.uses_secure_runtime:
        entries.append(Entry(LIB_DIR, DIR, 0o755))
        entries += _tree(_package_root("secure_runtime"), f"{LIB_DIR}/secure_runtime", None)
        entries += runtime_pipeline_entries()
    return entries


def entries_digest(entries: list[Entry]) -> str:
    """Digest of every path, kind, mode and content: the app layer's cache key."""
    digest = hashlib.sha256()
    for entry in sorted(entries, key=lambda e: e.path):
        content = hashlib.sha256(entry.read()).hexdigest() if entry.kind == REG else entry.target
        digest.update(f"{entry.path}\0{entry.kind}\0{entry.mode:o}\0{content}\n".encode())
    return "sha256:" + digest.hexdigest()


def _req_name(requirement: str) -> str:
    match = _REQ_NAME.match(requirement)
    return re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else requirement


def runtime_requirements(spec: ProjectSpec) -> tuple[str, ...]:
    """The image's python requirements: the project's, plus the runtime's when it is used.

    A project's own pin of a runtime requirement wins over the runtime's looser one.
    """
    requirements = list(spec.python_packages)
    if spec.uses_secure_runtime:
        listed = _package_root("secure_runtime") / "requirements.in"
        if listed.is_file():
            extra = [
                line.split("#", 1)[0].strip()
                for line in listed.read_text(encoding="utf-8").splitlines()
            ]
        else:
            extra = list(RUNTIME_REQUIREMENTS)
        have = {_req_name(r) for r in requirements}
        requirements += [r for r in extra if r and _req_name(r) not in have]
    return tuple(requirements)
