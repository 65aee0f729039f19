"""Deterministic layers: same tree -> same digests, whatever the order or the clock."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.build._tarlayer import (
    DIR,
    LAYER_FORMAT,
    REG,
    SYMLINK,
    ZSTD_LEVEL,
    Entry,
    norm_path,
    read_layer,
    write_layer,
)
from pipeline.errors import BuildError
from pipeline.oci import media_types as mt
from pipeline.oci.layer_codec import GZIP

_names = st.text(alphabet="abcdefghij_-.0123", min_size=1, max_size=12).filter(
    lambda s: s not in (".", "..") and not s.startswith(".")
)


def _tree() -> list[Entry]:
    return [
        Entry("usr/bin/tool", REG, 0o755, b"#!binary"),
        Entry("etc/conf", REG, 0o644, b"a=1\n"),
        Entry("usr/bin/alias", SYMLINK, 0o777, target="tool"),
        Entry("tmp", DIR, 0o1777),
    ]


def test_order_of_entries_does_not_change_digests(tmp_path: Path) -> None:
    one = write_layer(_tree(), tmp_path / "a.tar.gz")
    two = write_layer(list(reversed(_tree())), tmp_path / "b.tar.gz")
    assert (one.digest, one.diff_id) == (two.digest, two.diff_id)
    assert (tmp_path / "a.tar.gz").read_bytes() == (tmp_path / "b.tar.gz").read_bytes()


def test_content_change_changes_digest(tmp_path: Path) -> None:
    one = write_layer(_tree(), tmp_path / "a.tar.gz")
    changed = _tree()
    changed[1] = Entry("etc/conf", REG, 0o644, b"a=2\n")
    assert write_layer(changed, tmp_path / "b.tar.gz").digest != one.digest


def test_gzip_header_has_no_name_and_mtime_zero(tmp_path: Path) -> None:
    blob = write_layer(_tree(), tmp_path / "a.tar.gz", compression=GZIP)
    assert blob.media_type == mt.OCI_LAYER_GZIP
    head = blob.path.read_bytes()[:10]
    assert head[:2] == b"\x1f\x8b"
    assert head[3] == 0  # FLG: no FNAME, no FCOMMENT
    assert head[4:8] == b"\0\0\0\0"  # MTIME
    assert gzip.decompress(blob.path.read_bytes())[:3]  # a real gzip stream


def test_layers_are_one_zstd_frame_at_the_fixed_level(tmp_path: Path) -> None:
    blob = write_layer(_tree(), tmp_path / "a.tar.zst")
    assert blob.media_type == mt.OCI_LAYER_ZSTD
    data = blob.path.read_bytes()
    assert data[:4] == b"\x28\xb5\x2f\xfd"
    frame = zstandard.get_frame_parameters(data)
    assert frame.content_size == zstandard.CONTENTSIZE_UNKNOWN and not frame.has_checksum
    # One frame: the whole blob is consumed by decompressing a single frame.
    reader = zstandard.ZstdDecompressor().decompressobj()
    plain = reader.decompress(data)
    assert reader.eof and not reader.unused_data
    assert len(plain) == blob.uncompressed_size
    assert f"level {ZSTD_LEVEL}" in LAYER_FORMAT and zstandard.__version__ == "0.25.0"


def test_a_large_zstd_layer_is_the_same_bytes_twice(tmp_path: Path) -> None:
    """Reproducible beyond one block: several MiB of files, written twice from scratch."""
    import random

    rng = random.Random(7)
    entries = [Entry(f"lib/f{i:03d}.bin", REG, 0o644,
                     bytes(rng.getrandbits(8) for _ in range(1000)) * 40)
               for i in range(150)]
    one = write_layer(entries, tmp_path / "1")
    two = write_layer(list(reversed(entries)), tmp_path / "2")
    assert one.uncompressed_size > 4 << 20 and one.size > 128 << 10  # many zstd blocks
    assert (one.digest, one.diff_id) == (two.digest, two.diff_id)
    assert one.path.read_bytes() == two.path.read_bytes()


def test_parents_are_added_and_owners_fixed(tmp_path: Path) -> None:
    blob = write_layer(_tree(), tmp_path / "a.tar.gz")
    entries = read_layer(blob.path)
    assert entries["usr"].kind == DIR and entries["usr/bin"].kind == DIR
    assert entries["tmp"].mode == 0o1777
    assert all(e.uid == 0 and e.gid == 0 for e in entries.values())


@pytest.mark.parametrize("bad", ["../etc/passwd", "a/../../b", ".."])
def test_norm_path_refuses_escapes(bad: str) -> None:
    with pytest.raises(BuildError):
        norm_path(bad)


def test_norm_path_canonicalises() -> None:
    assert norm_path("./usr//bin/") == "usr/bin"
    assert norm_path("/etc/passwd") == "etc/passwd"


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(
        st.lists(_names, min_size=1, max_size=3).map("/".join),
        st.binary(max_size=64),
        min_size=1,
        max_size=8,
    )
)
def test_roundtrip_and_stable_digest(tmp_path_factory, files: dict[str, bytes]) -> None:
    tmp = tmp_path_factory.mktemp("layer")
    # A path cannot be both a file and a directory: keep only leaves.
    leaves = {p: d for p, d in files.items() if not any(o.startswith(p + "/") for o in files)}
    entries = [Entry(p, REG, 0o644, d) for p, d in leaves.items()]
    first = write_layer(entries, tmp / "1.tar.gz")
    second = write_layer(list(reversed(entries)), tmp / "2.tar.gz")
    assert first.digest == second.digest
    back = read_layer(first.path)
    assert {p: e.data for p, e in back.items() if e.kind == REG} == leaves
