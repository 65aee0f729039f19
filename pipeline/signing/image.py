"""Sign and verify OCI manifests (images, indexes, model artifacts) the way cosign does.

A signature binds a key to one manifest *digest*: the signed simple-signing
payload names the digest and the repository, and is stored as a layer of the
``sha256-<hex>.sig`` manifest next to the image. ``cosign verify --key`` accepts
what we write, and we accept what cosign writes with a key.

Verification fails closed. It succeeds only when at least ``threshold``
distinct trusted keys each made a valid signature whose payload names exactly
the digest being verified (a tag is resolved first, so a moved tag or a
signature copied from another image fails) and, unless told otherwise, the
same repository. Every rejected layer leaves a reason in the error.

Anything stored as a manifest can be signed, so the sealed-model artifact
(pipeline.sealing.artifact, pipeline.distribution) is signed and verified with these same
functions.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import InputError, VerificationError
from pipeline.oci.digest import sha256_digest
from pipeline.oci.reference import Reference
from pipeline.oci.registry import (
    RegistryOptions,
    open_client,
    resolve_descriptor,
    resolve_digest,
)
from pipeline.signing import _attachments, keyless
from pipeline.signing import _cosign_store as store
from pipeline.signing import simple_signing as ss
from pipeline.signing._ecdsa import Signer, VerifyKey, load_verify_keys, open_signer
from pipeline.signing.keyless import Identity, TrustRoot, certificate_annotations

SIGNATURE_SUFFIX = "sig"
#: ``identity`` value that turns the docker-reference check off (cosign's default).
ANY_IDENTITY = "*"

_cache = store.VerificationCache()


def sign_image(
    ref: str | Reference,
    key: Path | str | Signer,
    *,
    annotations: Mapping[str, str] | None = None,
    registry_options: RegistryOptions | None = None,
    client: Any | None = None,
    certificate: Path | str | None = None,
    certificate_chain: Path | str | None = None,
    attachments: bool = True,
) -> dict[str, Any]:
    """Sign the manifest ``ref`` names (a tag is resolved to its digest now).

    ``certificate`` (and ``certificate_chain``): a PEM certificate for ``key``'s public
    key (e.g. from Fulcio or a private CA), attached as cosign does, so the signature
    verifies against an identity (keyless policy) as well as against the key.

    ``key``: a PEM private key path, a ``pkcs11:`` URI naming a token key, or a Signer.

    The signature is its own manifest with a discovery tag (pipeline.signing._attachments),
    so signers running at once on one digest lose nothing; the cosign ``.sig`` tag is kept
    in step. AttachmentError (exit 15) when the signature is not durably discoverable.
    ``attachments=False`` writes only the cosign tag, as cosign does (interop tests, the
    benchmark's baseline): racing writers can then lose signatures.

    Signing the same digest again with the same key adds nothing (and re-publishes the
    existing signature's manifest and tag, so it is a repair of its own entry too).
    """
    reference = store.as_reference(ref)
    layer_annotations: dict[str, str] = {}
    if certificate is not None:
        layer_annotations = certificate_annotations(certificate, certificate_chain)
    with open_signer(key) as signer, open_client(reference, client, registry_options) as registry:
        descriptor = resolve_descriptor(registry, reference)
        digest = str(descriptor["digest"])
        payload = ss.build_payload(reference.name, digest, annotations)
        public = VerifyKey(signer.public_key, "signer")
        repository = reference.repository
        found = _attachments.discover(registry, repository, digest, SIGNATURE_SUFFIX)
        layer = _same_signature(found, payload, public)
        added = layer is None
        if layer is None:
            signature = signer.sign(payload)
            layer = {
                "mediaType": ss.MEDIA_TYPE,
                "size": len(payload),
                "digest": _attachments.push_blob(registry, repository, payload),
                "annotations": {ss.SIGNATURE_ANNOTATION: base64.b64encode(signature).decode(),
                                **layer_annotations},
            }
        tag = store.attached_tag(digest, SIGNATURE_SUFFIX)
        deadline = getattr(registry, "deadline", None)
        pushed = payload  # the layer's blob (the same bytes when it already existed)
        problems: list[str] = []
        discovery: str | None = None
        if attachments:
            published = _attachments.publish(registry, repository, descriptor,
                                             SIGNATURE_SUFFIX, layer, deadline=deadline,
                                             blob=pushed)
            manifest_digest, discovery = published.manifest, published.tag
            problems = published.problems
        else:
            _attachments.merge_cosign(registry, repository, digest, SIGNATURE_SUFFIX, [layer],
                                      deadline=deadline, blobs={layer["digest"]: pushed})
            manifest_digest = str(store.head_attached(registry, repository, tag))
    count = _attachments.union_count(found.layers, ss.MEDIA_TYPE) + (1 if added else 0)
    return {
        "reference": str(reference),
        "digest": digest,
        "media_type": descriptor.get("mediaType"),
        "signature_tag": f"{reference.name}:{tag}",
        "discovery_tag": f"{reference.name}:{discovery}" if discovery else None,
        "signature_manifest": manifest_digest,
        "signatures": count,
        "added": added,
        "keyid": public.keyid,
        "problems": problems,
    }


def _same_signature(found: _attachments.Found, payload: bytes,
                    public: VerifyKey) -> dict[str, Any] | None:
    """An existing layer signing exactly ``payload`` with ``public``'s key, if any.

    The payload is deterministic, so its blob digest finds candidates without a fetch.
    """
    payload_digest = sha256_digest(payload)
    for layer, _ in found.layers:
        if layer.get("mediaType") != ss.MEDIA_TYPE or layer.get("digest") != payload_digest:
            continue
        encoded = (layer.get("annotations") or {}).get(ss.SIGNATURE_ANNOTATION, "")
        try:
            existing = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        if public.verify(existing, payload):
            return layer
    return None


def _identity_matches(docker_reference: str, expected: str) -> bool:
    if expected == ANY_IDENTITY:
        return True
    try:
        signed = Reference.parse(docker_reference)
        wanted = Reference.parse(expected)
    except InputError:
        return False
    return signed.name == wanted.name


def verify_image(
    ref: str | Reference,
    keys: Sequence[Path | str | VerifyKey],
    *,
    threshold: int = 1,
    identity: str | None = None,
    registry_options: RegistryOptions | None = None,
    client: Any | None = None,
    use_cache: bool = True,
    keyless: Sequence[Identity] = (),
    trust_root: TrustRoot | None = None,
) -> dict[str, Any]:
    """Verify the signatures of ``ref``; VerificationError unless ``threshold`` signers signed.

    Signers are the trusted ``keys`` and, with a ``trust_root``, the ``keyless``
    identities (a certificate-carrying signature, see pipeline.signing.keyless); each
    distinct key or identity counts once towards ``threshold``.

    ``identity``: the repository the payload's docker-reference must name (default:
    ``ref``'s own repository; ``"*"`` accepts any, as cosign does by default — use
    it, or the source repository, for images copied between registries).
    """
    if threshold < 1:
        raise InputError("threshold must be at least 1")
    reference = store.as_reference(ref)
    if keyless and trust_root is None:
        raise VerificationError("keyless identities need a trust root (Fulcio CA, Rekor key)")
    trusted = load_verify_keys(keys) if keys or not keyless else []
    identities = tuple(keyless)
    if threshold > len(trusted) + len(identities):
        raise VerificationError(
            f"threshold {threshold} cannot be met by {len(trusted)} trusted key(s) "
            f"and {len(identities)} keyless identity(ies)"
        )
    expected_identity = identity or reference.name
    with open_client(reference, client, registry_options) as registry:
        digest = resolve_digest(registry, reference)
        repository = reference.repository
        # One tag listing (+ a HEAD of .sig) names everything attached: the cache key.
        found = _attachments.list_found(registry, repository, digest, SIGNATURE_SUFFIX)
        key = (
            reference.name,
            found.cache_key,
            tuple(sorted(k.keyid for k in trusted)),
            threshold,
            expected_identity,
            tuple(i.label for i in identities),
            trust_root.fingerprint if trust_root is not None and identities else None,
        )
        cached = _cache.get(key) if use_cache else None
        if cached is not None:
            return {**cached, "reference": str(reference), "cached": True}
        _attachments.load(registry, repository, found)
        keyless_trust = (trust_root, identities) if identities and trust_root else None
        signers, reasons = _check_layers(
            registry, reference, [layer for layer, _ in found.layers], digest, trusted,
            expected_identity, keyless_trust,
        )
        if len(signers) < threshold:
            # Not enough in the union of the discovery tags and .sig: the referrers API
            # (or its fallback index) may list signatures other tools attached.
            seen = len(found.layers)
            _attachments.add_referrers(registry, repository, found, ss.MEDIA_TYPE)
            more, more_reasons = _check_layers(
                registry, reference, [layer for layer, _ in found.layers[seen:]], digest,
                trusted, expected_identity, keyless_trust,
            )
            signers |= more
            reasons += more_reasons
        if not found.layers:
            raise VerificationError(f"{reference}: no signatures found ({digest} is unsigned)"
                                    + (f": {'; '.join(found.reasons)}" if found.reasons else ""))
        reasons = [*found.reasons, *reasons]
    if len(signers) < threshold:
        detail = "; ".join(reasons) if reasons else "no signature layers"
        raise VerificationError(
            f"{reference}: {len(signers)} of {threshold} required trusted signature(s) "
            f"verified for {digest} ({detail})"
        )
    result = {
        "reference": str(reference),
        "digest": digest,
        "verified": True,
        "signers": sorted(signers),
        "threshold": threshold,
        "signature_manifest": found.cosign_digest,
        "signature_manifests": sorted(set(found.manifests.values())),
        "identity": expected_identity,
        "cached": False,
    }
    if use_cache:
        _cache.put(key, result)
    return dict(result)


def _check_layers(
    registry: Any,
    reference: Reference,
    layers: list[dict[str, Any]],
    digest: str,
    trusted: list[VerifyKey],
    expected_identity: str,
    keyless_trust: tuple[TrustRoot, tuple[Identity, ...]] | None = None,
) -> tuple[set[str], list[str]]:
    signers: set[str] = set()
    reasons: list[str] = []
    for index, layer in enumerate(layers):
        label = f"signature {index}"
        if layer["mediaType"] != ss.MEDIA_TYPE:
            reasons.append(f"{label}: media type {layer['mediaType']!r} is not a signature")
            continue
        encoded = layer.get("annotations", {}).get(ss.SIGNATURE_ANNOTATION)
        if not encoded:
            reasons.append(f"{label}: no {ss.SIGNATURE_ANNOTATION} annotation")
            continue
        try:
            signature = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            reasons.append(f"{label}: signature annotation is not valid base64")
            continue
        try:
            payload = store.fetch_layer(registry, reference.repository, layer)
        except VerificationError as exc:
            reasons.append(f"{label}: {exc}")
            continue
        matching = [k.keyid for k in trusted if k.verify(signature, payload)]
        if (
            not matching
            and keyless_trust
            and keyless.CERTIFICATE_ANNOTATION in layer.get("annotations", {})
        ):
            try:
                who = keyless.verify_keyless(
                    layer["annotations"], payload, signature, *keyless_trust
                )
                matching = [who.label]
            except VerificationError as exc:
                reasons.append(f"{label}: keyless: {exc}")
                continue
        if not matching:
            reasons.append(f"{label}: not signed by a trusted key (or payload altered)")
            continue
        try:
            parsed = ss.parse_payload(payload)
        except VerificationError as exc:
            reasons.append(f"{label}: {exc}")
            continue
        if parsed.manifest_digest != digest:
            reasons.append(
                f"{label}: signs {parsed.manifest_digest}, not {digest} "
                "(copied from another image, or the tag moved after signing)"
            )
            continue
        if not _identity_matches(parsed.docker_reference, expected_identity):
            reasons.append(
                f"{label}: signed for {parsed.docker_reference!r}, expected {expected_identity!r}"
            )
            continue
        signers.update(matching)
    return signers, reasons


def clear_cache() -> None:
    """Forget cached verification results (tests, key rotation)."""
    _cache.clear()


__all__ = ["ANY_IDENTITY", "SIGNATURE_SUFFIX", "clear_cache", "sign_image", "verify_image"]
