"""ECDSA P-256 keys for image signatures and attestations: load, sign, verify.

cosign's key-based mode signs with ECDSA P-256 over SHA-256 and stores the DER
signature; keeping exactly that (and nothing else) is what lets ``cosign verify
--key`` accept our signatures and us accept theirs. Other curves and RSA are
refused on load rather than half-supported: a verifier that silently accepts a
weaker algorithm is a downgrade path.

Signers share one tiny interface (:class:`Signer`: ``sign(data) -> DER`` plus
the public key), so a PKCS#11 token key can stand in for a PEM file without the
storage code knowing. Private key passwords come from the environment variable
``PIPELINE_SIGNING_KEY_PASSWORD`` (never argv, never logged).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.errors import InputError, KeyProviderError

PASSWORD_ENV = "PIPELINE_SIGNING_KEY_PASSWORD"
_MAX_KEY_FILE = 64 * 1024


class Signer(Protocol):
    """Anything that produces ECDSA P-256/SHA-256 DER signatures."""

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey: ...

    def sign(self, data: bytes) -> bytes:
        """DER-encoded ECDSA signature over SHA-256(``data``)."""
        ...


@dataclass(frozen=True)
class VerifyKey:
    """A trusted public key and where it came from (for messages, never the key bytes)."""

    key: ec.EllipticCurvePublicKey
    source: str

    @property
    def keyid(self) -> str:
        return key_fingerprint(self.key)

    def verify(self, signature: bytes, data: bytes) -> bool:
        """True when ``signature`` is a valid DER ECDSA signature over SHA-256(``data``)."""
        try:
            self.key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return False
        return True


class PemSigner:
    """An ECDSA P-256 private key loaded from a PEM file."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, source: str) -> None:
        _check_curve(key.curve, source)
        self._key = key
        self.source = source

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data, ec.ECDSA(hashes.SHA256()))

    def __repr__(self) -> str:  # never show key material
        return f"PemSigner(source={self.source!r})"


def key_fingerprint(key: ec.EllipticCurvePublicKey) -> str:
    """sha256 hex of the DER SubjectPublicKeyInfo: a stable id for messages and caches."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def pem_hint(key: Any) -> str:
    """sha256 hex of the PEM SubjectPublicKeyInfo: the key hint model-signing bundles carry."""
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(pem).hexdigest()


def _check_curve(curve: ec.EllipticCurve, source: str) -> None:
    if not isinstance(curve, ec.SECP256R1):
        raise KeyProviderError(
            f"{source}: unsupported curve {curve.name}: image signatures use ECDSA P-256"
        )


def _read_key_file(path: Path) -> bytes:
    try:
        if path.stat().st_size > _MAX_KEY_FILE:
            raise InputError(f"{path}: too large to be a PEM key")
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyProviderError(f"key file not found: {path}") from None
    except OSError as exc:
        raise KeyProviderError(f"cannot read key file {path}: {exc.strerror}") from None


def load_signer(path: str | os.PathLike[str], password: bytes | None = None) -> PemSigner:
    """Load a PEM ECDSA P-256 private key (PKCS#8 or SEC1, optionally encrypted)."""
    path = Path(path)
    data = _read_key_file(path)
    if password is None:
        from pipeline.config import load_settings

        configured = load_settings().keys().signing_key_password
        password = configured.encode() if configured else None
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except TypeError:
        # Encrypted without a password, or a password given for a clear key.
        raise KeyProviderError(
            f"{path}: private key is encrypted: set {PASSWORD_ENV}"
            if password is None
            else f"{path}: private key is not encrypted but a password was given"
        ) from None
    except ValueError:
        raise KeyProviderError(
            f"{path}: not a PEM private key, or the password is wrong"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyProviderError(f"{path}: not an ECDSA private key (image signatures use P-256)")
    return PemSigner(key, str(path))


@contextlib.contextmanager
def open_signer(key: str | os.PathLike[str] | Signer) -> Iterator[Signer]:
    """The signer ``key`` names: a Signer as is, a ``pkcs11:`` URI (token), or a PEM path.

    A context manager because a token key is only usable while its session is open.
    """
    if not isinstance(key, str | os.PathLike):
        yield key  # already a Signer
        return
    from pipeline.signing._pkcs11_signer import is_pkcs11_uri, open_token_signer

    if is_pkcs11_uri(key):
        with open_token_signer(str(key)) as signer:
            yield signer
        return
    yield load_signer(key)


def load_verify_key(source: str | os.PathLike[str]) -> VerifyKey:
    """Load a PEM public key from a path, or from inline PEM text (policy files allow both)."""
    text = os.fspath(source)
    if isinstance(text, str) and "-----BEGIN" in text:
        data, origin = text.encode(), "inline PEM"
    else:
        path = Path(text)
        data, origin = _read_key_file(path), str(path)
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        hint = " (this is a private key: give the public one)" if b"PRIVATE KEY" in data else ""
        raise KeyProviderError(f"{origin}: not a PEM public key{hint}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise KeyProviderError(f"{origin}: not an ECDSA public key (image signatures use P-256)")
    _check_curve(key.curve, origin)
    return VerifyKey(key, origin)


def load_verify_keys(
    sources: Sequence[str | os.PathLike[str] | VerifyKey] | str | os.PathLike[str],
) -> list[VerifyKey]:
    """Trusted keys from paths, inline PEM or loaded keys; a key given twice counts once."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    unique: dict[str, VerifyKey] = {}
    for item in sources:
        key = item if isinstance(item, VerifyKey) else load_verify_key(item)
        unique.setdefault(key.keyid, key)
    if not unique:
        raise KeyProviderError("no public key given: verification needs at least one")
    return list(unique.values())


__all__ = [
    "PASSWORD_ENV",
    "PemSigner",
    "Signer",
    "VerifyKey",
    "key_fingerprint",
    "load_signer",
    "load_verify_key",
    "load_verify_keys",
    "open_signer",
    "pem_hint",
]
