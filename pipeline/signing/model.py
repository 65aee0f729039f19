"""Model signatures: who vouches for exactly which files of a (sealed) model.

A model directory is signed with OpenSSF model signing (``model-signing``): every
file is hashed with sha256, the list of (relative path, digest) becomes an in-toto
statement (predicate ``https://model_signing/signature/v1.0``), the statement is
signed in a DSSE envelope and stored as a Sigstore bundle v0.3 in
``<model_dir>/model.sig``. The same file verifies with ``model_signing verify``.

What is covered: every regular file under the directory, hidden files included, at
any depth. Left out: the signature file itself and ``.git``. Symlinks, sockets and
fifos are refused when signing and when verifying (never followed).

Two ways to verify, because the runtime must not read the weights twice:

* :func:`verify_model_signature` checks only the bundle (cheap) and returns the
  signed ``{path: sha256}``; the loader hashes each ciphertext while decrypting and
  compares with it.
* :func:`verify_model` also hashes every file and fails on any added, removed or
  changed file (for ``pipeline verify-model``, promotion gates, admission).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import InputError, IntegrityError
from pipeline.signing import _model_bundle, _model_hashing, _model_signers, _model_verify

#: The file a model's signature is stored in: the one definition of this name.
SIGNATURE_NAME = "model.sig"
#: Media type of the signature file (a Sigstore bundle v0.3 with a DSSE envelope).
BUNDLE_MEDIA_TYPE = _model_bundle.BUNDLE_MEDIA_TYPE

__all__ = [
    "BUNDLE_MEDIA_TYPE",
    "SIGNATURE_NAME",
    "Trust",
    "sign_model",
    "verify_model",
    "verify_model_signature",
    "verify_model_signature_bytes",
]


@dataclass(frozen=True)
class Trust:
    """Who may have signed. A signature is accepted if any one entry verifies it.

    ``public_keys``: PEM public keys (key-based signing, the offline default).
    ``certificate_chain``: PEM certificates that anchor certificate-based signatures.
    ``identities``: (identity, OIDC issuer) pairs for Sigstore keyless signatures;
    checking those needs the Sigstore trust root (TUF), i.e. the network.
    An empty Trust accepts nothing.
    """

    public_keys: tuple[Path, ...] = ()
    certificate_chain: tuple[Path, ...] = ()
    identities: tuple[tuple[str, str], ...] = ()

    def is_empty(self) -> bool:
        """True when no signer at all is trusted (verification then always fails)."""
        return not (self.public_keys or self.certificate_chain or self.identities)


def sign_model(
    model_dir: Path,
    *,
    private_key: Path | None = None,
    pkcs11_uri: str | None = None,
    identity_token: str | None = None,
    signature_name: str = SIGNATURE_NAME,
    known_digests: Mapping[str, str] | None = None,
) -> Path:
    """Sign every file in ``model_dir``; write ``model_dir/signature_name``; return its path.

    Exactly one signer: a PEM private key (password from PIPELINE_SIGNING_KEY_PASSWORD),
    a PKCS#11 URI (module/token/PIN completed from the pipeline's PKCS#11 settings when
    absent from the URI), or an OIDC identity token for Sigstore keyless signing.
    An existing signature is replaced atomically; on failure it is left untouched.
    ``known_digests`` ({relative path: sha256 hex}) is for a caller that has just
    written those files and hashed them while writing (the sealer): they are not
    read again. Files not listed are hashed as usual.
    """
    chosen = [x for x in (private_key, pkcs11_uri, identity_token) if x is not None]
    if len(chosen) != 1:
        raise InputError(
            "sign with exactly one of: a private key, a PKCS#11 URI, an identity token"
        )
    _model_hashing.check_signature_name(signature_name)
    model_dir = _model_hashing.check_model_dir(Path(model_dir))
    if not _has_files(model_dir, signature_name):
        raise InputError(f"nothing to sign: {model_dir} has no files")

    from model_signing import signing

    signature_path = model_dir / signature_name
    if pkcs11_uri is not None:
        with _model_signers.open_pkcs11_signer(pkcs11_uri) as token_signer:
            write = _model_signers.signer_writer(token_signer, signature_name, known_digests)
            _model_signers.sign_to_file(write, model_dir, signature_path)
        return signature_path

    config = signing.Config().set_hashing_config(
        _model_hashing.hashing_config_with_digests(signature_name, model_dir, known_digests)
    )
    if private_key is not None:
        config = _model_signers.load_key_signer(config, Path(private_key))
    else:
        assert identity_token is not None
        config = _model_signers.load_sigstore_signer(config, identity_token)
    _model_signers.sign_to_file(config.sign, model_dir, signature_path)
    return signature_path


def verify_model_signature(
    model_dir: Path, trust: Trust, *, signature_name: str = SIGNATURE_NAME
) -> dict[str, str]:
    """Check the signature only (no file is hashed); return the signed {path: sha256 hex}.

    Raises VerificationError for a missing signature, a malformed bundle, a bad
    signature, an untrusted signer, or a manifest that is not per-file sha256.
    The caller must still compare every file it uses with the returned digests.
    """
    _model_hashing.check_signature_name(signature_name)
    model_dir = _model_hashing.check_model_dir(Path(model_dir))
    return _model_verify.verify_bundle(model_dir / signature_name, trust)


def verify_model_signature_bytes(
    bundle: bytes, public_keys: Sequence[bytes], *, where: str
) -> dict[str, str]:
    """Check a key-signed bundle held in memory against PEM keys; the signed {path: sha256}.

    Why: the admission webhook reads a model's signature from the registry (a small blob)
    and must decide without pulling the model or writing anything; it then compares the
    signed digests with the artifact's layer digests. ``where`` names the bundle in errors.
    """
    return _model_verify.verify_key_bundle_bytes(bundle, public_keys, where)


def verify_model(
    model_dir: Path, trust: Trust, *, signature_name: str = SIGNATURE_NAME
) -> dict[str, str]:
    """Check the signature and every file; return the signed {path: sha256 hex}.

    VerificationError: the signature is missing, bad or untrusted.
    IntegrityError: a file was added (present but not signed), removed (signed but
    missing) or changed; the message names the files.
    """
    expected = verify_model_signature(model_dir, trust, signature_name=signature_name)
    actual = _model_hashing.hash_model(Path(model_dir), signature_name, IntegrityError)
    _model_hashing.compare(Path(model_dir), expected, actual)
    return expected


def _has_files(model_dir: Path, signature_name: str) -> bool:
    for path in model_dir.rglob("*"):
        relative = path.relative_to(model_dir)
        ignored = relative.parts[0] in _model_hashing.ALWAYS_IGNORED
        if ignored or relative.as_posix() == signature_name:
            continue
        if path.is_file() or path.is_symlink():
            return True
    return False
