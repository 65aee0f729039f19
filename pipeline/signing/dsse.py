"""DSSE (Dead Simple Signing Envelope) v1: sign a typed payload, verify it, (de)serialise.

The signature covers PAE(payloadType, payload) — the payload *and its type*,
length-prefixed — so an envelope cannot be replayed as a different kind of
document and no two (type, payload) pairs sign the same bytes. Verifiers must
use the payload bytes they decoded from the envelope, never a re-serialised
form; :class:`Envelope` keeps them as bytes for that reason.

Envelope JSON is the one cosign stores in ``.att`` layers::

    {"payloadType": "...", "payload": "<base64>", "signatures": [{"keyid": "", "sig": "<b64>"}]}

Standard base64 is written; standard and URL-safe are accepted (the spec allows both).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from pipeline.errors import VerificationError
from pipeline.signing._ecdsa import Signer, VerifyKey, key_fingerprint

MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
MAX_ENVELOPE_BYTES = 16 << 20
_B64_RE = re.compile(r"^[A-Za-z0-9+/_-]*={0,2}$")


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSEv1 pre-authentication encoding: ``DSSEv1 <len> <type> <len> <payload>``."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def b64decode(text: object, what: str) -> bytes:
    """Decode standard or URL-safe base64 strictly; VerificationError names ``what``."""
    if not isinstance(text, str) or not _B64_RE.match(text):
        raise VerificationError(f"malformed DSSE envelope: {what} is not base64")
    padded = text + "=" * (-len(text) % 4)
    try:
        if "-" in padded or "_" in padded:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise VerificationError(f"malformed DSSE envelope: {what} is not base64") from None


@dataclass(frozen=True)
class Signature:
    """One signature in an envelope; ``keyid`` is a hint only, never trusted."""

    sig: bytes
    keyid: str = ""


@dataclass(frozen=True)
class Envelope:
    """A DSSE envelope with its payload as raw bytes."""

    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...] = field(default_factory=tuple)

    def to_json(self) -> bytes:
        """Serialise (compact, stable key order) for storage as a blob."""
        document = {
            "payloadType": self.payload_type,
            "payload": base64.b64encode(self.payload).decode(),
            "signatures": [
                {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode()}
                for s in self.signatures
            ],
        }
        return json.dumps(document, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Envelope:
        """Parse strictly; every structural problem is a VerificationError."""
        if len(data) > MAX_ENVELOPE_BYTES:
            raise VerificationError("malformed DSSE envelope: larger than 16 MiB")
        try:
            document = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise VerificationError(f"malformed DSSE envelope: not JSON ({exc})") from None
        if not isinstance(document, dict):
            raise VerificationError("malformed DSSE envelope: not a JSON object")
        payload_type = document.get("payloadType")
        if not isinstance(payload_type, str) or not payload_type:
            raise VerificationError("malformed DSSE envelope: missing payloadType")
        payload = b64decode(document.get("payload"), "payload")
        raw_signatures = document.get("signatures")
        if not isinstance(raw_signatures, list) or not raw_signatures:
            raise VerificationError("malformed DSSE envelope: no signatures")
        signatures = []
        for entry in raw_signatures:
            if not isinstance(entry, dict):
                raise VerificationError("malformed DSSE envelope: signature is not an object")
            keyid = entry.get("keyid", "")
            if not isinstance(keyid, str):
                raise VerificationError("malformed DSSE envelope: keyid is not a string")
            signatures.append(Signature(b64decode(entry.get("sig"), "sig"), keyid))
        return cls(payload_type, payload, tuple(signatures))


def sign(payload: bytes, payload_type: str, signers: Sequence[Signer]) -> Envelope:
    """An envelope over ``payload`` signed by every signer (keyid left empty, as cosign)."""
    message = pae(payload_type, payload)
    signatures = tuple(Signature(signer.sign(message), "") for signer in signers)
    return Envelope(payload_type, payload, signatures)


def verify(
    envelope: Envelope,
    keys: Sequence[VerifyKey],
    *,
    threshold: int = 1,
    payload_type: str | None = INTOTO_PAYLOAD_TYPE,
) -> list[str]:
    """Fingerprints of the distinct trusted keys that signed; VerificationError below threshold.

    Each trusted key counts once however many signatures it made, so one signer
    cannot meet a threshold of two by signing twice.
    """
    if threshold < 1:
        raise VerificationError("threshold must be at least 1")
    if payload_type is not None and envelope.payload_type != payload_type:
        raise VerificationError(
            f"DSSE payloadType is {envelope.payload_type!r}, expected {payload_type!r}"
        )
    message = pae(envelope.payload_type, envelope.payload)
    signed_by: list[str] = []
    for key in keys:
        if any(key.verify(s.sig, message) for s in envelope.signatures):
            signed_by.append(key_fingerprint(key.key))
    if len(signed_by) < threshold:
        raise VerificationError(
            f"DSSE envelope: {len(signed_by)} of the {len(keys)} trusted keys signed, "
            f"{threshold} required"
        )
    return signed_by


__all__ = [
    "INTOTO_PAYLOAD_TYPE",
    "MEDIA_TYPE",
    "Envelope",
    "Signature",
    "pae",
    "sign",
    "verify",
]
