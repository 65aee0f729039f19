"""``pipeline keys``: key-encryption keys (sealing) and signing key pairs."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from pipeline._cli._common import emit, json_option
from pipeline.errors import InputError

if TYPE_CHECKING:
    from pipeline.sealing.keys import KeyProvider

F = TypeVar("F", bound=Callable[..., Any])


@click.group("keys")
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


@keys_group.command("create-signing")
@click.argument("name")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Directory for NAME.key (private, 0600) and NAME.pub.",
)
@click.option(
    "--provider",
    type=click.Choice(["file", "pkcs11"]),
    default="file",
    show_default=True,
    help="file: a PEM pair on disk; pkcs11: the private key is generated on the token "
    "(PIPELINE_PKCS11_MODULE/_TOKEN/_PIN_FILE or keys.pkcs11) and only NAME.pub is written.",
)
@json_option
def keys_create_signing(name: str, directory: Path, provider: str, as_json: bool) -> None:
    """Create an ECDSA P-256 signing key pair NAME (never overwrites)."""
    from pipeline.signing.keypair import create_signing_keypair

    if not name or "/" in name or name.startswith(".") or "\x00" in name:
        raise InputError(f"invalid key name: {name!r} (a plain file name, no leading dot)")
    public_path = directory / f"{name}.pub"
    result: dict[str, str] = {"algorithm": "ecdsa-p256-sha256", "provider": provider}
    if provider == "pkcs11":
        from pipeline.signing.token_keys import create_token_signing_key

        uri = create_token_signing_key(name, public_path)
        result["pkcs11_uri"] = uri
        human = f"{uri} (private, on the token)\n{public_path} (public)"
    else:
        private_path = directory / f"{name}.key"
        create_signing_keypair(private_path, public_path)
        result["private_key"] = str(private_path)
        human = f"{private_path} (private, keep secret)\n{public_path} (public)"
    result["public_key"] = str(public_path)
    result["public_key_sha256"] = hashlib.sha256(public_path.read_bytes()).hexdigest()
    emit(result, as_json, human)
