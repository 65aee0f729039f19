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
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.deploy.image import _apply_layer
from pipeline.errors import InputError

GZ = "application/vnd.oci.image.layer.v1.tar+gzip"


def _layer(path: Path, members: list[tuple[str, str, str]]) -> Path:
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
    path.write_bytes(gzip.compress(buffer.getvalue()))
    return path


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


PARTS = st.sampled_from(["a", "b", "..", ".", "", "link", "up", ".wh.a", ".wh..wh..opq"])
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
