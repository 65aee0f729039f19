"""The registry of workflows and their deterministic YAML rendering."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from hera.workflows import WorkflowTemplate
from pipeline.workflows import pr_check, release, rollback

#: Workflow name → builder. Names are the WorkflowTemplates' metadata.name.
WORKFLOWS: dict[str, Callable[[], WorkflowTemplate]] = {
    "pr-check": pr_check.build,
    "release": release.build,
    "rollback": rollback.build,
}
_ALIASES = {"pr_check": "pr-check"}


def build(name: str) -> WorkflowTemplate:
    """The Hera WorkflowTemplate called ``name`` (``pr_check`` is accepted for ``pr-check``)."""
    key = _ALIASES.get(name, name)
    if key not in WORKFLOWS:
        raise KeyError(f"unknown workflow {name!r} (known: {', '.join(sorted(WORKFLOWS))})")
    return WORKFLOWS[key]()


def to_dict(template: WorkflowTemplate) -> dict[str, Any]:
    """The Argo object as plain data, validated by Hera's generated (pydantic) model."""
    return template.to_dict()


def to_yaml(template: WorkflowTemplate) -> str:
    """Deterministic YAML: same definitions, same bytes (keys sorted, no timestamps)."""
    return yaml.safe_dump(to_dict(template), sort_keys=True, default_flow_style=False,
                          width=100)


def render_all(out: Path) -> list[Path]:
    """Write ``<name>.yaml`` for every workflow into ``out``; return the paths written."""
    from pipeline._fileio import write_atomic

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in sorted(WORKFLOWS):
        path = out / f"{name}.yaml"
        write_atomic(path, to_yaml(WORKFLOWS[name]()))
        written.append(path)
    return written
