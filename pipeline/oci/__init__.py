"""OCI core: references, digests, the on-disk image layout and a registry client.

The names here are the narrow public API the rest of the pipeline codes against.
The registry client (and ``requests``) is imported lazily so that code needing
only references or layouts (the secure runtime) stays light.
"""

from __future__ import annotations

from typing import Any

from pipeline.oci.digest import parse_digest, sha256_digest, verify_digest
from pipeline.oci.layout import OCILayout
from pipeline.oci.reference import Reference
from pipeline.oci.registry import (
    Credentials,
    RegistryOptions,
    open_client,
    resolve_descriptor,
    resolve_digest,
)

_LAZY = {
    "RegistryClient": "pipeline.oci.client",
    "push_layout": "pipeline.oci.transfer",
    "pull_to_layout": "pipeline.oci.transfer",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "Credentials",
    "OCILayout",
    "Reference",
    "RegistryClient",
    "RegistryOptions",
    "open_client",
    "parse_digest",
    "pull_to_layout",
    "push_layout",
    "resolve_descriptor",
    "resolve_digest",
    "sha256_digest",
    "verify_digest",
]
