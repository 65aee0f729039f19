"""Create the ECDSA P-256 key pair that signs models (and images).

P-256 because it is the one curve every verifier in the chain accepts: model-signing,
cosign's key mode and Sigstore bundles. The private key is PKCS#8 PEM, mode 0600,
written under a temporary name and then *linked* into place, so a crash never leaves
a half-written key and an existing key is never replaced (losing a signing key, or
silently swapping it, is worse than an error). When ``PIPELINE_SIGNING_KEY_PASSWORD``
is set the private key is encrypted with it (the same variable the signers read).
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline._fileio import write_atomic
from pipeline.config import load_settings
from pipeline.errors import InputError
from pipeline.signing._ecdsa import PASSWORD_ENV

__all__ = ["PASSWORD_ENV", "create_signing_keypair"]


def create_signing_keypair(private_path: Path, public_path: Path) -> None:
    """Write a fresh P-256 private key (0600) and its SubjectPublicKeyInfo PEM.

    Refuses (``InputError``) when either file already exists or both paths are the
    same, and leaves nothing behind on failure.
    """
    private_path = Path(private_path)
    public_path = Path(public_path)
    if private_path.resolve() == public_path.resolve():
        raise InputError("the private and public key paths must differ")
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise InputError(f"refusing to overwrite existing key file: {path}")
        if not path.parent.is_dir():
            raise InputError(f"directory does not exist: {path.parent}")

    key = ec.generate_private_key(ec.SECP256R1())
    password = load_settings().keys().signing_key_password
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode("utf-8"))
        if password
        else serialization.NoEncryption()
    )
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    _write_new(private_path, private_pem, 0o600)
    try:
        _write_new(public_path, public_pem, 0o644)
    except BaseException:
        # Half a key pair is useless and confusing: take the private key back out.
        private_path.unlink(missing_ok=True)
        raise


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` atomically; fail if ``path`` exists (link, not rename)."""
    try:
        write_atomic(path, data, mode=mode, no_clobber=True)
    except FileExistsError:
        raise InputError(f"refusing to overwrite existing key file: {path}") from None
