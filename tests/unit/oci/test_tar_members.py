"""The layer tar reader against the standard library's, on archives of every format.

Property tests: archives that ``tarfile`` writes (ustar, GNU, PAX; long names and link
names, non-ASCII names, large ids, every member type) read back member for member as
``tarfile`` reads them, data included; a truncated or corrupted one is refused with
InputError (never another exception), or, when it is not, read exactly as ``tarfile``
reads it. (``tarfile`` silently stops at a bad header after the first member; this
reader refuses the layer.)
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import InputError
from pipeline.oci.tar_members import TarMembers, Unsupported, parse_header, pax_records

_NAME_PART = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"),
                     min_size=1, max_size=40).filter(lambda p: p not in (".", ".."))
_NAMES = st.lists(_NAME_PART, min_size=1, max_size=6).map("/".join)
_KINDS = st.sampled_from(["file", "dir", "sym", "hard", "fifo"])
_MEMBER = st.tuples(_NAMES, _KINDS, st.binary(max_size=3000), _NAMES,
                    st.integers(0, 2**21 - 1), st.integers(0, 0o7777))


def _archive(members: list[tuple[str, str, bytes, str, int, int]], fmt: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt, encoding="utf-8") as archive:
        for name, kind, data, link, owner, mode in members:
            info = tarfile.TarInfo(name)
            info.uid = info.gid = owner
            info.mode = mode
            info.mtime = 1_700_000_000
            if kind == "file":
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE,
                         "hard": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE}[kind]
            info.linkname = link if kind in ("sym", "hard") else ""
            archive.addfile(info)
    return buffer.getvalue()


def _ours(data: bytes, pipe: bool = False) -> list[tuple[object, ...]]:
    out = []
    members = TarMembers(io.BufferedReader(io.BytesIO(data)), "test")  # type: ignore[arg-type]
    for info in members:
        body = b""
        if info.isreg():
            read, write = os.pipe()
            try:
                members.copy_to(write)
                os.close(write)
                write = -1
                with os.fdopen(read, "rb") as handle:
                    read = -1
                    body = handle.read()
            finally:
                for fd in (read, write):
                    if fd >= 0:
                        os.close(fd)
        out.append((info.name, info.type, info.linkname, info.size if info.isreg() else 0,
                    info.mode, info.uid, info.gid, body))
    return out


def _theirs(data: bytes) -> list[tuple[object, ...]]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|", encoding="utf-8") as archive:
        for info in archive:
            body = archive.extractfile(info).read() if info.isreg() else b""  # type: ignore[union-attr]
            out.append((info.name, info.type, info.linkname, info.size if info.isreg() else 0,
                        info.mode, info.uid, info.gid, body))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_MEMBER, max_size=8),
       st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]))
def test_members_read_as_tarfile_reads_them(members: list[tuple[str, str, bytes, str, int,
                                                               int]], fmt: int) -> None:
    try:
        data = _archive(members, fmt)
    except ValueError:
        return  # ustar cannot hold this name: nothing to read
    assert _ours(data) == _theirs(data)


@settings(max_examples=200, deadline=None)
@given(st.lists(_MEMBER, min_size=1, max_size=4),
       st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]), st.data())
def test_a_damaged_archive_reads_as_tarfile_or_is_refused(
        members: list[tuple[str, str, bytes, str, int, int]], fmt: int,
        data: st.DataObject) -> None:
    archive = bytearray(_archive(members, fmt))
    cut = data.draw(st.integers(0, len(archive)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(archive) - 1),
                                         st.integers(0, 255)), max_size=3))
    damaged = archive[:cut]
    for pos, value in flips:
        if pos < len(damaged):
            damaged[pos] = value
    try:
        ours = _ours(bytes(damaged))
    except (InputError, Unsupported):
        return  # refused, with a message naming the layer
    try:
        theirs = _theirs(bytes(damaged))
    except (tarfile.TarError, EOFError):
        return  # tarfile refuses what we read: nothing to compare with
    assert ours == theirs


def test_a_truncated_member_is_refused() -> None:
    data = _archive([("a/file", "file", b"x" * 2000, "", 0, 0o644)], tarfile.PAX_FORMAT)
    with pytest.raises(InputError, match="truncated"):
        _ours(data[:512 + 1000])


def test_a_bad_checksum_is_refused() -> None:
    data = bytearray(_archive([("a", "file", b"x", "", 0, 0o644)], tarfile.USTAR_FORMAT))
    data[0] = ord("b")
    with pytest.raises(InputError, match="checksum"):
        _ours(bytes(data))


@pytest.mark.parametrize(("fmt", "uid"), [(tarfile.USTAR_FORMAT, 70000),
                                          (tarfile.GNU_FORMAT, 70000),
                                          (tarfile.GNU_FORMAT, 2**40)])  # GNU base-256
def test_headers_parse_as_tarfile_parses_them(fmt: int, uid: int) -> None:
    info = tarfile.TarInfo("d/" * 40 + "name")
    info.uid, info.gid, info.mode, info.size = uid, 5, 0o4755, 12
    block = info.tobuf(fmt, "utf-8", "surrogateescape")[-512:]
    ours = parse_header(block, "t")
    theirs = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    assert (ours.name, ours.uid, ours.gid, ours.mode, ours.size, ours.type) == \
        (theirs.name, theirs.uid, theirs.gid, theirs.mode, theirs.size, theirs.type)
    assert ours.uid == uid


def test_sparse_files_and_global_headers_are_left_to_tarfile(tmp_path: Path) -> None:
    sparse = tarfile.TarInfo("s")
    sparse.type = tarfile.GNUTYPE_SPARSE
    with pytest.raises(Unsupported, match="sparse"):
        _ours(sparse.tobuf(tarfile.GNU_FORMAT) + bytes(1024))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"comment": "global"}) as archive:
        archive.addfile(tarfile.TarInfo("x"), io.BytesIO())
    with pytest.raises(Unsupported, match="global"):
        _ours(buffer.getvalue())


@pytest.mark.parametrize("body", [b"5 a=b", b"x a=b\n", b"99 a=b\n", b"6 ab\n\n"])
def test_malformed_pax_records_are_refused(body: bytes) -> None:
    with pytest.raises(InputError, match="PAX record"):
        pax_records(body, "t")


def test_a_name_with_a_nul_is_refused() -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("x")
        info.pax_headers = {"path": "etc/passwd\0.txt"}
        archive.addfile(info, io.BytesIO())
    with pytest.raises(InputError, match="NUL"):
        _ours(buffer.getvalue())
