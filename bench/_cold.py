"""The cold state a runtime pod starts in: a page cache holding the model files, memory
fragmented by other files' cache, and a fresh process for every figure.

:class:`PageCacheChurn` makes the fragmentation, bounded and with files it creates (and
deletes) itself: before each fresh process it drops its own files from the page cache,
reads them all back (the cache takes free memory wherever the allocator hands it out)
and drops every other file again, which leaves free memory in holes smaller than a huge
page, pinned between cached pages. Only its own files are dropped (``posix_fadvise``),
never the node's cache (no ``drop_caches``): other processes share this machine.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import mmap
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

#: Mixed file sizes, as a node's cache of libraries, logs and datasets has.
_SIZES = (16 << 10, 48 << 10, 160 << 10, 512 << 10, 1 << 20, 96 << 10, 256 << 10, 32 << 10)
_READ = 1 << 20

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
_libc.syncfs.argtypes = [ctypes.c_int]


class PageCacheChurn:
    """``gib`` GiB of filler files under ``root`` that fragment memory on demand."""

    def __init__(self, root: Path, gib: float) -> None:
        self.root = root
        self.files: list[Path] = []
        self.total = int(gib * (1 << 30))

    def create(self) -> None:
        """Write the files once and flush them, so dropping their cache later is possible."""
        self.root.mkdir(parents=True, exist_ok=True)
        block = os.urandom(1 << 20)
        written = 0
        while written < self.total:
            size = _SIZES[len(self.files) % len(_SIZES)]
            path = self.root / f"f{len(self.files):06d}"
            path.write_bytes(block[:size])
            self.files.append(path)
            written += size
        fd = os.open(self.root, os.O_RDONLY)
        try:
            _libc.syncfs(fd)
        finally:
            os.close(fd)

    def churn(self) -> None:
        """Drop, re-read, and drop every other file: cached pages with small holes between."""
        if not self.files:
            return
        for path in self.files:
            _drop(path)
        buffer = bytearray(_READ)
        for path in self.files:
            with open(path, "rb", buffering=0) as handle:
                while handle.readinto(buffer):
                    pass
        for path in self.files[::2]:
            _drop(path)

    def remove(self) -> None:
        for path in self.files:
            path.unlink(missing_ok=True)
        self.files.clear()


def _drop(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def resident_fraction(path: Path) -> float:
    """Share of ``path``'s pages in the page cache (``mincore``); 1.0 for an empty file."""
    size = path.stat().st_size
    if size == 0:
        return 1.0
    with open(path, "rb") as handle:
        # Private and writable only so that ctypes can take its address; never written.
        mapped = mmap.mmap(handle.fileno(), 0, flags=mmap.MAP_PRIVATE,
                           prot=mmap.PROT_READ | mmap.PROT_WRITE)
    try:
        pages = -(-size // mmap.PAGESIZE)
        vector = (ctypes.c_ubyte * pages)()
        anchor = ctypes.c_char.from_buffer(mapped)
        address = ctypes.addressof(anchor)
        del anchor
        if _libc.mincore(ctypes.c_void_p(address), size, vector) != 0:
            return float("nan")
        return (pages - bytes(vector).count(0)) / pages
    finally:
        mapped.close()


def cache_files(paths: Sequence[Path]) -> float:
    """Make sure ``paths`` are in the page cache (read those that are not); lowest share before."""
    lowest = 1.0
    buffer = bytearray(8 << 20)
    for path in paths:
        share = resident_fraction(path)
        lowest = min(lowest, share)
        if share < 1.0:
            with open(path, "rb", buffering=0) as handle:
                while handle.readinto(buffer):
                    pass
    return lowest


def meminfo() -> dict[str, int]:
    """``/proc/meminfo`` in MiB."""
    values: dict[str, int] = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        found = re.match(r"(\w+):\s+(\d+) kB", line)
        if found:
            values[found.group(1)] = int(found.group(2)) >> 10
    return values


def run_fresh(args: Sequence[str], env: dict[str, str]) -> dict[str, object]:
    """``python -m bench.fresh_load ARGS`` in a new process; its JSON line."""
    done = subprocess.run([sys.executable, "-m", "bench.fresh_load", *args], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"fresh_load {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
