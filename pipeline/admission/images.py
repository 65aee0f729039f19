"""Where the container images of a Pod or workload are, as JSON pointers.

Why pointers and not just image strings: the mutating webhook must patch the exact
field it verified, and the validating webhook must check every container, init and
ephemeral ones included (an init container runs with the same privileges).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


#: Kinds that always carry a pod spec with containers (a Rollout may use workloadRef).
POD_KINDS = frozenset({"Pod", "PodTemplate", "Deployment", "StatefulSet", "DaemonSet",
                       "ReplicaSet", "ReplicationController", "Job", "CronJob", "Rollout"})


def expects_containers(obj: Mapping[str, Any]) -> bool:
    """True for a Pod or workload, which must have containers (fail closed if it has none).

    The exception is an Argo Rollout with ``spec.workloadRef`` and no template: the
    referenced Deployment is admitted (and checked) itself.
    """
    kind = obj.get("kind")
    if kind not in POD_KINDS:
        return False
    spec = obj.get("spec")
    return not (kind == "Rollout" and isinstance(spec, dict) and "workloadRef" in spec
                and "template" not in spec)


@dataclass(frozen=True)
class ImageSlot:
    """One container's image and the JSON pointer of its ``image`` field."""

    pointer: str
    container: str
    image: Any  # what the object says: validated by the caller, never trusted to be a str


def _pod_spec(obj: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    kind = obj.get("kind")
    if kind == "Pod":
        spec, path = obj.get("spec"), "/spec"
    elif kind == "PodTemplate":
        template, path = obj.get("template"), "/template/spec"
        spec = template.get("spec") if isinstance(template, dict) else None
    elif kind == "CronJob":
        spec = obj.get("spec")
        job = spec.get("jobTemplate") if isinstance(spec, dict) else None
        job_spec = job.get("spec") if isinstance(job, dict) else None
        template = job_spec.get("template") if isinstance(job_spec, dict) else None
        spec, path = (template.get("spec") if isinstance(template, dict) else None,
                      "/spec/jobTemplate/spec/template/spec")
    else:
        outer = obj.get("spec")
        template = outer.get("template") if isinstance(outer, dict) else None
        spec, path = (template.get("spec") if isinstance(template, dict) else None,
                      "/spec/template/spec")
    return (path, spec) if isinstance(spec, dict) else None


def image_slots(obj: Mapping[str, Any]) -> list[ImageSlot]:
    """Every container of ``obj``'s pod spec (Pod, PodTemplate, CronJob, ``spec.template``)."""
    found = _pod_spec(obj)
    if found is None:
        return []
    path, spec = found
    slots = []
    for key in _CONTAINER_LISTS:
        containers = spec.get(key)
        if not isinstance(containers, list):
            continue
        for index, container in enumerate(containers):
            if isinstance(container, dict):
                slots.append(ImageSlot(f"{path}/{key}/{index}/image",
                                       str(container.get("name", index)), container.get("image")))
    return slots


__all__ = ["POD_KINDS", "ImageSlot", "expects_containers", "image_slots"]
