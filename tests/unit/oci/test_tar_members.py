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

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import InputError
from pipeline.oci.tar_members import TarMembers, parse_header, pax_records

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
    except InputError:
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


def test_sparse_files_are_refused() -> None:
    sparse = tarfile.TarInfo("s")
    sparse.type = tarfile.GNUTYPE_SPARSE
    with pytest.raises(InputError, match="sparse"):
        _ours(sparse.tobuf(tarfile.GNU_FORMAT) + bytes(1024))
    pax = tarfile.TarInfo("p")
    pax.pax_headers = {"GNU.sparse.map": "0,0", "GNU.sparse.size": "99999999999"}
    with pytest.raises(InputError, match="sparse"):
        _ours(pax.tobuf(tarfile.PAX_FORMAT) + bytes(1024))


@pytest.mark.parametrize("globals_", [{"comment": "global"}, {"uid": "7", "gid": "8"},
                                      {"path": "every/member"}])
def test_global_headers_are_defaults_as_tarfile_reads_them(globals_: dict[str, str]) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers=globals_) as archive:
        for name, uid in (("x", 1), ("y", 2)):
            info = tarfile.TarInfo(name)
            info.uid, info.size = uid, 1
            info.pax_headers = {"uid": str(uid)} if name == "y" else {}
            archive.addfile(info, io.BytesIO(b"d"))
    ours, theirs = _ours(buffer.getvalue()), _theirs(buffer.getvalue())
    assert ours == theirs
    assert ours[1][5] == 2  # the member's own record wins over the global one


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


def _header(name: str, type_: bytes, size: int, *, devmajor: bytes = b"") -> bytes:
    block = bytearray(tarfile.BLOCKSIZE)
    block[0:len(name)] = name.encode()
    block[100:108] = b"0000644\0"
    block[124:136] = b"%011o\0" % size
    block[156:157] = type_
    block[257:265] = b"ustar\x0000"
    block[329:329 + len(devmajor)] = devmajor
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def _pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % tarfile.BLOCKSIZE)


def _file(name: str, data: bytes = b"payload", **kw: bytes) -> bytes:
    return _header(name, tarfile.REGTYPE, len(data), **kw) + _pad(data)


def _record(key: str, value: str) -> bytes:
    tail = f" {key}={value}\n".encode()
    length = len(tail) + 1
    length += len(str(length + len(str(length)))) - 1
    return str(length).encode() + tail


def _extended(type_: bytes, body: bytes, size: int | None = None) -> bytes:
    return _header("././@Ext", type_, len(body) if size is None else size) + _pad(body)


_OK, _EVIL = "usr/share/doc/ok", "usr/bin/evil"
_PATH_OK, _PATH_EVIL = _record("path", _OK), _record("path", _EVIL)


@pytest.mark.parametrize("archive", [
    # tarfile applies the first of chained extended headers last (it wins): the unpacker
    # took the last, so a scanner reading with tarfile saw another name or size.
    _extended(b"x", _PATH_OK) + _extended(b"x", _PATH_EVIL) + _file("x"),
    _extended(b"x", _record("size", "0")) + _extended(b"x", _record("size", "1024"))
    + _file("decoy", _file("hidden")),
    _extended(b"L", _OK.encode() + b"\0") + _extended(b"L", _EVIL.encode() + b"\0") + _file("x"),
    _extended(b"L", _EVIL.encode() + b"\0") + _extended(b"x", _PATH_OK) + _file("x"),
    # tarfile reads a long name to its NUL, past the size the header gives.
    _extended(b"L", _EVIL.encode() + b"\0", size=3) + _file("x"),
    # tarfile parses records in an extended header's padding too.
    _header("././@Ext", b"x", len(_PATH_OK)) + _pad(_PATH_OK + _PATH_EVIL) + _file("x"),
    # tarfile's record syntax is ``\d+ [^=]+=``: it skips these, int() took them.
    _extended(b"x", b"+%d " % (len(_PATH_EVIL) + 1) + _PATH_EVIL.split(b" ", 1)[1])
    + _file(_OK),
    _extended(b"x", b"4 =\n" + _PATH_EVIL) + _file(_OK),
    # tarfile ends the archive (silently) at a header whose device number is not octal.
    _file(_OK) + _file(_EVIL, devmajor=b"zzzzzzz\0"),
], ids=["pax-twice", "pax-size-twice", "longname-twice", "longname-then-pax",
        "longname-past-size", "pax-in-padding", "pax-plus-length", "pax-short-record",
        "bad-devmajor"])
def test_what_tarfile_reads_another_way_is_refused(archive: bytes) -> None:
    archive += bytes(1024)
    theirs = _theirs(archive)
    assert theirs  # tarfile reads it (as a scanner would): it must not read differently
    with pytest.raises(InputError):
        _ours(archive)


@pytest.mark.parametrize("archive", [
    _header("PaxHeader", b"x", 0)[:124] + b"\xff" + b"\xff" * 9 + b"\xfd\xff"
    + _header("PaxHeader", b"x", 0)[136:],  # a negative base-256 size (checksum redone)
    _extended(b"x", _record("size", "-1")) + _file("a", b""),
    _extended(b"x", _record("uid", "-2")) + _file("a"),
    _extended(b"x", _record("path", "a")),  # an extended header, then the end
])
def test_negative_numbers_and_dangling_headers_are_refused(archive: bytes) -> None:
    block = bytearray(archive[:512])
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    with pytest.raises(InputError):
        _ours(bytes(block) + archive[512:] + bytes(1024))
