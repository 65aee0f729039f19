"""The key-provider interface and the small helpers every provider shares.

Envelope encryption keeps key-encryption keys (KEKs) in a provider (a keyring file,
an HSM, later a cloud KMS or Vault transit) and only ever hands the sealing code a
*wrapped* data key. The interface is deliberately five members wide: a remote KMS
can implement it with two API calls (encrypt/decrypt) and a list, so callers never
change when a provider is added.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from pipeline.errors import KeyProviderError

DATA_KEY_SIZE = 32
"""Data keys are AES-256 keys: wrapping anything else is a caller bug, refused."""

WRAP_PURPOSE = b"secure-model-pipeline/data-key-wrap/v1"
"""Bound into every wrap as associated data, so a wrap is only valid for this use."""

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@runtime_checkable
class KeyProvider(Protocol):
    """A holder of key-encryption keys that can wrap and unwrap 32-byte data keys.

    ``wrap``/``unwrap`` never expose the KEK; ``list_keys`` never returns secrets.
    ``wrap_algorithm`` is recorded in seal.json so a reader knows what opened it.
    """

    name: str
    wrap_algorithm: str

    def create_key(self, key_name: str) -> str:
        """Create a new KEK called ``key_name``; return its key id."""
        ...

    def wrap(self, key_id: str, data_key: bytes | bytearray) -> bytes:
        """Encrypt ``data_key`` under the KEK ``key_id``; the result is opaque."""
        ...

    def unwrap(self, key_id: str, wrapped: bytes) -> bytearray:
        """Recover the data key; KeyProviderError for an unknown key or a bad wrap."""
        ...

    def list_keys(self) -> list[dict[str, str]]:
        """``[{"key_id", "name", "created"}]`` for every KEK, oldest first."""
        ...


def check_key_name(key_name: str) -> str:
    """Key names end up in key ids, labels and file contents: keep them plain."""
    if not isinstance(key_name, str) or not _NAME_RE.match(key_name):
        raise KeyProviderError(
            f"invalid key name {key_name!r}: use 1-64 characters from A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit"
        )
    return key_name


def check_data_key(data_key: bytes | bytearray) -> None:
    """Refuse to wrap anything that is not a 256-bit key (a truncated key is a bug)."""
    if not isinstance(data_key, bytes | bytearray) or len(data_key) != DATA_KEY_SIZE:
        raise KeyProviderError(f"a data key must be {DATA_KEY_SIZE} bytes")


#: Every provider's wrapped key: version byte, 96-bit nonce, AES-256-GCM(data key) + tag.
WRAP_VERSION = b"\x01"
NONCE_SIZE = 12
WRAPPED_SIZE = 1 + NONCE_SIZE + DATA_KEY_SIZE + 16


def check_wrapped(wrapped: bytes) -> None:
    """Refuse anything that is not a version-1 wrapped data key, before any crypto."""
    if (
        not isinstance(wrapped, bytes | bytearray)
        or len(wrapped) != WRAPPED_SIZE
        or wrapped[:1] != WRAP_VERSION
    ):
        raise KeyProviderError(
            f"wrapped data key is malformed (expected {WRAPPED_SIZE} bytes, version 1)"
        )


def wrap_aad(key_id: str) -> bytes:
    """Associated data of a wrap: purpose and key id, so a wrap cannot be replayed."""
    return WRAP_PURPOSE + b"\x00" + key_id.encode("utf-8")


def utc_now() -> str:
    """Creation time as RFC 3339 UTC with microseconds, so 'newest' is well defined."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def resolve_key_id(provider: KeyProvider, name_or_id: str) -> str:
    """Map ``--key NAME`` (or an exact key id) to the key id of the newest such key.

    Rotation creates a new key under the same name; sealing with ``--key NAME`` must
    pick the newest, while old seals keep naming their exact key id.
    """
    keys = provider.list_keys()
    for key in keys:
        if key["key_id"] == name_or_id:
            return name_or_id
    named = [key for key in keys if key["name"] == name_or_id]
    if not named:
        raise KeyProviderError(
            f"no key named or with id {name_or_id!r} in the {provider.name} key provider"
        )
    # Stable sort keeps list order for equal timestamps: the later-listed one wins.
    return sorted(named, key=lambda key: key["created"])[-1]["key_id"]
