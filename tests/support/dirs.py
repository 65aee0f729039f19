"""A temporary directory every uid may search, for what pods (another uid) must reach.

Why not ``tmp_path``: pytest's own temporary root is 0700, which is exactly what a pod's
uid cannot pass (pipeline/deploy/reach.py).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def searchable_tmpdir(prefix: str) -> Iterator[Path]:
    """A 0755 directory under /tmp; removed afterwards, whatever modes the test set."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        for path in base.rglob("*"):
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(base)
