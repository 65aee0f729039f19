"""Signing: who vouches for a model or an image, and the checks that hold them to it.

Model signatures are OpenSSF model-signing bundles (``model.sig``, DSSE, Sigstore bundle
v0.3); image signatures and attestations are cosign's (simple-signing payloads in
``sha256-<hex>.sig``, DSSE in-toto statements in ``.att``, OCI 1.1 referrers). Keys are
PEM files, PKCS#11 token keys (``pkcs11:`` URIs) or Sigstore keyless identities. Which
images must be signed by whom is policy, and lives in :mod:`pipeline.policy`. See
docs/model-signatures.md and docs/image-signatures.md.

Usage::

    from pipeline.signing import Trust, sign_model, verify_image, verify_model

    sign_model(Path("sealed"), private_key=Path("release.key"))
    verify_model(Path("sealed"), Trust(public_keys=(Path("release.pub"),)))
    verify_image("registry.example/team/app@sha256:...", [Path("release.pub")])

Names resolve lazily, so ``from pipeline.signing import Trust`` (the secure runtime)
does not import the registry client or the keyless machinery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline._facade import lazy_exports

if TYPE_CHECKING:
    from pipeline.signing._ecdsa import (
        Signer,
        VerifyKey,
        key_fingerprint,
        load_signer,
        load_verify_key,
        load_verify_keys,
        open_signer,
    )
    from pipeline.signing.attachments import repair_attachments
    from pipeline.signing.attestation import attest, check_conditions, verify_attestations
    from pipeline.signing.image import ANY_IDENTITY, sign_image, verify_image
    from pipeline.signing.intoto import PREDICATE_TYPES, resolve_predicate_type
    from pipeline.signing.keyless import Identity, TrustRoot
    from pipeline.signing.keypair import create_signing_keypair
    from pipeline.signing.model import (
        BUNDLE_MEDIA_TYPE,
        SIGNATURE_NAME,
        Trust,
        sign_model,
        verify_model,
        verify_model_signature,
        verify_model_signature_bytes,
    )
    from pipeline.signing.token_keys import create_token_signing_key, token_key_uri

_LAZY = {
    "Signer": "pipeline.signing._ecdsa",
    "VerifyKey": "pipeline.signing._ecdsa",
    "key_fingerprint": "pipeline.signing._ecdsa",
    "load_signer": "pipeline.signing._ecdsa",
    "load_verify_key": "pipeline.signing._ecdsa",
    "load_verify_keys": "pipeline.signing._ecdsa",
    "open_signer": "pipeline.signing._ecdsa",
    "attest": "pipeline.signing.attestation",
    "repair_attachments": "pipeline.signing.attachments",
    "check_conditions": "pipeline.signing.attestation",
    "verify_attestations": "pipeline.signing.attestation",
    "ANY_IDENTITY": "pipeline.signing.image",
    "sign_image": "pipeline.signing.image",
    "verify_image": "pipeline.signing.image",
    "PREDICATE_TYPES": "pipeline.signing.intoto",
    "resolve_predicate_type": "pipeline.signing.intoto",
    "Identity": "pipeline.signing.keyless",
    "TrustRoot": "pipeline.signing.keyless",
    "create_signing_keypair": "pipeline.signing.keypair",
    "BUNDLE_MEDIA_TYPE": "pipeline.signing.model",
    "SIGNATURE_NAME": "pipeline.signing.model",
    "Trust": "pipeline.signing.model",
    "sign_model": "pipeline.signing.model",
    "verify_model": "pipeline.signing.model",
    "verify_model_signature": "pipeline.signing.model",
    "verify_model_signature_bytes": "pipeline.signing.model",
    "create_token_signing_key": "pipeline.signing.token_keys",
    "token_key_uri": "pipeline.signing.token_keys",
}

__all__ = [
    "ANY_IDENTITY",
    "repair_attachments",
    "BUNDLE_MEDIA_TYPE",
    "PREDICATE_TYPES",
    "SIGNATURE_NAME",
    "Identity",
    "Signer",
    "Trust",
    "TrustRoot",
    "VerifyKey",
    "attest",
    "check_conditions",
    "create_signing_keypair",
    "create_token_signing_key",
    "key_fingerprint",
    "load_signer",
    "load_verify_key",
    "load_verify_keys",
    "open_signer",
    "resolve_predicate_type",
    "sign_image",
    "sign_model",
    "token_key_uri",
    "verify_attestations",
    "verify_image",
    "verify_model",
    "verify_model_signature",
    "verify_model_signature_bytes",
]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
