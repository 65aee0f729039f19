"""SLSA provenance v1 for an image this builder made: what went in, who built it.

The predicate is derived from the image itself (its manifest annotations and layers)
and the two locks it was built from, each proven by the digest the image records, not
from the build's memory, so it can be produced again for any image in a layout and two
reproducible builds give the same predicate. Every ``resolvedDependencies[].uri`` is an
RFC 3986 URI, as in-toto ResourceDescriptors require (see :func:`provenance`), and none
names a path on the builder's machine. The build type names this
builder's recipe: base layer from a pinned Debian lock, dependency layer from a
hashed python lock, app layer from the project at a git revision. A policy can
require it (policies/image-policy.yaml checks ``buildDefinition.buildType``).

Format: https://slsa.dev/spec/v1.0/provenance (predicate type
``https://slsa.dev/provenance/v1``).
"""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path
from typing import Any

from packageurl import PackageURL

from pipeline import __version__
from pipeline.build.debian import PURL_DISTRO, DebianLock, parse_lock
from pipeline.build.source import network_remote, source_uri
from pipeline.build.wheels import PinnedWheel, parse_python_lock
from pipeline.errors import InputError
from pipeline.oci.layer_codec import open_layer
from pipeline.oci.local_image import LocalImage, open_image

BUILD_TYPE = "https://secure-model-pipeline.dev/build/v1"
BUILDER_ID = "https://secure-model-pipeline.dev/builder/local"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
_PREFIX = "io.secure-model-pipeline"
#: Where the project (and so its python lock) sits in the app layer.
_APP_PREFIX = "app/model/"

__all__ = ["BUILD_TYPE", "BUILDER_ID", "PREDICATE_TYPE", "Locks", "find_locks",
           "image_provenance", "provenance"]


def _sha256(digest: str) -> dict[str, str]:
    algorithm, _, value = digest.partition(":")
    if algorithm != "sha256" or not value:
        raise InputError(f"not a sha256 digest: {digest!r}")
    return {"sha256": value}


class Locks:
    """The two locks an image was built from, their texts checked against its annotations."""

    def __init__(self, debian: DebianLock, python: tuple[PinnedWheel, ...]) -> None:
        self.debian = debian
        self.python = python

    def dependencies(self) -> list[dict[str, Any]]:
        """One ResourceDescriptor per locked package: a purl and the artifact's sha256."""
        debs = [
            {"uri": str(PackageURL("deb", "debian", p.name, p.version,
                                   {"arch": p.arch, "distro": PURL_DISTRO})),
             "digest": {"sha256": p.sha256}, "annotations": {"lock": "debian-base.lock"}}
            for p in sorted(self.debian.packages, key=lambda p: p.name)
        ]
        wheels = [
            {"uri": str(PackageURL("pypi", None, w.name, w.version)),
             "digest": {"sha256": w.sha256}, "annotations": {"lock": "requirements.lock"}}
            for w in sorted(self.python, key=lambda w: w.name)
        ]
        return debs + wheels


def _annotation(image: LocalImage, key: str) -> str:
    notes = image.manifest.get("annotations") or {}
    value = notes.get(f"{_PREFIX}.{key}")
    if not value:
        raise InputError(
            f"{image.digest}: no lock annotations; provenance is only made for images "
            "this builder built (pipeline build)"
        )
    return str(value)


def _is_step_image(image: LocalImage) -> bool:
    try:
        return _annotation(image, "image-kind") == "pipeline-steps"
    except InputError:
        return False


def find_locks(image: LocalImage, base_lock: str | Path | None = None,
               python_lock: str | Path | None = None) -> Locks:
    """The locks ``image`` was built from, each proven by the digest the image records.

    The python lock is the file of the app layer whose sha256 is the image's
    ``python-lock`` annotation (the build writes it into the project before packing),
    or ``python_lock``. The Debian lock is ``base_lock``, else ``$PIPELINE_BASE_LOCK``,
    else the committed one (as for the build). A lock whose digest differs is an
    InputError naming both digests: provenance never lists packages the image was not
    built from.
    """
    from pipeline.build.base_lock import lock_path

    want_base, want_python = _annotation(image, "base-lock"), _annotation(image, "python-lock")
    if _is_step_image(image):
        # The pipeline's step image is built from its own committed locks.
        from pipeline.build import step_image

        base_lock = base_lock or step_image.DEBIAN_LOCK
        python_lock = python_lock or step_image.PYTHON_LOCK
    path = lock_path(base_lock)
    try:
        debian = parse_lock(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"Debian lock not found: {path}; pass the one the image was built "
                         "with (--base-lock)") from None
    if debian.digest() != want_base:
        raise InputError(f"Debian lock {path} is {debian.digest()}, but {image.digest} was "
                         f"built with {want_base}; pass that lock with --base-lock")
    if python_lock is not None:
        text = Path(python_lock).read_bytes()
        if "sha256:" + hashlib.sha256(text).hexdigest() != want_python:
            raise InputError(f"python lock {python_lock} is not the one {image.digest} was "
                             f"built with ({want_python})")
    else:
        text = _file_with_digest(image, want_python)
    return Locks(debian, parse_python_lock(text.decode("utf-8")))


def _file_with_digest(image: LocalImage, digest: str) -> bytes:
    """The file of the app layer (the last: project code, never weights) with ``digest``."""
    layers = image.layers()
    if layers:
        with open_layer(*layers[-1]) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for info in tar:
                name = info.name.removeprefix("./").lstrip("/")
                if info.isreg() and name.startswith(_APP_PREFIX):
                    handle = tar.extractfile(info)
                    data = handle.read() if handle else b""
                    if "sha256:" + hashlib.sha256(data).hexdigest() == digest:
                        return data
    raise InputError(f"{image.digest}: its python lock ({digest}) is not in the image's app "
                     "layer (excluded from it?); pass it with --python-lock")


def provenance(image: LocalImage, locks: Locks, *,
               builder_id: str = BUILDER_ID) -> dict[str, Any]:
    """The SLSA v1 predicate for ``image`` (an image manifest in an OCI layout).

    ``resolvedDependencies`` are in-toto ResourceDescriptors whose ``uri`` is always an
    RFC 3986 URI: the source (``git+https://host/repo@<commit>`` or, without a network
    remote, ``file:<project path in the commit>``) with its ``gitCommit``; the two locks
    by name and sha256; every locked package as a purl with the sha256 of its .deb or
    wheel.
    """
    notes = image.manifest.get("annotations") or {}
    base_lock, python_lock = _annotation(image, "base-lock"), _annotation(image, "python-lock")
    dependencies: list[dict[str, Any]] = [
        {"name": "debian-base.lock", "digest": _sha256(base_lock)},
        {"name": "requirements.lock", "digest": _sha256(python_lock)},
        *locks.dependencies(),
    ]
    # Images built before sources were checked may carry a local path: never repeat it.
    remote = network_remote(notes.get("org.opencontainers.image.source"))
    revision = notes.get("org.opencontainers.image.revision")
    path = notes.get(f"{_PREFIX}.source-path") or "."
    source = ""
    if revision:
        source = source_uri(remote, revision, path)
        dependencies.insert(0, {"uri": source, "digest": {"gitCommit": revision}})
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
                "source": source,
                "revision": revision or "",
                "path": path if revision else "",
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


def image_provenance(target: str, *, builder_id: str = BUILDER_ID,
                     base_lock: str | Path | None = None,
                     python_lock: str | Path | None = None) -> dict[str, Any]:
    """The predicate for the image at ``target`` (``DIR`` or ``DIR:tag`` of an OCI layout)."""
    image = open_image(target)
    return provenance(image, find_locks(image, base_lock, python_lock), builder_id=builder_id)
