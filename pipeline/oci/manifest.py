"""Parse image manifests and indexes from untrusted bytes into checked descriptors.

A manifest decides which blobs get downloaded, written to disk and trusted, so
it is validated completely before anything follows it: JSON object,
``schemaVersion`` 2, a known media type (the document's own ``mediaType`` must
agree with the one the registry or index announced), and every descriptor with
a string media type, a supported digest, and a non-negative integer size.
Anything else is an InputError (exit 4) naming the problem; no other exception
escapes (tests/fuzz/fuzz_manifest.py holds us to that).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import InputError
from pipeline.oci import media_types as mt
from pipeline.oci.digest import parse_digest

#: distribution refuses manifests over 4 MiB; a bigger document is not a manifest.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
#: more entries than this is not an image we will follow (and bounds the work).
MAX_DESCRIPTORS = 10_000


@dataclass(frozen=True)
class Manifest:
    """A validated image manifest or index.

    ``blobs``: config then layers (empty for an index); ``manifests``: an index's
    children (empty for an image manifest). Descriptors are the parsed dicts.
    """

    media_type: str
    blobs: tuple[dict[str, Any], ...] = ()
    manifests: tuple[dict[str, Any], ...] = ()
    subject: dict[str, Any] | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def is_index(self) -> bool:
        return self.media_type in mt.INDEX_TYPES


def _string_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InputError(f"{where}: annotations are not a map of strings")
    return value


def parse_descriptor(value: Any, where: str) -> dict[str, Any]:
    """Check one OCI descriptor (mediaType, digest, size, optional urls/annotations)."""
    if not isinstance(value, dict):
        raise InputError(f"{where}: descriptor is not a JSON object")
    if not isinstance(value.get("mediaType"), str) or not value["mediaType"]:
        raise InputError(f"{where}: descriptor without a mediaType")
    try:
        parse_digest(value.get("digest"))
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InputError(f"{where}: descriptor size is not a non-negative integer")
    urls = value.get("urls")
    if urls is not None and (
        not isinstance(urls, list) or not all(isinstance(u, str) for u in urls)
    ):
        raise InputError(f"{where}: descriptor urls is not a list of strings")
    if value.get("artifactType") is not None and not isinstance(value["artifactType"], str):
        raise InputError(f"{where}: descriptor artifactType is not a string")
    _string_map(value.get("annotations"), where)
    return value


def _descriptor_list(value: Any, where: str) -> tuple[dict[str, Any], ...]:
    if not isinstance(value, list):
        raise InputError(f"{where}: not a list of descriptors")
    if len(value) > MAX_DESCRIPTORS:
        raise InputError(f"{where}: more than {MAX_DESCRIPTORS} descriptors")
    return tuple(parse_descriptor(item, f"{where}[{i}]") for i, item in enumerate(value))


def _decide_media_type(document: dict[str, Any], announced: str | None, where: str) -> str:
    declared = document.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise InputError(f"{where}: mediaType is not a string")
    if declared and announced and declared != announced:
        raise InputError(f"{where}: document says {declared}, but it was served as {announced}")
    media_type = declared or announced
    if not media_type:
        # OCI allows an absent mediaType; the shape decides (manifests => index).
        media_type = mt.OCI_INDEX if "manifests" in document else mt.OCI_MANIFEST
    if media_type not in mt.ALL_MANIFEST_TYPES:
        raise InputError(f"{where}: unsupported manifest media type {media_type!r}")
    return media_type


def parse_manifest(
    body: bytes, media_type: str | None = None, *, where: str = "manifest"
) -> Manifest:
    """Validate ``body`` as the manifest or index ``media_type`` says (None: its own claim)."""
    if not isinstance(body, (bytes, bytearray)):
        raise InputError(f"{where}: manifest is not bytes")
    if len(body) > MAX_MANIFEST_BYTES:
        raise InputError(f"{where}: larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InputError(f"{where}: not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(document, dict):
        raise InputError(f"{where}: not a JSON object")
    version = document.get("schemaVersion")
    if version != 2 or isinstance(version, bool):
        raise InputError(f"{where}: schemaVersion must be 2, not {version!r}")
    kind = _decide_media_type(document, media_type, where)
    artifact_type = document.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise InputError(f"{where}: artifactType is not a string")
    subject = document.get("subject")
    if subject is not None:
        subject = parse_descriptor(subject, f"{where}: subject")
    annotations = _string_map(document.get("annotations"), where)
    if kind in mt.INDEX_TYPES:
        if "layers" in document or "config" in document:
            raise InputError(f"{where}: an index has no config or layers")
        children = _descriptor_list(document.get("manifests"), f"{where}: manifests")
        return Manifest(kind, (), children, subject, artifact_type, annotations)
    if "manifests" in document:
        raise InputError(f"{where}: an image manifest has no 'manifests' list")
    config = parse_descriptor(document.get("config"), f"{where}: config")
    layers = _descriptor_list(document.get("layers", []), f"{where}: layers")
    return Manifest(kind, (config, *layers), (), subject, artifact_type, annotations)


__all__ = [
    "MAX_DESCRIPTORS",
    "MAX_MANIFEST_BYTES",
    "Manifest",
    "parse_descriptor",
    "parse_manifest",
]
