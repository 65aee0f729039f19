"""The ``pkcs11`` key provider: key-encryption keys that never leave an HSM.

KEKs are AES-256 secret keys generated *on the token* as non-extractable and
sensitive; wrapping a data key is a CKM_AES_GCM encryption performed by the token,
with a random 96-bit nonce and associated data binding the key id and purpose. The
host only ever sees wrapped data keys and the unwrapped data key it asked for.

Settings: ``keys.pkcs11.module`` / ``token_label`` / ``pin_file`` in pipeline.yaml,
overridden by PIPELINE_PKCS11_MODULE / PIPELINE_PKCS11_TOKEN; the user PIN comes from
PIPELINE_PKCS11_PIN or the file named by PIPELINE_PKCS11_PIN_FILE (never argv, never
logged, never part of an error message).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline._pkcs11 import describe, open_session, read_pin_file
from pipeline.errors import AuthError, ConfigError, KeyProviderError
from pipeline.sealing.keys._base import (
    DATA_KEY_SIZE,
    NONCE_SIZE,
    WRAP_VERSION,
    check_data_key,
    check_key_name,
    check_wrapped,
    wrap_aad,
)

if TYPE_CHECKING:
    from pipeline.config import Settings

_KEY_ID_RE = re.compile(r"^pkcs11:([A-Za-z0-9][A-Za-z0-9._-]{0,63}):([0-9a-f]{32})$")


def _new_object_id() -> bytes:
    # CKA_ID = creation time (µs, big endian) + 8 random bytes: unique, and it lets
    # `list` report a creation time, which PKCS#11 secret keys do not carry.
    return (time.time_ns() // 1000).to_bytes(8, "big") + secrets.token_bytes(8)


def _created(object_id: bytes) -> str:
    micros = int.from_bytes(object_id[:8], "big")
    moment = datetime.fromtimestamp(micros / 1_000_000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Pkcs11KeyProvider:
    """KEKs on a PKCS#11 token (SoftHSM2 in tests, a real HSM in production)."""

    name = "pkcs11"
    wrap_algorithm = "CKM_AES_GCM"

    def __init__(
        self,
        module: str | os.PathLike[str],
        token_label: str,
        *,
        pin: str | None = None,
        pin_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self.module = str(module)
        self.token_label = token_label
        self._pin = pin
        self._pin_file = Path(pin_file).expanduser() if pin_file else None

    def __repr__(self) -> str:  # no PIN, ever
        return f"Pkcs11KeyProvider(module={self.module!r}, token_label={self.token_label!r})"

    @classmethod
    def from_settings(cls, settings: Settings) -> Pkcs11KeyProvider:
        """Module and token from env over pipeline.yaml; the PIN is read when needed."""
        conf = settings.pkcs11()
        if not conf.module:
            raise ConfigError(
                "no PKCS#11 module configured: set keys.pkcs11.module in pipeline.yaml "
                "or PIPELINE_PKCS11_MODULE"
            )
        if not conf.token_label:
            raise ConfigError(
                "no PKCS#11 token configured: set keys.pkcs11.token_label in pipeline.yaml "
                "or PIPELINE_PKCS11_TOKEN"
            )
        return cls(conf.module, conf.token_label, pin=conf.pin, pin_file=conf.pin_file)

    # -- public API -----------------------------------------------------------------

    def create_key(self, key_name: str) -> str:
        """Generate a non-extractable AES-256 KEK on the token, labelled ``key_name``."""
        import pkcs11
        from pkcs11 import Attribute, KeyType, MechanismFlag, ObjectClass

        check_key_name(key_name)
        with self._session(rw=True) as session:
            existing = list(
                session.get_objects(
                    {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: key_name}
                )
            )
            if existing:
                raise KeyProviderError(
                    f"a key labelled {key_name!r} already exists on token {self.token_label!r}"
                )
            object_id = _new_object_id()
            try:
                session.generate_key(
                    KeyType.AES,
                    256,
                    id=object_id,
                    label=key_name,
                    store=True,
                    capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
                    template={
                        Attribute.SENSITIVE: True,
                        Attribute.EXTRACTABLE: False,
                        Attribute.PRIVATE: True,
                        Attribute.MODIFIABLE: False,
                        Attribute.WRAP: False,
                        Attribute.UNWRAP: False,
                        Attribute.SIGN: False,
                        Attribute.VERIFY: False,
                        Attribute.DERIVE: False,
                    },
                )
            except pkcs11.PKCS11Error as exc:
                raise KeyProviderError(
                    f"token {self.token_label!r} refused to generate key {key_name!r}: "
                    f"{describe(exc)}"
                ) from None
        return f"pkcs11:{key_name}:{object_id.hex()}"

    def wrap(self, key_id: str, data_key: bytes | bytearray) -> bytes:
        """Encrypt the data key on the token: AES-256-GCM, AAD = purpose + key id."""
        import pkcs11
        from pkcs11 import GCMParams, Mechanism

        check_data_key(data_key)
        nonce = secrets.token_bytes(NONCE_SIZE)
        with self._session() as session:
            key = self._find(session, key_id)
            try:
                sealed = key.encrypt(
                    bytes(data_key),
                    mechanism=Mechanism.AES_GCM,
                    mechanism_param=GCMParams(nonce, wrap_aad(key_id)),
                )
            except pkcs11.PKCS11Error as exc:
                raise KeyProviderError(
                    f"token {self.token_label!r} could not wrap with {key_id!r}: {describe(exc)}"
                ) from None
        return WRAP_VERSION + nonce + bytes(sealed)

    def unwrap(self, key_id: str, wrapped: bytes) -> bytearray:
        """Decrypt the data key on the token; any failure is a KeyProviderError."""
        import pkcs11
        from pkcs11 import GCMParams, Mechanism

        check_wrapped(wrapped)
        nonce = bytes(wrapped[1 : 1 + NONCE_SIZE])
        with self._session() as session:
            key = self._find(session, key_id)
            try:
                data_key = key.decrypt(
                    bytes(wrapped[1 + NONCE_SIZE :]),
                    mechanism=Mechanism.AES_GCM,
                    mechanism_param=GCMParams(nonce, wrap_aad(key_id)),
                )
            except pkcs11.PKCS11Error:
                # SoftHSM reports a failed GCM tag as CKR_GENERAL_ERROR: do not guess.
                raise KeyProviderError(
                    f"cannot unwrap the data key with {key_id!r}: wrong key, or the wrapped "
                    "key was tampered with"
                ) from None
        if len(data_key) != DATA_KEY_SIZE:
            raise KeyProviderError("unwrapped data key has the wrong length")
        return bytearray(data_key)

    def list_keys(self) -> list[dict[str, str]]:
        """Every AES KEK created by this provider on the token, oldest first."""
        from pkcs11 import Attribute, KeyType, ObjectClass

        keys: list[dict[str, str]] = []
        with self._session() as session:
            template = {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES}
            for obj in session.get_objects(template):
                object_id = bytes(obj[Attribute.ID])
                label = obj[Attribute.LABEL]
                key_id = f"pkcs11:{label}:{object_id.hex()}"
                if len(object_id) != 16 or not _KEY_ID_RE.match(key_id):
                    continue  # not one of ours: other applications share the token
                keys.append({"key_id": key_id, "name": label, "created": _created(object_id)})
        return sorted(keys, key=lambda key: (key["created"], key["key_id"]))

    # -- token access ---------------------------------------------------------------

    def _find(self, session: Any, key_id: str) -> Any:
        from pkcs11 import Attribute, KeyType, ObjectClass

        match = _KEY_ID_RE.match(key_id) if isinstance(key_id, str) else None
        if not match:
            raise KeyProviderError(
                f"unknown key id {key_id!r}: not a pkcs11 key id (pkcs11:<name>:<32 hex>)"
            )
        template = {
            Attribute.CLASS: ObjectClass.SECRET_KEY,
            Attribute.KEY_TYPE: KeyType.AES,
            Attribute.LABEL: match.group(1),
            Attribute.ID: bytes.fromhex(match.group(2)),
        }
        found = list(session.get_objects(template))
        if len(found) != 1:
            raise KeyProviderError(f"unknown key id {key_id!r} on token {self.token_label!r}")
        return found[0]

    def _read_pin(self) -> str:
        if self._pin:
            return self._pin
        if self._pin_file is None:
            raise AuthError(
                f"no PIN for PKCS#11 token {self.token_label!r}: set PIPELINE_PKCS11_PIN_FILE "
                "(or keys.pkcs11.pin_file, or PIPELINE_PKCS11_PIN)"
            )
        return read_pin_file(Path(self._pin_file))

    @contextlib.contextmanager
    def _session(self, rw: bool = False) -> Iterator[Any]:
        if not Path(self.module).is_file():
            raise ConfigError(f"PKCS#11 module not found: {self.module}")
        with open_session(
            self.module, pin=self._read_pin, token_label=self.token_label, rw=rw
        ) as (_, session):
            yield session
