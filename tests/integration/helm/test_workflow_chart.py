"""helm/pipeline: the Argo Events wiring and the WorkflowTemplates, rendered and validated.

Core objects (ServiceAccount, Role, RoleBinding) go through kubernetes-validate (strict).
EventSource and Sensor go through Argo Events' own JSON schema (argo-events v1.9.11,
tests/fixtures/argo_events/, made strict: no unknown field passes); the WorkflowTemplates
through hera's Argo models, and they must equal a fresh render of the Hera definitions.
What the event source and the Sensor do with an event is checked against recorded
exchanges (tests/support/argo_events.py models the controllers; none runs here).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hera.workflows.models import WorkflowTemplate as WorkflowTemplateModel
from pipeline.workflows import WORKFLOWS, build
from pipeline.workflows.catalog import to_dict

from pipeline.errors import ChartRenderError
from tests.support import argo_events
from tests.support.helm import (
    ManifestValidationError,
    find,
    lint_chart,
    register_crd_schema,
    render_chart,
    validate_manifests,
)

CHART = Path(__file__).resolve().parents[3] / "helm" / "pipeline"
WORKFLOW_TEMPLATE = {"type": "object", "required": ["apiVersion", "kind", "metadata", "spec"]}


def _register() -> None:
    register_crd_schema("argoproj.io/v1alpha1", "EventSource", argo_events.schema("EventSource"))
    register_crd_schema("argoproj.io/v1alpha1", "Sensor", argo_events.schema("Sensor"))
    register_crd_schema("argoproj.io/v1alpha1", "WorkflowTemplate", WORKFLOW_TEMPLATE)


def _objects(values: dict | None = None) -> list[dict]:
    _register()
    return render_chart(CHART, values) if values else render_chart(CHART)


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


def test_sensor_triggers_are_each_conditioned_on_their_own_dependency() -> None:
    objs = _objects()
    sensor = find(objs, "Sensor")
    triggers = {t["template"]["name"]: t["template"] for t in sensor["spec"]["triggers"]}
    assert triggers["release"]["conditions"] == "push-main"
    assert triggers["pr-check"]["conditions"] == "pull-request"
    release = triggers["release"]["argoWorkflow"]["source"]["resource"]
    assert release["spec"]["workflowTemplateRef"] == {"name": "release"}
    params = release["spec"]["arguments"]["parameters"]
    declared = {p["name"] for p in to_dict(build("release"))["spec"]["arguments"]["parameters"]}
    assert {p["name"] for p in params} <= declared
    assert params[1]["name"] == "git-repo" and params[2]["name"] == "git-revision"
    pr = triggers["pr-check"]["argoWorkflow"]
    assert pr["source"]["resource"]["spec"]["workflowTemplateRef"] == {"name": "pr-check"}
    assert {p["src"]["dependencyName"] for p in pr["parameters"]} == {"pull-request"}
    source = find(objs, "EventSource")["spec"]["github"]["git"]
    assert source["webhookSecret"] == {"name": "pipeline-git-webhook", "key": "secret"}
    assert set(source["events"]) == {"push", "pull_request"}
    # No secret material in the chart: secrets are referenced by name only.
    assert "PRIVATE KEY" not in yaml.safe_dump_all(objs)


def _route(objs: list[dict], exchange: dict) -> tuple[int, str, dict[str, dict]]:
    recorded = argo_events.exchanges()
    secret = recorded["secret"]
    source = find(objs, "EventSource")
    status, body, data = argo_events.event_source_response(
        source, {(secret["name"], secret["key"]): secret["value"]}, exchange["request"])
    fired = {} if data is None else argo_events.fired_triggers(
        find(objs, "Sensor"), source["metadata"]["name"], "git", data)
    return status, body, fired


_EXCHANGES = argo_events.exchanges()["exchanges"]


@pytest.mark.parametrize("exchange", _EXCHANGES, ids=[e["name"] for e in _EXCHANGES])
def test_recorded_exchange_runs_release_only_for_main_and_pr_check_only_for_prs(
        exchange: dict) -> None:
    """Each recorded delivery: the event source's answer, then what the Sensor submits."""
    objs = _objects()
    status, body, fired = _route(objs, exchange)
    assert (status, body) == (exchange["response"]["status"], exchange["response"]["body"])
    assert set(fired) == set(exchange["triggers"])
    for name, expected in exchange["triggers"].items():
        arguments = {p["name"]: p["value"] for p in fired[name]["spec"]["arguments"]["parameters"]}
        assert arguments["git-repo"] == expected["git-repo"]
        assert arguments["git-revision"] == expected["git-revision"]
        declared = {p["name"] for p in to_dict(build(name))["spec"]["arguments"]["parameters"]}
        assert set(arguments) <= declared


def test_a_webhook_event_with_a_bad_signature_is_refused_in_the_recorded_exchange() -> None:
    """Signed with another secret: 400, and nothing reaches the Sensor (no release)."""
    [bad] = [e for e in _EXCHANGES if e["name"] == "push to main with a bad signature"]
    [good] = [e for e in _EXCHANGES if e["name"] == "push to main"]
    assert bad["request"]["body"] == good["request"]["body"]  # only the signature differs
    status, body, fired = _route(_objects(), bad)
    assert (status, body, fired) == (400, "payload signature check failed", {})
    assert bad["response"] == {"status": 400, "body": "payload signature check failed"}
    status, _, fired = _route(_objects(), good)
    assert status == 200 and set(fired) == {"release"}


def test_without_conditions_a_push_would_wait_for_a_pull_request() -> None:
    """Why each trigger names its dependency: a Sensor otherwise waits for all of them."""
    objs = _objects()
    sensor = find(objs, "Sensor")
    for trigger in sensor["spec"]["triggers"]:
        del trigger["template"]["conditions"]
    [push] = [e for e in _EXCHANGES if e["name"] == "push to main"]
    _, _, data = argo_events.event_source_response(
        find(objs, "EventSource"), {("pipeline-git-webhook", "secret"):
                                    argo_events.exchanges()["secret"]["value"]},
        push["request"])
    name = find(objs, "EventSource")["metadata"]["name"]
    assert argo_events.fired_triggers(sensor, name, "git", data) == {}


def test_the_schema_refuses_a_misspelt_field_and_the_chart_an_unsigned_webhook() -> None:
    objs = _objects()
    source = find(objs, "EventSource")
    source["spec"]["github"]["git"]["webhookSecrets"] = source["spec"]["github"]["git"].pop(
        "webhookSecret")
    with pytest.raises(ManifestValidationError, match="webhookSecrets"):
        validate_manifests([source])
    with pytest.raises(ChartRenderError, match="events.webhookSecret.name is required"):
        _objects({"events": {"webhookSecret": {"name": ""}}})
