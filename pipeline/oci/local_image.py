"""Open an image in a local OCI layout: ``DIR`` or ``DIR:tag`` (``oci:`` optional).

Scanners, the SBOM and build provenance read images only through here, so every reader
gets the same digest for the same target and the same errors for bad ones.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import InputError, NotFoundError
from pipeline.oci.layer_codec import READ_ERRORS, compression_of, open_layer
from pipeline.oci.layout import OCILayout
from pipeline.oci.tar_members import TarMembers


@dataclass(frozen=True)
class LocalImage:
    """An image manifest inside a layout."""

    layout: OCILayout
    digest: str
    manifest: dict[str, Any]
    config: dict[str, Any]
    tag: str | None

    def layers(self) -> list[tuple[Path, str]]:
        """Each layer's blob and its compression (from its media type, checked by
        :func:`open_image`)."""
        return [(self.layout.blob_path(layer["digest"]),
                 compression_of(layer.get("mediaType", ""), f"{self.digest}: layer "
                                f"{layer['digest']}"))
                for layer in self.manifest["layers"]]


def split_target(target: str) -> tuple[Path, str | None]:
    """``[oci:]DIR[:tag]`` -> (DIR, tag)."""
    text = target.removeprefix("oci:")
    path = Path(text)
    if path.is_dir():
        return path, None
    head, sep, tag = text.rpartition(":")
    if sep and Path(head).is_dir() and "/" not in tag:
        return Path(head), tag
    raise NotFoundError(f"scan target not found: {target} (an OCI layout directory[:tag])")


def open_image(target: str) -> LocalImage:
    """Resolve ``target`` to one image manifest (InputError for an index or non-image)."""
    path, tag = split_target(target)
    layout = OCILayout.open(path)
    descriptor = layout.resolve(tag)
    manifest = json.loads(layout.read_blob(descriptor["digest"]))
    if "layers" not in manifest or "config" not in manifest:
        raise InputError(f"{target}: {descriptor['digest']} is not an image manifest")
    config = json.loads(layout.read_blob(manifest["config"]["digest"]))
    for layer in manifest["layers"]:
        compression_of(layer.get("mediaType", ""), f"{target}: layer {layer['digest']}")
        layout.verify_blob(layer["digest"])
    return LocalImage(layout, descriptor["digest"], manifest, config, tag)


def iter_files(image: LocalImage, want: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    """Regular files whose path satisfies ``want``, layer by layer (later layers win last).

    Read with the reader the local deploy unpacks with (``TarMembers``) and named as it
    names them (normalised: ``./a//b`` is ``a/b``): a layer cannot show the scanners
    one file and the pods another, and a layer the unpacker refuses is refused here too.
    """
    for blob, compression in image.layers():
        try:
            with open_layer(blob, compression) as stream:
                members = TarMembers(io.BufferedReader(stream, 1 << 20),  # type: ignore[type-var]
                                     f"{image.digest}: layer {blob.name}")
                for info in members:
                    name = os.path.normpath(info.name.lstrip("/"))
                    if info.isreg() and name not in (".", "..") and want(name):
                        yield name, members.read()
        except READ_ERRORS as exc:
            raise InputError(f"{image.digest}: layer {blob.name} is not readable: {exc}"
                             ) from None


__all__ = ["LocalImage", "iter_files", "open_image", "split_target"]
