"""SLSA provenance v1 for an image this builder made: what went in, who built it.

The predicate is derived from the image itself (its manifest annotations and layers),
not from the build's memory, so it can be produced again for any image in a layout
and two reproducible builds give the same predicate. The build type names this
builder's recipe: base layer from a pinned Debian lock, dependency layer from a
hashed python lock, app layer from the project at a git revision. A policy can
require it (policies/image-policy.yaml checks ``buildDefinition.buildType``).

Format: https://slsa.dev/spec/v1.0/provenance (predicate type
``https://slsa.dev/provenance/v1``).
"""

from __future__ import annotations

from typing import Any

from pipeline import __version__
from pipeline.errors import InputError
from pipeline.oci.local_image import LocalImage, open_image

BUILD_TYPE = "https://secure-model-pipeline.dev/build/v1"
BUILDER_ID = "https://secure-model-pipeline.dev/builder/local"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
_PREFIX = "io.secure-model-pipeline"

__all__ = ["BUILD_TYPE", "BUILDER_ID", "PREDICATE_TYPE", "image_provenance", "provenance"]


def _sha256(digest: str) -> dict[str, str]:
    algorithm, _, value = digest.partition(":")
    if algorithm != "sha256" or not value:
        raise InputError(f"not a sha256 digest: {digest!r}")
    return {"sha256": value}


def provenance(image: LocalImage, *, builder_id: str = BUILDER_ID) -> dict[str, Any]:
    """The SLSA v1 predicate for ``image`` (an image manifest in an OCI layout)."""
    notes = image.manifest.get("annotations") or {}
    base_lock = notes.get(f"{_PREFIX}.base-lock")
    python_lock = notes.get(f"{_PREFIX}.python-lock")
    if not base_lock or not python_lock:
        raise InputError(
            f"{image.digest}: no lock annotations; provenance is only made for images "
            "this builder built (pipeline build)"
        )
    dependencies: list[dict[str, Any]] = [
        {"name": "debian-base.lock", "uri": f"{_PREFIX}/debian-base-lock",
         "digest": _sha256(base_lock)},
        {"name": "requirements.lock", "uri": f"{_PREFIX}/python-lock",
         "digest": _sha256(python_lock)},
    ]
    source = notes.get("org.opencontainers.image.source")
    revision = notes.get("org.opencontainers.image.revision")
    if source and revision:
        dependencies.insert(0, {"uri": f"git+{source}", "digest": {"gitCommit": revision}})
    created = notes.get("org.opencontainers.image.created", "")
    history = [h.get("created_by", "") for h in image.config.get("history", [])]
    byproducts = [
        {
            "name": history[i] if i < len(history) else f"layer {i}",
            "digest": _sha256(layer["digest"]),
            "mediaType": layer.get("mediaType", ""),
        }
        for i, layer in enumerate(image.manifest.get("layers", []))
    ]
    return {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "project": notes.get("org.opencontainers.image.title", ""),
                "source": source or "",
                "revision": revision or "",
            },
            "internalParameters": {
                "platform": f"{image.config.get('os', 'linux')}/"
                            f"{image.config.get('architecture', 'amd64')}",
                "user": image.config.get("config", {}).get("User", ""),
            },
            "resolvedDependencies": dependencies,
        },
        "runDetails": {
            "builder": {"id": builder_id, "version": {"secure-model-pipeline": __version__}},
            "metadata": {
                "invocationId": image.digest,
                "startedOn": created,
                "finishedOn": created,
            },
            "byproducts": byproducts,
        },
    }


def image_provenance(target: str, *, builder_id: str = BUILDER_ID) -> dict[str, Any]:
    """The predicate for the image at ``target`` (``DIR`` or ``DIR:tag`` of an OCI layout)."""
    return provenance(open_image(target), builder_id=builder_id)
