"""helm/pipeline: the Argo Events wiring and the WorkflowTemplates, rendered and validated.

Core objects (ServiceAccount, Role, RoleBinding) go through kubernetes-validate (strict).
Argo Events publishes no JSON schema in any package available offline: EventSource and
Sensor are checked against small schemas written here from their CRDs' field names (the
levels this chart sets); the WorkflowTemplates against hera's Argo models, and they must
equal a fresh render of the Hera definitions (the chart never goes stale).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from hera.workflows.models import WorkflowTemplate as WorkflowTemplateModel
from pipeline.workflows import WORKFLOWS, build
from pipeline.workflows.catalog import to_dict

from tests.support.helm import (
    find,
    lint_chart,
    register_crd_schema,
    render_chart,
    validate_manifests,
)

CHART = Path(__file__).resolve().parents[3] / "helm" / "pipeline"
_META = {"type": "object", "required": ["name"]}


def _top(kind: str, spec: dict) -> dict:
    return {"type": "object", "additionalProperties": False,
            "required": ["apiVersion", "kind", "metadata", "spec"],
            "properties": {"apiVersion": {"const": "argoproj.io/v1alpha1"},
                           "kind": {"const": kind}, "metadata": _META, "spec": spec}}


def _closed(props: dict, required: list[str] | None = None) -> dict:
    return {"type": "object", "additionalProperties": False, "properties": props,
            "required": required or []}


_WEBHOOK = _closed({"port": {"type": "string"}, "endpoint": {"type": "string"},
                    "method": {"type": "string"}}, ["port", "endpoint", "method"])
EVENT_SOURCE = _top("EventSource", _closed({
    "eventBusName": {"type": "string"}, "service": {"type": "object"},
    "webhook": {"type": "object", "additionalProperties": _WEBHOOK}}))
SENSOR = _top("Sensor", _closed({
    "eventBusName": {"type": "string"}, "template": {"type": "object"},
    "dependencies": {"type": "array", "items": _closed(
        {"name": {"type": "string"}, "eventSourceName": {"type": "string"},
         "eventName": {"type": "string"}, "filters": {"type": "object"}},
        ["name", "eventSourceName", "eventName"])},
    "triggers": {"type": "array", "items": _closed({"template": _closed(
        {"name": {"type": "string"}, "argoWorkflow": _closed(
            {"operation": {"enum": ["submit"]}, "source": {"type": "object"},
             "parameters": {"type": "array"}}, ["operation", "source"])},
        ["name"])})}}, ["dependencies", "triggers"]))
WORKFLOW_TEMPLATE = {"type": "object", "required": ["apiVersion", "kind", "metadata", "spec"]}


def _objects() -> list[dict]:
    register_crd_schema("argoproj.io/v1alpha1", "EventSource", EVENT_SOURCE)
    register_crd_schema("argoproj.io/v1alpha1", "Sensor", SENSOR)
    register_crd_schema("argoproj.io/v1alpha1", "WorkflowTemplate", WORKFLOW_TEMPLATE)
    return render_chart(CHART)


def test_chart_lints_and_every_object_validates() -> None:
    assert lint_chart(CHART) == []
    objs = _objects()
    validate_manifests(objs)
    for obj in objs:
        if obj["kind"] == "WorkflowTemplate":
            WorkflowTemplateModel.model_validate(obj)


def test_chart_workflow_templates_equal_a_fresh_render() -> None:
    objs = _objects()
    for name in WORKFLOWS:
        assert find(objs, "WorkflowTemplate", name) == to_dict(build(name)), (
            f"helm/pipeline/files/{name}.yaml is stale: "
            "run 'pipeline workflow render --out helm/pipeline/files'")


def test_sensor_triggers_release_on_push_and_pr_check_on_pull_requests() -> None:
    objs = _objects()
    sensor = find(objs, "Sensor")
    triggers = {t["template"]["name"]: t["template"]["argoWorkflow"] for t in
                sensor["spec"]["triggers"]}
    release = triggers["release"]["source"]["resource"]
    assert release["spec"]["workflowTemplateRef"] == {"name": "release"}
    params = release["spec"]["arguments"]["parameters"]
    declared = {p["name"] for p in to_dict(build("release"))["spec"]["arguments"]["parameters"]}
    assert {p["name"] for p in params} <= declared
    # The event's repository URL and commit land on git-repo and git-revision.
    dests = {p["dest"]: p["src"] for p in triggers["release"]["parameters"]}
    assert params[1]["name"] == "git-repo" and params[2]["name"] == "git-revision"
    assert dests["spec.arguments.parameters.2.value"]["dataKey"] == "body.after"
    assert dests["spec.arguments.parameters.2.value"]["dependencyName"] == "push"
    pr = triggers["pr-check"]
    assert pr["source"]["resource"]["spec"]["workflowTemplateRef"] == {"name": "pr-check"}
    assert {p["src"]["dependencyName"] for p in pr["parameters"]} == {"pull-request"}
    webhook = find(objs, "EventSource")["spec"]["webhook"]
    assert set(webhook) == {"push", "pull-request"}
    # No secret material in the chart: secrets are referenced by name only.
    assert "PRIVATE KEY" not in yaml.safe_dump_all(objs)
