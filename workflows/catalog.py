"""The registry of workflows and their deterministic YAML rendering."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from hera.workflows import WorkflowTemplate
from pipeline.workflows import pr_check, release, rollback

#: The workflow parameter every step's ``image`` is (workflows/common.py's ``IMAGE``).
IMAGE_PARAMETER = "pipeline-image"
#: Workflow name → builder. Names are the WorkflowTemplates' metadata.name.
WORKFLOWS: dict[str, Callable[[], WorkflowTemplate]] = {
    "pr-check": pr_check.build,
    "release": release.build,
    "rollback": rollback.build,
}
_ALIASES = {"pr_check": "pr-check"}


def pinned_image(reference: str) -> str:
    """``reference`` checked to name an image by digest (``REPO@sha256:...``).

    Why refuse a tag: a step must run the image that was signed and attested, and a tag
    can be moved to other bytes after the render. InputError (exit 2) otherwise.
    """
    from pipeline.errors import InputError
    from pipeline.oci.reference import Reference

    try:
        parsed = Reference.parse(reference)
    except InputError as exc:
        raise InputError(f"--pipeline-image {reference!r}: {exc}") from None
    if not parsed.digest:
        raise InputError(f"--pipeline-image {reference!r}: the pipeline image must be pinned "
                         "by digest (REPOSITORY@sha256:...), not by a tag alone")
    return reference


def build(name: str, *, pipeline_image: str | None = None) -> WorkflowTemplate:
    """The Hera WorkflowTemplate called ``name`` (``pr_check`` is accepted for ``pr-check``).

    ``pipeline_image`` (by digest, see :func:`pinned_image`) replaces the placeholder
    default of the ``pipeline-image`` parameter that every step's ``image`` refers to.
    """
    key = _ALIASES.get(name, name)
    if key not in WORKFLOWS:
        raise KeyError(f"unknown workflow {name!r} (known: {', '.join(sorted(WORKFLOWS))})")
    template = WORKFLOWS[key]()
    if pipeline_image is not None:
        pinned = pinned_image(pipeline_image)
        for parameter in template.arguments or []:
            if getattr(parameter, "name", None) == IMAGE_PARAMETER:
                parameter.value = pinned
    return template


def to_dict(template: WorkflowTemplate) -> dict[str, Any]:
    """The Argo object as plain data, validated by Hera's generated (pydantic) model."""
    return template.to_dict()


def to_yaml(template: WorkflowTemplate) -> str:
    """Deterministic YAML: same definitions, same bytes (keys sorted, no timestamps)."""
    return yaml.safe_dump(to_dict(template), sort_keys=True, default_flow_style=False,
                          width=100)


def render_all(out: Path, *, pipeline_image: str | None = None) -> list[Path]:
    """Write ``<name>.yaml`` for every workflow into ``out``; return the paths written.

    With ``pipeline_image`` every template pins that image (checked before anything is
    written, so a tag-only reference leaves ``out`` untouched).
    """
    from pipeline._fileio import write_atomic

    templates = {name: build(name, pipeline_image=pipeline_image) for name in sorted(WORKFLOWS)}
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, template in templates.items():
        path = out / f"{name}.yaml"
        write_atomic(path, to_yaml(template))
        written.append(path)
    return written
