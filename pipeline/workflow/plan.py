"""Read an Argo Workflow(Template) object into an ordered plan of DAG tasks.

Why from the rendered object: the local runner must execute exactly what a cluster would
run, so it reads the dict Hera builds (the same data ``pipeline workflow render``
writes), never a second, parallel definition of the steps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import ConfigError

_DEP = re.compile(r"^([A-Za-z0-9\-]+)(?:\.(Succeeded))?$")


@dataclass(frozen=True)
class Task:
    """One DAG task: its template, the tasks it waits for, its argument expressions."""

    name: str
    template: dict[str, Any]
    depends: tuple[str, ...]
    arguments: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """A workflow ready to run: declared parameters with defaults, tasks in run order."""

    name: str
    parameters: dict[str, str]
    tasks: tuple[Task, ...]
    volumes: dict[str, dict[str, Any]]


def _depends(task: dict[str, Any]) -> tuple[str, ...]:
    if "dependencies" in task:
        return tuple(task["dependencies"])
    expression = task.get("depends", "").strip()
    if not expression:
        return ()
    names = []
    for part in expression.split("&&"):
        match = _DEP.match(part.strip())
        if not match:
            raise ConfigError(f"task {task['name']}: unsupported depends expression "
                              f"{expression!r} (the local runner handles 'a && b' only)")
        names.append(match.group(1))
    return tuple(names)


def topological_order(tasks: list[Task]) -> list[Task]:
    """Tasks ordered so each comes after its dependencies (stable: definition order)."""
    by_name = {t.name: t for t in tasks}
    for task in tasks:
        for dep in task.depends:
            if dep not in by_name:
                raise ConfigError(f"task {task.name} depends on unknown task {dep}")
    ordered: list[Task] = []
    done: set[str] = set()
    remaining = list(tasks)
    while remaining:
        ready = [t for t in remaining if set(t.depends) <= done]
        if not ready:
            raise ConfigError("dependency cycle among tasks: "
                              + ", ".join(t.name for t in remaining))
        for task in ready:
            ordered.append(task)
            done.add(task.name)
        remaining = [t for t in remaining if t.name not in done]
    return ordered


def plan_from_dict(workflow: dict[str, Any]) -> Plan:
    """A :class:`Plan` of the workflow's entrypoint DAG (the shape workflows/ renders)."""
    spec = workflow.get("spec", {})
    templates = {t["name"]: t for t in spec.get("templates", [])}
    entry = templates.get(spec.get("entrypoint", ""))
    if entry is None or "dag" not in entry:
        raise ConfigError("the workflow's entrypoint must be a DAG template")
    parameters = {p["name"]: str(p.get("value", ""))
                  for p in spec.get("arguments", {}).get("parameters", [])}
    tasks = []
    for raw in entry["dag"]["tasks"]:
        template = templates.get(raw["template"])
        if template is None or "script" not in template:
            raise ConfigError(f"task {raw['name']}: template {raw['template']!r} is not a "
                              "script template")
        arguments = {p["name"]: str(p.get("value", ""))
                     for p in raw.get("arguments", {}).get("parameters", [])}
        tasks.append(Task(raw["name"], template, _depends(raw), arguments))
    volumes = {c["metadata"]["name"]: {"persistentVolumeClaim": {}}
               for c in spec.get("volumeClaimTemplates", [])}
    volumes.update({v["name"]: v for v in spec.get("volumes", [])})
    return Plan(workflow["metadata"]["name"], parameters, tuple(topological_order(tasks)),
                volumes)
