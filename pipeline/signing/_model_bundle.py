"""The signature file: read once, size-capped, parsed strictly, its statement checked.

A bundle is read once, with a size cap and duplicate-key rejection, and the *same*
bytes go to every parser (no second read of a file that could have changed in
between). The signed statement must be the v1.0 model-signing predicate with a
``files``/``sha256`` serialization and safe relative names, because the cheap
verification path hands those names and digests to a loader that opens files by them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final

from pipeline._json import loads_strict
from pipeline.errors import VerificationError
from pipeline.signing._pkcs11 import _short
from pipeline.signing.dsse import INTOTO_PAYLOAD_TYPE

MAX_SIGNATURE_BYTES = 64 * 1024 * 1024
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
BUNDLE_MEDIA_TYPE: Final = "application/vnd.dev.sigstore.bundle.v0.3+json"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
IN_TOTO_PAYLOAD_TYPE = INTOTO_PAYLOAD_TYPE  # signing._IN_TOTO_JSON_PAYLOAD_TYPE
IN_TOTO_STATEMENT_TYPE = "https://in-toto.io/Statement/v1"  # signing._IN_TOTO_STATEMENT_TYPE
_B64_STD = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def read_bundle(signature_path: Path) -> tuple[bytes, dict[str, Any]]:
    """Read the signature once: size-capped, UTF-8 JSON object, no duplicate keys."""
    if signature_path.is_symlink():
        raise VerificationError(f"model signature is a symlink (refused): {signature_path}")
    try:
        fd = os.open(signature_path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise VerificationError(f"model is not signed: no {signature_path}") from None
    except OSError as exc:
        raise VerificationError(
            f"cannot read model signature {signature_path}: {exc.strerror or exc}"
        ) from None
    with os.fdopen(fd, "rb") as handle:
        if not os.path.isfile(signature_path):
            raise VerificationError(f"model signature is not a regular file: {signature_path}")
        raw = handle.read(MAX_SIGNATURE_BYTES + 1)
    if len(raw) > MAX_SIGNATURE_BYTES:
        raise VerificationError(
            f"malformed model signature {signature_path}: larger than {MAX_SIGNATURE_BYTES} bytes"
        )
    return raw, parse_bundle(raw, signature_path)


def parse_bundle(raw: bytes, signature_path: Path | str) -> dict[str, Any]:
    """The bundle's JSON from bytes read once (a file, or a registry blob at admission)."""
    if len(raw) > MAX_SIGNATURE_BYTES:
        raise VerificationError(
            f"malformed model signature {signature_path}: larger than {MAX_SIGNATURE_BYTES} bytes"
        )
    # Strict (pipeline._json): two parsers reading one document must agree on it, so a
    # bundle with a duplicate key (first vs last wins), NaN or a huge integer is refused.
    data = loads_strict(raw, f"malformed model signature {signature_path}",
                        error=VerificationError)
    if not isinstance(data, dict):
        raise VerificationError(f"malformed model signature {signature_path}: not a JSON object")
    if data.get("mediaType") != BUNDLE_MEDIA_TYPE:
        raise VerificationError(
            f"malformed model signature {signature_path}: mediaType {data.get('mediaType')!r}, "
            f"expected {BUNDLE_MEDIA_TYPE}"
        )
    material = data.get("verificationMaterial")
    envelope = data.get("dsseEnvelope")
    if not isinstance(material, dict) or not isinstance(envelope, dict):
        raise VerificationError(
            f"malformed model signature {signature_path}: "
            "no verificationMaterial / dsseEnvelope (only DSSE bundles are model signatures)"
        )
    return data


@dataclass(frozen=True)
class _KeyBundle:
    """The parts of a plain key bundle that verification reads (bytes already decoded)."""

    hint: str | None
    payload_type: str
    payload: bytes
    sig: bytes


def _b64_strict(value: Any) -> bytes | None:
    """Canonical standard base64 -> bytes; None for anything else (-> model-signing path)."""
    if not isinstance(value, str) or not _B64_STD.fullmatch(value):
        return None
    return base64.b64decode(value, validate=True)


def plain_key_bundle(data: dict[str, Any]) -> _KeyBundle | None:
    """The bundle's parts if it has exactly the shape key signing writes, else None.

    That shape: ``mediaType`` (v0.3, checked on read), ``verificationMaterial`` with a
    ``publicKey`` (``hint`` only) and no transparency-log entries, and a DSSE
    envelope with one signature, all base64 canonical. Every field model-signing's
    strict bundle model would accept differently (aliases, extras) is outside it.
    """
    if set(data) != {"mediaType", "verificationMaterial", "dsseEnvelope"}:
        return None
    material, envelope = data["verificationMaterial"], data["dsseEnvelope"]
    if not set(material) <= {"publicKey", "tlogEntries"} or material.get("tlogEntries", []) != []:
        return None
    public_key = material.get("publicKey")
    if not isinstance(public_key, dict) or not set(public_key) <= {"hint"}:
        return None
    hint = public_key.get("hint")
    if hint is not None and not isinstance(hint, str):
        return None
    if set(envelope) != {"payload", "payloadType", "signatures"}:
        return None
    signatures = envelope["signatures"]
    if not isinstance(signatures, list) or len(signatures) != 1:
        return None
    signature = signatures[0]
    if not isinstance(signature, dict) or not {"sig"} <= set(signature) <= {"sig", "keyid"}:
        return None
    if signature.get("keyid") is not None and not isinstance(signature["keyid"], str):
        return None
    payload_type = envelope["payloadType"]
    payload, sig = _b64_strict(envelope["payload"]), _b64_strict(signature["sig"])
    if not isinstance(payload_type, str) or payload is None or sig is None:
        return None
    return _KeyBundle(hint, payload_type, payload, sig)


def statement_digests(statement: dict[str, Any]) -> dict[str, str]:
    """The checks of model-signing's ``dsse_payload_to_manifest`` plus :func:`manifest_digests`.

    For a statement :func:`_check_statement` has accepted (v1.0 predicate, per-file
    sha256 serialization, safe unique names, 64-hex digests): exactly one subject
    whose sha256 is the hash of all resource digests in order, ``allow_symlinks``
    recorded, every resource's algorithm sha256. Returns {name: sha256 hex}, sorted
    as model-signing's manifest sorts.
    """
    subjects = statement["subject"]
    if len(subjects) != 1:
        raise ValueError(f"Expected only one subject, got {subjects}")
    subjects[0]["name"]  # noqa: B018 - required by model-signing (the model's name)
    expected = subjects[0]["digest"]["sha256"]
    predicate = statement["predicate"]
    predicate["serialization"]["allow_symlinks"]  # noqa: B018 - _FileSerialization._from_args
    root = hashlib.sha256()
    result: dict[str, str] = {}
    for resource in predicate["resources"]:
        algorithm, digest = resource["algorithm"], resource["digest"]
        root.update(bytes.fromhex(digest))
        if algorithm != "sha256":
            raise ValueError(f"signed manifest uses {algorithm!r} digests; sha256 required")
        result[resource["name"]] = digest
    if root.hexdigest() != expected:
        raise ValueError(
            f"Manifest is inconsistent. Root digest is {expected}, "
            f"but the included resources hash to {root.hexdigest()}"
        )
    return {name: result[name] for name in sorted(result, key=PurePosixPath)}


def parse_signature(raw: bytes, data: dict[str, Any], sigstore_bundle: bool) -> Any:
    """The in-memory bundle as model-signing's Signature object, from the bytes read once."""
    if sigstore_bundle:
        from model_signing._signing import sign_sigstore
        from sigstore import models as sigstore_models

        return sign_sigstore.Signature(sigstore_models.Bundle.from_json(raw))
    from model_signing._signing import sign_sigstore_pb
    from sigstore_models.bundle import v1 as bundle_pb

    # The same normalisation model-signing's Signature.read applies to a file.
    parsed = json.loads(raw.decode("utf-8"))
    material = parsed["verificationMaterial"]
    material.setdefault("tlogEntries", [])
    if "publicKey" in material and isinstance(material["publicKey"], dict):
        material["publicKey"].setdefault("hint", None)
        for extra in ("rawBytes", "keyDetails"):
            material["publicKey"].pop(extra, None)
    return sign_sigstore_pb.Signature(bundle_pb.Bundle.from_dict(parsed))


def _check_statement(signature_path: Path | str, data: dict[str, Any]) -> None:
    """The verified payload must be the v1.0 predicate, files/sha256, with safe names."""
    try:
        # Duplicate keys were rejected on read, so this is the payload the verifier saw.
        payload = base64.b64decode(data["dsseEnvelope"]["payload"], validate=True)
        statement = loads_strict(
            payload, f"malformed model signature {signature_path}: statement",
            error=VerificationError)
        predicate_type = statement["predicateType"]
        serialization = statement["predicate"]["serialization"]
        resources = statement["predicate"]["resources"]
    except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
        raise VerificationError(
            f"malformed model signature {signature_path}: unreadable statement ({_short(exc)})"
        ) from None
    if predicate_type != PREDICATE_TYPE:
        raise VerificationError(
            f"model signature {signature_path}: predicate {predicate_type!r} is not "
            f"{PREDICATE_TYPE} (re-sign with this pipeline)"
        )
    if (
        not isinstance(serialization, dict)
        or serialization.get("method") != "files"
        or (serialization.get("hash_type") != "sha256")
    ):
        raise VerificationError(
            f"model signature {signature_path}: manifest must use per-file sha256 digests "
            f"(got {serialization!r})"
        )
    seen: set[str] = set()
    for resource in resources if isinstance(resources, list) else [None]:
        name = resource.get("name") if isinstance(resource, dict) else None
        digest = resource.get("digest") if isinstance(resource, dict) else None
        if not isinstance(name, str) or not _safe_relative(name) or name in seen:
            raise VerificationError(
                f"model signature {signature_path}: unsafe or duplicate file name {name!r}"
            )
        if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
            raise VerificationError(
                f"model signature {signature_path}: bad sha256 digest for {name!r}"
            )
        seen.add(name)


def _safe_relative(name: str) -> bool:
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        return False
    parts = name.split("/")
    return all(part not in ("", ".", "..") for part in parts)
