"""What creating a file costs on a directory's disk right now (shared by the benches).

Why measured beside every unpack figure: on this VM the root disk's inode allocation
moves between ~10 and ~350 us per file within the hour (load from outside the machine),
and unpacking an image pays it once per file, so an unpack figure means little without
the latency it ran at.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path


def create_latency(directory: Path, count: int = 2000) -> float:
    """Microseconds to create and write one fresh 3 KB file in ``directory``."""
    target = Path(tempfile.mkdtemp(prefix="bench-create-", dir=directory))
    data = b"x" * 3000
    try:
        start = time.monotonic()
        for index in range(count):
            fd = os.open(target / f"f{index}", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
            os.write(fd, data)
            os.close(fd)
        return (time.monotonic() - start) / count * 1e6
    finally:
        shutil.rmtree(target, ignore_errors=True)
