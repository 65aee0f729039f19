"""What the scanners read of an image is what the local deploy unpacks.

``iter_files`` (the SBOM's and provenance's view of an image) reads layers with the
unpacker's reader and names members as the unpacker does: a name written ``./a//b``
is ``a/b``, and a layer the unpacker refuses (a reader differential) is refused here.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from pipeline.errors import InputError
from pipeline.oci.layout import OCILayout
from pipeline.oci.local_image import iter_files, open_image

LAYER = "application/vnd.oci.image.layer.v1.tar"


def _image(tmp_path: Path, layer: bytes) -> str:
    layout = OCILayout.create(tmp_path / "layout")
    config = layout.write_blob(b'{"config": {}}', "application/vnd.oci.image.config.v1+json")
    blob = layout.write_blob(layer, LAYER)
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config, "layers": [blob]}
    layout.add_manifest(json.dumps(manifest).encode(),
                        "application/vnd.oci.image.manifest.v1+json", tag="t")
    return f"{tmp_path / 'layout'}:t"


def _tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_names_are_normalised_as_the_unpacker_names_them(tmp_path: Path) -> None:
    target = _image(tmp_path, _tar([(tarfile.TarInfo("./var/lib/dpkg//status.d/./pkg"),
                                     b"Package: pkg\n")]))
    found = dict(iter_files(open_image(target), lambda n: n.startswith("var/lib/dpkg/")))
    assert found == {"var/lib/dpkg/status.d/pkg": b"Package: pkg\n"}


def test_a_layer_the_unpacker_refuses_is_refused(tmp_path: Path) -> None:
    """Two PAX headers for one member: tarfile applies the first, a naive reader the last."""
    first, second = tarfile.TarInfo("a"), tarfile.TarInfo("b")
    first.pax_headers, second.pax_headers = {"path": "usr/share/ok"}, {"path": "usr/bin/evil"}
    member = tarfile.TarInfo("x")
    member.size = 1
    layer = (first.tobuf(tarfile.PAX_FORMAT)[:1024] + second.tobuf(tarfile.PAX_FORMAT)[:1024]
             + member.tobuf(tarfile.USTAR_FORMAT) + b"p".ljust(512, b"\0") + bytes(1024))
    target = _image(tmp_path, layer)
    with pytest.raises(InputError, match="two extended headers"):
        list(iter_files(open_image(target), lambda _n: True))
