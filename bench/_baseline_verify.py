"""Today's verifier (before issue 10), kept as the benchmark's baseline: tag-only layout.

This is the verification path as it was: one HEAD of the cosign ``.sig``/``.att`` tag
names what is attached (the cache key), then that one manifest's layers are checked;
the referrers fallback only when the ``.att`` tag falls short. It reads only the cosign
tags, which concurrent writers can overwrite; bench_verify runs it against the
tag-only layout beside the current verifier (discovery tags) in the same run. The layer
checks themselves are the current ones (unchanged by issue 10).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import InputError, IntegrityError, VerificationError
from pipeline.oci.reference import Reference
from pipeline.oci.registry import RegistryOptions, open_client, resolve_digest
from pipeline.signing import _cosign_store as store
from pipeline.signing import dsse, intoto
from pipeline.signing._ecdsa import VerifyKey, load_verify_keys
from pipeline.signing.attestation import _meeting, _signers, _unique, _Verified, _verify_layers
from pipeline.signing.image import SIGNATURE_SUFFIX, _check_layers

ATTESTATION_SUFFIX = "att"
_image_cache = store.VerificationCache()
_att_cache = store.VerificationCache()


def clear_caches() -> None:
    _image_cache.clear()
    _att_cache.clear()


def verify_image(
    ref: str | Reference,
    keys: Sequence[Path | str | VerifyKey],
    *,
    threshold: int = 1,
    identity: str | None = None,
    registry_options: RegistryOptions | None = None,
    client: Any | None = None,
    use_cache: bool = True,
    keyless: Sequence[Any] = (),
    trust_root: Any = None,
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
        tag = store.attached_tag(digest, SIGNATURE_SUFFIX)
        sig_digest = store.head_attached(registry, reference.repository, tag)
        if sig_digest is None:
            raise VerificationError(f"{reference}: no signatures found ({digest} is unsigned)")
        key = (
            reference.name,
            digest,
            sig_digest,
            tuple(sorted(k.keyid for k in trusted)),
            threshold,
            expected_identity,
            tuple(i.label for i in identities),
            trust_root.fingerprint if trust_root is not None and identities else None,
        )
        cached = _image_cache.get(key) if use_cache else None
        if cached is not None:
            return {**cached, "reference": str(reference), "cached": True}
        attached = store.fetch_attached(registry, reference.repository, sig_digest)
        if attached is None:
            raise VerificationError(f"{reference}: signature manifest vanished while verifying")
        keyless_trust = (trust_root, identities) if identities and trust_root else None
        signers, reasons = _check_layers(
            registry, reference, attached.layers, digest, trusted, expected_identity, keyless_trust
        )
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
        "signature_manifest": attached.digest,
        "identity": expected_identity,
        "cached": False,
    }
    if use_cache:
        _image_cache.put(key, result)
    return dict(result)


def verify_attestations(
    ref: str | Reference,
    predicate_type: str,
    keys: Sequence[Path | str | VerifyKey] | Path | str,
    *,
    threshold: int = 1,
    conditions: Sequence[Mapping[str, Any]] = (),
    registry_options: RegistryOptions | None = None,
    client: Any | None = None,
    use_cache: bool = True,
) -> list[dict[str, Any]]:
    """The verified statements of ``predicate_type`` about ``ref``; VerificationError if none.

    Read from the cosign ``.att`` manifest; when that has none, from OCI referrers.
    ``conditions`` (see :func:`check_conditions`) filter the verified statements.
    """
    if threshold < 1:
        raise InputError("threshold must be at least 1")
    reference = store.as_reference(ref)
    type_uri = intoto.resolve_predicate_type(predicate_type)
    trusted = load_verify_keys(keys)
    with open_client(reference, client, registry_options) as registry:
        digest = resolve_digest(registry, reference)
        tag = store.attached_tag(digest, ATTESTATION_SUFFIX)
        att_digest = store.head_attached(registry, reference.repository, tag)
        cache_key = (reference.name, digest, att_digest, type_uri,
                     tuple(sorted(k.keyid for k in trusted)), threshold)
        cached = _att_cache.get(cache_key) if use_cache and att_digest else None
        if cached is not None:
            verified, reasons = cached
        else:
            verified, reasons = [], []
            if att_digest is not None:
                attached = store.fetch_attached(registry, reference.repository, att_digest)
                if attached is not None:
                    verified, reasons = _verify_layers(
                        registry, reference, attached.layers, digest, type_uri, trusted,
                        "attestation",
                    )
            if len(_signers(verified)) >= threshold and use_cache and att_digest:
                _att_cache.put(cache_key, (verified, reasons))
        # The threshold counts the keys behind statements that meet the conditions: a key
        # that only signed a statement the conditions reject vouches for nothing here.
        if len(_signers(_meeting(verified, conditions)[0])) < threshold:
            found, more = _from_referrers(registry, reference, digest, type_uri, trusted)
            verified, reasons = [*verified, *found], [*reasons, *more]
    if not verified:
        detail = "; ".join(reasons) if reasons else "none attached"
        raise VerificationError(
            f"{reference}: no verified {type_uri} attestation for {digest} ({detail})"
        )
    passing, failures = _meeting(verified, conditions)
    if not passing:
        raise VerificationError(
            f"{reference}: {type_uri} attestation does not meet the conditions: "
            + "; ".join(sorted(set(failures)))
        )
    signers = _signers(passing)
    if len(signers) < threshold:
        meeting = " meeting the conditions" if conditions else ""
        raise VerificationError(
            f"{reference}: {type_uri} attestations{meeting} signed by {len(signers)} trusted "
            f"key(s), {threshold} required"
        )
    statements = _unique([statement for statement, _ in passing])
    return [json.loads(json.dumps(s)) for s in statements]  # callers get their own copies


def _from_referrers(
    registry: Any, reference: Reference, digest: str, type_uri: str,
    trusted: list[VerifyKey],
) -> tuple[list[_Verified], list[str]]:
    try:
        descriptors = registry.referrers(reference.repository, digest, dsse.MEDIA_TYPE)
    except (InputError, IntegrityError, VerificationError) as exc:
        return [], [f"referrers: {exc}"]
    verified: list[_Verified] = []
    reasons: list[str] = []
    for descriptor in descriptors:
        manifest_digest = descriptor.get("digest")
        if not isinstance(manifest_digest, str):
            continue
        try:
            attached = store.fetch_attached(registry, reference.repository, manifest_digest)
        except VerificationError as exc:
            reasons.append(f"referrer {manifest_digest}: {exc}")
            continue
        if attached is None:
            continue
        found, more = _verify_layers(registry, reference, attached.layers, digest,
                                     type_uri, trusted, f"referrer {manifest_digest}")
        verified.extend(found)
        reasons.extend(more)
    return verified, reasons


