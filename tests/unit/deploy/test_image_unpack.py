"""Unpacking untrusted layers: whiteouts are honoured and nothing lands outside the tree.

Property test: layers of random members (names with ``..``, absolute paths, symlinks to
``/`` and ``..``, hard links, whiteouts) either unpack or are refused (InputError); in no
case is anything written next to the tree.
"""

from __future__ import annotations

import gzip
import io
import shutil
import tarfile
import tempfile
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.deploy.image import _apply_layer
from pipeline.errors import InputError

GZ = "application/vnd.oci.image.layer.v1.tar+gzip"


def _layer(path: Path, members: list[tuple[str, str, str]], compression: str = "gzip") -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, kind, target in members:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, target
                archive.addfile(info)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, target
                archive.addfile(info)
            else:
                data = b"x"
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    plain = buffer.getvalue()
    path.write_bytes({"gzip": gzip.compress, "zstd": zstandard.compress,
                      "": lambda d: d}[compression](plain))
    return path


@pytest.mark.parametrize(("media_type", "compression"), [
    ("application/vnd.oci.image.layer.v1.tar+gzip", "gzip"),
    ("application/vnd.docker.image.rootfs.diff.tar.gzip", "gzip"),
    ("application/vnd.oci.image.layer.v1.tar+zstd", "zstd"),
    ("application/vnd.oci.image.layer.v1.tar", ""),
])
def test_gzip_zstd_and_plain_layers_unpack(tmp_path: Path, media_type: str,
                                           compression: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    blob = _layer(tmp_path / "l", [("usr/lib/a.so", "file", ""), ("lib", "sym", "usr/lib"),
                                   ("usr/lib/b.so", "hard", "usr/lib/a.so")], compression)
    _apply_layer(blob, media_type, root, "l")
    assert (root / "lib" / "a.so").read_bytes() == b"x"
    assert (root / "usr" / "lib" / "b.so").stat().st_ino == (root / "usr/lib/a.so").stat().st_ino


@pytest.mark.parametrize("media_type", [
    "application/vnd.oci.image.layer.v1.tar+bzip2",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.config.v1+json", ""])
def test_an_unknown_layer_media_type_is_refused_before_anything_is_written(
        tmp_path: Path, media_type: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    blob = _layer(tmp_path / "l", [("etc/a", "file", "")])
    with pytest.raises(InputError, match="unsupported layer media type"):
        _apply_layer(blob, media_type, root, "l")
    assert list(root.iterdir()) == []


def test_a_layer_that_is_not_what_its_media_type_says_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    blob = _layer(tmp_path / "l", [("etc/a", "file", "")], "gzip")
    with pytest.raises(InputError, match="cannot unpack"):
        _apply_layer(blob, "application/vnd.oci.image.layer.v1.tar+zstd", root, "l")


def test_modes_and_replacements_match_the_layer(tmp_path: Path) -> None:
    """A later member replaces what is there (a file by a directory, a directory by a
    link), and modes are the layer's whatever the umask."""
    root = tmp_path / "root"
    root.mkdir()
    _apply_layer(_layer(tmp_path / "1", [("a", "dir", ""), ("a/f", "file", ""),
                                         ("b", "file", "")]), GZ, root, "l1")
    _apply_layer(_layer(tmp_path / "2", [("a", "sym", "c"), ("b", "dir", ""),
                                         ("b/g", "file", ""), ("a/h", "file", "")]),
                 GZ, root, "l2")
    assert (root / "a").is_symlink() and (root / "c" / "h").is_file()
    assert (root / "b").is_dir() and (root / "b" / "g").is_file()
    assert oct((root / "b" / "g").stat().st_mode & 0o7777) == oct(0o644)


def test_layers_apply_in_order_with_whiteouts(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    _apply_layer(_layer(tmp_path / "1", [("etc", "dir", ""), ("etc/a", "file", ""),
                                         ("etc/b", "file", ""), ("opt/x/y", "file", ""),
                                         ("bin", "sym", "usr/bin")]), GZ, root, "l1")
    _apply_layer(_layer(tmp_path / "2", [("etc/.wh.a", "file", ""),
                                         ("opt/x/.wh..wh..opq", "file", ""),
                                         ("opt/x/z", "file", ""),
                                         ("bin/tool", "file", "")]), GZ, root, "l2")
    assert sorted(p.name for p in (root / "etc").iterdir()) == ["b"]
    assert sorted(p.name for p in (root / "opt" / "x").iterdir()) == ["z"]
    assert (root / "usr" / "bin" / "tool").is_file()  # through the link, inside the tree


PARTS = st.sampled_from(["a", "b", "..", ".", "", "link", "up", ".wh.a", ".wh..wh..opq",
                         ".wh..", ".wh...", ".wh."])
NAMES = st.lists(PARTS, min_size=1, max_size=4).map("/".join)
MEMBERS = st.lists(st.tuples(
    st.one_of(NAMES, NAMES.map(lambda n: "/" + n)),
    st.sampled_from(["file", "dir", "sym", "hard"]),
    st.sampled_from(["/", "..", "../..", "/etc", "a", "link/..", "up/../.."])), max_size=12)


@settings(max_examples=150, deadline=None)
@given(st.lists(MEMBERS, min_size=1, max_size=2))
def test_nothing_lands_outside_the_tree(layers: list[list[tuple[str, str, str]]]) -> None:
    base = Path(tempfile.mkdtemp())
    try:
        root = base / "deep" / "root"
        root.mkdir(parents=True)
        (base / "deep" / "sibling").mkdir()
        for index, members in enumerate(layers):
            # A link that points up, as a hostile layer would plant first.
            members = [("up", "sym", "../.."), *members]
            try:
                _apply_layer(_layer(base / f"layer{index}", members), GZ, root, f"l{index}")
            except InputError:
                pass
        assert sorted(p.name for p in base.iterdir()) == [
            "deep", *(f"layer{i}" for i in range(len(layers)))]
        assert sorted(p.name for p in (base / "deep").iterdir()) == ["root", "sibling"]
        assert list((base / "deep" / "sibling").iterdir()) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_member_that_leaves_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(InputError, match="leaves the root"):
        _apply_layer(_layer(tmp_path / "l", [("../escape", "file", "")]), GZ, root, "l")


def test_owners_are_the_layers_in_a_setgid_state_directory(tmp_path: Path) -> None:
    """New entries take a setgid directory's group: then the layer's owner is set."""
    import os

    root = tmp_path / "root"
    root.mkdir()
    os.chown(root, -1, 12345)
    root.chmod(0o2755)
    _apply_layer(_layer(tmp_path / "1", [("etc", "dir", ""), ("etc/a", "file", ""),
                                         ("lib", "sym", "etc")]), GZ, root, "l1")
    assert (root / "etc" / "a").stat().st_gid == 0
    assert (root / "lib").lstat().st_gid == 0 and (root / "etc").stat().st_gid == 0


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_long_names_and_links_unpack_in_every_format(tmp_path: Path, fmt: int) -> None:
    root = tmp_path / "root"
    root.mkdir()
    deep = "/".join(["directory-with-a-long-name"] * 8) + "/ünïcode-file"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as archive:
        info = tarfile.TarInfo(deep)
        info.size, info.uid = 5, 70000
        archive.addfile(info, io.BytesIO(b"hello"))
        link = tarfile.TarInfo("short")
        link.type, link.linkname = tarfile.SYMTYPE, deep
        archive.addfile(link)
    (tmp_path / "l").write_bytes(buffer.getvalue())
    _apply_layer(tmp_path / "l", "application/vnd.oci.image.layer.v1.tar", root, "l")
    assert (root / deep).read_bytes() == b"hello"
    assert (root / deep).stat().st_uid == 70000
    assert (root / "short").read_bytes() == b"hello"


def test_a_layer_with_a_global_pax_header_unpacks(tmp_path: Path) -> None:
    """A global PAX header (no image builder writes one) gives defaults, whiteouts apply."""
    root = tmp_path / "root"
    root.mkdir()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"comment": "global"}) as archive:
        for name in ("etc/a", "etc/.wh.gone"):
            info = tarfile.TarInfo(name)
            info.size = 2
            archive.addfile(info, io.BytesIO(b"ok"))
    (tmp_path / "l").write_bytes(gzip.compress(buffer.getvalue()))
    (root / "etc").mkdir()
    (root / "etc" / "gone").write_text("lower layer")
    _apply_layer(tmp_path / "l", GZ, root, "l")
    assert (root / "etc" / "a").read_bytes() == b"ok"
    assert not (root / "etc" / "gone").exists()


def _raw_layer(path: Path, infos: list[tarfile.TarInfo]) -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info in infos:
            archive.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
    path.write_bytes(buffer.getvalue())
    return path


@pytest.mark.parametrize("name", [".wh...", "etc/.wh...", ".wh..", "etc/.wh..", ".wh.",
                                  "etc/.wh."])
def test_a_whiteout_of_the_directory_or_its_parent_is_refused(tmp_path: Path,
                                                              name: str) -> None:
    """``.wh...`` whited out ``..``: rmtree of the directory above the tree."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (tmp_path / "beside").write_text("not the layer's")
    with pytest.raises(InputError, match="whiteout"):
        _apply_layer(_layer(tmp_path / "l", [(name, "file", "")]), GZ, root, "l")
    assert (tmp_path / "beside").exists() and (root / "etc").is_dir()


def test_links_that_fan_out_are_refused_quickly(tmp_path: Path) -> None:
    """``l1 -> l0/l0``, ``l2 -> l1/l1``...: each level nested once, 2**depth lookups."""
    root = tmp_path / "root"
    root.mkdir()
    links = [("l0", "sym", "/")] + [(f"l{i}", "sym", f"l{i - 1}/l{i - 1}") for i in range(1, 39)]
    with pytest.raises(InputError, match="too many symbolic links"):
        _apply_layer(_layer(tmp_path / "l", [*links, ("l38/x", "file", "")]), GZ, root, "l")


def test_dot_dot_after_a_link_is_the_parent_of_where_it_led(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    _apply_layer(_layer(tmp_path / "l", [("d/e/f", "dir", ""), ("a", "sym", "d/e"),
                                         ("b", "sym", "a/../x"), ("b/f", "file", "")]),
                 GZ, root, "l")
    assert (root / "d" / "x" / "f").is_file()  # where the kernel puts b/f
    assert not (root / "x").exists()


@pytest.mark.parametrize("owner", [2**32 - 1, 2**40])
def test_an_owner_the_kernel_cannot_take_is_refused(tmp_path: Path, owner: int) -> None:
    root = tmp_path / "root"
    root.mkdir()
    info = tarfile.TarInfo("f")
    info.size, info.uid = 1, owner
    with pytest.raises(InputError, match="owner"):
        _apply_layer(_raw_layer(tmp_path / "l", [info]), "application/vnd.oci.image.layer.v1.tar",
                     root, "l")


@pytest.mark.parametrize("pax", [{"path": "a\0b"}, {"GNU.sparse.map": "a,b",
                                                    "GNU.sparse.size": "1"}])
def test_bad_names_and_sparse_maps_after_a_global_header_are_input_errors(
        tmp_path: Path, pax: dict[str, str]) -> None:
    """What once went to tarfile's reader (a global header first) and came back as a
    ValueError (a NUL in a name, a sparse map that does not parse) is InputError."""
    root = tmp_path / "root"
    root.mkdir()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"comment": "global"}) as archive:
        info = tarfile.TarInfo("x")
        info.pax_headers = pax
        archive.addfile(info, io.BytesIO())
    (tmp_path / "l").write_bytes(buffer.getvalue())
    with pytest.raises(InputError):
        _apply_layer(tmp_path / "l", "application/vnd.oci.image.layer.v1.tar", root, "l")
