"""Daemonless, reproducible slim image builds (``pipeline build``); see docs/image-build.md.

Modules, from the bottom up: ``_tarlayer`` (deterministic tar+gzip layers), ``project``
(pipeline.yaml's ``runtime`` section), ``debian`` (the pinned base), ``wheels`` (the
pinned python dependencies), ``app`` (the project's code), ``lint`` (what an image must
never contain), ``cache`` (layers keyed by their inputs) and ``image`` (putting it
together into an OCI layout); ``provenance`` writes the SLSA v1 predicate of a build.

Usage::

    from pipeline.build import build_image, image_provenance

    result = build_image(Path("examples/tiny"), Path("build/tiny"), tag="latest")
    predicate = image_provenance("build/tiny:latest")  # SLSA v1 provenance
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline._facade import lazy_exports

if TYPE_CHECKING:
    from pipeline.build.base_lock import lock_path
    from pipeline.build.debian import (
        DebianLock,
        LockedPackage,
        load_lock,
        resolve_closure,
        write_lock,
    )
    from pipeline.build.docker_load import load_into_docker
    from pipeline.build.image import BuildResult, LayerResult, build_image, ensure_python_lock
    from pipeline.build.lint import lint_image
    from pipeline.build.project import ProjectSpec, load_project
    from pipeline.build.provenance import BUILD_TYPE, BUILDER_ID, image_provenance, provenance
    from pipeline.build.wheels import PinnedWheel, parse_python_lock

_LAZY = {
    "lock_path": "pipeline.build.base_lock",
    "DebianLock": "pipeline.build.debian",
    "LockedPackage": "pipeline.build.debian",
    "load_lock": "pipeline.build.debian",
    "resolve_closure": "pipeline.build.debian",
    "write_lock": "pipeline.build.debian",
    "load_into_docker": "pipeline.build.docker_load",
    "BuildResult": "pipeline.build.image",
    "LayerResult": "pipeline.build.image",
    "build_image": "pipeline.build.image",
    "ensure_python_lock": "pipeline.build.image",
    "lint_image": "pipeline.build.lint",
    "ProjectSpec": "pipeline.build.project",
    "load_project": "pipeline.build.project",
    "BUILDER_ID": "pipeline.build.provenance",
    "BUILD_TYPE": "pipeline.build.provenance",
    "image_provenance": "pipeline.build.provenance",
    "provenance": "pipeline.build.provenance",
    "PinnedWheel": "pipeline.build.wheels",
    "parse_python_lock": "pipeline.build.wheels",
}

__all__ = [
    "BUILDER_ID",
    "BUILD_TYPE",
    "BuildResult",
    "DebianLock",
    "LayerResult",
    "LockedPackage",
    "PinnedWheel",
    "ProjectSpec",
    "build_image",
    "ensure_python_lock",
    "image_provenance",
    "lint_image",
    "load_into_docker",
    "load_lock",
    "load_project",
    "lock_path",
    "parse_python_lock",
    "provenance",
    "resolve_closure",
    "write_lock",
]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
