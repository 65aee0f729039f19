"""cosign's registry storage, shared by image signatures (``.sig``) and attestations (``.att``).

cosign finds what is attached to ``repo@sha256:<hex>`` by a tag derived from the
digest, ``repo:sha256-<hex>.<suffix>``; that tag holds an ordinary OCI image
manifest whose layers are the signatures (or DSSE envelopes), each with its
annotations. Adding one is a read-modify-write of that manifest and the registry
API has no compare-and-swap, so this tag is never the only record of an attachment:
pipeline.signing._attachments gives each its own manifest and discovery tag and keeps
this tag in step by merging and reading back (docs/image-signatures.md).

Also here: the small LRU that makes repeated verification of the same content cheap.
(Which digest a reference names now, and a client for it, are pipeline.oci.registry's.)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline._lru import LRUCache
from pipeline.errors import InputError, IntegrityError, NotFoundError, VerificationError
from pipeline.oci import media_types as mt
from pipeline.oci.digest import parse_digest, sha256_digest
from pipeline.oci.manifest import parse_descriptor
from pipeline.oci.reference import Reference

#: Layers bigger than this are not signatures (payloads are bytes, envelopes KiBs).
MAX_LAYER_BYTES = 16 << 20
#: A .sig/.att manifest with more layers than this is an attack on the verifier.
MAX_LAYERS = 1000
_CREATED = "0001-01-01T00:00:00Z"  # what cosign writes: no time, reproducible


def as_reference(ref: str | Reference) -> Reference:
    """Accept a string or a parsed reference (public functions take both)."""
    return ref if isinstance(ref, Reference) else Reference.parse(ref)


def attached_tag(digest: str, suffix: str) -> str:
    """cosign's tag for what is attached to ``digest``: ``sha256-<hex>.<suffix>``."""
    algorithm, encoded = parse_digest(digest)
    return f"{algorithm}-{encoded}.{suffix}"


@dataclass(frozen=True)
class AttachedManifest:
    """A validated ``.sig``/``.att`` manifest and its digest."""

    digest: str
    manifest: dict[str, Any]

    @property
    def layers(self) -> list[dict[str, Any]]:
        return list(self.manifest["layers"])


def _check_descriptor(layer: Any, where: str) -> dict[str, Any]:
    try:
        return parse_descriptor(layer, where)
    except InputError as exc:  # a manifest we cannot read is an unverifiable signature
        raise VerificationError(f"malformed {exc}") from None


def parse_attached(body: bytes, digest: str, where: str) -> AttachedManifest:
    """Validate the shape of a ``.sig``/``.att`` manifest (VerificationError when wrong)."""
    try:
        manifest = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise VerificationError(f"malformed {where}: not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("schemaVersion") != 2:
        raise VerificationError(f"malformed {where}: not an image manifest (schemaVersion 2)")
    media_type = manifest.get("mediaType", mt.OCI_MANIFEST)
    if media_type not in mt.IMAGE_MANIFEST_TYPES:
        raise VerificationError(f"malformed {where}: media type {media_type!r}")
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise VerificationError(f"malformed {where}: no layer list")
    if len(layers) > MAX_LAYERS:
        raise VerificationError(f"malformed {where}: more than {MAX_LAYERS} layers")
    for layer in layers:
        _check_descriptor(layer, where)
    return AttachedManifest(digest, manifest)


def head_attached(client: Any, repository: str, tag: str) -> str | None:
    """The digest the attached tag points at now, or None (cheap: one HEAD)."""
    try:
        descriptor = client.head_manifest(repository, tag)
    except (InputError, IntegrityError) as exc:
        raise VerificationError(f"{repository}:{tag}: {exc}") from None
    return None if descriptor is None else str(descriptor["digest"])


def fetch_attached(client: Any, repository: str, tag_or_digest: str) -> AttachedManifest | None:
    """Fetch and validate an attached manifest; None when the tag does not exist."""
    where = f"manifest {repository}:{tag_or_digest}"
    try:
        body, _, digest = client.get_manifest(repository, tag_or_digest)
    except NotFoundError:
        return None
    except (InputError, IntegrityError) as exc:
        raise VerificationError(f"malformed {where}: {exc}") from None
    return parse_attached(body, digest, where)


def fetch_layer(client: Any, repository: str, layer: Mapping[str, Any]) -> bytes:
    """A layer's bytes, digest-verified by the client; VerificationError when unusable."""
    if layer["size"] > MAX_LAYER_BYTES:
        raise VerificationError(f"layer {layer['digest']} is larger than {MAX_LAYER_BYTES} bytes")
    try:
        data: bytes = client.get_blob(repository, layer["digest"])
    except (InputError, IntegrityError, NotFoundError) as exc:
        raise VerificationError(f"layer {layer['digest']}: {exc}") from None
    if len(data) != layer["size"]:
        raise VerificationError(f"layer {layer['digest']}: size differs from its descriptor")
    return data


def _config_for(layers: list[dict[str, Any]]) -> bytes:
    # cosign's signature image config: empty platform, one diff_id per (uncompressed) layer.
    config = {
        "architecture": "",
        "config": {},
        "created": _CREATED,
        "history": [{"created": _CREATED}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
    }
    return json.dumps(config, separators=(",", ":")).encode()


def put_cosign_manifest(
    client: Any, repository: str, tag: str, layers: list[dict[str, Any]]
) -> str:
    """Write cosign's manifest at ``tag`` holding ``layers`` (blobs already pushed).

    A plain overwrite: callers merge first and read back (pipeline.signing._attachments),
    since the registry offers no compare-and-swap.
    """
    config = _config_for(layers)
    config_digest = client.push_blob(repository, config, sha256_digest(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "size": len(config), "digest": config_digest},
        "layers": layers,
    }
    body = json.dumps(manifest, separators=(",", ":")).encode()
    return str(client.put_manifest(repository, tag, body, mt.OCI_MANIFEST))


class VerificationCache(LRUCache[tuple[Any, ...], Any]):
    """A small thread-safe LRU of verification results keyed by content digests.

    Keys contain only digests and key fingerprints (immutable facts), so a hit
    can never return a result for different content or different trust.
    """

    def __init__(self, maxsize: int = 1024) -> None:
        super().__init__(maxsize)


__all__ = [
    "AttachedManifest",
    "VerificationCache",
    "put_cosign_manifest",
    "as_reference",
    "attached_tag",
    "fetch_attached",
    "fetch_layer",
    "head_attached",
    "parse_attached",
]
