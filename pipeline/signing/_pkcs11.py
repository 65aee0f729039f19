"""PKCS#11 tokens for signing keys: RFC 7512 URIs and EC key pairs on the token.

Shared by the model signer (pipeline.signing._model_signers) and the image signer
(pipeline.signing._pkcs11_signer). Sessions are opened by :mod:`pipeline._pkcs11`, the
same code the sealing key provider uses; PINs come from the URI's pin-source, the
environment or pipeline.yaml (:meth:`pipeline.config.Settings.pkcs11`), are read by the
one strict PIN-file reader, and never appear in a message.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline._pkcs11 import describe, open_session, read_pin_file
from pipeline.config import load_settings
from pipeline.errors import (
    ConfigError,
    InputError,
    KeyProviderError,
    KeyProviderUnreachableError,
)


@dataclass(frozen=True)
class Pkcs11KeyRef:
    """Where a token key lives, resolved from a URI plus the pipeline's PKCS#11 settings."""

    module: str
    token_label: str | None
    slot_id: int | None
    label: str | None
    key_id: bytes | None
    pin: str = field(repr=False)


def resolve_pkcs11_uri(pkcs11_uri: str) -> Pkcs11KeyRef:
    """Parse an RFC 7512 URI and fill the gaps from the pipeline's PKCS#11 settings.

    ``pkcs11:object=model-signing`` is enough when the module, token and PIN are
    configured the way the sealing key provider reads them (PIPELINE_PKCS11_MODULE /
    _TOKEN / _PIN / _PIN_FILE, or keys.pkcs11 in pipeline.yaml). A ``pin-source`` file
    is read with its trailing newline stripped; the PIN never leaves this process.
    """
    path_attrs, query = parse_pkcs11_uri(pkcs11_uri)
    label = _text(path_attrs.get("object"))
    key_id = path_attrs.get("id")
    if label is None and key_id is None:
        raise InputError("the PKCS#11 URI must name the key: object=<label> or id=<id>")
    conf = load_settings().pkcs11()

    module = _text(query.get("module-path")) or conf.module
    if "module-name" in query and "module-path" not in query:
        raise InputError("use module-path=<absolute path> (module-name is not supported)")
    if not module:
        raise ConfigError(
            "no PKCS#11 module: add module-path=... to the URI, set PIPELINE_PKCS11_MODULE "
            "or keys.pkcs11.module in pipeline.yaml"
        )
    module_path = Path(str(module)).expanduser()
    if not module_path.is_absolute() or not module_path.is_file():
        raise KeyProviderUnreachableError(f"PKCS#11 module not found: {module_path}")

    slot_id: int | None = None
    if "slot-id" in path_attrs:
        try:
            slot_id = int(_text(path_attrs["slot-id"]) or "")
        except ValueError:
            raise InputError("PKCS#11 URI: slot-id must be a number") from None
    token = _text(path_attrs.get("token"))
    if token is None and slot_id is None:
        token = conf.token_label
        if not token:
            raise ConfigError(
                "no PKCS#11 token: add token=... to the URI, set PIPELINE_PKCS11_TOKEN "
                "or keys.pkcs11.token_label in pipeline.yaml"
            )

    pin = _text(query.get("pin-value"))
    source = _text(query.get("pin-source"))
    if pin is None and source is not None:
        source_path = Path(source.removeprefix("file://").removeprefix("file:"))
        if not source_path.is_absolute():
            raise InputError("PKCS#11 URI: pin-source must be an absolute file path")
        pin = read_pin_file(source_path)
    if pin is None and conf.pin:
        pin = conf.pin
    if pin is None and conf.pin_file:
        pin = read_pin_file(conf.pin_file)
    if pin is None:
        raise KeyProviderError(
            "no PIN for the PKCS#11 token: use pin-source=<file> in the URI, "
            "PIPELINE_PKCS11_PIN_FILE or keys.pkcs11.pin_file"
        )
    return Pkcs11KeyRef(
        module=str(module_path),
        token_label=str(token) if token is not None else None,
        slot_id=slot_id,
        label=label,
        key_id=key_id,
        pin=pin,
    )


def parse_pkcs11_uri(pkcs11_uri: str) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """RFC 7512: ``pkcs11:<path attrs ';'>[?<query attrs '&'>]``, values percent-decoded."""
    from urllib.parse import unquote_to_bytes

    if not pkcs11_uri.startswith("pkcs11:"):
        raise InputError("a PKCS#11 URI must start with 'pkcs11:' (RFC 7512)")
    body = pkcs11_uri[len("pkcs11:") :]
    path_part, _, query_part = body.partition("?")
    result: list[dict[str, bytes]] = []
    for part, separator in ((path_part, ";"), (query_part, "&")):
        attrs: dict[str, bytes] = {}
        for item in filter(None, part.split(separator)):
            name, equals, value = item.partition("=")
            if not equals or not name:
                raise InputError("malformed PKCS#11 URI: an attribute is not name=value")
            if name in attrs:
                raise InputError(f"malformed PKCS#11 URI: attribute {name!r} given twice")
            attrs[name] = unquote_to_bytes(value)
        result.append(attrs)
    if "pin-value" in result[1] and "pin-source" in result[1]:
        raise InputError("PKCS#11 URI: give pin-value or pin-source, not both")
    return result[0], result[1]


def _text(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("PKCS#11 URI: attribute is not UTF-8 text") from None


@contextlib.contextmanager
def open_token_session(ref: Pkcs11KeyRef) -> Iterator[tuple[Any, Any]]:
    """A logged-in ``(token, session)`` on the token ``ref`` names, closed after the block."""
    with open_session(
        ref.module, pin=ref.pin, token_label=ref.token_label, slot_id=ref.slot_id, rw=True
    ) as opened:
        yield opened


def find_token_keypair(ref: Pkcs11KeyRef, token: Any, session: Any) -> tuple[Any, Any]:
    """The (private, public) EC key objects ``ref`` names on the open ``session``.

    Both halves are required: the public object is how a signer learns which key it
    holds (and how a bundle gets its key hint) without ever touching the private one.
    """
    from pkcs11 import KeyType, ObjectClass
    from pkcs11 import exceptions as p11

    what = f"label {ref.label!r}" if ref.label is not None else f"id {ref.key_id!r}"
    criteria: dict[str, Any] = {"key_type": KeyType.EC}
    if ref.label is not None:
        criteria["label"] = ref.label
    if ref.key_id is not None:
        criteria["id"] = ref.key_id
    try:
        private = session.get_key(object_class=ObjectClass.PRIVATE_KEY, **criteria)
        public = session.get_key(object_class=ObjectClass.PUBLIC_KEY, **criteria)
    except p11.NoSuchKey:
        raise KeyProviderError(
            f"no EC key pair with {what} on PKCS#11 token {token.label!r} "
            "(both the private and the public key object are needed)"
        ) from None
    except p11.MultipleObjectsReturned:
        raise KeyProviderError(
            f"more than one EC key with {what} on the token: add id=... to the URI"
        ) from None
    except p11.PKCS11Error as exc:
        raise KeyProviderError(f"cannot read PKCS#11 key {what}: {_p11(exc)}") from None
    return private, public


def create_token_keypair(pkcs11_uri: str) -> bytes:
    """Generate an ECDSA P-256 pair on the token; return the public key as PEM.

    The private key is created sensitive and non-extractable, so it can sign but never
    leave the HSM; the PEM is what verifiers are given (``--trust``). A label that is
    already taken is refused rather than shadowed: two keys of one label would make
    ``object=<label>`` ambiguous for every later signature.
    """
    from cryptography.hazmat.primitives import serialization
    from pkcs11 import Attribute, KeyType, ObjectClass
    from pkcs11 import exceptions as p11
    from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

    ref = resolve_pkcs11_uri(pkcs11_uri)
    if ref.label is None:
        raise InputError("name the new key with object=<label> in the PKCS#11 URI")
    with open_token_session(ref) as (token, session):
        existing = list(session.get_objects({Attribute.LABEL: ref.label,
                                             Attribute.CLASS: ObjectClass.PRIVATE_KEY}))
        if existing:
            raise InputError(f"PKCS#11 token {token.label!r} already has a key {ref.label!r}")
        key_id = ref.key_id or secrets.token_bytes(16)
        try:
            params = session.create_domain_parameters(
                KeyType.EC,
                {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
                local=True,
            )
            public, _ = params.generate_keypair(
                store=True,
                label=ref.label,
                id=key_id,
                private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
            )
        except p11.PKCS11Error as exc:
            raise KeyProviderError(f"cannot generate a key on the token: {_p11(exc)}") from None
        der = encode_ec_public_key(public)
    return serialization.load_der_public_key(der).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _p11(exc: BaseException) -> str:
    return describe(exc)


def _short(exc: BaseException, limit: int = 300) -> str:
    """An exception's text on one line, capped, with any pin-value redacted."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = re.sub(r"pin-value=[^&;\s]*", "pin-value=<redacted>", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
