"""What a rendered chart asks for, sorted into what runs locally and what does not.

Why a closed list: an executor refuses what it cannot do rather than ignoring it. Kinds
that run (Deployment, Rollout) become pod sets; Service, ServiceMonitor, ConfigMap and
Secret are applied (nginx, Prometheus, volume data); kinds whose effect a single machine
does not have (autoscaling, disruption budgets, network policy, RBAC, ingress...) are
named as "not applied locally"; any other kind is an error, so a new template is never
silently dropped.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import InputError

#: Kinds that become pods.
WORKLOAD_KINDS = frozenset({"Deployment", "Rollout"})
#: Kinds applied locally (nginx upstreams, scrape jobs, volume data).
APPLIED_KINDS = frozenset({"Service", "ServiceMonitor", "ConfigMap", "Secret"})
#: Kinds known and deliberately not applied (listed to the user, never dropped silently).
NOT_APPLIED_KINDS = frozenset({
    "Ingress", "IngressClass", "HorizontalPodAutoscaler", "PodDisruptionBudget",
    "NetworkPolicy", "ServiceAccount", "Role", "RoleBinding", "ClusterRole",
    "ClusterRoleBinding", "AnalysisTemplate", "ClusterAnalysisTemplate", "PrometheusRule",
    "PodMonitor", "PersistentVolumeClaim", "LimitRange", "ResourceQuota", "PriorityClass",
    "RuntimeClass", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod",
    "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
    "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "Certificate",
    "SecretProviderClass", "Namespace", "Application", "EventSource", "Sensor",
    "WorkflowTemplate", "ClusterWorkflowTemplate", "EventBus",
})


def object_name(obj: Mapping[str, Any]) -> str:
    """``Kind/namespace/name`` as messages name an object."""
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')}/{meta.get('namespace') or 'default'}/{meta.get('name')}"


@dataclass
class Plan:
    """The rendered objects sorted by what the local executor does with them."""

    namespace: str
    workloads: list[dict[str, Any]] = field(default_factory=list)
    services: list[dict[str, Any]] = field(default_factory=list)
    service_monitors: list[dict[str, Any]] = field(default_factory=list)
    config_maps: dict[str, dict[str, bytes]] = field(default_factory=dict)
    secrets: dict[str, dict[str, bytes]] = field(default_factory=dict)
    not_applied: list[str] = field(default_factory=list)


def plan(objects: Iterable[Mapping[str, Any]], namespace: str = "default") -> Plan:
    """Sort ``objects``; InputError naming the first object of a kind this does not know."""
    result = Plan(namespace)
    for obj in objects:
        kind = obj.get("kind")
        name = (obj.get("metadata") or {}).get("name")
        if not isinstance(name, str) or not name:
            raise InputError(f"{object_name(obj)}: no metadata.name")
        if kind in WORKLOAD_KINDS:
            spec = obj.get("spec") or {}
            if kind == "Rollout" and spec.get("workloadRef"):
                raise InputError(f"{object_name(obj)}: workloadRef is not run locally; give "
                                 "the Rollout its own template")
            if not isinstance(spec.get("template"), dict):
                raise InputError(f"{object_name(obj)}: no spec.template")
            result.workloads.append(dict(obj))
        elif kind == "Service":
            result.services.append(dict(obj))
        elif kind == "ServiceMonitor":
            result.service_monitors.append(dict(obj))
        elif kind == "ConfigMap":
            data = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
            data.update({k: base64.b64decode(v) for k, v in
                         (obj.get("binaryData") or {}).items()})
            result.config_maps[name] = data
        elif kind == "Secret":
            data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
            data.update({k: str(v).encode() for k, v in (obj.get("stringData") or {}).items()})
            result.secrets[name] = data
        elif kind in NOT_APPLIED_KINDS:
            result.not_applied.append(object_name(obj))
        else:
            raise InputError(f"{object_name(obj)}: kind {kind!r} ({obj.get('apiVersion')}) is "
                             "not known to the local deploy; it runs Deployment and Rollout, "
                             "applies Service, ServiceMonitor, ConfigMap and Secret, and lists "
                             f"{', '.join(sorted(NOT_APPLIED_KINDS)[:6])}... as not applied")
    return result


def selects(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    """True when every ``selector`` label matches (an empty selector selects nothing)."""
    return bool(selector) and all(labels.get(k) == v for k, v in (selector or {}).items())


__all__ = ["APPLIED_KINDS", "NOT_APPLIED_KINDS", "WORKLOAD_KINDS", "Plan", "object_name",
           "plan", "selects"]
