"""Signed attestations: in-toto statements in DSSE envelopes, attached to a manifest.

Each attestation is its own artifact manifest whose ``subject`` is the image (the
OCI 1.1 way), found by a discovery tag unique to it, by the referrers API where the
registry has one and through the ``sha256-<hex>`` fallback index; its layer is also
merged into cosign's ``sha256-<hex>.att`` manifest, which ``cosign verify-attestation
--key`` reads (pipeline.signing._attachments: concurrent attesters lose nothing).

Verification trusts neither the annotations nor the storage location: it checks
the DSSE signatures over PAE, then that the *signed* statement has the wanted
predicate type and names the digest being verified.
"""

from __future__ import annotations

import json
import re
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
from pipeline.signing import _attachments, dsse, intoto
from pipeline.signing import _cosign_store as store
from pipeline.signing import simple_signing as ss
from pipeline.signing._ecdsa import Signer, VerifyKey, load_verify_keys, open_signer

ATTESTATION_SUFFIX = "att"
PREDICATE_TYPE_ANNOTATION = "predicateType"

_cache = store.VerificationCache()


def attest(
    ref: str | Reference,
    predicate_type: str,
    predicate: Mapping[str, Any],
    key: Path | str | Signer,
    *,
    registry_options: RegistryOptions | None = None,
    client: Any | None = None,
    referrer: bool = True,
) -> dict[str, Any]:
    """Sign ``predicate`` about the manifest ``ref`` names and attach it.

    ``predicate_type`` is a short name (slsaprovenance, cyclonedx, vuln) or a URI.
    ``key``: a PEM private key path, a ``pkcs11:`` URI naming a token key, or a Signer.
    Attesting the same statement again with the same key adds nothing.

    The envelope is its own manifest with ``subject`` (the OCI 1.1 referrer) and a
    discovery tag, so attestations made at once on one digest lose nothing; the cosign
    ``.att`` tag and the referrers fallback index are kept in step. AttachmentError
    (exit 15) when it is not durably discoverable. ``referrer=False`` writes only the
    ``.att`` layer, as cosign does (interop tests, the benchmark's baseline).
    """
    reference = store.as_reference(ref)
    type_uri = intoto.resolve_predicate_type(predicate_type)
    if not isinstance(predicate, Mapping):
        raise InputError("the predicate must be a JSON object")
    with open_signer(key) as signer, open_client(reference, client, registry_options) as registry:
        public = VerifyKey(signer.public_key, "signer")
        subject = resolve_descriptor(registry, reference)
        digest = str(subject["digest"])
        repository = reference.repository
        statement = intoto.build_statement(reference.name, digest, type_uri, predicate)
        payload = intoto.serialize_statement(statement)
        found = _attachments.discover(registry, repository, digest, ATTESTATION_SUFFIX)
        layer = _same_statement(registry, repository, found, payload, public, type_uri)
        added = layer is None
        pushed: bytes | None = None
        if layer is None:
            blob = pushed = dsse.sign(payload, dsse.INTOTO_PAYLOAD_TYPE, [signer]).to_json()
            layer = {
                "mediaType": dsse.MEDIA_TYPE,
                "size": len(blob),
                "digest": _attachments.push_blob(registry, repository, blob),
                "annotations": {PREDICATE_TYPE_ANNOTATION: type_uri, ss.SIGNATURE_ANNOTATION: ""},
            }
        tag = store.attached_tag(digest, ATTESTATION_SUFFIX)
        deadline = getattr(registry, "deadline", None)
        problems: list[str] = []
        referrer_digest = discovery = None
        if referrer:
            published = _attachments.publish(registry, repository, subject, ATTESTATION_SUFFIX,
                                             layer, deadline=deadline,
                                             blob=pushed)
            referrer_digest, discovery = published.manifest, published.tag
            problems = published.problems
        else:
            _attachments.merge_cosign(registry, repository, digest, ATTESTATION_SUFFIX, [layer],
                                      deadline=deadline,
                                      blobs={layer["digest"]: pushed} if pushed else None)
        att_digest = store.head_attached(registry, repository, tag)
    count = _attachments.union_count(found.layers, dsse.MEDIA_TYPE) + (1 if added else 0)
    return {
        "reference": str(reference),
        "digest": digest,
        "predicate_type": type_uri,
        "statement_digest": sha256_digest(payload),
        "attestation_tag": f"{reference.name}:{tag}",
        "discovery_tag": f"{reference.name}:{discovery}" if discovery else None,
        "attestation_manifest": att_digest,
        "attestations": count,
        "added": added,
        "referrer_manifest": referrer_digest,
        "keyid": public.keyid,
        "problems": problems,
    }


def _same_statement(registry: Any, repository: str, found: _attachments.Found, payload: bytes,
                    public: VerifyKey, type_uri: str) -> dict[str, Any] | None:
    """An existing envelope of exactly ``payload`` signed by ``public``'s key, if any."""
    for layer, _ in found.layers:
        if layer.get("mediaType") != dsse.MEDIA_TYPE:
            continue
        if (layer.get("annotations") or {}).get(PREDICATE_TYPE_ANNOTATION) not in (None, type_uri):
            continue
        try:
            old = dsse.Envelope.from_json(store.fetch_layer(registry, repository, layer))
            dsse.verify(old, [public])
        except VerificationError:
            continue
        if old.payload == payload:
            return layer
    return None


def _lookup(document: Any, path: str) -> tuple[bool, Any]:
    current = document
    for part in path.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return False, None
    return True, current


def check_conditions(
    statement: Mapping[str, Any], conditions: Sequence[Mapping[str, Any]]
) -> list[str]:
    """Reasons ``statement`` fails ``conditions`` (empty when it meets them all).

    A condition is ``{path: "predicate.a.b", equals|in|matches|exists: ...}``;
    ``path`` is dotted, relative to the statement (list items by index).
    """
    failures: list[str] = []
    for condition in conditions:
        path = condition.get("path")
        if not isinstance(path, str) or not path:
            failures.append(f"condition without a path: {dict(condition)!r}")
            continue
        found, value = _lookup(statement, path)
        if "exists" in condition:
            if bool(condition["exists"]) != found:
                failures.append(f"{path}: {'missing' if not found else 'present'}")
            continue
        if not found:
            failures.append(f"{path}: missing")
        elif "equals" in condition and value != condition["equals"]:
            failures.append(f"{path}: {value!r} is not {condition['equals']!r}")
        elif "in" in condition and value not in list(condition["in"]):
            failures.append(f"{path}: {value!r} is not one of {list(condition['in'])!r}")
        elif "matches" in condition and not (
            isinstance(value, str) and re.fullmatch(str(condition["matches"]), value)
        ):
            failures.append(f"{path}: {value!r} does not match {condition['matches']!r}")
        elif not {"equals", "in", "matches"} & set(condition):
            failures.append(f"{path}: condition has no test (equals, in, matches, exists)")
    return failures


#: One verified statement and the fingerprints of the trusted keys that signed it.
_Verified = tuple[dict[str, Any], tuple[str, ...]]


def _verify_layers(
    registry: Any,
    reference: Reference,
    layers: list[dict[str, Any]],
    digest: str,
    type_uri: str,
    trusted: list[VerifyKey],
    source: str,
) -> tuple[list[_Verified], list[str]]:
    verified: list[_Verified] = []
    reasons: list[str] = []
    for index, layer in enumerate(layers):
        label = f"{source} {index}"
        if layer["mediaType"] != dsse.MEDIA_TYPE:
            continue
        annotated = layer.get("annotations", {}).get(PREDICATE_TYPE_ANNOTATION)
        if annotated is not None and annotated != type_uri:
            # The annotation is unsigned, so it may only narrow the search, never
            # vouch for anything: a mislabelled layer is skipped (fail closed).
            continue
        try:
            blob = store.fetch_layer(registry, reference.repository, layer)
            envelope = dsse.Envelope.from_json(blob)
            signed_by = dsse.verify(envelope, trusted)
            statement = intoto.parse_statement(envelope.payload)
        except VerificationError as exc:
            reasons.append(f"{label}: {exc}")
            continue
        if statement.predicate_type != type_uri:
            if layer.get("annotations", {}).get(PREDICATE_TYPE_ANNOTATION) == type_uri:
                reasons.append(f"{label}: annotation says {type_uri} but statement is "
                               f"{statement.predicate_type}")
            continue
        if not statement.names_digest(digest):
            reasons.append(f"{label}: statement is about another artifact, not {digest}")
            continue
        verified.append((statement.raw, tuple(signed_by)))
    return verified, reasons


def _signers(verified: Sequence[_Verified]) -> set[str]:
    return {key for _, keys in verified for key in keys}


def _meeting(
    verified: Sequence[_Verified], conditions: Sequence[Mapping[str, Any]]
) -> tuple[list[_Verified], list[str]]:
    """The verified statements that meet ``conditions``, and why the others do not."""
    if not conditions:
        return list(verified), []
    passing: list[_Verified] = []
    failures: list[str] = []
    for item in verified:
        problems = check_conditions(item[0], conditions)
        if problems:
            failures.extend(problems)
        else:
            passing.append(item)
    return passing, failures


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
        repository = reference.repository
        # One tag listing (+ a HEAD of .att) names everything attached: the cache key.
        found = _attachments.list_found(registry, repository, digest, ATTESTATION_SUFFIX)
        cache_key = (reference.name, found.cache_key, type_uri,
                     tuple(sorted(k.keyid for k in trusted)), threshold)
        listed = bool(found.tags) or found.cosign_digest is not None
        cached = _cache.get(cache_key) if use_cache and listed else None
        if cached is not None:
            verified, reasons = cached
        else:
            _attachments.load(registry, repository, found)
            verified, reasons = _verify_layers(
                registry, reference, [layer for layer, _ in found.layers], digest, type_uri,
                trusted, "attestation",
            )
            reasons = [*found.reasons, *reasons]
            if len(_signers(verified)) >= threshold and use_cache and listed:
                _cache.put(cache_key, (verified, reasons))
        # The threshold counts the keys behind statements that meet the conditions: a key
        # that only signed a statement the conditions reject vouches for nothing here.
        if len(_signers(_meeting(verified, conditions)[0])) < threshold:
            if cached is not None:
                _attachments.load(registry, repository, found)
            seen = len(found.layers)
            _attachments.add_referrers(registry, repository, found, dsse.MEDIA_TYPE)
            more, more_reasons = _verify_layers(
                registry, reference, [layer for layer, _ in found.layers[seen:]], digest,
                type_uri, trusted, "referrer",
            )
            verified, reasons = [*verified, *more], [*reasons, *more_reasons]
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


def _unique(statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # The same statement signed by two keys (or found twice) is returned once.
    seen: dict[bytes, dict[str, Any]] = {}
    for statement in statements:
        seen.setdefault(intoto.serialize_statement(statement), statement)
    return list(seen.values())


def clear_cache() -> None:
    """Forget cached verification results."""
    _cache.clear()


__all__ = [
    "ATTESTATION_SUFFIX",
    "PREDICATE_TYPE_ANNOTATION",
    "attest",
    "check_conditions",
    "clear_cache",
    "verify_attestations",
]
