"""Layer blobs by media type: zstd, gzip and plain tar read alike; anything else refused.

The scan, SBOM and provenance read images through ``local_image``: a zstd image must give
them the same files as a gzip one, and a layer in an encoding nobody here decodes must be
a clear InputError when the image is opened, not a tarfile traceback halfway through.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest
import zstandard

from pipeline.errors import InputError
from pipeline.oci import media_types as mt
from pipeline.oci.layer_codec import GZIP, PLAIN, ZSTD, compression_of, open_layer, sniff
from pipeline.oci.layout import OCILayout
from pipeline.oci.local_image import iter_files, open_image

ENCODE = {GZIP: gzip.compress, ZSTD: zstandard.compress, PLAIN: lambda data: data}
TYPES = {GZIP: mt.OCI_LAYER_GZIP, ZSTD: mt.OCI_LAYER_ZSTD, PLAIN: mt.OCI_LAYER}


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _image(tmp_path: Path, layers: list[tuple[str, bytes]]) -> Path:
    layout = OCILayout.create(tmp_path / "layout")
    descriptors = [layout.write_blob(blob, media_type) for media_type, blob in layers]
    config = layout.write_blob(json.dumps({"rootfs": {"type": "layers"}}).encode(),
                               mt.OCI_CONFIG)
    manifest = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config,
                "layers": descriptors}
    layout.add_manifest(json.dumps(manifest).encode(), mt.OCI_MANIFEST, tag="v1")
    return tmp_path / "layout"


@pytest.mark.parametrize("compression", [GZIP, ZSTD, PLAIN])
def test_each_encoding_reads_back_and_is_recognised(tmp_path: Path, compression: str) -> None:
    plain = _tar({"etc/os-release": b"ID=debian\n"})
    blob = tmp_path / "blob"
    blob.write_bytes(ENCODE[compression](plain))
    assert sniff(blob) == compression
    assert compression_of(TYPES[compression], "here") == compression
    with open_layer(blob, compression) as stream:
        assert stream.read() == plain


def test_the_scan_reads_files_of_zstd_gzip_and_plain_layers(tmp_path: Path) -> None:
    layers = [(TYPES[kind], ENCODE[kind](_tar({f"etc/{kind or 'plain'}": kind.encode()})))
              for kind in (GZIP, ZSTD, PLAIN)]
    image = open_image(f"{_image(tmp_path, layers)}:v1")
    found = dict(iter_files(image, lambda name: name.startswith("etc/")))
    assert found == {"etc/gzip": b"gzip", "etc/zstd": b"zstd", "etc/plain": b""}


def test_an_unknown_layer_media_type_is_refused_when_the_image_is_opened(
        tmp_path: Path) -> None:
    layout = _image(tmp_path, [("application/vnd.oci.image.layer.v1.tar+bzip2",
                                _tar({"a": b"x"}))])
    with pytest.raises(InputError, match="unsupported layer media type"):
        open_image(f"{layout}:v1")


def test_a_corrupt_zstd_layer_is_an_input_error(tmp_path: Path) -> None:
    blob = zstandard.compress(_tar({"a": b"x" * 4096}))
    layout = _image(tmp_path, [(mt.OCI_LAYER_ZSTD, blob[:8] + b"\0" * (len(blob) - 8))])
    with pytest.raises(InputError, match="not readable"):
        list(iter_files(open_image(f"{layout}:v1"), lambda name: True))
