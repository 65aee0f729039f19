"""Every default policy accepts a compliant object and refuses a violating one (table-driven).

Each violating case changes one thing in an otherwise compliant pod spec and names the
only policy that must refuse it; the spec is checked as a Pod and inside every workload
kind, since the policies are written over the pod template (variables.podSpec).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pipeline.policy.check import DEFAULT_POLICY_DIR, check_objects
from pipeline.policy.manifests import Manifest
from pipeline.policy.vap import load_policies
from tests.support.policy_objects import DIGEST, container, edited, workload

POLICIES = load_policies(DEFAULT_POLICY_DIR)
KINDS = ["Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob",
         "Rollout"]


def violations(obj: dict[str, Any]) -> list[tuple[str, str]]:
    result = check_objects([Manifest("t.yaml", 0, obj)], POLICIES)
    return sorted({(v.policy, v.message) for v in result.violations})


def sc(spec: dict[str, Any], index: int = 0) -> dict[str, Any]:
    return spec["containers"][index]["securityContext"]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(spec: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = spec
        for key in parents:
            node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
        node[last] = value
    return edit


def _del(path: str) -> Callable[[dict[str, Any]], None]:
    def edit(spec: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = spec
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        del node[last]
    return edit


C0 = "containers.0.securityContext"
CASES: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    ("runAsNonRoot false in container", _set(f"{C0}.runAsNonRoot", False),
     "restricted-pod-security", "runAsNonRoot"),
    ("runAsNonRoot nowhere", lambda s: (sc(s).pop("runAsNonRoot"),
                                        s["securityContext"].pop("runAsNonRoot")),
     "restricted-pod-security", "runAsNonRoot"),
    ("readOnlyRootFilesystem missing", _del(f"{C0}.readOnlyRootFilesystem"),
     "restricted-pod-security", "readOnlyRootFilesystem"),
    ("allowPrivilegeEscalation true", _set(f"{C0}.allowPrivilegeEscalation", True),
     "restricted-pod-security", "allowPrivilegeEscalation"),
    ("privileged", _set(f"{C0}.privileged", True), "restricted-pod-security", "privileged"),
    ("capabilities not dropped", _del(f"{C0}.capabilities"), "restricted-pod-security",
     "drop ALL"),
    ("capability added", _set(f"{C0}.capabilities.add", ["SYS_ADMIN"]),
     "restricted-pod-security", "drop ALL"),
    ("seccomp Unconfined", _set(f"{C0}.seccompProfile.type", "Unconfined"),
     "restricted-pod-security", "seccompProfile"),
    ("init container not hardened", lambda s: s.setdefault("initContainers", []).append(
        {"name": "init", "image": f"busybox@{DIGEST}"}), "restricted-pod-security",
     "init"),
    ("hostNetwork", _set("hostNetwork", True), "pod-host-isolation", "hostNetwork"),
    ("hostPID", _set("hostPID", True), "pod-host-isolation", "hostPID"),
    ("hostIPC", _set("hostIPC", True), "pod-host-isolation", "hostIPC"),
    ("hostPath volume", lambda s: s["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
     "pod-host-isolation", "hostPath volumes are not allowed: h"),
    ("hostPort", _set("containers.0.ports", [{"containerPort": 80, "hostPort": 80}]),
     "pod-host-isolation", "hostPort"),
    ("image by tag", _set("containers.0.image", "nginx:1.27"), "image-digest-pinning",
     "nginx:1.27"),
    ("image with short digest", _set("containers.0.image", "nginx@sha256:abc"),
     "image-digest-pinning", "pinned by digest"),
    ("image with upper-case digest", _set("containers.0.image", "n@sha256:" + "AB" * 32),
     "image-digest-pinning", "pinned by digest"),
    ("ephemeral container by tag", lambda s: s.setdefault("ephemeralContainers", []).append(
        container("debug", image="busybox:latest")), "image-digest-pinning", "busybox:latest"),
    ("service account token mounted", _set("automountServiceAccountToken", True),
     "model-serving-service-account-token", "automountServiceAccountToken"),
    ("service account token default", _del("automountServiceAccountToken"),
     "model-serving-service-account-token", "automountServiceAccountToken"),
    ("GPU without runtimeClassName", lambda s: s["containers"][0]["resources"]["limits"].update(
        {"nvidia.com/gpu": 1}), "gpu-runtime-class", "runtimeClassName"),
    ("MIG slice without runtimeClassName", lambda s: s["containers"][0]["resources"][
        "limits"].update({"nvidia.com/mig-1g.10gb": 1}), "gpu-runtime-class", "MIG"),
    ("MIG request without runtimeClassName", lambda s: s["containers"][0]["resources"]
        .setdefault("requests", {}).update({"nvidia.com/mig-3g.40gb": 1}),
     "gpu-runtime-class", "runtimeClassName"),
]


@pytest.mark.parametrize("kind", KINDS)
def test_compliant_object_passes_every_policy(kind: str) -> None:
    assert violations(workload(kind)) == []


@pytest.mark.parametrize("kind", ["Pod", "Deployment", "CronJob", "Rollout"])
@pytest.mark.parametrize(("case", "edit", "policy", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_violation_is_refused_by_its_policy(
    kind: str, case: str, edit: Callable[[dict[str, Any]], None], policy: str, fragment: str
) -> None:
    found = violations(workload(kind, edited(edit)))
    assert {p for p, _ in found} == {policy}, found
    assert any(fragment in message for _, message in found), found


def _gpu(spec: dict[str, Any]) -> None:
    spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = 1


def _mig(spec: dict[str, Any]) -> None:
    spec["containers"][0]["resources"]["limits"]["nvidia.com/mig-1g.10gb"] = 1


@pytest.mark.parametrize("edit", [_gpu, _mig], ids=["gpu", "mig"])
def test_gpu_with_runtime_class_passes(edit: Callable[[dict[str, Any]], None]) -> None:
    spec = edited(edit)
    spec["runtimeClassName"] = "nvidia"
    assert violations(workload("Deployment", spec)) == []


def test_other_nvidia_resources_are_not_gpus() -> None:
    """Only whole GPUs and MIG slices need the runtime class (not e.g. a NIC resource)."""
    spec = edited(lambda s: s["containers"][0]["resources"]["limits"].update(
        {"example.com/sriov-nic": 1}))
    assert violations(workload("Pod", spec)) == []


def test_token_rule_only_applies_to_model_serving() -> None:
    obj = workload("Deployment", edited(_set("automountServiceAccountToken", True)))
    obj["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] = "batch"
    assert violations(obj) == []


def test_pod_security_runasnonroot_from_pod_level_is_enough() -> None:
    assert violations(workload("Pod", edited(lambda s: sc(s).pop("runAsNonRoot")))) == []


def test_non_workload_kinds_are_not_matched() -> None:
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
               "spec": {"ports": [{"port": 80}]}}
    assert violations(service) == []


def test_rollout_with_workload_ref_is_skipped_by_match_condition() -> None:
    rollout = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
               "metadata": {"name": "r"},
               "spec": {"workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": "w"}}}
    assert violations(rollout) == []


def test_workload_without_pod_template_fails_closed() -> None:
    broken = workload("Deployment")
    del broken["spec"]["template"]
    found = violations(broken)
    assert found and all("errored" in message for _, message in found)
    assert {p for p, _ in found} >= {"restricted-pod-security", "image-digest-pinning"}


def test_default_policy_set_is_complete_and_bound() -> None:
    assert set(POLICIES.policies) == {
        "restricted-pod-security", "pod-host-isolation", "image-digest-pinning",
        "model-serving-service-account-token", "gpu-runtime-class"}
    assert POLICIES.unbound() == []
    assert all(b.actions == ("Deny",) for b in POLICIES.bindings)
    assert all(p.failure_policy == "Fail" for p in POLICIES.policies.values())
