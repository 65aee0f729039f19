"""The kernel's own view of this process's mappings (``/proc/self/maps`` and ``smaps``).

Tests of the plaintext buffers assert what the kernel did (pages resident, locked,
excluded from core dumps, backed by no file), not what our code believes it asked for.
"""

from __future__ import annotations

from pathlib import Path


def _holds(head: str, address: int) -> bool:
    low, high = (int(x, 16) for x in head.split("-"))
    return low <= address < high


def smaps_entry(address: int) -> dict[str, str]:
    """The ``/proc/self/smaps`` fields (``Rss``, ``Locked``, ``VmFlags``...) of the
    mapping holding ``address``; empty when none does."""
    entry: dict[str, str] = {}
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and ":" not in head:
            inside = _holds(head, address)
        elif inside:
            key, _, value = line.partition(":")
            entry[key] = value.strip()
    return entry


def vm_flags(address: int) -> set[str]:
    """The two-letter ``VmFlags`` of the mapping holding ``address`` (``lo`` locked,
    ``dd`` no dump, ``hg``/``nh`` huge-page advice)."""
    return set(smaps_entry(address)["VmFlags"].split())


def kib(entry: dict[str, str], field: str) -> int:
    """A size field of :func:`smaps_entry` (``"2048 kB"``) in KiB."""
    return int(entry[field].split()[0])


def maps_line(address: int) -> str:
    """The ``/proc/self/maps`` line of the mapping holding ``address``."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        if _holds(line.split()[0], address):
            return line
    raise AssertionError(f"no mapping holds {address:#x}")
