"""Reproducible bytecode for the image: every ``.py`` of a layer with its ``.pyc`` beside it.

Why: the runtime's root filesystem is read-only and ``PYTHONDONTWRITEBYTECODE=1``, so an
image without bytecode compiles every module it imports (torch, fastapi, ...) from source
at every start, and a pod pays that before it even begins to load its model
(docs/performance.md). Why it stays reproducible: the ``.pyc`` files are *unchecked-hash*
pycs (PEP 552: no source mtime inside, and the interpreter never re-reads the source to
validate them, which an immutable image does not need), compiled in a child interpreter
with ``PYTHONHASHSEED=0`` (set and frozenset constants marshal in hash order) with the
file's path *in the image* as its ``co_filename`` (tracebacks name the image's files, not
the build machine's), one file at a time in sorted order; the tar layer fixes every mtime
to 0 anyway. Bytecode is only valid for one interpreter version: it is compiled by a
CPython of the image's version (this one, else ``python3.11`` on PATH), or the build stops.
"""

from __future__ import annotations

import json
import posixpath
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.build._tarlayer import REG, Entry
from pipeline.errors import BuildError

#: The image's interpreter (the base layer's ``python3.11``): what the bytecode is for.
IMAGE_PYTHON = (3, 11)
CACHE_TAG = f"cpython-{IMAGE_PYTHON[0]}{IMAGE_PYTHON[1]}"
#: Part of the layer cache keys: change it when the way bytecode is made changes.
BYTECODE_FORMAT = f"bytecode-v1 {CACHE_TAG} unchecked-hash"

_COMPILER = r"""
import json, py_compile, sys
failed = []
for source, cfile, dfile in json.load(sys.stdin):
    try:
        py_compile.compile(source, cfile=cfile, dfile=dfile, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    except py_compile.PyCompileError:
        failed.append(dfile)
json.dump(failed, sys.stdout)
"""


def pyc_path(path: str) -> str:
    """Where the interpreter looks for ``path``'s bytecode: ``__pycache__/NAME.cpython-311.pyc``."""
    directory, name = posixpath.split(path)
    return posixpath.join(directory, "__pycache__", f"{name[:-3]}.{CACHE_TAG}.pyc")


def _compiler() -> str:
    if sys.version_info[:2] == IMAGE_PYTHON:
        return sys.executable
    found = shutil.which(f"python{IMAGE_PYTHON[0]}.{IMAGE_PYTHON[1]}")
    if found:
        return found
    raise BuildError(
        f"the image runs CPython {IMAGE_PYTHON[0]}.{IMAGE_PYTHON[1]}; compiling its bytecode "
        f"needs that version (this is {sys.version_info[0]}.{sys.version_info[1]} and no "
        f"python{IMAGE_PYTHON[0]}.{IMAGE_PYTHON[1]} is on PATH)"
    )


def bytecode_entries(entries: Sequence[Entry], workdir: Path) -> list[Entry]:
    """The ``.pyc`` entries for every ``.py`` file among ``entries``, written under ``workdir``.

    ``workdir`` must outlive the returned entries (they are read when the layer is packed).
    A file that does not compile (a template or another version's code that some wheels
    ship) gets no bytecode, as ``compileall`` does; the interpreter would fail on it too.
    """
    sources = sorted((e for e in entries if e.kind == REG and e.path.endswith(".py")),
                     key=lambda e: e.path)
    if not sources:
        return []
    staged = workdir / "src"
    out = workdir / "pyc"
    jobs: list[tuple[str, str, str]] = []
    for number, entry in enumerate(sources):
        if entry.source is not None:
            source = entry.source
        else:
            source = staged / f"{number}.py"
            source.parent.mkdir(parents=True, exist_ok=True)
            source.write_bytes(entry.read())
        jobs.append((str(source), str(out / pyc_path(entry.path)), "/" + entry.path))
    env = {"PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1",
           "PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"}  # fixed: the compiler's path is absolute
    proc = subprocess.run([_compiler(), "-s", "-c", _COMPILER], input=json.dumps(jobs),
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise BuildError(f"compiling the image's bytecode failed: {proc.stderr.strip()[-800:]}")
    failed = set(json.loads(proc.stdout or "[]"))
    return [
        Entry(pyc_path(entry.path), REG, 0o644, source=out / pyc_path(entry.path))
        for entry in sources
        if "/" + entry.path not in failed
    ]
