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

from pipeline.errors import AuthError, KeyProviderError, KeyProviderUnreachableError

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


def _open_token(ref: Any) -> Any:
    import pkcs11
    from pkcs11 import exceptions as p11

    try:
        library = pkcs11.lib(ref.module)
    except (OSError, p11.PKCS11Error, RuntimeError):
        raise KeyProviderUnreachableError(f"cannot load PKCS#11 module {ref.module}") from None
    try:
        if ref.slot_id is not None:
            slots = [s for s in library.get_slots(token_present=True) if s.slot_id == ref.slot_id]
            if not slots:
                raise KeyProviderUnreachableError(f"no token in PKCS#11 slot {ref.slot_id}")
            return slots[0].get_token()
        return library.get_token(token_label=ref.token_label)
    except p11.NoSuchToken:
        raise KeyProviderUnreachableError(
            f"PKCS#11 token {ref.token_label!r} not found in {ref.module}"
        ) from None
    except p11.PKCS11Error as exc:
        raise KeyProviderUnreachableError(
            f"PKCS#11 token unavailable ({type(exc).__name__})"
        ) from None


def _open_session(token: Any, pin: str) -> Any:
    from pkcs11 import exceptions as p11

    try:
        return token.open(user_pin=pin)
    except p11.UserAlreadyLoggedIn:
        # Login belongs to the process: another key user is logged in, so are we.
        return token.open()
    except (p11.PinIncorrect, p11.PinLenRange, p11.PinLocked) as exc:
        raise AuthError(
            f"PKCS#11 token {token.label!r} refused the PIN ({type(exc).__name__})"
        ) from None
    except p11.PKCS11Error as exc:
        raise KeyProviderError(f"cannot log in to PKCS#11 token ({type(exc).__name__})") from None


@contextlib.contextmanager
def open_token_signer(pkcs11_uri: str) -> Iterator[TokenSigner]:
    """A signer for the EC key pair ``pkcs11_uri`` names, usable inside the block."""
    from pkcs11 import KeyType, ObjectClass
    from pkcs11 import exceptions as p11
    from pkcs11.util.ec import encode_ec_public_key

    from pipeline.signing._model_internal import resolve_pkcs11_uri

    ref = resolve_pkcs11_uri(pkcs11_uri)
    token = _open_token(ref)
    session = _open_session(token, ref.pin)
    try:
        what = f"label {ref.label!r}" if ref.label is not None else f"id {ref.key_id!r}"
        criteria: dict[str, Any] = {"key_type": KeyType.EC}
        if ref.label is not None:
            criteria["label"] = ref.label
        if ref.key_id is not None:
            criteria["id"] = ref.key_id
        try:
            private = session.get_key(object_class=ObjectClass.PRIVATE_KEY, **criteria)
            public = session.get_key(object_class=ObjectClass.PUBLIC_KEY, **criteria)
        except p11.NoSuchKey:
            raise KeyProviderError(
                f"no EC key pair with {what} on PKCS#11 token {token.label!r}"
            ) from None
        except p11.MultipleObjectsReturned:
            raise KeyProviderError(
                f"more than one EC key with {what} on the token: add id=... to the URI"
            ) from None
        except p11.PKCS11Error as exc:
            raise KeyProviderError(
                f"cannot read PKCS#11 key {what} ({type(exc).__name__})"
            ) from None
        public_key = serialization.load_der_public_key(encode_ec_public_key(public))
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise KeyProviderError(f"PKCS#11 key {what} is not an EC key")
        yield TokenSigner(private, public_key, f"pkcs11 {what}")
    finally:
        with contextlib.suppress(Exception):
            session.close()


__all__ = ["TokenSigner", "is_pkcs11_uri", "open_token_signer"]
