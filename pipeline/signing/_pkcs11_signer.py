"""Image signatures and attestations signed by a key on a PKCS#11 token (HSM).

The key is named by an RFC 7512 URI (``pkcs11:object=release``; module, token and
PIN from the URI or the pipeline's PKCS#11 settings, resolved exactly as model
signing resolves them). The private key never leaves the token: the token gets
SHA-256(payload) and returns ``r || s``, which is re-encoded as the DER signature
cosign stores. The session stays open only for the ``with`` block.

python-pkcs11 is the project's one PKCS#11 library (two in one process fight over
C_Initialize/C_Finalize), so this uses it too.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from pipeline.errors import KeyProviderError

URI_PREFIX = "pkcs11:"


def is_pkcs11_uri(key: object) -> bool:
    """True when ``key`` names a token key rather than a PEM file."""
    return isinstance(key, str) and key.startswith(URI_PREFIX)


class TokenSigner:
    """A :class:`pipeline.signing._ecdsa.Signer` whose ECDSA P-256 runs on the token."""

    def __init__(self, private: Any, public_key: ec.EllipticCurvePublicKey, label: str):
        if not isinstance(public_key.curve, ec.SECP256R1):
            raise KeyProviderError(
                f"PKCS#11 key {label}: curve {public_key.curve.name}, image signatures use P-256"
            )
        self._private = private
        self._public_key = public_key
        self.source = label

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public_key

    def sign(self, data: bytes) -> bytes:
        from pkcs11 import Mechanism
        from pkcs11 import exceptions as p11

        try:
            raw = self._private.sign(hashlib.sha256(data).digest(), mechanism=Mechanism.ECDSA)
        except p11.PKCS11Error as exc:
            raise KeyProviderError(f"PKCS#11 signing failed: {type(exc).__name__}") from None
        half = len(raw) // 2
        return encode_dss_signature(
            int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
        )

    def __repr__(self) -> str:
        return f"TokenSigner(source={self.source!r})"


@contextlib.contextmanager
def open_token_signer(pkcs11_uri: str) -> Iterator[TokenSigner]:
    """A signer for the EC key pair ``pkcs11_uri`` names, usable inside the block."""
    from pkcs11.util.ec import encode_ec_public_key

    from pipeline.signing import _pkcs11 as _token

    ref = _token.resolve_pkcs11_uri(pkcs11_uri)
    with _token.open_token_session(ref) as (token, session):
        private, public = _token.find_token_keypair(ref, token, session)
        what = f"label {ref.label!r}" if ref.label is not None else f"id {ref.key_id!r}"
        public_key = serialization.load_der_public_key(encode_ec_public_key(public))
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise KeyProviderError(f"PKCS#11 key {what} is not an EC key")
        yield TokenSigner(private, public_key, f"pkcs11 {what}")


__all__ = ["TokenSigner", "is_pkcs11_uri", "open_token_signer"]
