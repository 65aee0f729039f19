"""Signing a model directory: PEM keys, PKCS#11 token keys, Sigstore keyless.

model-signing does the cryptography; this module configures its signers, adds a
token signer it has no slot for (python-pkcs11, the project's one PKCS#11 library),
writes the bundle atomically, and maps every library exception to the project's
error tree with messages that never include key material or PINs.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import secrets
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pipeline._fileio import install_file
from pipeline.errors import (
    AuthError,
    InputError,
    KeyProviderError,
    NotFoundError,
    PipelineError,
    UnreachableError,
    VerificationError,
)
from pipeline.signing._ecdsa import PASSWORD_ENV, pem_hint
from pipeline.signing._model_bundle import BUNDLE_MEDIA_TYPE
from pipeline.signing._model_hashing import hashing_config_with_digests
from pipeline.signing._pkcs11 import (
    _p11,
    _short,
    find_token_keypair,
    open_token_session,
    resolve_pkcs11_uri,
)


def load_key_signer(config: Any, private_key: Path) -> Any:
    """Configure ``config`` (model_signing.signing.Config) with a PEM private key."""
    if not private_key.is_file():
        raise NotFoundError(f"signing key not found: {private_key}")
    from pipeline.config import load_settings

    password = load_settings().keys().signing_key_password
    try:
        # model-signing hands the password to cryptography, which wants bytes.
        return config.use_elliptic_key_signer(
            private_key=private_key,
            password=password.encode("utf-8") if password else None,
        )
    except TypeError as exc:  # encrypted without password, or password for a plain key
        raise KeyProviderError(
            f"cannot load signing key {private_key}: {exc} (password: ${PASSWORD_ENV})"
        ) from None
    except (ValueError, AttributeError) as exc:  # not PEM, wrong password, not EC
        raise KeyProviderError(f"cannot load signing key {private_key}: {_short(exc)}") from None
    except OSError as exc:
        raise KeyProviderError(
            f"cannot read signing key {private_key}: {exc.strerror or exc}"
        ) from None


@contextlib.contextmanager
def open_pkcs11_signer(pkcs11_uri: str) -> Iterator[Any]:
    """A model-signing Signer backed by a token key, open for the duration of the block.

    The bundle it makes is the one model-signing's key and PKCS#11 signers make.
    """
    ref = resolve_pkcs11_uri(pkcs11_uri)
    with open_token_session(ref) as (token, session):
        private, public = find_token_keypair(ref, token, session)
        yield _token_signer_class()(private, public)


@functools.cache
def _token_signer_class() -> type:
    """model-signing Signer whose ECDSA happens on the token (class built on first use)."""

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
    from google.protobuf import json_format
    from model_signing._signing import sign_ec_key, sign_sigstore_pb, signing
    from pkcs11 import Mechanism
    from pkcs11.util.ec import encode_ec_public_key
    from sigstore_models import intoto as intoto_pb
    from sigstore_models.bundle import v1 as bundle_pb
    from sigstore_models.common import v1 as common_pb

    class TokenSigner(sign_sigstore_pb.Signer):
        """Same DSSE + bundle v0.3 as model-signing's key signer; the key never leaves."""

        def __init__(self, private: Any, public: Any) -> None:
            self._private = private
            self._public_key = serialization.load_der_public_key(encode_ec_public_key(public))
            if not isinstance(self._public_key, ec.EllipticCurvePublicKey):
                raise KeyProviderError("the PKCS#11 key is not an EC key")
            try:
                self._hash = sign_ec_key.get_ec_key_hash(self._public_key)
            except ValueError as exc:
                raise KeyProviderError(f"unsupported PKCS#11 key: {exc}") from None

        def sign(self, payload: Any) -> Any:
            raw_payload = json_format.MessageToJson(payload.statement.pb).encode("utf-8")
            digest = hashes.Hash(self._hash)
            digest.update(sign_sigstore_pb.pae(raw_payload))
            raw = self._private.sign(digest.finalize(), mechanism=Mechanism.ECDSA)
            half = len(raw) // 2  # PKCS#11 returns r || s; DSSE carries DER
            der = encode_dss_signature(
                int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
            )
            envelope = intoto_pb.Envelope(
                payload=base64.b64encode(raw_payload),
                payload_type=signing._IN_TOTO_JSON_PAYLOAD_TYPE,
                signatures=[intoto_pb.Signature(sig=base64.b64encode(der), keyid="")],
            )
            material = bundle_pb.VerificationMaterial(
                public_key=common_pb.PublicKeyIdentifier(hint=pem_hint(self._public_key)),
                tlog_entries=[],
            )
            return sign_sigstore_pb.Signature(
                bundle_pb.Bundle(
                    media_type=BUNDLE_MEDIA_TYPE,
                    verification_material=material,
                    dsse_envelope=envelope,
                )
            )

    return TokenSigner


def load_sigstore_signer(config: Any, identity_token: str) -> Any:
    """Configure ``config`` for Sigstore keyless signing with an explicit OIDC token.

    Ambient credentials and the interactive browser flow are switched off: a pipeline
    step must sign as the identity it was given, or not at all.
    """
    if not identity_token.strip():
        raise InputError("the identity token is empty")
    try:
        return config.use_sigstore_signer(
            identity_token=identity_token.strip(), use_ambient_credentials=False
        )
    except Exception as exc:
        raise _sigstore_error(exc, "cannot set up Sigstore keyless signing") from None


def signer_writer(
    signer: Any, signature_name: str, known: Mapping[str, str] | None = None
) -> Callable[[Path, Path], None]:
    """What ``model_signing.signing.Config.sign`` does, for a Signer it has no slot for."""

    def write(model_dir: Path, target: Path) -> None:
        from model_signing._signing import signing

        manifest = hashing_config_with_digests(signature_name, model_dir, known).hash(model_dir)
        signer.sign(signing.Payload(manifest)).write(target)

    return write


def sign_to_file(sign: Callable[[Path, Path], None], model_dir: Path, signature_path: Path) -> None:
    """Hash + sign with model-signing, writing the bundle under a temporary name first.

    ``sign(model_dir, target)`` is ``model_signing.signing.Config.sign`` (or the same
    steps for the token signer). The temporary name does not exist while the model is
    hashed (hash, then sign, then write), so it never ends up in its own manifest.
    """
    tmp = signature_path.with_name(f".{signature_path.name}.tmp-{secrets.token_hex(6)}")
    try:
        try:
            sign(model_dir, tmp)
        except PipelineError:
            raise
        except ValueError as exc:
            if "symlink" in str(exc) or "Cannot use" in str(exc):
                raise InputError(f"cannot sign {model_dir}: {exc}") from None
            raise KeyProviderError(f"signing failed: {_short(exc)}") from None
        except OSError as exc:
            raise InputError(f"cannot sign {model_dir}: {exc.strerror or exc}") from None
        except Exception as exc:
            raise _signing_error(exc) from None
        install_file(tmp, signature_path, mode=0o644)
    finally:
        tmp.unlink(missing_ok=True)


def _signing_error(exc: Exception) -> Exception:
    module = type(exc).__module__ or ""
    if module.startswith("pkcs11"):
        return KeyProviderError(f"PKCS#11 signing failed: {_p11(exc)}")
    if module.startswith(("sigstore", "requests", "urllib3")):
        return _sigstore_error(exc, "Sigstore keyless signing failed")
    return KeyProviderError(f"signing failed: {type(exc).__name__}: {_short(exc)}")


def _sigstore_error(exc: Exception, what: str) -> Exception:
    """Network and trust-root failures are 'unreachable'; bad tokens are auth problems."""
    name = type(exc).__name__
    if name in ("TUFError", "NetworkError", "ConnectionError", "Timeout", "MaxRetryError"):
        return UnreachableError(
            f"{what}: Sigstore (TUF trust root / Fulcio / Rekor) is not reachable ({name})"
        )
    if name in ("IdentityError", "ExpiredIdentity", "IssuerError"):
        return AuthError(f"{what}: the identity token was refused ({name}: {_short(exc)})")
    return VerificationError(f"{what}: {name}: {_short(exc)}")
