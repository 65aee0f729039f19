"""OCI image layout: content-addressed blobs, atomic deterministic index, verification."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import InputError, IntegrityError, NotFoundError
from pipeline.oci import media_types as mt
from pipeline.oci.digest import parse_digest, sha256_digest, verify_digest
from pipeline.oci.layout import OCILayout


def test_digest_helpers() -> None:
    digest = sha256_digest(b"{}")
    assert digest == mt.EMPTY_DIGEST
    assert parse_digest(digest) == ("sha256", digest[7:])
    verify_digest(b"{}", digest)
    with pytest.raises(IntegrityError):
        verify_digest(b"{ }", digest)
    for bad in ["sha256:XYZ", "sha1:" + "a" * 40, "nocolon", 5, "sha256:" + "A" * 64]:
        with pytest.raises(InputError):
            parse_digest(bad)


@given(st.binary(max_size=200))
def test_verify_digest_accepts_exactly_the_content(data: bytes) -> None:
    verify_digest(data, sha256_digest(data))
    with pytest.raises(IntegrityError):
        verify_digest(data + b"x", sha256_digest(data))


def test_create_writes_spec_files(tmp_path: Path) -> None:
    layout = OCILayout.create(tmp_path / "l")
    assert json.loads((tmp_path / "l" / "oci-layout").read_text()) == {
        "imageLayoutVersion": "1.0.0"
    }
    index = json.loads((tmp_path / "l" / "index.json").read_text())
    assert index == {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
    assert OCILayout.open(tmp_path / "l").path == layout.path
    assert OCILayout.create(tmp_path / "l").path == layout.path  # idempotent


def test_open_refuses_non_layouts(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        OCILayout.open(tmp_path)
    (tmp_path / "x").write_text("not empty")
    with pytest.raises(InputError):
        OCILayout.create(tmp_path)
    (tmp_path / "oci-layout").write_text('{"imageLayoutVersion": "9"}')
    (tmp_path / "index.json").write_text("{}")
    with pytest.raises(InputError):
        OCILayout.open(tmp_path)


def test_blobs_round_trip_and_detect_tampering(tmp_path: Path) -> None:
    layout = OCILayout.create(tmp_path / "l")
    desc = layout.write_blob(b"hello", "text/plain")
    assert desc == {"mediaType": "text/plain", "digest": sha256_digest(b"hello"), "size": 5}
    assert layout.blob_path(desc["digest"]) == tmp_path / "l/blobs/sha256" / desc["digest"][7:]
    assert layout.has_blob(desc["digest"]) and layout.read_blob(desc["digest"]) == b"hello"
    layout.blob_path(desc["digest"]).write_bytes(b"HELLO")
    with pytest.raises(IntegrityError):
        layout.read_blob(desc["digest"])
    with pytest.raises(IntegrityError):
        layout.verify_blob(desc["digest"])
    with pytest.raises(NotFoundError):
        layout.read_blob(sha256_digest(b"absent"))
    with pytest.raises(InputError):
        layout.blob_path("sha256:../../etc/passwd")


def test_write_blob_file_streams_and_verifies(tmp_path: Path) -> None:
    layout = OCILayout.create(tmp_path / "l")
    data = bytes(range(256)) * 10000
    source = tmp_path / "src"
    source.write_bytes(data)
    assert layout.write_blob_file(source) == (sha256_digest(data), len(data))
    assert layout.write_blob_file(io.BytesIO(b"abc")) == (sha256_digest(b"abc"), 3)
    with pytest.raises(IntegrityError):
        layout.write_blob_file(io.BytesIO(b"abd"), expected=sha256_digest(b"abc2"))
    # nothing half-written is left behind
    leftovers = [p.name for p in (tmp_path / "l/blobs/sha256").iterdir() if p.name.startswith(".")]
    assert leftovers == []
    assert not layout.has_blob(sha256_digest(b"abd"))


def test_blob_writer_aborts_on_error(tmp_path: Path) -> None:
    layout = OCILayout.create(tmp_path / "l")
    with pytest.raises(RuntimeError), layout.blob_writer(sha256_digest(b"x")) as writer:
        writer.write(b"x")
        raise RuntimeError("download died")
    assert not layout.has_blob(sha256_digest(b"x"))
    assert list((tmp_path / "l/blobs/sha256").iterdir()) == []


def _manifest(n: int) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "n": n}).encode()


def test_add_manifest_tags_move_and_resolve(tmp_path: Path) -> None:
    layout = OCILayout.create(tmp_path / "l")
    with pytest.raises(InputError):
        layout.resolve()  # empty
    d1 = layout.add_manifest(_manifest(1), mt.OCI_MANIFEST, tag="v1")
    assert layout.resolve()["digest"] == d1
    d2 = layout.add_manifest(
        _manifest(2), mt.OCI_MANIFEST, tag="v2", platform={"os": "linux", "architecture": "amd64"}
    )
    with pytest.raises(InputError, match="name one with a tag"):
        layout.resolve()
    assert layout.resolve("v1")["digest"] == d1 and layout.resolve(d2)["digest"] == d2
    assert layout.resolve("v2")["platform"] == {"os": "linux", "architecture": "amd64"}
    d3 = layout.add_manifest(_manifest(3), mt.OCI_MANIFEST, tag="v1")  # v1 moves
    assert layout.resolve("v1")["digest"] == d3
    assert d1 not in [m["digest"] for m in layout.manifests()]
    layout.add_manifest(_manifest(3), mt.OCI_MANIFEST, tag="v1")  # same again: no duplicate
    assert len(layout.manifests()) == 2
    with pytest.raises(NotFoundError):
        layout.resolve("v9")
    with pytest.raises(InputError):
        layout.add_manifest(b"not json", mt.OCI_MANIFEST)


def test_index_is_deterministic(tmp_path: Path) -> None:
    outputs = []
    for name in ("a", "b"):
        layout = OCILayout.create(tmp_path / name)
        layout.add_manifest(
            _manifest(1), mt.OCI_MANIFEST, tag="x", annotations={"z": "1", "a": "2"}
        )
        layout.add_manifest(_manifest(2), mt.OCI_MANIFEST)
        outputs.append((tmp_path / name / "index.json").read_bytes())
    assert outputs[0] == outputs[1]
    assert list(json.loads(outputs[0])) == sorted(json.loads(outputs[0]))


def test_corrupt_index_is_an_input_error(tmp_path: Path) -> None:
    layout = OCILayout.create(tmp_path / "l")
    (tmp_path / "l/index.json").write_text('{"manifests": [{"digest": "nope"}]}')
    with pytest.raises(InputError):
        layout.manifests()
    (tmp_path / "l/index.json").write_text("{")
    with pytest.raises(InputError):
        OCILayout.open(tmp_path / "l")


@settings(max_examples=30, deadline=None)
@given(st.lists(st.binary(max_size=64), min_size=1, max_size=5))
def test_blobs_property(tmp_path_factory, blobs: list[bytes]) -> None:
    layout = OCILayout.create(tmp_path_factory.mktemp("p") / "l")
    for data in blobs:
        desc = layout.write_blob(data)
        assert layout.read_blob(desc["digest"]) == data and desc["size"] == len(data)
