"""cosign's "simple signing" payload: what an image signature actually signs.

The payload names the image twice — by repository (``docker-reference``) and by
manifest digest — and the signature covers the exact payload bytes. Verification
therefore has to (1) check the signature over the bytes as stored, (2) parse
those same bytes, and (3) compare the digest inside with the digest of the image
being verified. Step (3) is what stops a valid signature copied from another
image, or a tag moved after signing, from passing.

We write the payload exactly as cosign does (Go ``encoding/json`` order and
spacing, ``"optional": null`` when empty) so the bytes are identical for the
same input; parsing is strict and never trusts anything outside ``critical``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline._json import loads_strict
from pipeline.errors import InputError, VerificationError
from pipeline.oci.digest import parse_digest

MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
PAYLOAD_TYPE = "cosign container image signature"
_GO_ESCAPES = (
    ("<", "\\u003c"),
    (">", "\\u003e"),
    ("&", "\\u0026"),
    ("\u2028", "\\u2028"),
    ("\u2029", "\\u2029"),
)
#: Payloads are tiny; a huge one is an attack on the verifier, not a signature.
MAX_PAYLOAD_BYTES = 1 << 20


@dataclass(frozen=True)
class SimpleSigningPayload:
    """The parsed ``critical`` section (and the untrusted ``optional`` one)."""

    docker_reference: str
    manifest_digest: str
    optional: dict[str, Any] = field(default_factory=dict)


def build_payload(
    docker_reference: str,
    manifest_digest: str,
    optional: Mapping[str, Any] | None = None,
) -> bytes:
    """The payload bytes cosign would produce for this image (annotations go in optional)."""
    parse_digest(manifest_digest)
    if not docker_reference:
        raise InputError("simple signing payload needs a docker-reference")
    document = {
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": manifest_digest},
            "type": PAYLOAD_TYPE,
        },
        "optional": dict(optional) if optional else None,
    }
    # Go's encoding/json: no spaces, struct field order above, map keys sorted.
    if document["optional"] is not None:
        document["optional"] = dict(sorted(document["optional"].items()))
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
    # Go also escapes these (only ever inside strings, so a plain replace is exact).
    for char, escaped in _GO_ESCAPES:
        text = text.replace(char, escaped)
    return text.encode()


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise VerificationError(f"malformed simple signing payload: '{where}' is not an object")
    # cosign (Go encoding/json) matches struct fields case-insensitively: "Image" after
    # "image" would win there while we read "image". Keys equal but for case are refused.
    if len({key.casefold() for key in value}) != len(value):
        raise VerificationError(
            f"malformed simple signing payload: duplicate key (ignoring case) in '{where}'"
        )
    return value


def parse_payload(data: bytes) -> SimpleSigningPayload:
    """Parse payload bytes strictly; VerificationError names what is wrong."""
    if len(data) > MAX_PAYLOAD_BYTES:
        raise VerificationError("malformed simple signing payload: larger than 1 MiB")
    # Strict (pipeline._json): no key twice, since parsers disagree on which one wins; a
    # signed document one verifier reads as digest A and another as B is refused.
    document = loads_strict(data, "malformed simple signing payload", error=VerificationError)
    document = _mapping(document, "payload")
    critical = _mapping(document.get("critical"), "critical")
    kind = critical.get("type")
    if kind != PAYLOAD_TYPE:
        raise VerificationError(
            f"malformed simple signing payload: type is {kind!r}, expected {PAYLOAD_TYPE!r}"
        )
    identity = _mapping(critical.get("identity"), "critical.identity")
    image = _mapping(critical.get("image"), "critical.image")
    reference = identity.get("docker-reference")
    digest = image.get("docker-manifest-digest")
    if not isinstance(reference, str) or not reference:
        raise VerificationError("malformed simple signing payload: no docker-reference")
    if not isinstance(digest, str):
        raise VerificationError("malformed simple signing payload: no docker-manifest-digest")
    try:
        parse_digest(digest)
    except Exception as exc:  # InputError: reword as a verification failure
        raise VerificationError(f"malformed simple signing payload: {exc}") from None
    optional = document.get("optional")
    if optional is not None and not isinstance(optional, dict):
        raise VerificationError("malformed simple signing payload: 'optional' is not an object")
    return SimpleSigningPayload(reference, digest, dict(optional or {}))


__all__ = [
    "MAX_PAYLOAD_BYTES",
    "MEDIA_TYPE",
    "PAYLOAD_TYPE",
    "SIGNATURE_ANNOTATION",
    "SimpleSigningPayload",
    "build_payload",
    "parse_payload",
]
