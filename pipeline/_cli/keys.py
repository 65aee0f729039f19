"""``pipeline keys``: key-encryption keys (sealing) and signing key pairs."""

from __future__ import annotations

import click

from pipeline.cli import main


@main.group("keys")
def keys_group() -> None:
    """Create and list keys: key-encryption keys for sealing, signing key pairs."""
