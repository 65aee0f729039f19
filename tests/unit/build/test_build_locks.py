"""Lock files: parsing is strict, formatting is canonical, resolution excludes what it must."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.build.debian import (
    LOCK_HEADER,
    DebianLock,
    LockedPackage,
    format_lock,
    parse_lock,
    resolve_closure,
)
from pipeline.build.wheels import LOCK_HEADER as PY_HEADER
from pipeline.build.wheels import PinnedWheel, format_python_lock, parse_python_lock
from pipeline.errors import InputError

HEX = "ab" * 32

_pkg = st.builds(
    LockedPackage,
    name=st.from_regex(r"[a-z0-9][a-z0-9+.\-]{1,15}", fullmatch=True),
    version=st.from_regex(r"[0-9][A-Za-z0-9.+~\-]{0,10}", fullmatch=True),
    sha256=st.from_regex(r"[0-9a-f]{64}", fullmatch=True),
    arch=st.sampled_from(["amd64", "all"]),
)


@given(st.lists(_pkg, min_size=1, max_size=10, unique_by=lambda p: p.name))
def test_debian_lock_roundtrip(packages: list[LockedPackage]) -> None:
    lock = DebianLock(tuple(sorted(packages)), ("libc6",))
    text = format_lock(lock)
    again = parse_lock(text)
    assert again == lock
    assert format_lock(again) == text
    assert again.digest() == lock.digest()


@given(st.text(max_size=200))
def test_debian_lock_parser_never_crashes(text: str) -> None:
    try:
        parse_lock(LOCK_HEADER + "\n" + text)
    except InputError:
        pass


@pytest.mark.parametrize(
    "body",
    [
        "",  # no packages
        f"libc6 {HEX}",  # no version
        "libc6=1.0 deadbeef",  # short hash
        f"libc6=1.0 {HEX}\nlibc6=1.1 {HEX}",  # duplicate
        f"../x=1.0 {HEX}",  # bad name
    ],
)
def test_debian_lock_rejects_malformed(body: str) -> None:
    with pytest.raises(InputError):
        parse_lock(LOCK_HEADER + "\n" + body)


def test_debian_lock_needs_header() -> None:
    with pytest.raises(InputError):
        parse_lock(f"libc6=1.0 {HEX}\n")


def test_committed_base_lock_parses_and_excludes_shells() -> None:
    from pipeline.build.debian import DEFAULT_LOCK, EXCLUDED, load_lock

    lock = load_lock(DEFAULT_LOCK)
    names = {p.name for p in lock.packages}
    assert {"libc6", "python3.11-minimal", "libssl3", "ca-certificates", "tzdata"} <= names
    assert not names & EXCLUDED


def _fake_apt(records: dict[str, dict[str, str]]):
    def show(name: str):
        return records.get(name)

    return show


def test_resolve_closure_walks_depends_and_skips_excluded() -> None:
    records = {
        "app": {
            "Package": "app",
            "Version": "1",
            "SHA256": HEX,
            "Depends": "libfoo (>= 1), debconf | debconf-2.0",
            "Pre-Depends": "awk",
        },
        "libfoo": {"Package": "libfoo", "Version": "2", "SHA256": HEX, "Depends": "bash | libbar"},
        "libbar": {"Package": "libbar", "Version": "3", "SHA256": HEX},
    }
    lock = resolve_closure(["app"], show=_fake_apt(records))
    assert [(p.name, p.version) for p in lock.packages] == [
        ("app", "1"),
        ("libbar", "3"),
        ("libfoo", "2"),
    ]


def test_resolve_closure_requires_hashes() -> None:
    records = {"app": {"Package": "app", "Version": "1"}}
    with pytest.raises(InputError):
        resolve_closure(["app"], show=_fake_apt(records))


def test_python_lock_roundtrip_and_errors() -> None:
    wheels = (PinnedWheel("idna", "3.20", HEX), PinnedWheel("numpy", "2.0.0", "cd" * 32))
    text = format_python_lock(wheels, ["idna", "numpy"])
    assert parse_python_lock(text) == wheels
    for bad in ["idna>=3 --hash=sha256:" + HEX, "idna==3.20", f"idna==3 --hash=md5:{HEX}"]:
        with pytest.raises(InputError):
            parse_python_lock(PY_HEADER + "\n" + bad + "\n")
    with pytest.raises(InputError):
        parse_python_lock("idna==3.20 --hash=sha256:" + HEX)
