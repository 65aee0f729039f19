"""Which Debian lock a build uses, and whether its pinned packages can still be fetched.

Why an override: the committed lock pins today's Debian versions. Debian's mirror keeps
only the current version of each package (plus the security archive's), so after a point
release or security update ``apt-get download name=version`` of a pinned package fails and
every build with the committed lock would too. ``PIPELINE_BASE_LOCK`` (or ``pipeline build
--base-lock FILE``) names another lock, e.g. one freshly written by ``pipeline lock base
--out FILE``, without touching the committed one. :func:`unavailable` is the cheap,
offline check (apt's local lists and the .deb cache, no download) that tells a CI run
whether the committed lock still works.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

from pipeline.build.debian import DEFAULT_LOCK, DebianLock, LockedPackage, deb_cache_dir
from pipeline.errors import ConfigError

ENV = "PIPELINE_BASE_LOCK"

#: names -> the (name, version) pairs apt can download (from its local package lists).
AvailableFn = Callable[[Iterable[str]], "set[tuple[str, str]]"]


def lock_path(explicit: Path | str | None = None) -> Path:
    """The lock to build with: ``explicit`` (``--base-lock``), else ``$PIPELINE_BASE_LOCK``,
    else the committed ``pipeline/build/locks/debian-base.lock``."""
    if explicit:
        return Path(explicit)
    from pipeline.config import load_settings

    return load_settings().build().base_lock or DEFAULT_LOCK


def parse_madison(text: str) -> set[tuple[str, str]]:
    """``apt-cache madison`` output -> the downloadable binary (name, version) pairs.

    Lines look like ``libc6 | 2.36-9+deb12u14 | http://... bookworm/main amd64 Packages``;
    source-package lines (``... Sources``) are not downloadable .debs and are skipped.
    """
    found: set[tuple[str, str]] = set()
    for line in text.splitlines():
        parts = [part.strip() for part in line.split("|")]
        if len(parts) == 3 and parts[0] and parts[1] and parts[2].endswith("Packages"):
            found.add((parts[0], parts[1]))
    return found


def apt_available(names: Iterable[str]) -> set[tuple[str, str]]:
    """Every version apt's local lists offer for ``names`` (one ``apt-cache madison`` call)."""
    wanted = sorted(set(names))
    if not wanted:
        return set()
    if shutil.which("apt-cache") is None:
        raise ConfigError("apt-cache not found: checking the Debian lock needs a Debian host")
    proc = subprocess.run(["apt-cache", "madison", *wanted], capture_output=True, text=True,
                          check=False, timeout=120)
    return parse_madison(proc.stdout)


def unavailable(
    lock: DebianLock,
    *,
    available: AvailableFn = apt_available,
    cache: Path | None = None,
) -> tuple[LockedPackage, ...]:
    """Pinned packages a build could not get: neither in the .deb cache (by sha256) nor
    offered by apt at exactly the pinned version. Empty means the lock still builds."""
    cache = deb_cache_dir() if cache is None else cache
    need = [p for p in lock.packages if not (cache / f"{p.sha256}.deb").is_file()]
    if not need:
        return ()
    offered = available(p.name for p in need)
    return tuple(p for p in need if (p.name, p.version) not in offered)
