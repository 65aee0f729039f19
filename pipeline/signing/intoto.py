"""in-toto Statements: "this predicate is about the artifact with these digests".

An attestation only means something for the subject it names; verification
therefore matches the statement's subject digest against the digest of the
image being admitted, and the predicate type inside the *signed* statement
(the ``predicateType`` layer annotation is only an index hint, unsigned).

Short names map to the predicate-type URIs cosign uses, so ``--type cyclonedx``
here and in ``cosign attest`` mean the same thing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline._json import loads_strict
from pipeline.errors import InputError, VerificationError
from pipeline.oci.digest import parse_digest

STATEMENT_TYPE_V1 = "https://in-toto.io/Statement/v1"
#: cosign (before in-toto v1) writes v0.1 statements; accepted on read, never written.
STATEMENT_TYPES_ACCEPTED = frozenset({STATEMENT_TYPE_V1, "https://in-toto.io/Statement/v0.1"})

PREDICATE_TYPES: dict[str, str] = {
    "slsaprovenance": "https://slsa.dev/provenance/v1",
    "cyclonedx": "https://cyclonedx.org/bom",
    "vuln": "https://cosign.sigstore.dev/attestation/vuln/v1",
}
MAX_STATEMENT_BYTES = 16 << 20


def resolve_predicate_type(name: str) -> str:
    """The predicate-type URI for a short name; a full URI is returned unchanged."""
    if name in PREDICATE_TYPES:
        return PREDICATE_TYPES[name]
    if "://" in name:
        return name
    raise InputError(
        f"unknown predicate type {name!r}: use one of {', '.join(sorted(PREDICATE_TYPES))} "
        "or a full URI"
    )


@dataclass(frozen=True)
class Statement:
    """A parsed statement; ``raw`` is the exact document for callers who need more."""

    predicate_type: str
    subjects: tuple[tuple[str, dict[str, str]], ...]
    predicate: Any
    raw: dict[str, Any]

    def names_digest(self, digest: str) -> bool:
        """True when some subject carries ``digest`` (``sha256:<hex>``)."""
        algorithm, encoded = parse_digest(digest)
        return any(digests.get(algorithm) == encoded for _, digests in self.subjects)


def build_statement(
    subject_name: str, digest: str, predicate_type: str, predicate: Mapping[str, Any]
) -> dict[str, Any]:
    """A v1 statement about one subject (the image, by repository and digest)."""
    algorithm, encoded = parse_digest(digest)
    if not isinstance(predicate, Mapping):
        raise InputError("the predicate must be a JSON object")
    return {
        "_type": STATEMENT_TYPE_V1,
        "subject": [{"name": subject_name, "digest": {algorithm: encoded}}],
        "predicateType": resolve_predicate_type(predicate_type),
        "predicate": dict(predicate),
    }


def serialize_statement(statement: Mapping[str, Any]) -> bytes:
    """Compact JSON with sorted keys: the same statement gives the same payload bytes."""
    return json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()


def parse_statement(data: bytes) -> Statement:
    """Parse a statement strictly (shape, types, subject digests)."""
    if len(data) > MAX_STATEMENT_BYTES:
        raise VerificationError("malformed in-toto statement: larger than 16 MiB")
    document = loads_strict(data, "malformed in-toto statement", error=VerificationError)
    if not isinstance(document, dict):
        raise VerificationError("malformed in-toto statement: not a JSON object")
    kind = document.get("_type")
    if kind not in STATEMENT_TYPES_ACCEPTED:
        raise VerificationError(f"malformed in-toto statement: unknown _type {kind!r}")
    predicate_type = document.get("predicateType")
    if not isinstance(predicate_type, str) or not predicate_type:
        raise VerificationError("malformed in-toto statement: missing predicateType")
    raw_subjects = document.get("subject")
    if not isinstance(raw_subjects, list) or not raw_subjects:
        raise VerificationError("malformed in-toto statement: no subject")
    subjects = []
    for entry in raw_subjects:
        if not isinstance(entry, dict) or not isinstance(entry.get("digest"), dict):
            raise VerificationError("malformed in-toto statement: subject without digest")
        digests = entry["digest"]
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in digests.items()):
            raise VerificationError("malformed in-toto statement: subject digest not strings")
        name = entry.get("name", "")
        if not isinstance(name, str):
            raise VerificationError("malformed in-toto statement: subject name not a string")
        subjects.append((name, dict(digests)))
    return Statement(predicate_type, tuple(subjects), document.get("predicate"), document)


__all__ = [
    "PREDICATE_TYPES",
    "STATEMENT_TYPE_V1",
    "Statement",
    "build_statement",
    "parse_statement",
    "resolve_predicate_type",
    "serialize_statement",
]
