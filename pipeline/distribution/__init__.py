"""Distribution: sealed models through OCI registries, with their signatures.

A capability composed of the three core packages: the artifact format and its
transport (:mod:`pipeline.sealing.artifact`, over :mod:`pipeline.oci`) and model
signatures (:mod:`pipeline.signing`), attached inside the artifact or as OCI 1.1
referrers. See docs/oci.md.

Usage::

    from pipeline.distribution import pull_model, push_model
    from pipeline.oci import RegistryOptions
    from pipeline.signing import Trust

    options = RegistryOptions(ca_file=Path("ca.pem"))
    digest = push_model("sealed/", "registry.example/models/tiny:1", registry_options=options)
    pull_model(f"registry.example/models/tiny@{digest}", "pulled/",
               trust=Trust(public_keys=(Path("release.pub"),)), registry_options=options)
"""

from __future__ import annotations

from pipeline.distribution.model_artifact import (
    SIGNATURE_ARTIFACT_TYPE,
    attach_model_signature,
    attached_model_signatures,
    pull_model,
    push_model,
)
from pipeline.sealing.artifact import build_manifest, media_type_for

__all__ = [
    "SIGNATURE_ARTIFACT_TYPE",
    "attach_model_signature",
    "attached_model_signatures",
    "build_manifest",
    "media_type_for",
    "pull_model",
    "push_model",
]
