"""The python lock and the dependency layer: pinned wheels for the *image's* platform.

Why wheels only, hashes always: an sdist runs its build script on the build machine, and
an unpinned download is whatever the index serves today. The lock pins
``name==version --hash=sha256:...`` for CPython 3.11 on manylinux (glibc 2.36, the
base's libc), and ``pip install --require-hashes --only-binary=:all: --no-deps
--no-compile --target`` installs exactly that into the layer, no pip bytecode (it would carry
timestamps; :mod:`pipeline.build.bytecode` adds reproducible unchecked-hash pycs instead)
and no console scripts (nothing in the image may start a second program).

Also left out: what only *building against* a package reads (:func:`build_time_only`:
C/C++ headers, static libraries, CMake and pkg-config files) and libtorch's C++ test
executables. The image has no compiler, so nothing in it can use them, and torch's
headers alone are 9,400 of the layer's 25,000 files: every file is a create, write and
close when a local deploy unpacks the image (docs/performance.md). Each package's
``RECORD`` loses the lines of the files dropped, so ``pip`` in the image would not see
them as missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline._fileio import sha256_file, write_atomic
from pipeline.build._tarlayer import REG, Entry
from pipeline.build.bytecode import BYTECODE_FORMAT
from pipeline.errors import BuildError, InputError

LOCK_HEADER = "# secure-model-pipeline python lock v1"
TARGET = "cp311 linux x86_64 glibc 2.36"
SITE_DIR = "usr/local/lib/python3.11/dist-packages"
#: Files for compiling against a package (the image has no compiler): never read at run time.
BUILD_ONLY_SUFFIXES = (".h", ".hh", ".hpp", ".hxx", ".cuh", ".a", ".cmake", ".pc")
#: Trees of the site directory the runtime never reads: libtorch's C++ test executables.
BUILD_ONLY_TREES = ("torch/test/",)
#: Every manylinux tag glibc 2.36 can run: pip does not expand ``manylinux_2_36`` itself.
PLATFORMS: tuple[str, ...] = (
    *(f"manylinux_2_{minor}_x86_64" for minor in range(36, 4, -1)),
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
)
_LINE = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9][A-Za-z0-9.+!_-]*) --hash=sha256:([0-9a-f]{64})$"
)
_WHEEL = re.compile(r"^([^-]+)-([^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")


@dataclass(frozen=True, order=True)
class PinnedWheel:
    """One locked distribution: normalised name, exact version, the wheel's sha256."""

    name: str
    version: str
    sha256: str

    def line(self) -> str:
        return f"{self.name}=={self.version} --hash=sha256:{self.sha256}"


def normalize(name: str) -> str:
    """PEP 503 name normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


def target_line(requirements: Sequence[str]) -> str:
    """The lock's second line: platform and the requirements it was resolved from."""
    return f"# target: {TARGET}; from: {', '.join(requirements)}"


def format_python_lock(wheels: Sequence[PinnedWheel], requirements: Sequence[str]) -> str:
    """Canonical lock text (wheels sorted by name)."""
    lines = [LOCK_HEADER, target_line(requirements)]
    lines += [w.line() for w in sorted(wheels, key=lambda w: w.name)]
    return "\n".join(lines) + "\n"


def parse_python_lock(text: str) -> tuple[PinnedWheel, ...]:
    """Strict parser: header, then only exact pins with one sha256 each."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != LOCK_HEADER:
        raise InputError(f"not a python lock: first line must be {LOCK_HEADER!r}")
    wheels: dict[str, PinnedWheel] = {}
    for number, raw in enumerate(lines[1:], start=2):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            raise InputError(
                f"python lock line {number}: expected 'name==version --hash=sha256:<hex>'"
            )
        wheel = PinnedWheel(normalize(match.group(1)), match.group(2), match.group(3))
        if wheel.name in wheels:
            raise InputError(f"python lock line {number}: duplicate package {wheel.name}")
        wheels[wheel.name] = wheel
    return tuple(wheels.values())


def recorded_target(text: str) -> str:
    """The lock's ``# target:`` line ('' when absent)."""
    lines = text.splitlines()
    return lines[1].strip() if len(lines) > 1 and lines[1].startswith("# target:") else ""


def _pip(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]


def _platform_args() -> list[str]:
    args = ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
            "--abi", "cp311"]
    for platform in PLATFORMS:
        args += ["--platform", platform]
    return args


def _run_pip(args: list[str], what: str) -> None:
    env = dict(os.environ, PIP_CONSTRAINT="", PIP_NO_COMPILE="1")
    proc = subprocess.run(args, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip())[-800:]
        raise BuildError(f"{what} failed: {tail}")


def _report_wheels(report: dict) -> list[PinnedWheel]:
    """The wheels of a ``pip install --dry-run --report`` document, with their sha256."""
    wheels = []
    for item in report.get("install", []):
        meta, info = item.get("metadata", {}), item.get("download_info", {})
        url = str(info.get("url", ""))
        name = url.rsplit("/", 1)[-1]
        if not _WHEEL.match(name):
            raise BuildError(f"resolution produced a non-wheel: {name or meta.get('name')}")
        sha256 = info.get("archive_info", {}).get("hashes", {}).get("sha256")
        if not sha256 and url.startswith("file://"):
            sha256 = sha256_file(Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)))
        if not sha256:
            raise BuildError(f"the index gave no sha256 for {name}: the lock pins every wheel "
                             "by hash (use an index that publishes them, PEP 503 #sha256=)")
        wheels.append(PinnedWheel(normalize(str(meta["name"])), str(meta["version"]), sha256))
    return wheels


def _torch(wheels: Sequence[PinnedWheel]) -> PinnedWheel | None:
    return next((w for w in wheels if w.name == "torch"), None)


def check_torch(wheels: Sequence[PinnedWheel], torch: str, where: str) -> None:
    """The wheels must be the torch build ``runtime.torch`` asks for (BuildError if not).

    Why at resolution *and* at build: the lock's target line records the requirements,
    not the torch mode, so switching ``runtime.torch`` keeps an old lock; a CUDA runtime on
    a CPU lock would build an image that silently serves on CPU (or not at all).
    A CUDA torch is one whose wheel is not a ``+cpu`` build and that brings the CUDA
    libraries (``nvidia-*`` wheels); a CPU one brings none.
    """
    cuda = sorted(w.name for w in wheels if w.name.startswith("nvidia-"))
    found = _torch(wheels)
    if torch == "cpu" and cuda:
        raise BuildError(f"{where}: runtime.torch is 'cpu' but it pulls CUDA wheels: "
                         + ", ".join(cuda) + " (pin a +cpu torch build)")
    if torch == "cuda":
        if found is None:
            raise BuildError(f"{where}: runtime.torch is 'cuda' but it has no torch "
                             "(add torch to runtime.python_packages)")
        if "+cpu" in found.version or not cuda:
            raise BuildError(
                f"{where}: runtime.torch is 'cuda' but it pins torch {found.version}, a CPU "
                "build (no nvidia-* CUDA libraries): pin a CUDA torch build (e.g. "
                "torch==X+cu128 from the PyTorch CUDA index) and run 'pipeline lock deps'")


def resolve(requirements: Sequence[str], torch: str = "none") -> tuple[PinnedWheel, ...]:
    """Resolve ``requirements`` for the image platform with pip; wheels and their sha256.

    ``pip install --dry-run --report`` resolves without installing and, where the index
    serves metadata and hashes (PEP 658, PEP 503), without downloading: a CUDA torch and
    its ``nvidia-*`` libraries are several GB the lock only needs the hashes of.
    """
    if not requirements:
        return ()
    with tempfile.TemporaryDirectory(prefix="pipeline-resolve-") as tmp:
        report = Path(tmp) / "report.json"
        _run_pip(_pip("install", "-q", "--dry-run", "--ignore-installed", "--report",
                      str(report), *_platform_args(), *requirements),
                 "resolving python packages for the image")
        try:
            document = json.loads(report.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BuildError(f"pip wrote no readable resolution report: {exc}") from None
    wheels = _report_wheels(document)
    check_torch(wheels, torch, "the resolution")
    return tuple(sorted(wheels))


def lock_key(wheels: Sequence[PinnedWheel]) -> str:
    """The dependency layer's cache key: the pinned lines and the target platform."""
    text = ("deps-v4 build-only files dropped\n" + TARGET + "\n" + BYTECODE_FORMAT + "\n"
            + "\n".join(sorted(w.line() for w in wheels)))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def install(wheels: Sequence[PinnedWheel], target: Path) -> None:
    """``pip install --target`` the locked wheels (hash-checked, no deps, no bytecode)."""
    if not wheels:
        return
    lock = target.parent / "requirements.hashes"
    write_atomic(lock, "".join(w.line() + "\n" for w in wheels), mode=0o644)
    _run_pip(
        _pip("install", "-q", "--target", str(target), "--no-deps", "--require-hashes",
             "--no-compile", "--no-warn-script-location", *_platform_args(), "-r", str(lock)),
        "installing the locked python packages",
    )


def build_time_only(rel: str) -> bool:
    """Whether ``rel`` (a path below the site directory) is only read when building
    against its package (headers, static libraries, CMake files, C++ tests)."""
    return rel.endswith(BUILD_ONLY_SUFFIXES) or rel.startswith(BUILD_ONLY_TREES)


def site_entries(target: Path) -> list[Entry]:
    """Files of an installed ``--target`` tree as layer entries (``bin/`` and what
    :func:`build_time_only` names dropped)."""
    entries: list[Entry] = []
    for dirpath, dirs, files in os.walk(target):
        dirs.sort()
        base = Path(dirpath)
        rel_dir = base.relative_to(target).as_posix()
        if rel_dir == "bin" or rel_dir.startswith("bin/"):
            continue
        if "__pycache__" in dirs:
            dirs.remove("__pycache__")
        for name in sorted(files):
            path = base / name
            if path.is_symlink() or not path.is_file() or name.endswith(".pyc"):
                continue
            rel = path.relative_to(target).as_posix()
            if build_time_only(rel):
                continue
            mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
            if name == "RECORD" and rel_dir.endswith(".dist-info"):
                entries.append(Entry(f"{SITE_DIR}/{rel}", REG, mode, _record(path)))
            else:
                entries.append(Entry(f"{SITE_DIR}/{rel}", REG, mode, source=path))
    return entries


def _record(path: Path) -> bytes:
    """RECORD without the dropped console scripts and build-time-only files.

    Why: pip writes each script's shebang (this machine's interpreter path) and records
    its hash, which would make the layer differ between build hosts; the scripts are not
    shipped, so their lines go too, as do those of the files :func:`build_time_only` drops.
    """
    lines = path.read_bytes().splitlines(keepends=True)
    return b"".join(line for line in lines if not line.startswith((b"../", b"bin/"))
                    and not build_time_only(_record_path(line)))


def _record_path(line: bytes) -> str:
    """The path of one RECORD line (CSV: a path with a comma is quoted)."""
    text = line.decode("utf-8", "replace").rstrip("\r\n")
    if text.startswith('"'):
        return text[1:].split('"', 1)[0]
    return text.split(",", 1)[0]


ProgressFn = Callable[..., None]
