"""Signing keys that live on a PKCS#11 token (HSM): created there, never exported.

The file-based pair (:mod:`pipeline.signing.keypair`) suits laptops and CI; a release
key belongs on a token, where it can sign but cannot be copied. This module creates
such a key and writes only its public half, which verifiers get as ``--trust``.
Signing with it is ``pipeline sign-model --pkcs11-uri pkcs11:object=<label>``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from pipeline._fileio import write_atomic
from pipeline.errors import InputError
from pipeline.signing import _pkcs11 as _impl

__all__ = ["create_token_signing_key", "token_key_uri"]


def token_key_uri(label: str) -> str:
    """The RFC 7512 URI that names the token key ``label`` (module/token/PIN from config)."""
    return "pkcs11:object=" + quote(label, safe="")


def create_token_signing_key(label: str, public_path: Path) -> str:
    """Generate an ECDSA P-256 key ``label`` on the configured token; write its public PEM.

    Returns the key's PKCS#11 URI. The public file is written under a temporary name
    and linked into place, so it is never half-written and never replaces a file.
    """
    public_path = Path(public_path)
    if public_path.exists() or public_path.is_symlink():
        raise InputError(f"refusing to overwrite existing key file: {public_path}")
    if not public_path.parent.is_dir():
        raise InputError(f"directory does not exist: {public_path.parent}")
    uri = token_key_uri(label)
    pem = _impl.create_token_keypair(uri)
    try:
        write_atomic(public_path, pem, mode=0o644, no_clobber=True)
    except FileExistsError:
        raise InputError(f"refusing to overwrite existing key file: {public_path}") from None
    return uri
