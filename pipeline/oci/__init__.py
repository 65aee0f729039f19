"""OCI core: references, digests, the on-disk image layout, and reaching registries.

Pure transport and formats, no crypto policy: what is signed, and by whom, is
``pipeline.signing``'s and ``pipeline.policy``'s business. The names here are the
narrow public API the rest of the pipeline codes against; the registry client (and
``requests``) is imported lazily so that code needing only references or layouts
stays light. See docs/oci.md.

Usage::

    from pipeline.oci import OCILayout, Reference, RegistryOptions, push_layout

    ref = Reference.parse("127.0.0.1:5000/team/app:v1")
    with RegistryOptions(insecure=True).client(ref) as client:
        digest = push_layout(OCILayout.open("build/app"), ref, client)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline._facade import lazy_exports
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

if TYPE_CHECKING:
    from pipeline.oci.client import RegistryClient
    from pipeline.oci.local_image import LocalImage, open_image
    from pipeline.oci.manifest import Manifest, parse_manifest
    from pipeline.oci.transfer import pull_to_layout, push_layout

_LAZY = {
    "RegistryClient": "pipeline.oci.client",
    "LocalImage": "pipeline.oci.local_image",
    "open_image": "pipeline.oci.local_image",
    "Manifest": "pipeline.oci.manifest",
    "parse_manifest": "pipeline.oci.manifest",
    "pull_to_layout": "pipeline.oci.transfer",
    "push_layout": "pipeline.oci.transfer",
}

__all__ = [
    "Credentials",
    "LocalImage",
    "Manifest",
    "OCILayout",
    "Reference",
    "RegistryClient",
    "RegistryOptions",
    "open_client",
    "open_image",
    "parse_digest",
    "parse_manifest",
    "pull_to_layout",
    "push_layout",
    "resolve_descriptor",
    "resolve_digest",
    "sha256_digest",
    "verify_digest",
]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
