"""Choosing the Debian lock (``--base-lock`` > ``$PIPELINE_BASE_LOCK`` > committed) and
telling when the committed one can no longer be fetched."""

from __future__ import annotations

import shutil
import subprocess
import warnings
from collections.abc import Iterable
from pathlib import Path

import pytest

from pipeline.build import base_lock
from pipeline.build.base_lock import lock_path, parse_madison, unavailable
from pipeline.build.debian import DEFAULT_LOCK, DebianLock, LockedPackage
from pipeline.cli import run
from pipeline.errors import EXIT_NOT_FOUND
from tests.support import build as _build_support

MADISON = """\
     libc6 | 2.36-9+deb12u14 | http://deb.debian.org/debian bookworm/main amd64 Packages
     libc6 | 2.36-9+deb12u7 | http://security.debian.org bookworm-security/main amd64 Packages
     glibc | 2.36-9+deb12u14 | http://deb.debian.org/debian bookworm/main Sources
    tzdata | 2025b-0+deb12u2 | http://deb.debian.org/debian bookworm/main all Packages

"""


def _pkg(name: str, version: str, fill: str) -> LockedPackage:
    return LockedPackage(name, version, fill * 64, "amd64")


def test_parse_madison_keeps_binary_packages_only() -> None:
    assert parse_madison(MADISON) == {
        ("libc6", "2.36-9+deb12u14"), ("libc6", "2.36-9+deb12u7"),
        ("tzdata", "2025b-0+deb12u2"),
    }


def test_unavailable_names_what_neither_cache_nor_apt_has(tmp_path: Path) -> None:
    cached, offered, moved = (_pkg("base-files", "12.4+deb12u1", "a"),
                              _pkg("libc6", "2.36-9+deb12u14", "b"),
                              _pkg("tzdata", "2024a-0+deb12u1", "c"))
    (tmp_path / f"{cached.sha256}.deb").write_bytes(b"cached")
    asked: list[str] = []

    def available(names: Iterable[str]) -> set[tuple[str, str]]:
        asked.extend(names)
        return parse_madison(MADISON)

    lock = DebianLock((cached, offered, moved), ("libc6",))
    assert unavailable(lock, available=available, cache=tmp_path) == (moved,)
    assert asked == ["libc6", "tzdata"]  # a cached .deb needs no apt at all


def test_unavailable_with_the_real_apt_cache(tmp_path: Path) -> None:
    if shutil.which("apt-cache") is None:
        pytest.fail("apt-cache is needed (this project builds Debian bases)")
    out = subprocess.run(["apt-cache", "madison", "libc6"], capture_output=True, text=True,
                         check=True).stdout
    current = sorted(v for _, v in parse_madison(out))
    assert current, "apt has no lists: run scripts/setup.sh (apt-get update)"
    there, gone = _pkg("libc6", current[0], "d"), _pkg("zlib1g", "0.0.1-not-in-debian", "e")
    lock = DebianLock((there, gone), ("libc6",))
    assert unavailable(lock, cache=tmp_path) == (gone,)


def test_lock_path_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(base_lock.ENV, raising=False)
    assert lock_path() == DEFAULT_LOCK
    monkeypatch.setenv(base_lock.ENV, "  ")
    assert lock_path() == DEFAULT_LOCK
    monkeypatch.setenv(base_lock.ENV, str(tmp_path / "env.lock"))
    assert lock_path() == tmp_path / "env.lock"
    assert lock_path(tmp_path / "flag.lock") == tmp_path / "flag.lock"


@pytest.mark.parametrize("how", ["flag", "env"])
def test_build_reads_the_override_lock(
    how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    project = _build_support.copy_project(tmp_path / "project")
    missing = tmp_path / "elsewhere.lock"
    args = ["build", str(project), "--out", str(tmp_path / "out")]
    if how == "flag":
        monkeypatch.delenv(base_lock.ENV, raising=False)
        args += ["--base-lock", str(missing)]
    else:
        monkeypatch.setenv(base_lock.ENV, str(missing))
    assert run(args) == EXIT_NOT_FOUND
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "out" / "index.json").exists()


def _offered_version(name: str) -> str:
    """A version of ``name`` that this machine's apt really offers."""
    done = subprocess.run(["apt-cache", "madison", name], capture_output=True, text=True,
                          check=True)
    return sorted(version for pkg, version in parse_madison(done.stdout) if pkg == name)[0]


def test_session_uses_the_committed_lock_while_it_builds(tmp_path: Path) -> None:
    from pipeline.build import debian

    current = tmp_path / "current.lock"  # pins what apt offers right now
    debian.write_lock(DebianLock((_pkg("tzdata", _offered_version("tzdata"), "e"),),
                                 ("tzdata",)), current)
    out = tmp_path / "session"
    out.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _build_support.session_base_lock(out, current) == current
    assert list(out.iterdir()) == []


def test_session_resolves_a_fresh_lock_and_warns_when_stale(tmp_path: Path) -> None:
    from pipeline.build import debian

    stale = tmp_path / "stale.lock"  # a version no mirror has ever offered
    debian.write_lock(DebianLock((_pkg("libc6", "0.0~moved-on", "f"),), ("libc6",)), stale)
    fresh = DebianLock((_pkg("libc6", "2.36-9+deb12u99", "0"),), ("libc6",))
    out = tmp_path / "session"
    out.mkdir()
    # Resolving a fresh closure from apt takes ~36 s (one apt-cache show per package); its
    # walk is tested in test_build_locks. Here its result is handed in: what is under test
    # is the session's staleness check (real apt) and what it does with a fresh lock.
    with pytest.warns(_build_support.StaleBaseLockWarning,
                      match=r"stale .*libc6=0\.0~moved-on.*pipeline lock base"):
        path = _build_support.session_base_lock(out, stale, resolve=lambda: fresh)
    assert path == out / "debian-base.lock"
    assert debian.load_lock(path) == fresh
