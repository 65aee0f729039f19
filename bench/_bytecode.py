"""Bytecode for the project's own packages, as the runtime image ships it.

The image carries a ``.pyc`` beside every ``.py`` (``pipeline/build/bytecode.py``), and
its pods run with ``PYTHONDONTWRITEBYTECODE=1`` on a read-only root, so a deployed
runtime never compiles its modules. A benchmark child started from a source checkout
under the same ``PYTHONDONTWRITEBYTECODE=1`` would compile every module of ``pipeline``
and ``secure_runtime`` from source at each start (measured: 145-150 ms of CPU per start
on the 2-core machine of docs/performance.md), a cost no pod pays and the plain
baseline, whose imports are pip-installed with their bytecode, never pays either.
"""

from __future__ import annotations

import compileall
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "secure_runtime", "bench")


def compile_project() -> None:
    """Write ``__pycache__`` bytecode for the checkout's packages (git ignores it).

    Timestamp-checked, like the interpreter's own: a source edited later is compiled
    afresh, never served from a stale ``.pyc``.
    """
    for package in PACKAGES:
        if not compileall.compile_dir(str(ROOT / package), quiet=1):
            raise SystemExit(f"bench: cannot compile {ROOT / package}")
