"""``pipeline keys``: key-encryption keys (sealing) and signing key pairs."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from pipeline._cli._common import emit, json_option
from pipeline.cli import main

if TYPE_CHECKING:
    from pipeline.sealing.keys import KeyProvider

F = TypeVar("F", bound=Callable[..., Any])


@main.group("keys")
def keys_group() -> None:
    """Create and list keys: key-encryption keys for sealing, signing key pairs."""


def _provider_option(func: F) -> F:
    from pipeline.sealing.keys import PROVIDER_NAMES

    return click.option(
        "--provider",
        type=click.Choice(PROVIDER_NAMES),
        default=None,
        help="Key provider (default: keys.provider in pipeline.yaml, else local).",
    )(func)


def _resolve_provider(provider: str | None) -> KeyProvider:
    from pipeline.config import load_settings
    from pipeline.sealing.keys import get_provider

    settings = load_settings()
    name = provider or settings.keys().provider or "local"
    return get_provider(str(name), settings)


@keys_group.command("create")
@click.argument("name")
@_provider_option
@json_option
def keys_create(name: str, provider: str | None, as_json: bool) -> None:
    """Create a key-encryption key NAME and print its key id (never the key)."""
    chosen = _resolve_provider(provider)
    key_id = chosen.create_key(name)
    result = {
        "key_id": key_id,
        "name": name,
        "provider": chosen.name,
        "wrap_algorithm": chosen.wrap_algorithm,
    }
    emit(result, as_json, key_id)


@keys_group.command("list")
@_provider_option
@json_option
def keys_list(provider: str | None, as_json: bool) -> None:
    """List key-encryption keys: key id, name, creation time (no key material)."""
    chosen = _resolve_provider(provider)
    keys = chosen.list_keys()
    if keys:
        human = "\n".join(f"{k['key_id']}\t{k['name']}\t{k['created']}" for k in keys)
    else:
        human = f"no keys in the {chosen.name} key provider"
    emit({"provider": chosen.name, "keys": keys}, as_json, human)
