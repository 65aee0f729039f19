"""Copy images between an OCI layout and a registry (``pipeline push`` / ``pipeline pull``).

Push order is what keeps a registry consistent: blobs first, each confirmed with
HEAD, then child manifests by digest, and the tag last. If anything fails on
the way, the tag is not written, so nobody can pull an image with missing parts.
Pull writes every blob through the layout's verifying writer and lists the
manifest in ``index.json`` only once all of its content is on disk.
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import InputError, IntegrityError
from pipeline.oci.client import RegistryClient
from pipeline.oci.layout import OCILayout
from pipeline.oci.manifest import Manifest, parse_manifest
from pipeline.oci.reference import Reference

_MAX_DEPTH = 4


def _children(
    body: bytes, media_type: str | None, what: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Manifest]:
    """(blob descriptors, child manifest descriptors, parsed) of a manifest; InputError if bad."""
    manifest = parse_manifest(body, media_type, where=what)
    return list(manifest.blobs), list(manifest.manifests), manifest


def push_layout(
    layout: OCILayout,
    ref: Reference,
    client: RegistryClient,
    *,
    tag: str | None = None,
) -> str:
    """Push the layout's manifest (or the one named ``tag``) to ``ref``; returns its digest."""
    descriptor = layout.resolve(tag)
    if ref.digest and ref.digest != descriptor["digest"]:
        raise InputError(
            f"{ref}: digest does not match the layout's manifest {descriptor['digest']}"
        )
    _push_manifest(layout, ref, client, descriptor, ref.tag or descriptor["digest"], 0)
    return str(descriptor["digest"])


def _push_manifest(
    layout: OCILayout,
    ref: Reference,
    client: RegistryClient,
    descriptor: dict[str, Any],
    target: str,
    depth: int,
) -> None:
    if depth > _MAX_DEPTH:
        raise InputError(f"{layout.path}: image index nesting deeper than {_MAX_DEPTH}")
    digest = descriptor["digest"]
    body = layout.read_blob(digest)  # verified
    what = f"{layout.path}@{digest}"
    blobs, children, manifest = _children(body, descriptor.get("mediaType"), what)
    media_type = manifest.media_type
    for child in children:
        _push_manifest(layout, ref, client, child, child["digest"], depth + 1)
    for blob in blobs:
        if blob.get("urls"):
            continue  # non-distributable (foreign) layer: lives elsewhere
        # push_blob hashes the file as it sends it; the registry re-checks the digest.
        client.push_blob(ref.repository, layout.blob_path(blob["digest"]), blob["digest"])
    # Confirm before the tag exists: a tag must never point at missing content.
    for blob in blobs:
        if not blob.get("urls") and not client.blob_exists(ref.repository, blob["digest"]):
            raise IntegrityError(f"{ref.repository}: blob {blob['digest']} missing after upload")
    client.put_manifest(ref.repository, target, body, media_type)


def pull_to_layout(
    ref: Reference, layout_dir: str, client: RegistryClient, *, tag: str | None = None
) -> str:
    """Pull ``ref`` into the OCI layout at ``layout_dir`` (created if needed); returns digest."""
    layout = OCILayout.create(layout_dir)
    body, media_type, digest = client.get_manifest(ref.repository, ref.identifier)
    if ref.digest and digest != ref.digest:
        raise IntegrityError(f"{ref}: registry returned manifest {digest}")
    _pull_content(layout, ref, client, body, media_type, digest, 0)
    name = tag if tag is not None else ref.tag
    manifest = parse_manifest(body, media_type, where=str(ref))
    layout.add_manifest(body, media_type, tag=name, artifact_type=manifest.artifact_type)
    return digest


def _pull_content(
    layout: OCILayout,
    ref: Reference,
    client: RegistryClient,
    body: bytes,
    media_type: str,
    digest: str,
    depth: int,
) -> None:
    if depth > _MAX_DEPTH:
        raise InputError(f"{ref}: image index nesting deeper than {_MAX_DEPTH}")
    what = f"{ref.name}@{digest}"
    blobs, children, _ = _children(body, media_type, what)
    for child in children:
        child_body, child_type, child_digest = client.get_manifest(ref.repository, child["digest"])
        _pull_content(layout, ref, client, child_body, child_type, child_digest, depth + 1)
        layout.write_blob(child_body, child_type)
    for blob in blobs:
        if blob.get("urls") or layout.has_blob(blob["digest"]):
            continue
        with layout.blob_writer(blob["digest"]) as writer:
            client.download_blob(ref.repository, blob["digest"], writer)
        if writer.size != blob.get("size", writer.size):
            layout.blob_path(blob["digest"]).unlink()
            raise IntegrityError(f"{what}: blob {blob['digest']} size differs from its descriptor")


__all__ = ["pull_to_layout", "push_layout"]
