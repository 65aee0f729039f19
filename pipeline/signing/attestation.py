"""Signed attestations: in-toto statements in DSSE envelopes, attached to a manifest.

Each attestation is stored twice, for two kinds of readers:

* cosign's way: a layer (``application/vnd.dsse.envelope.v1+json``, annotation
  ``predicateType``) of the ``sha256-<hex>.att`` manifest, which ``cosign
  verify-attestation --key`` reads;
* the OCI 1.1 way: an artifact manifest whose ``subject`` is the image, found
  through the referrers API or, on registries without it (distribution 2.8),
  through the ``sha256-<hex>`` fallback index the registry client maintains.

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

from pipeline.errors import InputError, IntegrityError, VerificationError
from pipeline.oci import media_types as mt
from pipeline.oci.digest import sha256_digest
from pipeline.oci.reference import Reference
from pipeline.oci.registry import (
    RegistryOptions,
    open_client,
    resolve_descriptor,
    resolve_digest,
)
from pipeline.signing import _cosign_store as store
from pipeline.signing import dsse, intoto
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
    """Sign ``predicate`` about the manifest ``ref`` names and attach it (``.att`` + referrer).

    ``predicate_type`` is a short name (slsaprovenance, cyclonedx, vuln) or a URI.
    ``key``: a PEM private key path, a ``pkcs11:`` URI naming a token key, or a Signer.
    Attesting the same statement again with the same key adds nothing.
    """
    reference = store.as_reference(ref)
    type_uri = intoto.resolve_predicate_type(predicate_type)
    if not isinstance(predicate, Mapping):
        raise InputError("the predicate must be a JSON object")
    with open_signer(key) as signer, open_client(reference, client, registry_options) as registry:
        public = VerifyKey(signer.public_key, "signer")
        subject = resolve_descriptor(registry, reference)
        digest = str(subject["digest"])
        statement = intoto.build_statement(reference.name, digest, type_uri, predicate)
        payload = intoto.serialize_statement(statement)
        envelope = dsse.sign(payload, dsse.INTOTO_PAYLOAD_TYPE, [signer])
        blob = envelope.to_json()

        def same_statement(_layer: dict[str, Any], existing: bytes) -> bool:
            try:
                old = dsse.Envelope.from_json(existing)
                dsse.verify(old, [public])
            except VerificationError:
                return False
            return old.payload == payload

        tag = store.attached_tag(digest, ATTESTATION_SUFFIX)
        annotations = {PREDICATE_TYPE_ANNOTATION: type_uri, ss.SIGNATURE_ANNOTATION: ""}
        att_digest, count, added = store.append_layer(
            registry, reference.repository, tag, blob, dsse.MEDIA_TYPE, annotations,
            is_duplicate=same_statement,
        )
        referrer_digest = None
        if referrer and added:
            referrer_digest = _push_referrer(registry, reference, subject, blob, type_uri)
    return {
        "reference": str(reference),
        "digest": digest,
        "predicate_type": type_uri,
        "statement_digest": sha256_digest(payload),
        "attestation_tag": f"{reference.name}:{tag}",
        "attestation_manifest": att_digest,
        "attestations": count,
        "added": added,
        "referrer_manifest": referrer_digest,
        "keyid": public.keyid,
    }


def _push_referrer(
    registry: Any, reference: Reference, subject: Mapping[str, Any], blob: bytes, type_uri: str
) -> str:
    """Attach the envelope as an OCI 1.1 artifact whose subject is the image."""
    repository = reference.repository
    blob_digest = registry.push_blob(repository, blob, sha256_digest(blob))
    registry.push_blob(repository, mt.EMPTY_JSON, mt.EMPTY_DIGEST)
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "artifactType": dsse.MEDIA_TYPE,
        "config": {"mediaType": mt.OCI_EMPTY, "digest": mt.EMPTY_DIGEST, "size": 2},
        "layers": [
            {
                "mediaType": dsse.MEDIA_TYPE,
                "digest": blob_digest,
                "size": len(blob),
                "annotations": {PREDICATE_TYPE_ANNOTATION: type_uri},
            }
        ],
        "subject": {
            "mediaType": subject["mediaType"],
            "digest": subject["digest"],
            "size": subject["size"],
        },
        "annotations": {PREDICATE_TYPE_ANNOTATION: type_uri},
    }
    body = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    # The client maintains the referrers fallback tag when the registry has no API.
    return str(registry.put_manifest(repository, sha256_digest(body), body, mt.OCI_MANIFEST))


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
        tag = store.attached_tag(digest, ATTESTATION_SUFFIX)
        att_digest = store.head_attached(registry, reference.repository, tag)
        cache_key = (reference.name, digest, att_digest, type_uri,
                     tuple(sorted(k.keyid for k in trusted)), threshold)
        cached = _cache.get(cache_key) if use_cache and att_digest else None
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
                _cache.put(cache_key, (verified, reasons))
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
