"""Verifying a model signature: every trusted signer of the right kind gets one try.

The candidates are the trusted public keys (fingerprint-hinted one first), the
certificate chain and the Sigstore identities that match the bundle's verification
material; plain key bundles are checked natively (:mod:`._model_native`), everything
else by model-signing. Failures are collected, so the error names every signer tried
and why it refused; a trust root out of reach is 'unreachable', never 'invalid'.
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import (
    ConfigError,
    UnreachableError,
    VerificationError,
)
from pipeline.signing._ecdsa import pem_hint
from pipeline.signing._model_bundle import (
    _check_statement,
    parse_bundle,
    parse_signature,
    plain_key_bundle,
    read_bundle,
    statement_digests,
)
from pipeline.signing._model_hashing import manifest_digests
from pipeline.signing._model_native import _NativeKeyVerifier
from pipeline.signing._model_signers import _sigstore_error
from pipeline.signing._pkcs11 import _short


@dataclass(frozen=True)
class _Candidate:
    """One trusted signer: how to describe it, how to build its verifier, which bundle."""

    description: str
    build: Callable[[], Any]
    sigstore_bundle: bool  # True: parse with sigstore-python's Bundle (keyless)
    native: bool = False  # True: build() gives a _NativeKeyVerifier for a _KeyBundle


def candidates(
    trust: Any, material: dict[str, Any], key_hint: str | None, *, native_keys: bool = False
) -> list[_Candidate]:
    """The trusted signers that could have made a bundle with this verification material.

    ``native_keys``: the bundle is a plain key bundle (:func:`plain_key_bundle`), so
    trusted public keys are checked by :class:`_NativeKeyVerifier` instead of
    model-signing's ``sign_ec_key.Verifier`` (same checks, without importing the
    signing and Sigstore stack). model-signing is imported only for what needs it.
    """
    found: list[_Candidate] = []
    if "publicKey" in material:
        keys = list(trust.public_keys)
        # Try the key whose fingerprint the bundle names first; the rest still get a try
        # (older bundles carry no hint), so a wrong hint can never lock out a right key.
        keys.sort(key=lambda p: _key_hint(p) != key_hint)
        for path in keys:
            if native_keys:
                build = lambda p=path: _build(lambda: _NativeKeyVerifier(Path(p)), f"key {p}")  # noqa: E731
            else:
                build = lambda p=path: _build(lambda: _ms_key_verifier(Path(p)), f"key {p}")  # noqa: E731
            found.append(
                _Candidate(f"public key {path}", build, sigstore_bundle=False, native=native_keys)
            )
    if "x509CertificateChain" in material and trust.certificate_chain:
        chain = [Path(p) for p in trust.certificate_chain]

        def certificate_verifier() -> Any:
            from model_signing._signing import sign_certificate

            return sign_certificate.Verifier(chain)

        found.append(
            _Candidate(
                "certificate chain " + ", ".join(str(p) for p in chain),
                lambda: _build(certificate_verifier, "certificate chain"),
                sigstore_bundle=False,
            )
        )
    if ("certificate" in material or "x509CertificateChain" in material) and trust.identities:
        for identity, issuer in trust.identities:

            def sigstore_verifier(i: str = identity, o: str = issuer) -> Any:
                from model_signing._signing import sign_sigstore

                return sign_sigstore.Verifier(identity=i, oidc_issuer=o)

            found.append(
                _Candidate(
                    f"Sigstore identity {identity} ({issuer})",
                    functools.partial(_build_sigstore, sigstore_verifier),
                    sigstore_bundle=True,
                )
            )
    return found


def _ms_key_verifier(path: Path) -> Any:
    from model_signing._signing import sign_ec_key

    return sign_ec_key.Verifier(path)


def _key_hint(path: Path) -> str | None:
    from cryptography.hazmat.primitives import serialization

    try:
        return pem_hint(serialization.load_pem_public_key(Path(path).read_bytes()))
    except Exception:
        return None  # reported properly when its verifier is built


def _build(factory: Callable[[], Any], what: str) -> Any:
    try:
        return factory()
    except FileNotFoundError:
        raise ConfigError(f"trusted {what}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"trusted {what}: cannot read: {exc.strerror or exc}") from None
    except Exception as exc:  # not PEM, not EC, unsupported curve
        raise ConfigError(
            f"trusted {what}: not a usable P-256/P-384/P-521 key or certificate: {_short(exc)}"
        ) from None


class _Unreachable(Exception):
    """A verifier could not be built because its trust root is out of reach."""


def _build_sigstore(factory: Callable[[], Any]) -> Any:
    try:
        return factory()
    except Exception as exc:
        error = _sigstore_error(exc, "cannot load the Sigstore trust root")
        if isinstance(error, UnreachableError):
            raise _Unreachable(str(error)) from None
        raise ConfigError(str(error)) from None


def verify_bundle(
    signature_path: Path, trust: Any, *, native_keys: bool = True
) -> dict[str, str]:
    """Verify the bundle against ``trust``; return the signed {path: sha256} manifest."""
    if trust.is_empty():
        raise VerificationError(
            "no trusted signers configured: refusing to accept any model signature"
        )
    raw, data = read_bundle(signature_path)
    material = data["verificationMaterial"]
    hint = None
    if isinstance(material.get("publicKey"), dict):
        hint = material["publicKey"].get("hint")
    # native_keys=False sends every bundle through model-signing (the reference the
    # native path is tested against).
    key_bundle = plain_key_bundle(data) if native_keys else None
    options = candidates(
        trust, material, hint if isinstance(hint, str) else None,
        native_keys=key_bundle is not None,
    )
    if not options:
        kind = _material_kind(material)
        raise VerificationError(
            f"model signature {signature_path} was made with {kind}, and no trusted signer "
            "of that kind is configured"
        )

    failures: list[str] = []
    unreachable: list[str] = []
    parsed: dict[bool, Any] = {}
    for option in options:
        try:
            verifier = option.build()
        except _Unreachable as exc:
            unreachable.append(str(exc))
            continue
        if option.native:
            assert key_bundle is not None
            try:
                statement = verifier.verify(key_bundle)
            except Exception as exc:
                failures.append(f"{option.description}: {_short(exc, 160)}")
                continue
            _check_statement(signature_path, data)
            try:
                return statement_digests(statement)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise VerificationError(
                    f"model signature {signature_path}: inconsistent manifest ({_short(exc)})"
                ) from None
        if option.sigstore_bundle not in parsed:
            try:
                parsed[option.sigstore_bundle] = parse_signature(raw, data, option.sigstore_bundle)
            except Exception as exc:
                raise VerificationError(
                    f"malformed model signature {signature_path}: {_short(exc)}"
                ) from None
        try:
            # model-signing prints a warning on stdout for hint-less bundles; stdout may
            # be JSON for a machine, so it goes nowhere.
            with contextlib.redirect_stdout(io.StringIO()):
                manifest = verifier.verify(parsed[option.sigstore_bundle])
        except Exception as exc:
            failures.append(f"{option.description}: {_short(exc, 160)}")
            continue
        _check_statement(signature_path, data)
        return manifest_digests(manifest)

    if unreachable and not failures:
        raise UnreachableError(unreachable[0])
    detail = "; ".join(failures + unreachable)
    raise VerificationError(
        f"model signature {signature_path} is not valid for any trusted signer ({detail})"
    )


def verify_key_bundle_bytes(
    raw: bytes, public_keys: Sequence[bytes], where: str
) -> dict[str, str]:
    """A key-signed bundle held in memory, against PEM public keys; the signed manifest.

    For admission, which reads the bundle from the registry and must not write it to
    disk. Only the plain key-bundle shape is accepted (what key signing writes): a
    keyless or certificate bundle is a VerificationError saying so.
    """
    if not public_keys:
        raise VerificationError(f"{where}: no trusted model keys configured: refusing it")
    data = parse_bundle(raw, where)
    key_bundle = plain_key_bundle(data)
    if key_bundle is None:
        kind = _material_kind(data["verificationMaterial"])
        raise VerificationError(f"model signature {where} was made with {kind}; only "
                                "key-signed model signatures are verified here")
    failures = []
    for index, pem in enumerate(public_keys):
        try:
            verifier = _NativeKeyVerifier(pem)
        except Exception as exc:  # not PEM, not EC, unsupported curve
            raise ConfigError(f"trusted model key {index}: not a usable P-256/P-384/P-521 "
                              f"key: {_short(exc)}") from None
        try:
            statement = verifier.verify(key_bundle)
        except Exception as exc:
            failures.append(f"key {index} ({verifier.hint}): {_short(exc, 120)}")
            continue
        _check_statement(where, data)
        try:
            return statement_digests(statement)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise VerificationError(
                f"model signature {where}: inconsistent manifest ({_short(exc)})"
            ) from None
    raise VerificationError(f"model signature {where} is not valid for any trusted key "
                            f"({'; '.join(failures)})")


def _material_kind(material: dict[str, Any]) -> str:
    if "publicKey" in material:
        return "a public key"
    if "certificate" in material:
        return "a Sigstore keyless certificate"
    if "x509CertificateChain" in material:
        return "a certificate chain"
    return "unknown verification material"
