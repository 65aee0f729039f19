"""The machinery under :mod:`pipeline.signing.model`; nothing here is public API.

model-signing does the cryptography (hashing config, signers, verifiers, DSSE, bundle
parsing). This module adds what a fail-closed supply chain needs around it:

* one fixed hashing policy (sha256 per file, symlinks refused, only the signature
  file and ``.git`` left out), so manifest digests are plain ``sha256(file)``;
* reading the bundle once, with a size cap and duplicate-key rejection, and handing
  the *same* bytes to model-signing's parsers (no second read of a file that could
  have changed in between);
* trying every trusted signer of the right kind and mapping each library exception
  to the project's error tree, with messages that never include key material or PINs;
* checking that the signed statement is the v1.0 model-signing predicate with a
  ``files``/``sha256`` serialization and safe relative names, because the cheap path
  hands those names and digests to a loader that opens files by them;
* verifying plain key-signed bundles (what ``--key`` signing writes) without importing
  model-signing at all (:func:`plain_key_bundle`, :class:`_NativeKeyVerifier`): the
  same DSSE/ECDSA/statement checks on ``cryptography`` alone, because that import
  (its signers, sigstore-python, rekor-types, requests) was most of the secure
  runtime's cold-start overhead. Every other bundle still goes through model-signing.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hashlib
import io
import json
import os
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.errors import (
    AuthError,
    ConfigError,
    InputError,
    IntegrityError,
    KeyProviderError,
    NotFoundError,
    PipelineError,
    UnreachableError,
    VerificationError,
)
from pipeline.signing._pkcs11 import (
    _p11,
    _short,
    find_token_keypair,
    open_token_session,
    resolve_pkcs11_uri,
)

MAX_SIGNATURE_BYTES = 64 * 1024 * 1024
ALWAYS_IGNORED = (".git",)
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PASSWORD_ENV = "PIPELINE_SIGNING_KEY_PASSWORD"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


# --------------------------------------------------------------------------- paths


def check_signature_name(signature_name: str) -> None:
    """The signature lives directly in the model directory: a bare file name only."""
    if (
        not signature_name
        or signature_name in (".", "..")
        or "/" in signature_name
        or "\\" in signature_name
        or "\x00" in signature_name
        or signature_name in ALWAYS_IGNORED
    ):
        raise InputError(f"invalid signature file name: {signature_name!r}")


def check_model_dir(model_dir: Path) -> Path:
    """``model_dir`` must be an existing directory (not a single file, not a symlink)."""
    if model_dir.is_symlink():
        raise InputError(f"model directory is a symlink (refused): {model_dir}")
    if not model_dir.exists():
        raise NotFoundError(f"model directory not found: {model_dir}")
    if not model_dir.is_dir():
        raise InputError(f"not a directory: {model_dir}")
    return model_dir


def hashing_config(signature_name: str) -> Any:
    """The one hashing policy used to sign and to verify (see module docstring)."""
    from model_signing import hashing

    return (
        hashing.Config()
        .use_file_serialization(hashing_algorithm="sha256", allow_symlinks=False)
        .set_ignored_paths(paths=[signature_name, *ALWAYS_IGNORED], ignore_git_paths=False)
    )


def hashing_config_with_digests(
    signature_name: str, model_dir: Path, known: Mapping[str, str] | None
) -> Any:
    """:func:`hashing_config`, but files whose sha256 the caller already has are not re-read.

    The sealer computes the sha256 of every file it writes while writing it; hashing a
    freshly sealed 1 GiB model again only to sign it would cost as much as the hash
    itself. ``known`` maps relative posix paths to sha256 hex; any other file (and any
    file not in ``known``) is hashed as usual, so the manifest is exactly the one the
    plain configuration produces, and verifies with model-signing unchanged.
    """
    config = hashing_config(signature_name)
    if not known:
        return config
    from model_signing._hashing.hashing import Digest

    serializer = config._serializer  # model-signing 1.1: file.Serializer
    real_factory = serializer._hasher_factory
    root = Path(model_dir)
    digests = {str(root / rel): bytes.fromhex(hex_digest) for rel, hex_digest in known.items()}

    class _Known:
        """A FileHasher whose result is already known (duck-typed: name + compute)."""

        digest_name = "sha256"
        digest_size = 32

        def __init__(self, value: bytes) -> None:
            self._value = value

        def compute(self) -> Any:
            return Digest("sha256", self._value)

    def factory(path: Path) -> Any:
        value = digests.get(str(path))
        return _Known(value) if value is not None else real_factory(path)

    serializer._hasher_factory = factory
    return config


def hash_model(model_dir: Path, signature_name: str, error: type[Exception]) -> dict[str, str]:
    """Hash every file of the model with model-signing: {relative posix path: sha256 hex}."""
    try:
        manifest = hashing_config(signature_name).hash(model_dir)
    except ValueError as exc:  # symlinks, sockets, fifos: refused, never followed
        raise error(f"cannot hash model {model_dir}: {exc}") from None
    except OSError as exc:
        raise InputError(f"cannot read model {model_dir}: {exc.strerror or exc}") from None
    return manifest_digests(manifest)


def manifest_digests(manifest: Any) -> dict[str, str]:
    """A model-signing manifest as {relative posix path: sha256 hex}."""
    result: dict[str, str] = {}
    for descriptor in manifest.resource_descriptors():
        if descriptor.digest.algorithm != "sha256":
            raise VerificationError(
                f"signed manifest uses {descriptor.digest.algorithm!r} digests; sha256 required"
            )
        result[PurePosixPath(descriptor.identifier).as_posix()] = descriptor.digest.digest_hex
    return result


# ------------------------------------------------------------------------- signing


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
            password=password.encode("utf-8") if password else None,  # type: ignore[arg-type]
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
    import hashlib

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

    class TokenSigner(sign_sigstore_pb.Signer):  # type: ignore[misc]
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
            pem = self._public_key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            material = bundle_pb.VerificationMaterial(
                public_key=common_pb.PublicKeyIdentifier(hint=hashlib.sha256(pem).hexdigest()),
                tlog_entries=[],
            )
            return sign_sigstore_pb.Signature(
                bundle_pb.Bundle(
                    media_type=sign_sigstore_pb._BUNDLE_MEDIA_TYPE,
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
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fchmod(fd, 0o644)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, signature_path)
        dir_fd = os.open(signature_path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
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


@dataclass(frozen=True)
class _Candidate:
    """One trusted signer: how to describe it, how to build its verifier, which bundle."""

    description: str
    build: Callable[[], Any]
    sigstore_bundle: bool  # True: parse with sigstore-python's Bundle (keyless)
    native: bool = False  # True: build() gives a _NativeKeyVerifier for a _KeyBundle


def read_bundle(signature_path: Path) -> tuple[bytes, dict[str, Any]]:
    """Read the signature once: size-capped, UTF-8 JSON object, no duplicate keys."""
    if signature_path.is_symlink():
        raise VerificationError(f"model signature is a symlink (refused): {signature_path}")
    try:
        fd = os.open(signature_path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise VerificationError(f"model is not signed: no {signature_path}") from None
    except OSError as exc:
        raise VerificationError(
            f"cannot read model signature {signature_path}: {exc.strerror or exc}"
        ) from None
    with os.fdopen(fd, "rb") as handle:
        if not os.path.isfile(signature_path):
            raise VerificationError(f"model signature is not a regular file: {signature_path}")
        raw = handle.read(MAX_SIGNATURE_BYTES + 1)
    if len(raw) > MAX_SIGNATURE_BYTES:
        raise VerificationError(
            f"malformed model signature {signature_path}: larger than {MAX_SIGNATURE_BYTES} bytes"
        )
    try:
        data = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as exc:
        raise VerificationError(
            f"malformed model signature {signature_path}: not a JSON bundle ({_short(exc)})"
        ) from None
    if not isinstance(data, dict):
        raise VerificationError(f"malformed model signature {signature_path}: not a JSON object")
    if data.get("mediaType") != BUNDLE_MEDIA_TYPE:
        raise VerificationError(
            f"malformed model signature {signature_path}: mediaType {data.get('mediaType')!r}, "
            f"expected {BUNDLE_MEDIA_TYPE}"
        )
    material = data.get("verificationMaterial")
    envelope = data.get("dsseEnvelope")
    if not isinstance(material, dict) or not isinstance(envelope, dict):
        raise VerificationError(
            f"malformed model signature {signature_path}: "
            "no verificationMaterial / dsseEnvelope (only DSSE bundles are model signatures)"
        )
    return raw, data


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two parsers reading one document must agree on it: duplicate keys would let them
    # disagree (first vs last wins), so a bundle with any is rejected outright.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


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
                    lambda f=sigstore_verifier: _build_sigstore(f),
                    sigstore_bundle=True,
                )
            )
    return found


def _ms_key_verifier(path: Path) -> Any:
    from model_signing._signing import sign_ec_key

    return sign_ec_key.Verifier(path)


# ------------------------------------------------------ key bundles without model-signing
#
# Verifying a key-signed bundle needs no Sigstore machinery: it is one ECDSA check
# over the DSSE pre-authentication encoding of the in-toto statement. Importing
# model-signing for it costs ~0.35 s (it loads its signers, sigstore-python,
# rekor-types, requests, ...), which is most of the runtime's cold-start overhead.
# So a bundle of exactly the shape key signing produces is checked here with
# ``cryptography`` alone, reproducing model-signing 1.1's ``sign_ec_key.Verifier``
# and ``signing.Verifier.verify`` step by step (references in the comments); any
# other shape (extra or snake_case fields, transparency-log entries, several
# signatures, non-canonical base64, ...) goes to model-signing exactly as before.
# tests/unit/test_model_signing.py checks that both paths decide alike on valid,
# tampered and mutated bundles.

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"  # signing._IN_TOTO_JSON_PAYLOAD_TYPE
IN_TOTO_STATEMENT_TYPE = "https://in-toto.io/Statement/v1"  # signing._IN_TOTO_STATEMENT_TYPE
_B64_STD = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


@dataclass(frozen=True)
class _KeyBundle:
    """The parts of a plain key bundle that verification reads (bytes already decoded)."""

    hint: str | None
    payload_type: str
    payload: bytes
    sig: bytes


def _b64_strict(value: Any) -> bytes | None:
    """Canonical standard base64 -> bytes; None for anything else (-> model-signing path)."""
    if not isinstance(value, str) or not _B64_STD.fullmatch(value):
        return None
    return base64.b64decode(value, validate=True)


def plain_key_bundle(data: dict[str, Any]) -> _KeyBundle | None:
    """The bundle's parts if it has exactly the shape key signing writes, else None.

    That shape: ``mediaType`` (v0.3, checked on read), ``verificationMaterial`` with a
    ``publicKey`` (``hint`` only) and no transparency-log entries, and a DSSE
    envelope with one signature, all base64 canonical. Every field model-signing's
    strict bundle model would accept differently (aliases, extras) is outside it.
    """
    if set(data) != {"mediaType", "verificationMaterial", "dsseEnvelope"}:
        return None
    material, envelope = data["verificationMaterial"], data["dsseEnvelope"]
    if not set(material) <= {"publicKey", "tlogEntries"} or material.get("tlogEntries", []) != []:
        return None
    public_key = material.get("publicKey")
    if not isinstance(public_key, dict) or not set(public_key) <= {"hint"}:
        return None
    hint = public_key.get("hint")
    if hint is not None and not isinstance(hint, str):
        return None
    if set(envelope) != {"payload", "payloadType", "signatures"}:
        return None
    signatures = envelope["signatures"]
    if not isinstance(signatures, list) or len(signatures) != 1:
        return None
    signature = signatures[0]
    if not isinstance(signature, dict) or not {"sig"} <= set(signature) <= {"sig", "keyid"}:
        return None
    if signature.get("keyid") is not None and not isinstance(signature["keyid"], str):
        return None
    payload_type = envelope["payloadType"]
    payload, sig = _b64_strict(envelope["payload"]), _b64_strict(signature["sig"])
    if not isinstance(payload_type, str) or payload is None or sig is None:
        return None
    return _KeyBundle(hint, payload_type, payload, sig)


def _pae(payload: bytes) -> bytes:
    # sign_sigstore_pb.pae: the type is always the in-toto one, whatever the envelope says
    # (the envelope's payloadType is compared with it after the signature check).
    kind = IN_TOTO_PAYLOAD_TYPE
    return b" ".join([f"DSSEv1 {len(kind)} {kind} {len(payload)}".encode(), payload])


def _pae_compat(payload: bytes) -> bytes:
    # sign_sigstore_pb.pae_compat: model-signing 0.2 put the bytes' repr into a str;
    # signatures made then still verify with model-signing 1.x, so here too.
    kind = IN_TOTO_PAYLOAD_TYPE
    return f"DSSEV1 {len(kind)} {kind} {len(payload)} {payload!r}".encode()


class _NativeKeyVerifier:
    """model-signing's ``sign_ec_key.Verifier`` for a :class:`_KeyBundle`, on cryptography."""

    def __init__(self, public_key_path: Path) -> None:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        key = serialization.load_pem_public_key(public_key_path.read_bytes())
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ValueError(f"not an elliptic curve key ({type(key).__name__})")
        # sign_ec_key._check_supported_ec_key and get_ec_key_hash
        if key.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
            raise ValueError(f"Unsupported key for curve '{key.curve.name}'")
        digest = {256: hashes.SHA256, 384: hashes.SHA384, 521: hashes.SHA512}[key.curve.key_size]
        self._key = key
        self._algorithm = ec.ECDSA(digest())
        pem = key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self._hint = hashlib.sha256(pem).hexdigest()

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
            self._key.verify(bundle.sig, _pae(bundle.payload), self._algorithm)
        except InvalidSignature:
            self._key.verify(bundle.sig, _pae_compat(bundle.payload), self._algorithm)
        # signing.Verifier.verify: payload type, then statement type.
        if bundle.payload_type != IN_TOTO_PAYLOAD_TYPE:
            raise ValueError(
                f"Expected DSSE payload {IN_TOTO_PAYLOAD_TYPE}, but got {bundle.payload_type}"
            )
        statement = json.loads(bundle.payload)
        if statement["_type"] != IN_TOTO_STATEMENT_TYPE:
            raise ValueError(
                f"Expected in-toto {IN_TOTO_STATEMENT_TYPE} payload, "
                f"but got {statement['_type']}"
            )
        return statement


def statement_digests(statement: dict[str, Any]) -> dict[str, str]:
    """The checks of model-signing's ``dsse_payload_to_manifest`` plus :func:`manifest_digests`.

    For a statement :func:`_check_statement` has accepted (v1.0 predicate, per-file
    sha256 serialization, safe unique names, 64-hex digests): exactly one subject
    whose sha256 is the hash of all resource digests in order, ``allow_symlinks``
    recorded, every resource's algorithm sha256. Returns {name: sha256 hex}, sorted
    as model-signing's manifest sorts.
    """
    subjects = statement["subject"]
    if len(subjects) != 1:
        raise ValueError(f"Expected only one subject, got {subjects}")
    subjects[0]["name"]  # noqa: B018 - required by model-signing (the model's name)
    expected = subjects[0]["digest"]["sha256"]
    predicate = statement["predicate"]
    predicate["serialization"]["allow_symlinks"]  # noqa: B018 - _FileSerialization._from_args
    root = hashlib.sha256()
    result: dict[str, str] = {}
    for resource in predicate["resources"]:
        algorithm, digest = resource["algorithm"], resource["digest"]
        root.update(bytes.fromhex(digest))
        if algorithm != "sha256":
            raise ValueError(f"signed manifest uses {algorithm!r} digests; sha256 required")
        result[resource["name"]] = digest
    if root.hexdigest() != expected:
        raise ValueError(
            f"Manifest is inconsistent. Root digest is {expected}, "
            f"but the included resources hash to {root.hexdigest()}"
        )
    return {name: result[name] for name in sorted(result, key=PurePosixPath)}


def _key_hint(path: Path) -> str | None:
    import hashlib

    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
        pem = key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except Exception:
        return None  # reported properly when its verifier is built
    return hashlib.sha256(pem).hexdigest()


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


def parse_signature(raw: bytes, data: dict[str, Any], sigstore_bundle: bool) -> Any:
    """The in-memory bundle as model-signing's Signature object, from the bytes read once."""
    if sigstore_bundle:
        from model_signing._signing import sign_sigstore
        from sigstore import models as sigstore_models

        return sign_sigstore.Signature(sigstore_models.Bundle.from_json(raw))
    from model_signing._signing import sign_sigstore_pb
    from sigstore_models.bundle import v1 as bundle_pb

    # The same normalisation model-signing's Signature.read applies to a file.
    parsed = json.loads(raw.decode("utf-8"))
    material = parsed["verificationMaterial"]
    material.setdefault("tlogEntries", [])
    if "publicKey" in material and isinstance(material["publicKey"], dict):
        material["publicKey"].setdefault("hint", None)
        for extra in ("rawBytes", "keyDetails"):
            material["publicKey"].pop(extra, None)
    return sign_sigstore_pb.Signature(bundle_pb.Bundle.from_dict(parsed))


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


def _material_kind(material: dict[str, Any]) -> str:
    if "publicKey" in material:
        return "a public key"
    if "certificate" in material:
        return "a Sigstore keyless certificate"
    if "x509CertificateChain" in material:
        return "a certificate chain"
    return "unknown verification material"


def _check_statement(signature_path: Path, data: dict[str, Any]) -> None:
    """The verified payload must be the v1.0 predicate, files/sha256, with safe names."""
    try:
        # Duplicate keys were rejected on read, so this is the payload the verifier saw.
        payload = base64.b64decode(data["dsseEnvelope"]["payload"], validate=True)
        statement = json.loads(payload, object_pairs_hook=_no_duplicates)
        predicate_type = statement["predicateType"]
        serialization = statement["predicate"]["serialization"]
        resources = statement["predicate"]["resources"]
    except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
        raise VerificationError(
            f"malformed model signature {signature_path}: unreadable statement ({_short(exc)})"
        ) from None
    if predicate_type != PREDICATE_TYPE:
        raise VerificationError(
            f"model signature {signature_path}: predicate {predicate_type!r} is not "
            f"{PREDICATE_TYPE} (re-sign with this pipeline)"
        )
    if (
        not isinstance(serialization, dict)
        or serialization.get("method") != "files"
        or (serialization.get("hash_type") != "sha256")
    ):
        raise VerificationError(
            f"model signature {signature_path}: manifest must use per-file sha256 digests "
            f"(got {serialization!r})"
        )
    seen: set[str] = set()
    for resource in resources if isinstance(resources, list) else [None]:
        name = resource.get("name") if isinstance(resource, dict) else None
        digest = resource.get("digest") if isinstance(resource, dict) else None
        if not isinstance(name, str) or not _safe_relative(name) or name in seen:
            raise VerificationError(
                f"model signature {signature_path}: unsafe or duplicate file name {name!r}"
            )
        if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
            raise VerificationError(
                f"model signature {signature_path}: bad sha256 digest for {name!r}"
            )
        seen.add(name)


def _safe_relative(name: str) -> bool:
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        return False
    parts = name.split("/")
    return all(part not in ("", ".", "..") for part in parts)


def compare(model_dir: Path, expected: dict[str, str], actual: dict[str, str]) -> None:
    """IntegrityError naming every file that is unsigned, missing or changed."""
    unsigned = sorted(set(actual) - set(expected))
    missing = sorted(set(expected) - set(actual))
    changed = sorted(n for n in set(actual) & set(expected) if actual[n] != expected[n])
    problems: list[str] = []
    problems += [f"{name}: present but not signed" for name in unsigned]
    problems += [f"{name}: signed but missing" for name in missing]
    problems += [f"{name}: content does not match its signature" for name in changed]
    if problems:
        shown = "; ".join(problems[:10])
        more = f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise IntegrityError(f"model {model_dir} does not match its signature: {shown}{more}")
