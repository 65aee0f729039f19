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
  hands those names and digests to a loader that opens files by them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import os
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.errors import (
    ConfigError,
    InputError,
    IntegrityError,
    KeyProviderError,
    KeyProviderUnreachableError,
    NotFoundError,
    PipelineError,
    UnreachableError,
    VerificationError,
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
    password = os.environ.get(PASSWORD_ENV)
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


def load_pkcs11_signer(config: Any, pkcs11_uri: str) -> Any:
    """Configure ``config`` with a key on a PKCS#11 token (model-signing's pkcs11 signer)."""
    uri = resolve_pkcs11_uri(pkcs11_uri)
    try:
        import PyKCS11
    except ImportError:  # pragma: no cover - PyKCS11 is a declared dependency
        raise ConfigError("PKCS#11 signing needs PyKCS11 (pip install PyKCS11)") from None
    try:
        _keep_module_loaded(uri)
        try:
            return config.use_pkcs11_signer(pkcs11_uri=uri)
        except PyKCS11.PyKCS11Error as exc:
            if exc.value != PyKCS11.CKR_USER_ALREADY_LOGGED_IN:
                raise
            # PKCS#11 login state belongs to the process, not the session: another
            # library in this process (the sealing key provider) is already logged in
            # to the token, so a second login fails and none is needed.
            return config.use_pkcs11_signer(pkcs11_uri=_without_pin(uri))
    except PyKCS11.PyKCS11Error as exc:
        raise KeyProviderError(f"PKCS#11 token refused: {_short(exc)}") from None
    except FileNotFoundError as exc:
        raise KeyProviderUnreachableError(f"PKCS#11 module not found: {exc}") from None
    except (ValueError, RuntimeError) as exc:  # no such token/key/module, bad curve
        raise KeyProviderError(f"PKCS#11 signing key unavailable: {_short(exc)}") from None


def resolve_pkcs11_uri(pkcs11_uri: str) -> str:
    """Complete an RFC 7512 URI from the pipeline's PKCS#11 settings.

    ``pkcs11:object=model-signing`` is enough when the module, token and PIN are
    configured the way the key provider reads them (PIPELINE_PKCS11_MODULE / _TOKEN /
    _PIN / _PIN_FILE, or keys.pkcs11 in pipeline.yaml). A ``pin-source`` file is read
    here, trailing newline stripped (model-signing would send the newline as part of
    the PIN), and the PIN travels only inside this process.
    """
    from model_signing._signing.pkcs11uri import Pkcs11URI

    if not pkcs11_uri.startswith("pkcs11:"):
        raise InputError("a PKCS#11 URI must start with 'pkcs11:' (RFC 7512)")
    parsed = Pkcs11URI()
    try:
        parsed.parse(pkcs11_uri)
    except ValueError as exc:
        raise InputError(f"malformed PKCS#11 URI: {_redact_pin(str(exc))}") from None
    if parsed.get_path_attribute("object") is None and parsed.get_path_attribute("id") is None:
        raise InputError("the PKCS#11 URI must name the key: object=<label> or id=<id>")

    settings_conf = _pkcs11_settings()
    query = parsed.query_attributes
    path_attrs = parsed.path_attributes
    if "module-path" not in query and "module-name" not in query:
        module = os.environ.get("PIPELINE_PKCS11_MODULE") or settings_conf.get("module")
        if not module:
            raise ConfigError(
                "no PKCS#11 module: add module-path=... to the URI, set PIPELINE_PKCS11_MODULE "
                "or keys.pkcs11.module in pipeline.yaml"
            )
        module_path = Path(str(module)).expanduser().absolute()
        if not module_path.is_file():
            raise KeyProviderUnreachableError(f"PKCS#11 module not found: {module_path}")
        query["module-path"] = str(module_path)
    if "token" not in path_attrs and "slot-id" not in path_attrs:
        token = os.environ.get("PIPELINE_PKCS11_TOKEN") or settings_conf.get("token_label")
        if not token:
            raise ConfigError(
                "no PKCS#11 token: add token=... to the URI, set PIPELINE_PKCS11_TOKEN "
                "or keys.pkcs11.token_label in pipeline.yaml"
            )
        path_attrs["token"] = str(token)

    pin: str | None = query.pop("pin-value", None)
    source = query.pop("pin-source", None)
    if pin is None and source is not None:
        pin = _read_pin_file(Path(source.removeprefix("file://").removeprefix("file:")))
    if pin is None and os.environ.get("PIPELINE_PKCS11_PIN"):
        pin = os.environ["PIPELINE_PKCS11_PIN"]
    if pin is None:
        pin_file = os.environ.get("PIPELINE_PKCS11_PIN_FILE") or settings_conf.get("pin_file")
        if pin_file:
            pin = _read_pin_file(Path(str(pin_file)).expanduser())
    if pin is None:
        raise KeyProviderError(
            "no PIN for the PKCS#11 token: use pin-source=<file> in the URI, "
            "PIPELINE_PKCS11_PIN_FILE or keys.pkcs11.pin_file"
        )
    query["pin-value"] = pin
    try:
        return str(parsed.format())
    except ValueError as exc:
        raise InputError(f"malformed PKCS#11 URI: {_redact_pin(str(exc))}") from None


_LOADED_MODULES: dict[str, Any] = {}


def _keep_module_loaded(uri: str) -> None:
    """Hold one PyKCS11 reference to the module for the life of the process.

    PyKCS11 calls C_Finalize when its last user of a module goes away, which would
    also end every session another PKCS#11 library in this process (python-pkcs11,
    used by the sealing key provider) holds on the same module. One reference kept
    here means model-signing's short-lived signer never finalizes the module.
    """
    import PyKCS11
    from model_signing._signing import sign_pkcs11
    from model_signing._signing.pkcs11uri import Pkcs11URI

    parsed = Pkcs11URI()
    parsed.parse(uri)
    # The same lookup model-signing's signer does, so the same file name string.
    parsed.set_module_directories(sign_pkcs11.MODULE_PATHS)
    parsed.set_allow_any_module(True)
    module = parsed.get_module()
    if module not in _LOADED_MODULES:
        _LOADED_MODULES[module] = PyKCS11.PyKCS11Lib().load(pkcs11dll_filename=module)


def _without_pin(uri: str) -> str:
    from model_signing._signing.pkcs11uri import Pkcs11URI

    parsed = Pkcs11URI()
    parsed.parse(uri)
    parsed.query_attributes.pop("pin-value", None)
    parsed.query_attributes.pop("pin-source", None)
    return str(parsed.format())


def _pkcs11_settings() -> dict[str, Any]:
    from pipeline.config import load_settings

    try:
        return dict(load_settings().pkcs11)
    except ConfigError:
        raise
    except Exception:  # pragma: no cover - settings are optional here
        return {}


def _read_pin_file(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KeyProviderError(f"cannot read PIN file {path}: {exc.strerror or exc}") from None
    pin = text.rstrip("\r\n")
    if not pin:
        raise KeyProviderError(f"PIN file {path} is empty")
    return pin


def _redact_pin(message: str) -> str:
    return re.sub(r"pin-value=[^&;\s]*", "pin-value=<redacted>", message)


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


def sign_to_file(config: Any, model_dir: Path, signature_path: Path) -> None:
    """Hash + sign with model-signing, writing the bundle under a temporary name first.

    The temporary name does not exist while the model is hashed (model-signing hashes,
    then signs, then writes), so it never ends up in its own manifest.
    """
    tmp = signature_path.with_name(f".{signature_path.name}.tmp-{secrets.token_hex(6)}")
    try:
        try:
            config.sign(model_dir, tmp)
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
    try:
        import PyKCS11

        if isinstance(exc, PyKCS11.PyKCS11Error):
            return KeyProviderError(f"PKCS#11 signing failed: {_short(exc)}")
    except ImportError:  # pragma: no cover
        pass
    module = type(exc).__module__ or ""
    if module.startswith(("sigstore", "requests", "urllib3")):
        return _sigstore_error(exc, "Sigstore keyless signing failed")
    return KeyProviderError(f"signing failed: {type(exc).__name__}: {_short(exc)}")


def _sigstore_error(exc: Exception, what: str) -> Exception:
    """Network and trust-root failures are 'unreachable'; bad tokens are auth problems."""
    from pipeline.errors import AuthError

    name = type(exc).__name__
    if name in ("TUFError", "NetworkError", "ConnectionError", "Timeout", "MaxRetryError"):
        return UnreachableError(
            f"{what}: Sigstore (TUF trust root / Fulcio / Rekor) is not reachable ({name})"
        )
    if name in ("IdentityError", "ExpiredIdentity", "IssuerError"):
        return AuthError(f"{what}: the identity token was refused ({name}: {_short(exc)})")
    return VerificationError(f"{what}: {name}: {_short(exc)}")


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return _redact_pin(text if len(text) <= limit else text[: limit - 3] + "...")


# -------------------------------------------------------------------- verification


@dataclass(frozen=True)
class _Candidate:
    """One trusted signer: how to describe it, how to build its verifier, which bundle."""

    description: str
    build: Callable[[], Any]
    sigstore_bundle: bool  # True: parse with sigstore-python's Bundle (keyless)


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


def candidates(trust: Any, material: dict[str, Any], key_hint: str | None) -> list[_Candidate]:
    """The trusted signers that could have made a bundle with this verification material."""
    from model_signing._signing import sign_certificate, sign_ec_key, sign_sigstore

    found: list[_Candidate] = []
    if "publicKey" in material:
        keys = list(trust.public_keys)
        # Try the key whose fingerprint the bundle names first; the rest still get a try
        # (older bundles carry no hint), so a wrong hint can never lock out a right key.
        keys.sort(key=lambda p: _key_hint(p) != key_hint)
        for path in keys:
            found.append(
                _Candidate(
                    f"public key {path}",
                    lambda p=path: _build(lambda: sign_ec_key.Verifier(Path(p)), f"key {p}"),
                    sigstore_bundle=False,
                )
            )
    if "x509CertificateChain" in material and trust.certificate_chain:
        chain = [Path(p) for p in trust.certificate_chain]
        found.append(
            _Candidate(
                "certificate chain " + ", ".join(str(p) for p in chain),
                lambda: _build(
                    lambda: sign_certificate.Verifier(chain), "certificate chain"
                ),
                sigstore_bundle=False,
            )
        )
    if ("certificate" in material or "x509CertificateChain" in material) and trust.identities:
        for identity, issuer in trust.identities:
            found.append(
                _Candidate(
                    f"Sigstore identity {identity} ({issuer})",
                    lambda i=identity, o=issuer: _build_sigstore(
                        lambda: sign_sigstore.Verifier(identity=i, oidc_issuer=o)
                    ),
                    sigstore_bundle=True,
                )
            )
    return found


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
        raise ConfigError(f"trusted {what}: not a usable P-256/P-384/P-521 key or certificate: "
                          f"{_short(exc)}") from None


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


def verify_bundle(signature_path: Path, trust: Any) -> dict[str, str]:
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
    options = candidates(trust, material, hint if isinstance(hint, str) else None)
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
    if not isinstance(serialization, dict) or serialization.get("method") != "files" or (
        serialization.get("hash_type") != "sha256"
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
