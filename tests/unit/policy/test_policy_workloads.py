"""Where the images of every judged kind are (pipeline.policy.workloads), and that the
webhook and ``pipeline policy check`` see the same list.

Shapes follow the API types (core/v1, apps/v1, batch/v1, argoproj.io/v1alpha1 Workflow
and Rollout, KServe serving.kserve.io v1beta1/v1alpha1 as in the ``kserve`` 0.21 API
models). The property tests place images at random known positions of random objects
and check that exactly those are found, each with a JSON pointer that leads to it.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.policy.check import CheckResult, verify_images
from pipeline.policy.manifests import Manifest
from pipeline.policy.workloads import (
    KINDS,
    KSERVE_PREDICTOR_MODELS,
    container_images,
    find_images,
    workload_kind,
)


def _resolve(obj: Any, pointer: str) -> Any:
    """RFC 6901: the value at ``pointer`` (no escapes occur in these field names)."""
    node = obj
    for part in pointer.lstrip("/").split("/"):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _pointers_lead_to_values(obj: dict[str, Any]) -> None:
    for slot in find_images(obj).slots:
        assert _resolve(obj, slot.pointer) == slot.value, slot


def _pod(containers: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
    return {"containers": containers, **more}


POD_SPEC = _pod([{"name": "app", "image": "r/app@sha256:" + "1" * 64}],
                initContainers=[{"name": "init", "image": "r/init:1"}],
                ephemeralContainers=[{"name": "debug", "image": "r/debug:1"}])
CORE = {
    ("v1", "Pod"): {"spec": POD_SPEC},
    ("v1", "PodTemplate"): {"template": {"spec": POD_SPEC}},
    ("v1", "ReplicationController"): {"spec": {"template": {"spec": POD_SPEC}}},
    ("apps/v1", "Deployment"): {"spec": {"template": {"spec": POD_SPEC}}},
    ("apps/v1", "ReplicaSet"): {"spec": {"template": {"spec": POD_SPEC}}},
    ("apps/v1", "StatefulSet"): {"spec": {"template": {"spec": POD_SPEC}}},
    ("apps/v1", "DaemonSet"): {"spec": {"template": {"spec": POD_SPEC}}},
    ("batch/v1", "Job"): {"spec": {"template": {"spec": POD_SPEC}}},
    ("batch/v1", "CronJob"): {"spec": {"jobTemplate": {"spec": {"template": {"spec": POD_SPEC}}}}},
    ("argoproj.io/v1alpha1", "Rollout"): {"spec": {"template": {"spec": POD_SPEC}}},
}


@pytest.mark.parametrize("api_version, kind", sorted(CORE))
def test_every_container_of_every_core_kind(api_version: str, kind: str) -> None:
    obj = {"apiVersion": api_version, "kind": kind, **copy.deepcopy(CORE[(api_version, kind)])}
    found = find_images(obj)
    assert found.known and found.expects_containers and not found.refused
    assert sorted(s.image for s in found.slots) == ["r/app@sha256:" + "1" * 64, "r/debug:1",
                                                    "r/init:1"]
    assert {s.label for s in found.slots} == {"container app", "init container init",
                                              "ephemeral container debug"}
    _pointers_lead_to_values(obj)


def test_kind_is_matched_exactly_by_group_and_name() -> None:
    assert workload_kind({"apiVersion": "v1", "kind": "Pod"}).resource == "pods"
    for api_version, kind in (("v1", "Pod "), ("v1", "pod"), ("v1", ""), ("apps/v1", "Pod"),
                              ("example.com/v1", "Deployment"), (None, "Pod"), ("v1", None),
                              ("evil.example/v1", "InferenceService")):
        obj = {"apiVersion": api_version, "kind": kind,
               "spec": {"containers": [{"name": "a", "image": "x"}]}}
        assert workload_kind(obj) is None, (api_version, kind)
        assert not find_images(obj).known and find_images(obj).slots == []


def test_kinds_are_unique_and_cover_the_pod_bearing_kinds() -> None:
    names = [(k.group, k.kind) for k in KINDS]
    assert len(names) == len(set(names))
    assert {k.kind for k in KINDS} >= {
        "Pod", "Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob",
        "ReplicationController", "PodTemplate", "Rollout", "Workflow", "WorkflowTemplate",
        "CronWorkflow", "InferenceService", "ServingRuntime"}


def test_rollout_by_workload_reference_needs_no_containers() -> None:
    obj = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
           "spec": {"workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"}}}
    assert not find_images(obj).expects_containers
    empty = {"apiVersion": "v1", "kind": "Pod", "spec": {}}
    assert find_images(empty).expects_containers and find_images(empty).slots == []


# -- Argo Workflows -------------------------------------------------------------------------
def _workflow(kind: str = "Workflow", **spec: Any) -> dict[str, Any]:
    body = {"templates": spec.pop("templates", []), **spec}
    if kind == "CronWorkflow":
        body = {"schedule": "* * * * *", "workflowSpec": body}
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": kind, "metadata": {"name": "w"},
            "spec": body}


ARGO_TEMPLATES = [
    {"name": "build", "container": {"image": "r/build:1", "command": ["make"]},
     "initContainers": [{"name": "fetch", "image": "r/fetch:1"}],
     "sidecars": [{"name": "db", "image": "r/db:1"}]},
    {"name": "py", "script": {"image": "r/python:3", "source": "print(1)"}},
    {"name": "set", "containerSet": {"containers": [{"name": "a", "image": "r/a:1"},
                                                    {"name": "b", "image": "r/b:1"}]}},
    {"name": "dag", "dag": {"tasks": [{"name": "t", "template": "build"}]}},
    {"name": "pause", "suspend": {}},
]


@pytest.mark.parametrize("kind", ["Workflow", "WorkflowTemplate", "ClusterWorkflowTemplate",
                                  "CronWorkflow"])
def test_every_argo_template_container(kind: str) -> None:
    obj = _workflow(kind, templates=copy.deepcopy(ARGO_TEMPLATES))
    found = find_images(obj)
    assert found.known and not found.refused
    assert sorted(s.image for s in found.slots) == [
        "r/a:1", "r/b:1", "r/build:1", "r/db:1", "r/fetch:1", "r/python:3"]
    labels = {s.label for s in found.slots}
    assert "template build sidecar db" in labels and "template py script" in labels
    _pointers_lead_to_values(obj)


def test_argo_template_defaults_and_missing_images() -> None:
    defaults = {"container": {"image": "r/default:1"}}
    obj = _workflow(templateDefaults=defaults,
                    templates=[{"name": "a", "container": {"command": ["x"]}}])
    assert [s.image for s in find_images(obj).slots] == ["r/default:1"]
    no_default = _workflow(templates=[{"name": "a", "container": {"command": ["x"]}}])
    (slot,) = find_images(no_default).slots
    assert slot.image is None and slot.label == "template a container"
    # templateDefaults that only set resources carry no image of their own.
    resources_only = _workflow(templateDefaults={"container": {"resources": {}}},
                               templates=[{"name": "a", "container": {"image": "r/x:1"}}])
    assert [s.image for s in find_images(resources_only).slots] == ["r/x:1"]


@pytest.mark.parametrize("patch, refused", [
    ('{"containers":[{"name":"main","resources":{"limits":{"cpu":"2"}}}]}', False),
    ('{"containers":[{"name":"main","image":"evil:latest"}]}', True),
    ('containers:\n- name: main\n  image: evil\n', True),
    ('{"containers":[{"name":"main","\\u0069mage":"evil"}]}', True),  # escaped key
    ("a: &x [1]\nb: *x\n", True),  # aliases: refused before anything is built
    ("{not: [json", True),
    ("- a list", True),
])
def test_argo_pod_spec_patch_that_may_set_an_image_is_refused(patch: str, refused: bool) -> None:
    for where in ("template", "workflow"):
        if where == "template":
            obj = _workflow(templates=[{"name": "a", "container": {"image": "r/a:1"},
                                        "podSpecPatch": patch}])
        else:
            obj = _workflow(podSpecPatch=patch, templates=[{"name": "a",
                                                            "container": {"image": "r/a:1"}}])
        assert bool(find_images(obj).refused) is refused, (where, patch)


def test_workflows_without_templates_or_reference_expect_containers() -> None:
    assert find_images(_workflow()).expects_containers
    assert find_images({**_workflow(), "spec": None}).expects_containers
    assert not find_images(_workflow(workflowTemplateRef={"name": "t"})).expects_containers
    assert not find_images(_workflow("CronWorkflow", workflowTemplateRef={"name": "t"})
                           ).expects_containers
    only_dag = _workflow(templates=[ARGO_TEMPLATES[3], ARGO_TEMPLATES[4]])
    found = find_images(only_dag)
    assert not found.expects_containers and found.slots == []


# -- KServe ---------------------------------------------------------------------------------
def _isvc(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": "m"}, "spec": spec}


def test_inference_service_components_shorthands_and_model_references() -> None:
    obj = _isvc(
        predictor={
            "model": {"modelFormat": {"name": "pytorch"}, "image": "r/server:1",
                      "storageUri": "oci://r/models/m@sha256:" + "2" * 64},
            "containers": [{"name": "kserve-container", "image": "r/custom:1"}],
            "initContainers": [{"name": "init", "image": "r/init:1"}],
            "workerSpec": {"containers": [{"name": "worker", "image": "r/worker:1"}]},
            "storageUris": [{"uri": "oci://r/models/extra:v1", "mountPath": "/mnt/extra"}],
        },
        transformer={"containers": [{"name": "t", "image": "r/transformer:1"}]},
        explainer={"art": {"type": "SquareAttack", "image": "r/art:1"},
                   "containers": [{"name": "e", "image": "r/explainer:1"}]},
        canary=[{"predictor": {"sklearn": {"image": "r/sklearn:1"}}}],
    )
    found = find_images(obj)
    assert found.known and not found.refused and not found.expects_containers
    assert sorted(s.image for s in found.slots) == sorted([
        "r/server:1", "r/models/m@sha256:" + "2" * 64, "r/custom:1", "r/init:1", "r/worker:1",
        "r/models/extra:v1", "r/transformer:1", "r/art:1", "r/explainer:1", "r/sklearn:1"])
    uris = [s for s in found.slots if s.scheme]
    assert {s.pointer for s in uris} == {"/spec/predictor/model/storageUri",
                                         "/spec/predictor/storageUris/0/uri"}
    assert all(s.value.startswith("oci://") for s in uris)
    _pointers_lead_to_values(obj)
    # The webhook's and the PR check's image list are one list.
    assert list(container_images(obj)) == [s.image for s in found.slots]


@pytest.mark.parametrize("framework", KSERVE_PREDICTOR_MODELS)
def test_every_predictor_shorthand(framework: str) -> None:
    obj = _isvc(predictor={framework: {"image": f"r/{framework}:1",
                                       "storageUri": "oci://r/models/m:1"}})
    assert sorted(s.image for s in find_images(obj).slots) == sorted(["r/models/m:1",
                                                                      f"r/{framework}:1"])
    # Without an image the shorthand runs its ServingRuntime's image: nothing to verify here.
    obj = _isvc(predictor={framework: {"storageUri": "oci://r/models/m:1"}})
    assert [s.pointer for s in find_images(obj).slots] == [
        f"/spec/predictor/{framework}/storageUri"]


def test_inference_service_without_a_predictor_expects_containers() -> None:
    for spec in ({}, {"predictor": {}}, {"predictor": None}, {"transformer": {"containers": []}}):
        assert find_images(_isvc(**spec)).expects_containers, spec
    assert not find_images(_isvc(predictor={"model": {"modelFormat": {"name": "onnx"}}})
                           ).expects_containers


@pytest.mark.parametrize("where", [
    {"predictor": {"model": {"storageUri": "s3://bucket/model"}}},
    {"predictor": {"sklearn": {"storageUri": "gs://bucket/model"}}},
    {"predictor": {"model": {"storageUri": "pvc://claim/model"}}},
    {"predictor": {"model": {"storageUri": "hf://org/model"}}},
    {"predictor": {"model": {"storage": {"key": "minio", "path": "m/model.joblib"}}}},
    {"predictor": {"storageUris": [{"uri": "https://example.com/m.tar"}]}},
    {"explainer": {"art": {"storageUri": "s3://bucket/explainer"}}},
    {"predictor": {"model": {"storageUri": 7}}},
])
def test_model_references_no_signature_can_cover_are_refused(where: dict[str, Any]) -> None:
    (reason,) = find_images(_isvc(**where)).refused
    assert "no signature can be verified" in reason and "oci://" in reason


def test_serving_runtimes_and_storage_containers() -> None:
    for kind in ("ServingRuntime", "ClusterServingRuntime"):
        obj = {"apiVersion": "serving.kserve.io/v1alpha1", "kind": kind,
               "spec": {"supportedModelFormats": [{"name": "pytorch"}],
                        "containers": [{"name": "kserve-container", "image": "r/rt:1"}],
                        "workerSpec": {"containers": [{"name": "w", "image": "r/w:1"}]}}}
        found = find_images(obj)
        assert found.expects_containers
        assert sorted(s.image for s in found.slots) == ["r/rt:1", "r/w:1"]
        _pointers_lead_to_values(obj)
        assert find_images({**obj, "spec": {}}).slots == []
    storage = {"apiVersion": "serving.kserve.io/v1alpha1", "kind": "ClusterStorageContainer",
               "spec": {"container": {"name": "storage-initializer", "image": "r/si:1"},
                        "supportedUriFormats": [{"prefix": "s3://"}]}}
    assert [s.image for s in find_images(storage).slots] == ["r/si:1"]


# -- properties -----------------------------------------------------------------------------
images = st.text(st.sampled_from("abc/:@.0"), min_size=1, max_size=12)
names = st.text(st.sampled_from("abcdef"), min_size=1, max_size=4)
containers = st.lists(st.builds(lambda n, i: {"name": n, "image": i}, names, images), max_size=3)
junk = st.one_of(st.none(), st.integers(), st.text(max_size=4), st.lists(st.integers(),
                                                                         max_size=2))


@st.composite
def isvc_with_images(draw: st.DrawFn) -> tuple[dict[str, Any], list[str]]:
    placed: list[str] = []
    spec: dict[str, Any] = {}
    for component in draw(st.lists(st.sampled_from(["predictor", "transformer", "explainer"]),
                                   unique=True)):
        body: dict[str, Any] = {}
        for key in draw(st.lists(st.sampled_from(["containers", "initContainers"]),
                                 unique=True)):
            body[key] = draw(containers)
            placed += [c["image"] for c in body[key]]
        models = {"predictor": KSERVE_PREDICTOR_MODELS, "explainer": ("art",),
                  "transformer": ()}[component]
        for model in draw(st.lists(st.sampled_from(models), unique=True)) if models else []:
            image = draw(images)
            body[model] = {"image": image, "storageUri": "oci://" + image}
            placed += [image, image]
        body["noise"] = draw(junk)
        spec[component] = body
    return _isvc(**spec), placed


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(isvc_with_images())
def test_property_every_placed_image_is_found_with_its_pointer(case: Any) -> None:
    obj, placed = case
    found = find_images(obj)
    assert sorted(s.image for s in found.slots) == sorted(placed)
    _pointers_lead_to_values(obj)


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["spec", "template", "templates", "containers", "container", "image",
                         "predictor", "model", "storageUri", "workflowSpec", "podSpecPatch",
                         "sidecars", "containerSet", "jobTemplate", "workerSpec", "canary",
                         "storageUris", "uri", "art", "x"]), inner, max_size=4),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(KINDS), json_like)
def test_property_arbitrary_objects_never_raise(kind: Any, body: Any) -> None:
    obj = {"apiVersion": kind.api_version, "kind": kind.kind,
           **(body if isinstance(body, dict) else {"spec": body})}
    found = find_images(obj)
    assert found.kind == kind
    _pointers_lead_to_values(obj)


def test_policy_check_reports_what_the_webhook_refuses_without_a_registry(tmp_path) -> None:
    """Model references no signature covers and containers without images are violations
    of ``pipeline policy check --verify-images`` as they are denials at admission."""
    policy = tmp_path / "image-policy.yaml"
    policy.write_text("version: 1\ndefault: deny\nrules: []\n")
    objs = [_isvc(predictor={"model": {"storageUri": "s3://b/m"},
                             "containers": [{"name": "c"}]}),
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {}}]
    result = CheckResult()
    verify_images([Manifest("m.yaml", i, o) for i, o in enumerate(objs)], policy, result)
    messages = [v.message for v in result.violations]
    assert len(messages) == 2 and all(v.index == 0 for v in result.violations)
    assert any(m == "predictor container c has no image" for m in messages), messages
    assert any("s3://b/m" in m and "no signature can be verified" in m for m in messages)
