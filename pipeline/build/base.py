"""Assemble the distroless base layer from the locked .debs, without running any of them.

Why no maintainer scripts: they are shell scripts (the image has no shell) and they make
non-deterministic files. What they would have made that a runtime needs is made here,
deterministically: the CA bundle, ``python3``, ``/etc/passwd`` with ``nonroot`` 65532,
``/etc/localtime`` (UTC) and one dpkg status file per package in
``/var/lib/dpkg/status.d/`` (what SBOM tools and trivy read for distroless images).
Dropped: everything in bin/sbin dirs but ``usr/bin/python3.11`` (no shell, no ``ldd``
script, no ``update-ca-certificates``), docs except copyright files, man pages, locales.
"""

from __future__ import annotations

import posixpath
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

from pipeline.build._tarlayer import DIR, REG, SYMLINK, Entry, norm_path
from pipeline.build.debian import DebianLock, LockedPackage, parse_control
from pipeline.errors import BuildError

#: Bump when the assembly below changes: it is part of the base layer's cache key.
BASE_FORMAT = "distroless-base-v1"
NONROOT_UID = 65532
PYTHON = "usr/bin/python3.11"
KEEP_IN_BIN = frozenset({PYTHON})
_DROP_TREES = (
    "usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian",
    "usr/share/bug", "usr/share/doc-base", "usr/share/menu", "usr/share/bash-completion",
    "usr/share/gdb", "var/lock",
)
_BIN_DIRS = frozenset({"bin", "sbin", "usr/bin", "usr/sbin", "usr/local/bin", "usr/local/sbin",
                       "usr/games", "usr/local/games"})

PASSWD = (
    "root:x:0:0:root:/root:/sbin/nologin\n"
    f"nonroot:x:{NONROOT_UID}:{NONROOT_UID}:nonroot:/home/nonroot:/sbin/nologin\n"
)
GROUP = f"root:x:0:\nnonroot:x:{NONROOT_UID}:\n"
NSSWITCH = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nservices: files\n"
CA_BUNDLE = "etc/ssl/certs/ca-certificates.crt"


def keep(path: str, keep_in_bin: frozenset[str] = KEEP_IN_BIN) -> bool:
    """Whether a path from a .deb belongs in the distroless base."""
    if path in keep_in_bin:
        return True
    if posixpath.dirname(path) in _BIN_DIRS:
        return False
    if any(path == tree or path.startswith(tree + "/") for tree in _DROP_TREES):
        return False
    if path.startswith("usr/share/doc/"):
        return path.count("/") == 4 and path.endswith("/copyright")
    return True


def _deb_entries(deb: Path) -> list[Entry]:
    """The data archive of one .deb, read with ``dpkg-deb --fsys-tarfile`` (nothing runs)."""
    proc = subprocess.Popen(
        ["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    entries: list[Entry] = []
    seen: dict[str, bytes] = {}
    assert proc.stdout is not None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for info in tar:
                try:
                    path = norm_path(info.name)
                except BuildError:
                    continue  # "./" itself
                mode = info.mode & 0o7777
                if info.isdir():
                    entries.append(Entry(path, DIR, mode & ~0o6000))
                elif info.issym():
                    entries.append(Entry(path, SYMLINK, 0o777, target=info.linkname))
                elif info.isreg():
                    handle = tar.extractfile(info)
                    data = handle.read() if handle else b""
                    seen[path] = data
                    entries.append(Entry(path, REG, mode, data))
                elif info.islnk():  # hard link: a copy keeps the layer simple
                    target = norm_path(info.linkname)
                    entries.append(Entry(path, REG, mode, seen.get(target, b"")))
    except tarfile.TarError as exc:
        raise BuildError(f"{deb.name}: unreadable data archive: {exc}") from None
    finally:
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        code = proc.wait()
    if code != 0:
        raise BuildError(f"dpkg-deb --fsys-tarfile {deb.name} failed: {stderr.strip()[-300:]}")
    return entries


def _control(deb: Path) -> str:
    proc = subprocess.run(
        ["dpkg-deb", "--field", str(deb)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise BuildError(f"dpkg-deb --field {deb.name} failed: {proc.stderr.strip()[-300:]}")
    return proc.stdout


def status_file(control: str, package: LockedPackage) -> bytes:
    """A dpkg status paragraph: the control file with ``Status: install ok installed``."""
    fields = parse_control(control)
    if fields.get("Package") != package.name or fields.get("Version") != package.version:
        raise BuildError(f"{package.name}: .deb control does not match the lock")
    lines = []
    for line in control.rstrip("\n").splitlines():
        lines.append(line)
        if line.startswith("Package:"):
            lines.append("Status: install ok installed")
    return ("\n".join(lines) + "\n").encode()


def _made_here(files: dict[str, Entry]) -> list[Entry]:
    """What maintainer scripts would have made, made deterministically."""
    certs = sorted(
        p for p, e in files.items()
        if p.startswith("usr/share/ca-certificates/") and p.endswith(".crt") and e.kind == REG
    )
    pems = [data for p in certs if (data := files[p].data)]
    bundle = b"".join(pem.rstrip(b"\n") + b"\n" for pem in pems)
    if not certs:
        raise BuildError("base: no CA certificates in the locked packages")
    zone = "usr/share/zoneinfo/Etc/UTC"
    return [
        Entry(CA_BUNDLE, REG, 0o644, bundle),
        Entry("usr/bin/python3", SYMLINK, 0o777, target="python3.11"),
        Entry("etc/passwd", REG, 0o644, PASSWD.encode()),
        Entry("etc/group", REG, 0o644, GROUP.encode()),
        Entry("etc/nsswitch.conf", REG, 0o644, NSSWITCH.encode()),
        Entry("etc/localtime", SYMLINK, 0o777, target=f"/{zone}"),
        Entry("etc/timezone", REG, 0o644, b"Etc/UTC\n"),
        Entry("home", DIR, 0o755),
        Entry("home/nonroot", DIR, 0o700, uid=NONROOT_UID, gid=NONROOT_UID),
        Entry("tmp", DIR, 0o1777),
        Entry("var/tmp", DIR, 0o1777),
        Entry("var/lib/dpkg/status.d", DIR, 0o755),
    ]


def base_entries(
    lock: DebianLock, debs: dict[str, Path], progress: Callable[..., None] | None = None,
    *, keep_in_bin: frozenset[str] = KEEP_IN_BIN, extra: tuple[Entry, ...] = (),
) -> list[Entry]:
    """Every entry of the base layer, from the locked .debs (in lock order, later wins).

    ``keep_in_bin`` and ``extra`` are for the pipeline's own step image
    (:mod:`pipeline.build.step_image`), which keeps git and bash and adds ``/bin/sh``.
    """
    files: dict[str, Entry] = {}
    status: list[Entry] = []
    total = len(lock.packages)
    for number, package in enumerate(lock.packages, start=1):
        if progress:
            progress(f"extracting {package.name}", number - 1, total)
        deb = debs[package.name]
        for entry in _deb_entries(deb):
            if keep(entry.path, keep_in_bin):
                files[entry.path] = entry
        status.append(
            Entry(f"var/lib/dpkg/status.d/{package.name}", REG, 0o644,
                  status_file(_control(deb), package))
        )
    if PYTHON not in files:
        raise BuildError(f"base: the locked packages do not provide /{PYTHON}")
    if progress:
        progress("extracted base packages", total, total)
    return [*files.values(), *_made_here(files), *extra, *status]
