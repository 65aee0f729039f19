"""Key-signed model bundles verified on ``cryptography`` alone, without model-signing.

Verifying a key-signed bundle needs no Sigstore machinery: it is one ECDSA check
over the DSSE pre-authentication encoding (:func:`pipeline.signing.dsse.pae`, the
project's one PAE) of the in-toto statement. Importing model-signing for it costs
~0.35 s (it loads its signers, sigstore-python, rekor-types, requests, ...), which is
most of the runtime's cold-start overhead. So a bundle of exactly the shape key
signing produces (:func:`pipeline.signing._model_bundle.plain_key_bundle`) is checked
here, reproducing model-signing 1.1's ``sign_ec_key.Verifier`` and
``signing.Verifier.verify`` step by step (references in the comments); any other
shape goes to model-signing exactly as before. tests/unit/signing/test_model_signing.py
checks that both paths decide alike on valid, tampered and mutated bundles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.signing._ecdsa import pem_hint
from pipeline.signing._model_bundle import (
    IN_TOTO_PAYLOAD_TYPE,
    IN_TOTO_STATEMENT_TYPE,
    _KeyBundle,
)
from pipeline.signing.dsse import pae


def _pae_compat(payload: bytes) -> bytes:
    # sign_sigstore_pb.pae_compat: model-signing 0.2 put the bytes' repr into a str;
    # signatures made then still verify with model-signing 1.x, so here too.
    kind = IN_TOTO_PAYLOAD_TYPE
    return f"DSSEV1 {len(kind)} {kind} {len(payload)} {payload!r}".encode()


#: ECDSA with the hash model-signing pairs with each supported curve (``get_ec_key_hash``),
#: by key size. Built at import on purpose: the first ``ec.ECDSA`` initialises
#: cryptography's OpenSSL backend (12-45 ms measured), which then falls in the loader's
#: import phase instead of inside the runtime's first signature check (a cold sealed load
#: of 256 MiB measured 150 ms with it inside, 105 ms without).
_ECDSA_BY_KEY_SIZE: dict[int, ec.ECDSA] = {
    256: ec.ECDSA(hashes.SHA256()), 384: ec.ECDSA(hashes.SHA384()),
    521: ec.ECDSA(hashes.SHA512()),
}


class _NativeKeyVerifier:
    """model-signing's ``sign_ec_key.Verifier`` for a :class:`_KeyBundle`, on cryptography."""

    def __init__(self, public_key: Path | bytes) -> None:
        """``public_key``: a PEM file, or PEM bytes (a key inlined in an admission policy)."""
        pem = public_key if isinstance(public_key, bytes) else public_key.read_bytes()
        key = serialization.load_pem_public_key(pem)
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ValueError(f"not an elliptic curve key ({type(key).__name__})")
        # sign_ec_key._check_supported_ec_key and get_ec_key_hash
        if key.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
            raise ValueError(f"Unsupported key for curve '{key.curve.name}'")
        self._key = key
        self._algorithm = _ECDSA_BY_KEY_SIZE[key.curve.key_size]
        self._hint = pem_hint(key)

    @property
    def hint(self) -> str:
        """The key's fingerprint hint, as bundles name it (for messages)."""
        return self._hint

    def verify(self, bundle: _KeyBundle) -> dict[str, Any]:
        """The verified in-toto statement; ValueError/InvalidSignature when not valid."""
        from cryptography.exceptions import InvalidSignature

        # sign_ec_key.Verifier._verify_bundle: a hint, when given, must name this key.
        if bundle.hint and bundle.hint != self._hint:
            raise ValueError(
                "Key mismatch: The public key hash in the signature's verification material "
                "does not match the provided public key."
            )
        try:
            # sign_sigstore_pb.pae: the type is always the in-toto one, whatever the envelope
            # says (the envelope's payloadType is compared with it after the signature check).
            self._key.verify(bundle.sig, pae(IN_TOTO_PAYLOAD_TYPE, bundle.payload),
                             self._algorithm)
        except InvalidSignature:
            self._key.verify(bundle.sig, _pae_compat(bundle.payload), self._algorithm)
        # signing.Verifier.verify: payload type, then statement type.
        if bundle.payload_type != IN_TOTO_PAYLOAD_TYPE:
            raise ValueError(
                f"Expected DSSE payload {IN_TOTO_PAYLOAD_TYPE}, but got {bundle.payload_type}"
            )
        statement: dict[str, Any] = json.loads(bundle.payload)
        if statement["_type"] != IN_TOTO_STATEMENT_TYPE:
            raise ValueError(
                f"Expected in-toto {IN_TOTO_STATEMENT_TYPE} payload, "
                f"but got {statement['_type']}"
            )
        return statement
