"""The Debian lock of the base layer: parse/format, resolve from apt, fetch verified .debs.

Why a lock: the base must be the same bytes on every machine and every day, so the
packages are pinned by ``name=version`` *and* sha256, and a .deb that hashes to anything
else is refused (IntegrityError) whatever apt says. ``resolve_closure`` regenerates the
lock from apt metadata (``pipeline lock base``): the Depends/Pre-Depends closure of
:data:`ROOTS`, leaving out what a distroless image must not have (:data:`EXCLUDED`).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline._fileio import install_file, sha256_file, write_atomic
from pipeline.errors import BuildError, ConfigError, InputError, IntegrityError, NotFoundError

LOCK_HEADER = "# secure-model-pipeline debian lock v1"
#: The purl ``distro`` qualifier of the locked packages in the provenance (the base is
#: Debian 12, bookworm: its python3.11). The SBOM reads the same value from the image's
#: os-release (tests/integration/scan/test_scan.py checks that the two agree).
PURL_DISTRO = "debian-12"
DEFAULT_LOCK = Path(__file__).resolve().parent / "locks" / "debian-base.lock"

#: What the base is for: libc, Python 3.11 with its stdlib, OpenSSL, CA certificates,
#: tzdata, libstdc++ (native wheels), base-files (/etc/os-release), netbase (/etc/services).
ROOTS: tuple[str, ...] = (
    "base-files",
    "ca-certificates",
    "libc6",
    "libgcc-s1",
    "libpython3.11-stdlib",
    "libssl3",
    "libstdc++6",
    "netbase",
    "python3.11-minimal",
    "tzdata",
    "zlib1g",
)

#: Never in the base: shells, core utilities, package managers, interpreters other than
#: Python, configuration frameworks that need maintainer scripts, the openssl CLI.
EXCLUDED: frozenset[str] = frozenset(
    {
        "apt", "base-passwd", "bash", "busybox", "coreutils", "dash", "debconf", "debconf-2.0",
        "debianutils", "diffutils", "dpkg", "findutils", "gawk", "grep", "gzip", "hostname",
        "init-system-helpers", "login", "mawk", "original-awk", "awk", "ncurses-bin", "openssl",
        "passwd", "perl", "perl-base", "readline-common", "sed", "sensible-utils", "tar",
        "util-linux", "zsh", "libc-bin", "install-info", "lsb-base", "sysvinit-utils",
        "openssh-client", "openssh-server", "sudo", "cpio",
    }
)

_NAME = r"[a-z0-9][a-z0-9+.\-]+"
_VERSION = r"[0-9][A-Za-z0-9.+~:\-]*"
_LINE = re.compile(rf"^({_NAME})=({_VERSION}) ([0-9a-f]{{64}}) ([a-z0-9\-]+)$")
_ROOTS_LINE = re.compile(rf"^# roots:((?: {_NAME})*)$")


@dataclass(frozen=True, order=True)
class LockedPackage:
    """One pinned .deb: ``name=version sha256 arch``."""

    name: str
    version: str
    sha256: str
    arch: str = "amd64"

    def line(self) -> str:
        return f"{self.name}={self.version} {self.sha256} {self.arch}"


@dataclass(frozen=True)
class DebianLock:
    """The pinned packages (sorted by name) and the roots they were resolved from."""

    packages: tuple[LockedPackage, ...]
    roots: tuple[str, ...] = ()

    def digest(self) -> str:
        """sha256 of the canonical text: the base layer's cache key and image label."""
        return "sha256:" + hashlib.sha256(format_lock(self).encode()).hexdigest()


def format_lock(lock: DebianLock) -> str:
    """Canonical text: header, roots, one sorted package line each."""
    lines = [LOCK_HEADER, "# roots:" + "".join(f" {r}" for r in lock.roots)]
    lines += [p.line() for p in sorted(lock.packages, key=lambda p: p.name)]
    return "\n".join(lines) + "\n"


def parse_lock(text: str) -> DebianLock:
    """Strict parser: header first, valid lines, unique names, at least one package."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != LOCK_HEADER:
        raise InputError(f"not a Debian lock: first line must be {LOCK_HEADER!r}")
    packages: dict[str, LockedPackage] = {}
    roots: tuple[str, ...] = ()
    for number, raw in enumerate(lines[1:], start=2):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            match = _ROOTS_LINE.match(line)
            if match:
                roots = tuple(match.group(1).split())
            continue
        match = _LINE.match(line)
        if not match:
            raise InputError(f"Debian lock line {number}: expected 'name=version sha256 arch'")
        package = LockedPackage(*match.groups())
        if package.name in packages:
            raise InputError(f"Debian lock line {number}: duplicate package {package.name}")
        packages[package.name] = package
    if not packages:
        raise InputError("Debian lock lists no packages")
    return DebianLock(tuple(sorted(packages.values(), key=lambda p: p.name)), roots)


def load_lock(path: Path = DEFAULT_LOCK) -> DebianLock:
    """Read and parse a lock file (NotFoundError when absent)."""
    try:
        return parse_lock(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFoundError(f"Debian lock not found: {path} (run 'pipeline lock base')") from None


def write_lock(lock: DebianLock, path: Path = DEFAULT_LOCK) -> None:
    """Write the canonical text (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, format_lock(lock))


# -- resolution ---------------------------------------------------------------------------
ShowFn = Callable[[str], "dict[str, str] | None"]


def parse_control(text: str) -> dict[str, str]:
    """First paragraph of deb822 text as a dict (continuation lines joined)."""
    fields: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        if line[:1] in (" ", "\t") and key:
            fields[key] += "\n" + line
            continue
        key, sep, value = line.partition(":")
        if not sep:
            key = ""
            continue
        fields[key] = value.strip()
    return fields


def apt_show(name: str) -> dict[str, str] | None:
    """apt's candidate record for ``name`` (None for virtual or unknown packages)."""
    if shutil.which("apt-cache") is None:
        raise ConfigError("apt-cache not found: 'pipeline lock base' needs a Debian host")
    proc = subprocess.run(
        ["apt-cache", "show", "--no-all-versions", name],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    fields = parse_control(proc.stdout)
    return fields if fields.get("Package") == name else None


def _alternatives(field: str) -> list[list[str]]:
    groups = []
    for group in field.split(","):
        names = []
        for alt in group.split("|"):
            name = alt.strip().split(" ", 1)[0].split("(", 1)[0].split(":", 1)[0].strip()
            if name:
                names.append(name)
        if names:
            groups.append(names)
    return groups


def resolve_closure(
    roots: Sequence[str] = ROOTS, *, show: ShowFn = apt_show,
    excluded: frozenset[str] = EXCLUDED,
) -> DebianLock:
    """Depends/Pre-Depends closure of ``roots``: first non-excluded, existing alternative.

    A dependency group whose every alternative is excluded or virtual is dropped: that
    is the point (``debconf | debconf-2.0`` is what maintainer scripts would need).
    """
    found: dict[str, LockedPackage] = {}
    queue = list(roots)
    while queue:
        name = queue.pop(0)
        if name in found or name in excluded:
            continue
        record = show(name)
        if record is None:
            raise InputError(f"package {name} not found in apt metadata (apt-get update?)")
        sha = record.get("SHA256", "")
        if not re.fullmatch(r"[0-9a-f]{64}", sha) or not record.get("Version"):
            raise InputError(f"package {name}: apt metadata has no version or SHA256")
        found[name] = LockedPackage(name, record["Version"], sha,
                                    record.get("Architecture", "amd64"))
        deps = record.get("Pre-Depends", "") + "," + record.get("Depends", "")
        for group in _alternatives(deps):
            for alt in group:
                if alt in excluded:
                    continue
                if alt in found or show(alt) is not None:
                    queue.append(alt)
                    break
    return DebianLock(tuple(sorted(found.values(), key=lambda p: p.name)), tuple(roots))


# -- fetching -----------------------------------------------------------------------------
Progress = Callable[..., None]


def deb_cache_dir() -> Path:
    """Where verified .debs live, as ``<sha256>.deb`` (``$PIPELINE_DEB_CACHE``)."""
    from pipeline.config import load_settings

    return load_settings().build().deb_cache


def fetch_debs(lock: DebianLock, progress: Progress | None = None) -> dict[str, Path]:
    """Every locked .deb, downloaded if missing, each re-hashed against the lock."""
    cache = deb_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    missing = [p for p in lock.packages if not (cache / f"{p.sha256}.deb").is_file()]
    if missing:
        _download(missing, cache, progress)
    out: dict[str, Path] = {}
    for number, package in enumerate(lock.packages, start=1):
        if progress:
            progress(f"verifying {package.name}", number, len(lock.packages))
        path = cache / f"{package.sha256}.deb"
        if sha256_file(path) != package.sha256:
            path.unlink(missing_ok=True)
            raise IntegrityError(
                f"{package.name}={package.version}: cached .deb does not match the lock's sha256"
            )
        out[package.name] = path
    return out


def _download(packages: Iterable[LockedPackage], cache: Path, progress: Progress | None) -> None:
    wanted = list(packages)
    if shutil.which("apt-get") is None:
        raise ConfigError("apt-get not found: fetching the base's .debs needs a Debian host")
    with tempfile.TemporaryDirectory(prefix="debs-", dir=cache) as tmp:
        os.chmod(tmp, 0o755)
        for number, package in enumerate(wanted, start=1):
            if progress:
                progress(f"downloading {package.name}", number - 1, len(wanted))
        proc = subprocess.run(
            ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root",
             *[f"{p.name}={p.version}" for p in wanted]],
            cwd=tmp, capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0:
            raise BuildError(
                "apt-get download failed (is the locked version still on the mirror? "
                f"run 'apt-get update' or 'pipeline lock base'): {proc.stderr.strip()[-500:]}"
            )
        by_hash = {p.sha256: p for p in wanted}
        for path in Path(tmp).glob("*.deb"):
            sha = sha256_file(path)
            package = by_hash.pop(sha, None)
            if package is None:
                raise IntegrityError(f"downloaded {path.name} matches no sha256 in the lock")
            install_file(path, cache / f"{sha}.deb")
        if by_hash:
            names = ", ".join(sorted(p.name for p in by_hash.values()))
            raise IntegrityError(f"downloaded .debs do not match the lock's sha256: {names}")
        if progress:
            progress("downloaded base packages", len(wanted), len(wanted))
