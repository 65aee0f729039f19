"""Render, lint and schema-check Helm charts in tests, with no helm binary and no cluster.

Why this exists: a chart that renders is not a chart that installs. The API server rejects
unknown fields and wrong types, and controllers (Argo Rollouts, prometheus-operator) reject
objects their CRD schema does not admit. There is no cluster here, so every chart test
renders with the real Helm v4 engine (``helm-python-sdk``) through the project's one render
path (:mod:`pipeline.charts`), then validates each object:

* core Kubernetes kinds against the official OpenAPI schemas shipped by
  ``kubernetes-validate`` (strict mode: unknown fields are errors, as with
  ``kubectl apply --validate=strict``);
* custom resources against the JSON schemas in :data:`CRD_SCHEMAS`, written by hand from the
  CRDs' published ``openAPIV3Schema`` (argo-rollouts ``manifests/crds/*.yaml``,
  prometheus-operator ``monitoring.coreos.com_servicemonitors.yaml``). They cover the
  required fields, the field names of every level this project uses, and the types of the
  fields this project sets; the pod template embedded in a Rollout is validated with the
  official ``PodTemplateSpec`` schema by wrapping it in an ``apps/v1`` Deployment.

A kind that has neither is an error, never a silent skip. Other charts add their CRDs with
:func:`register_crd_schema`.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate

from pipeline.charts import render
from pipeline.errors import ChartRenderError as _ChartRenderError

DEFAULT_K8S_VERSION = "1.30"

__all__ = [
    "CRD_SCHEMAS",
    "ChartRenderError",
    "ManifestValidationError",
    "DEFAULT_K8S_VERSION",
    "find",
    "lint_chart",
    "register_crd_schema",
    "render_chart",
    "render_notes",
    "validate_manifests",
]


#: Helm refused to render (a values-schema violation or a template ``fail``): the
#: project's own error, raised by the one render path, :func:`pipeline.charts.render`.
ChartRenderError = _ChartRenderError


class ManifestValidationError(AssertionError):
    """One or more rendered objects are not valid for the target Kubernetes version."""


# --------------------------------------------------------------------------- rendering


def render_chart(
    chart_dir: str | os.PathLike[str],
    values: Mapping[str, Any] | None = None,
    release: str = "r",
    namespace: str = "ns",
) -> list[dict[str, Any]]:
    """Render ``chart_dir`` offline and return its objects (empty documents dropped).

    Renders through :func:`pipeline.charts.render`, the path every command uses. Raises
    :class:`ChartRenderError` with Helm's message when values fail the chart's
    ``values.schema.json`` or a template calls ``fail``.
    """
    rendered = render(chart_dir, values=values, release_name=release, namespace=namespace)
    return [item.obj for item in rendered.objects]


def render_notes(
    chart_dir: str | os.PathLike[str],
    values: Mapping[str, Any] | None = None,
    release: str = "r",
    namespace: str = "ns",
) -> str:
    """The rendered NOTES.txt ("" when the chart has none)."""
    return render(chart_dir, values=values, release_name=release, namespace=namespace).notes


_SEVERITY = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}


def lint_chart(
    chart_dir: str | os.PathLike[str],
    values: Mapping[str, Any] | None = None,
    *,
    kube_version: str = DEFAULT_K8S_VERSION,
    min_severity: int = 2,
) -> list[str]:
    """``helm lint --strict`` findings at or above ``min_severity`` (2 = warning).

    Each message reads ``"<SEVERITY> <path>: <text>"``; an empty list is a clean chart.
    """
    version = kube_version if kube_version.startswith("v") else f"v{kube_version}"
    if version.count(".") == 1:
        version += ".0"
    report = helm_python.lint(
        os.fspath(chart_dir), dict(values or {}), strict=True, kube_version=version
    )
    messages = [
        f"{_SEVERITY.get(m.get('severity', 0), 'UNKNOWN')} {m.get('path', '')}: "
        f"{str(m.get('error', '')).strip()}"
        for m in report.get("messages", [])
        if int(m.get("severity", 0)) >= min_severity
    ]
    known = {m.split(": ", 1)[-1] for m in messages}
    messages += [f"ERROR: {e.strip()}" for e in report.get("errors", []) if e.strip() not in known]
    return messages


def find(objs: Iterable[Mapping[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The one object of ``kind`` (and ``name``); fails loudly when absent or ambiguous."""
    hits = [
        dict(o)
        for o in objs
        if o.get("kind") == kind and (name is None or o.get("metadata", {}).get("name") == name)
    ]
    if len(hits) != 1:
        raise AssertionError(f"expected exactly one {kind} {name or ''}, found {len(hits)}")
    return hits[0]


# --------------------------------------------------------------------------- CRD schemas

_STR: dict[str, Any] = {"type": "string"}
_INT: dict[str, Any] = {"type": "integer"}
_BOOL: dict[str, Any] = {"type": "boolean"}
_OBJ: dict[str, Any] = {"type": "object"}
_INT_OR_STR: dict[str, Any] = {"anyOf": [{"type": "integer"}, {"type": "string"}]}
_STR_MAP: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}


def _closed(props: dict[str, Any], required: Iterable[str] = ()) -> dict[str, Any]:
    """An object that admits exactly the CRD's field names (the API server prunes others)."""
    schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    return schema


def _names(*names: str) -> dict[str, Any]:
    return {n: {} for n in names}


_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {
            "type": "string",
            "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
            "maxLength": 253,
        },
        "namespace": _STR,
        "labels": _STR_MAP,
        "annotations": _STR_MAP,
    },
}

_LABEL_SELECTOR = _closed(
    {
        "matchLabels": _STR_MAP,
        "matchExpressions": {
            "type": "array",
            "items": _closed(
                {"key": _STR, "operator": _STR, "values": {"type": "array", "items": _STR}},
                required=["key", "operator"],
            ),
        },
    }
)


def _top(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return _closed(
        {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": _METADATA,
            "spec": spec,
            "status": _OBJ,
        },
        required=["apiVersion", "kind", "metadata", "spec"],
    )


_ANALYSIS_ARG = _closed(
    {
        "name": _STR,
        "value": _STR,
        "valueFrom": _closed(
            {
                "fieldRef": _closed({"fieldPath": _STR}, ["fieldPath"]),
                "podTemplateHashValue": _STR,
                "secretKeyRef": _closed({"key": _STR, "name": _STR}, ["key", "name"]),
            }
        ),
    },
    required=["name"],
)

# Argo Rollouts argoproj.io/v1alpha1 Rollout (manifests/crds/rollout-crd.yaml).
_CANARY_STEP = {
    **_closed(
        {
            "setWeight": {"type": "integer", "minimum": 0, "maximum": 100},
            "pause": _closed({"duration": _INT_OR_STR}),
            "analysis": _closed(
                {
                    "analysisRunMetadata": _OBJ,
                    "args": {"type": "array", "items": _ANALYSIS_ARG},
                    "dryRun": {"type": "array"},
                    "measurementRetention": {"type": "array"},
                    "templates": {
                        "type": "array",
                        "minItems": 1,
                        "items": _closed({"clusterScope": _BOOL, "templateName": _STR}),
                    },
                }
            ),
            "experiment": _OBJ,
            "plugin": _OBJ,
            "setCanaryScale": _OBJ,
            "setHeaderRoute": _OBJ,
            "setMirrorRoute": _OBJ,
        }
    ),
    # The controller rejects a step that sets more or fewer than one action.
    "minProperties": 1,
    "maxProperties": 1,
}

_ROLLOUT = _top(
    "argoproj.io/v1alpha1",
    "Rollout",
    {
        **_closed(
            {
                "analysis": _OBJ,
                "minReadySeconds": _INT,
                "paused": _BOOL,
                "progressDeadlineAbort": _BOOL,
                "progressDeadlineSeconds": _INT,
                "replicas": {"type": "integer", "minimum": 0},
                "restartAt": _STR,
                "revisionHistoryLimit": _INT,
                "rollbackWindow": _OBJ,
                "selector": _LABEL_SELECTOR,
                "strategy": _closed(
                    {
                        "blueGreen": _OBJ,
                        "canary": _closed(
                            {
                                **_names(
                                    "abortScaleDownDelaySeconds",
                                    "analysis",
                                    "antiAffinity",
                                    "canaryMetadata",
                                    "canaryService",
                                    "dynamicStableScale",
                                    "minPodsPerReplicaSet",
                                    "pingPong",
                                    "replicaProgressThreshold",
                                    "scaleDownDelayRevisionLimit",
                                    "scaleDownDelaySeconds",
                                    "stableMetadata",
                                    "stableService",
                                ),
                                "maxSurge": _INT_OR_STR,
                                "maxUnavailable": _INT_OR_STR,
                                "steps": {"type": "array", "items": _CANARY_STEP},
                                "trafficRouting": _closed(
                                    _names(
                                        "alb",
                                        "ambassador",
                                        "apisix",
                                        "appMesh",
                                        "istio",
                                        "managedRoutes",
                                        "maxTrafficWeight",
                                        "nginx",
                                        "plugins",
                                        "smi",
                                        "traefik",
                                    )
                                ),
                            }
                        ),
                    }
                ),
                "template": _OBJ,  # checked with the official PodTemplateSpec schema
                "workloadRef": _OBJ,
            }
        ),
        # Argo Rollouts needs a pod template or a workloadRef, and a selector with it.
        "anyOf": [{"required": ["template", "selector"]}, {"required": ["workloadRef"]}],
    },
)

# Argo Rollouts argoproj.io/v1alpha1 AnalysisTemplate (manifests/crds/analysis-template-crd.yaml).
_PROMETHEUS_PROVIDER = _closed(
    {
        "address": {"type": "string", "pattern": "^https?://"},
        "authentication": _OBJ,
        "headers": {"type": "array"},
        "insecure": _BOOL,
        "query": {"type": "string", "minLength": 1},
        "rangeQuery": _OBJ,
        "timeout": _INT,
    },
    # Not required by the CRD, but the provider errors at run time without them.
    required=["address", "query"],
)

_ANALYSIS_TEMPLATE = _top(
    "argoproj.io/v1alpha1",
    "AnalysisTemplate",
    _closed(
        {
            "args": {"type": "array", "items": _ANALYSIS_ARG},
            "dryRun": {"type": "array"},
            "measurementRetention": {"type": "array"},
            "metrics": {
                "type": "array",
                "minItems": 1,
                "items": _closed(
                    {
                        "consecutiveErrorLimit": _INT_OR_STR,
                        "consecutiveSuccessLimit": _INT_OR_STR,
                        "count": _INT_OR_STR,
                        "failureCondition": _STR,
                        "failureLimit": _INT_OR_STR,
                        "inconclusiveLimit": _INT_OR_STR,
                        "initialDelay": _STR,
                        "interval": _STR,
                        "name": _STR,
                        "provider": {
                            **_closed(
                                {
                                    **_names(
                                        "cloudWatch",
                                        "datadog",
                                        "graphite",
                                        "influxdb",
                                        "job",
                                        "kayenta",
                                        "newRelic",
                                        "plugin",
                                        "skywalking",
                                        "wavefront",
                                        "web",
                                    ),
                                    "prometheus": _PROMETHEUS_PROVIDER,
                                }
                            ),
                            "minProperties": 1,
                        },
                        "successCondition": _STR,
                    },
                    required=["name", "provider"],
                ),
            },
            "templates": {"type": "array"},
        },
        required=["metrics"],
    ),
)

# prometheus-operator monitoring.coreos.com/v1 ServiceMonitor
# (example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml): spec requires
# endpoints and selector; endpoint fields this project sets are typed, others admitted.
_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
    r"(([0-9]+)ms)?)$",
}
_SERVICE_MONITOR = _top(
    "monitoring.coreos.com/v1",
    "ServiceMonitor",
    {
        "type": "object",
        "required": ["endpoints", "selector"],
        "properties": {
            "selector": _LABEL_SELECTOR,
            "namespaceSelector": _closed(
                {"any": _BOOL, "matchNames": {"type": "array", "items": _STR}}
            ),
            "jobLabel": _STR,
            "targetLabels": {"type": "array", "items": _STR},
            "podTargetLabels": {"type": "array", "items": _STR},
            "sampleLimit": _INT,
            "endpoints": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {
                        "port": _STR,
                        "targetPort": _INT_OR_STR,
                        "path": {"type": "string", "pattern": "^/"},
                        "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                        "interval": _DURATION,
                        "scrapeTimeout": _DURATION,
                        "honorLabels": _BOOL,
                        "relabelings": {"type": "array"},
                        "metricRelabelings": {"type": "array"},
                        "tlsConfig": _OBJ,
                    },
                    # A scrape target is named by a Service port name or a target port.
                    "anyOf": [{"required": ["port"]}, {"required": ["targetPort"]}],
                },
            },
        },
    },
)

#: ``(apiVersion, kind) -> JSON schema`` for custom resources; extend with
#: :func:`register_crd_schema`.
CRD_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("argoproj.io/v1alpha1", "Rollout"): _ROLLOUT,
    ("argoproj.io/v1alpha1", "AnalysisTemplate"): _ANALYSIS_TEMPLATE,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _SERVICE_MONITOR,
}


def register_crd_schema(api_version: str, kind: str, schema: Mapping[str, Any]) -> None:
    """Teach :func:`validate_manifests` a custom resource (checked as a JSON schema first)."""
    jsonschema.Draft202012Validator.check_schema(schema)
    CRD_SCHEMAS[(api_version, kind)] = dict(schema)


# --------------------------------------------------------------------------- validation


def _label(obj: Mapping[str, Any]) -> str:
    name = obj.get("metadata", {}).get("name", "?") if isinstance(obj, Mapping) else "?"
    return f"{obj.get('kind', '?')}/{name} ({obj.get('apiVersion', '?')})"


def _path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<root>"


def _validate_core(obj: Mapping[str, Any], k8s_version: str) -> list[str]:
    try:
        kubernetes_validate.validate(dict(obj), k8s_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{_path(exc)}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [f"no schema: {exc.message}"]
    return []


def _validate_crd(obj: Mapping[str, Any], schema: Mapping[str, Any], k8s_version: str) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    problems = [f"{_path(e)}: {e.message}" for e in sorted(validator.iter_errors(obj), key=str)]
    template = obj.get("spec", {}).get("template") if obj.get("kind") == "Rollout" else None
    if isinstance(template, Mapping):
        # The embedded pod template must be a valid PodTemplateSpec: check it with the
        # official schema through an equivalent Deployment.
        stand_in = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": obj.get("metadata", {}).get("name", "rollout")},
            "spec": {
                "selector": copy.deepcopy(obj["spec"].get("selector", {})),
                "template": copy.deepcopy(dict(template)),
            },
        }
        problems += [
            f"spec.template (as PodTemplateSpec): {p}"
            for p in _validate_core(stand_in, k8s_version)
        ]
    return problems


def validate_manifests(
    objs: Iterable[Mapping[str, Any]], k8s_version: str = DEFAULT_K8S_VERSION
) -> None:
    """Validate every object; raise :class:`ManifestValidationError` naming each failure.

    Core kinds use kubernetes-validate's strict schemas for ``k8s_version``; custom
    resources use :data:`CRD_SCHEMAS`. A kind known to neither is a failure.
    """
    failures: list[str] = []
    count = 0
    for obj in objs:
        count += 1
        if not isinstance(obj, Mapping) or "apiVersion" not in obj or "kind" not in obj:
            failures.append(
                f"{_label(obj) if isinstance(obj, Mapping) else obj!r}: "
                "not a Kubernetes object (apiVersion and kind are required)"
            )
            continue
        schema = CRD_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
        if schema is not None:
            problems = _validate_crd(obj, schema, k8s_version)
        else:
            problems = _validate_core(obj, k8s_version)
        failures += [f"{_label(obj)}: {p}" for p in problems]
    if count == 0:
        raise ManifestValidationError("no objects to validate")
    if failures:
        raise ManifestValidationError(
            f"{len(failures)} invalid for Kubernetes {k8s_version}:\n  " + "\n  ".join(failures)
        )


def merged_values(required: Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
    """A chart's required values deep-merged with ``overrides`` (the inputs stay intact)."""
    import copy

    def merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
        for key, value in extra.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                merge(base[key], value)
            else:
                base[key] = value
        return base

    return merge(copy.deepcopy(dict(required)), overrides)

