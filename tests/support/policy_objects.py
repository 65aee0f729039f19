"""Compliant objects for the default policies, and helpers to break them one rule at a time."""

from __future__ import annotations

import copy
from typing import Any

DIGEST = "sha256:" + "ab" * 32
IMAGE = f"registry.example/ml/secure-runtime@{DIGEST}"


def container(name: str = "app", **overrides: Any) -> dict[str, Any]:
    c: dict[str, Any] = {
        "name": name,
        "image": IMAGE,
        "securityContext": {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "resources": {"limits": {"memory": "1Gi"}},
    }
    c.update(overrides)
    return c


def pod_spec() -> dict[str, Any]:
    return {
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container()],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }


LABELS = {"app.kubernetes.io/name": "m", "app.kubernetes.io/component": "inference-server"}


def pod(spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "labels": dict(LABELS)},
            "spec": spec if spec is not None else pod_spec()}


def _template(spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"labels": dict(LABELS)}, "spec": spec}


def workload(kind: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Deployment/StatefulSet/DaemonSet/ReplicaSet/Job/CronJob/Rollout around ``spec``."""
    spec = spec if spec is not None else pod_spec()
    api = {"Deployment": "apps/v1", "StatefulSet": "apps/v1", "DaemonSet": "apps/v1",
           "ReplicaSet": "apps/v1", "Job": "batch/v1", "CronJob": "batch/v1",
           "Rollout": "argoproj.io/v1alpha1", "Pod": "v1"}[kind]
    if kind == "Pod":
        return pod(spec)
    if kind == "CronJob":
        body = {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": _template(spec)}}}
    else:
        body = {"selector": {"matchLabels": {"app.kubernetes.io/name": "m"}},
                "template": _template(spec)}
    return {"apiVersion": api, "kind": kind, "metadata": {"name": "w", "namespace": "ns"},
            "spec": body}


def edited(edit: Any) -> dict[str, Any]:
    """A compliant pod spec changed by ``edit(spec)`` (which mutates it in place)."""
    spec = copy.deepcopy(pod_spec())
    edit(spec)
    return spec
