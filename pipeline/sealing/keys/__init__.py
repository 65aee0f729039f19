"""Key providers for envelope encryption: who holds the key-encryption keys.

Sealing asks a provider to wrap a fresh data key and records the provider name, the
key id, ``wrap_algorithm`` and the wrapped key in seal.json; opening asks the same
provider to unwrap it. Providers: ``local`` (keyring file) and ``pkcs11`` (HSM).
Cloud KMS and Vault transit slot in by implementing :class:`KeyProvider` and adding
a factory to ``_FACTORIES``; callers do not change. See docs/key-providers.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pipeline.errors import ConfigError
from pipeline.sealing.keys._base import KeyProvider, resolve_key_id

if TYPE_CHECKING:
    from pipeline.config import Settings


def _local(settings: Settings) -> KeyProvider:
    from pipeline.sealing.keys.local import LocalKeyProvider

    return LocalKeyProvider(settings.keyring)


def _pkcs11(settings: Settings) -> KeyProvider:
    from pipeline.sealing.keys.pkcs11 import Pkcs11KeyProvider

    return Pkcs11KeyProvider.from_settings(settings)


# Imported lazily so that the runtime image needs only the provider it uses.
_FACTORIES: dict[str, Callable[[Settings], KeyProvider]] = {
    "local": _local,
    "pkcs11": _pkcs11,
}

PROVIDER_NAMES: tuple[str, ...] = tuple(_FACTORIES)


def get_provider(name: str, settings: Settings | None = None) -> KeyProvider:
    """The provider called ``name``, configured from ``settings`` (default: loaded)."""
    factory = _FACTORIES.get(name)
    if factory is None:
        raise ConfigError(
            f"unknown key provider {name!r}; known providers: {', '.join(PROVIDER_NAMES)}"
        )
    if settings is None:
        from pipeline.config import load_settings

        settings = load_settings()
    return factory(settings)


__all__ = ["PROVIDER_NAMES", "KeyProvider", "get_provider", "resolve_key_id"]
