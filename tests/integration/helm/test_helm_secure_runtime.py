"""The secure-runtime chart, rendered by the real Helm v4 engine and schema-checked.

Every variant is rendered with helm-python-sdk (no helm binary, no cluster), linted, and
each object validated: core kinds with kubernetes-validate's official schemas, the Argo
Rollouts Rollout/AnalysisTemplate and prometheus-operator ServiceMonitor with the CRD
schemas in tests/support/helm.py. The assertions pin the security posture the chart exists
for: digest-only images, restricted pod security, keys as read-only files, closed network.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.helm import (
    ChartRenderError,
    ManifestValidationError,
    find,
    lint_chart,
    merged_values,
    render_chart,
    render_notes,
    validate_manifests,
)

CHART = Path(__file__).resolve().parents[3] / "helm" / "secure-runtime"
IMAGE_DIGEST = "sha256:" + "a1" * 32
MODEL_DIGEST = "sha256:" + "b2" * 32
REQUIRED = {"image": {"digest": IMAGE_DIGEST}, "model": {"digest": MODEL_DIGEST}}
FULL = "r-secure-runtime"
PEM = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n"


def values(**overrides: Any) -> dict[str, Any]:
    """The required digests, deep-merged with ``overrides``."""
    return merged_values(REQUIRED, **overrides)


ROLLOUT_GPU_CSI = values(
    rollout={"enabled": True},
    gpu={"enabled": True, "count": 2},
    keys={"csi": {"enabled": True, "volumeAttributes": {"secretProviderClass": "kek"}}},
    trust={"publicKey": PEM},
    networkPolicy={
        "ingress": {
            "namespaceSelectors": [{"kubernetes.io/metadata.name": "gateway"}],
            "podSelectors": [{"app": "client"}],
        },
        "egress": {
            "registry": [{"cidr": "10.20.0.0/16", "ports": [443, 5000]}],
            "kms": [{"cidr": "10.30.0.7/32", "ports": [8200]}],
        },
    },
)
MIG = values(
    gpu={
        "enabled": True,
        "resourceName": "nvidia.com/mig-1g.10gb",
        "products": ["NVIDIA-H100-80GB-HBM3"],
    }
)
MODEL_VOLUME = values(
    model={"digest": "", "volume": {"enabled": True, "claimName": "sealed", "subPath": "minilm"}}
)
NO_HPA = values(autoscaling={"enabled": False}, replicaCount=3)

VARIANTS = {
    "defaults": values(),
    "rollout+gpu+csi": ROLLOUT_GPU_CSI,
    "mig": MIG,
    "model-volume": MODEL_VOLUME,
    "no-hpa": NO_HPA,
    "rollout-no-analysis": values(rollout={"enabled": True, "analysis": {"enabled": False}}),
}


def workload(objs: list[dict[str, Any]]) -> dict[str, Any]:
    kinds = [o for o in objs if o["kind"] in ("Deployment", "Rollout")]
    assert len(kinds) == 1, [o["kind"] for o in kinds]
    return kinds[0]


def pod_spec(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return workload(objs)["spec"]["template"]["spec"]


def container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    (only,) = pod_spec(objs)["containers"]
    return only


def arg(c: dict[str, Any], flag: str) -> str:
    args = c["args"]
    assert args.count(flag) == 1, args
    return args[args.index(flag) + 1]


def fails(vals: dict[str, Any]) -> str:
    with pytest.raises(ChartRenderError) as info:
        render_chart(CHART, vals)
    return str(info.value)


# --------------------------------------------------------------------------- render + schemas


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_object_validates_against_its_schema(name: str) -> None:
    objs = render_chart(CHART, VARIANTS[name])
    validate_manifests(objs, "1.30")


@pytest.mark.parametrize("version", ["1.27", kubernetes_validate.latest_version()])
def test_validates_on_oldest_supported_and_newest_kubernetes(version: str) -> None:
    validate_manifests(render_chart(CHART, ROLLOUT_GPU_CSI), version)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_lint_is_clean(name: str) -> None:
    assert lint_chart(CHART, VARIANTS[name]) == []


def test_defaults_render_the_expected_objects() -> None:
    kinds = sorted(o["kind"] for o in render_chart(CHART, values()))
    assert kinds == [
        "Deployment",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ]


def test_rollout_replaces_the_deployment_and_adds_analysis() -> None:
    kinds = sorted(o["kind"] for o in render_chart(CHART, ROLLOUT_GPU_CSI))
    assert "Deployment" not in kinds
    assert {"Rollout", "AnalysisTemplate", "ConfigMap"} <= set(kinds)


def test_the_validator_itself_rejects_bad_objects() -> None:
    """Guard against a validator that passes everything."""
    objs = render_chart(CHART, ROLLOUT_GPU_CSI)
    broken = copy.deepcopy(objs)
    container(broken)["securityContext"]["runAsUser"] = "root"
    with pytest.raises(ManifestValidationError, match="runAsUser"):
        validate_manifests(broken)

    typo = copy.deepcopy(objs)
    find(typo, "Service", FULL)["spec"]["prots"] = []
    with pytest.raises(ManifestValidationError, match="prots"):
        validate_manifests(typo)

    two_actions = copy.deepcopy(objs)
    find(two_actions, "Rollout")["spec"]["strategy"]["canary"]["steps"][0]["pause"] = {}
    with pytest.raises(ManifestValidationError, match="Rollout"):
        validate_manifests(two_actions)

    no_selector = copy.deepcopy(objs)
    del find(no_selector, "ServiceMonitor")["spec"]["selector"]
    with pytest.raises(ManifestValidationError, match="selector"):
        validate_manifests(no_selector)

    bad_pod = copy.deepcopy(objs)
    pod_spec(bad_pod)["volumes"][0]["emptyDir"]["medium"] = 5
    with pytest.raises(ManifestValidationError, match="PodTemplateSpec"):
        validate_manifests(bad_pod)

    unknown = [{"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}}]
    with pytest.raises(ManifestValidationError, match="no schema"):
        validate_manifests(unknown)


# --------------------------------------------------------------------------- digest only


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_image_is_referenced_by_digest(name: str) -> None:
    image = container(render_chart(CHART, VARIANTS[name]))["image"]
    assert "@sha256:" in image
    assert image.endswith("@" + IMAGE_DIGEST)
    assert ":" not in image.split("@")[0].rsplit("/", 1)[-1]


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ({"digest": ""}, r"image\.digest is required.*digest only"),
        ({"digest": None}, r"image\.digest is required"),
        (
            {"digest": "", "tag": "1.2.3"},
            r"image\.tag \"1\.2\.3\" is set but tags are not accepted",
        ),
        ({"digest": "latest"}, r"image\.digest \"latest\" is not a digest \(a tag\?\)"),
        ({"digest": "sha256:abc"}, r"is not a digest"),
        ({"digest": "sha512:" + "a" * 128}, r"is not a digest"),
        ({"repository": "registry.example.com/rt:v1"}, r"carries a tag.*digest only"),
        ({"repository": "registry.example.com/rt@" + IMAGE_DIGEST}, r"must not contain a digest"),
    ],
)
def test_render_fails_without_a_digest_or_with_a_tag(image: dict[str, Any], expected: str) -> None:
    message = fails(values(image=image))
    assert re.search(expected, message), message


def test_a_registry_port_is_not_mistaken_for_a_tag() -> None:
    objs = render_chart(CHART, values(image={"repository": "registry.local:5000/rt"}))
    assert container(objs)["image"] == f"registry.local:5000/rt@{IMAGE_DIGEST}"


def test_model_reference_is_by_digest_too() -> None:
    assert re.search(r"model\.digest is required", fails(values(model={"digest": ""})))
    assert re.search(r"model\.tag", fails(values(model={"tag": "latest"})))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet="sha256:0123456789abcdefABCDEF-_.xyz", min_size=1, max_size=80))
def test_only_sha256_hex_digests_render(candidate: str) -> None:
    """Property: the template accepts a digest exactly when it is sha256:<64 lowercase hex>."""
    valid = re.fullmatch(r"sha256:[a-f0-9]{64}", candidate) is not None
    try:
        objs = render_chart(CHART, values(image={"digest": candidate}))
    except ChartRenderError as exc:
        assert not valid, exc
        assert "image.digest" in str(exc)
    else:
        assert valid
        assert container(objs)["image"].endswith("@" + candidate)


@given(st.from_regex(r"sha256:[a-f0-9]{64}", fullmatch=True))
@settings(max_examples=15, deadline=None)
def test_any_well_formed_digest_renders(candidate: str) -> None:
    assert container(render_chart(CHART, values(image={"digest": candidate})))["image"].endswith(
        candidate
    )


# --------------------------------------------------------------------------- pod security


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_restricted_pod_security(name: str) -> None:
    objs = render_chart(CHART, VARIANTS[name])
    spec = pod_spec(objs)
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 65532
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "hostNetwork" not in spec and "hostPID" not in spec and "hostIPC" not in spec
    sc = container(objs)["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    sa = find(objs, "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False


def test_tmp_is_a_memory_backed_empty_dir() -> None:
    objs = render_chart(CHART, values())
    tmp = next(v for v in pod_spec(objs)["volumes"] if v["name"] == "tmp")
    assert tmp["emptyDir"]["medium"] == "Memory"
    assert tmp["emptyDir"]["sizeLimit"] == "64Mi"
    mount = next(m for m in container(objs)["volumeMounts"] if m["name"] == "tmp")
    assert mount["mountPath"] == "/tmp"


# --------------------------------------------------------------------------- keys, trust, args

_SECRETISH = re.compile(r"KEY|KEK|SECRET|TOKEN|PASSWORD|CREDENTIAL", re.IGNORECASE)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_no_environment_variable_carries_key_material(name: str) -> None:
    c = container(render_chart(CHART, VARIANTS[name]))
    assert "envFrom" not in c
    for env in c.get("env", []):
        assert "valueFrom" not in env, env
        assert not _SECRETISH.search(env["name"]), env
        assert "BEGIN" not in env.get("value", ""), env


def test_a_secret_in_extra_env_is_refused() -> None:
    env = [{"name": "KEK", "valueFrom": {"secretKeyRef": {"name": "kek", "key": "kek"}}}]
    message = fails(values(runtime={"extraEnv": env}))
    assert "never passed as environment variables" in message


def test_kek_comes_from_a_read_only_secret_file_by_default() -> None:
    objs = render_chart(CHART, values())
    c = container(objs)
    kek = next(v for v in pod_spec(objs)["volumes"] if v["name"] == "kek")
    assert kek["secret"]["secretName"] == f"{FULL}-kek"
    assert kek["secret"]["defaultMode"] == 0o440
    mount = next(m for m in c["volumeMounts"] if m["name"] == "kek")
    assert mount["readOnly"] is True
    assert arg(c, "--key-file") == f"{mount['mountPath']}/kek"
    assert not any(o["kind"] == "Secret" for o in objs), "the chart must never carry the key"


def test_kek_from_a_csi_driver_is_read_only() -> None:
    objs = render_chart(CHART, ROLLOUT_GPU_CSI)
    kek = next(v for v in pod_spec(objs)["volumes"] if v["name"] == "kek")
    assert kek["csi"] == {
        "driver": "secrets-store.csi.k8s.io",
        "readOnly": True,
        "volumeAttributes": {"secretProviderClass": "kek"},
    }
    assert "secret" not in kek
    mount = next(m for m in container(objs)["volumeMounts"] if m["name"] == "kek")
    assert mount["readOnly"] is True


def test_trust_key_comes_from_a_config_map() -> None:
    objs = render_chart(CHART, ROLLOUT_GPU_CSI)
    cm = find(objs, "ConfigMap", f"{FULL}-trust")
    assert cm["data"]["trust.pub"].strip() == PEM.strip()
    assert cm["immutable"] is True
    trust = next(v for v in pod_spec(objs)["volumes"] if v["name"] == "trust")
    assert trust["configMap"]["name"] == f"{FULL}-trust"
    c = container(objs)
    mount = next(m for m in c["volumeMounts"] if m["name"] == "trust")
    assert mount["readOnly"] is True
    assert arg(c, "--trust") == f"{mount['mountPath']}/trust.pub"
    checksum = workload(objs)["spec"]["template"]["metadata"]["annotations"]["checksum/trust"]
    assert re.fullmatch(r"[0-9a-f]{64}", checksum)


def test_an_existing_trust_config_map_can_be_named() -> None:
    objs = render_chart(CHART, values(trust={"existingConfigMap": "org-model-signers"}))
    assert not any(o["kind"] == "ConfigMap" for o in objs)
    trust = next(v for v in pod_spec(objs)["volumes"] if v["name"] == "trust")
    assert trust["configMap"]["name"] == "org-model-signers"


def test_a_private_key_is_refused_as_trust_root() -> None:
    pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAw\n-----END PRIVATE KEY-----\n"
    assert "must be a PEM public key" in fails(values(trust={"publicKey": pem}))


def test_runtime_arguments() -> None:
    c = container(render_chart(CHART, values()))
    assert c["command"] == ["/usr/bin/python3", "-m", "secure_runtime"]
    assert arg(c, "--model") == (
        f"registry.example.com/secure-model-pipeline/models/minilm-sealed@{MODEL_DIGEST}"
    )
    assert arg(c, "--port") == "8080"
    assert arg(c, "--grpc-port") == "8081"
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8080, "grpc": 8081}


def test_model_from_a_read_only_volume() -> None:
    objs = render_chart(CHART, MODEL_VOLUME)
    c = container(objs)
    assert arg(c, "--model") == "/models/minilm"
    vol = next(v for v in pod_spec(objs)["volumes"] if v["name"] == "model")
    assert vol["persistentVolumeClaim"] == {"claimName": "sealed", "readOnly": True}
    assert next(m for m in c["volumeMounts"] if m["name"] == "model")["readOnly"] is True
    assert "claimName is required" in fails(values(model={"volume": {"enabled": True}}))


def test_probes_use_the_open_inference_protocol_health_endpoints() -> None:
    c = container(render_chart(CHART, values()))
    assert c["startupProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}


# --------------------------------------------------------------------------- GPU


def test_gpu_resources_runtime_class_and_placement() -> None:
    objs = render_chart(CHART, ROLLOUT_GPU_CSI)
    spec = pod_spec(objs)
    res = container(objs)["resources"]
    assert res["limits"]["nvidia.com/gpu"] == 2
    assert res["requests"]["nvidia.com/gpu"] == 2
    assert spec["runtimeClassName"] == "nvidia"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert {"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]} in terms[0][
        "matchExpressions"
    ]


def test_mig_profile() -> None:
    objs = render_chart(CHART, MIG)
    spec = pod_spec(objs)
    limits = container(objs)["resources"]["limits"]
    assert limits["nvidia.com/mig-1g.10gb"] == 1
    assert "nvidia.com/gpu" not in limits
    exprs = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ][0]["matchExpressions"]
    assert {"key": "nvidia.com/mig-1g.10gb.count", "operator": "Exists"} in exprs
    assert {
        "key": "nvidia.com/gpu.product",
        "operator": "In",
        "values": ["NVIDIA-H100-80GB-HBM3"],
    } in exprs


def test_gpu_affinity_is_added_to_every_user_term() -> None:
    user = {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
    aff = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [user, user]}
        }
    }
    objs = render_chart(CHART, values(gpu={"enabled": True}, affinity=aff))
    terms = pod_spec(objs)["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert len(terms) == 2
    for term in terms:
        keys = [e["key"] for e in term["matchExpressions"]]
        assert keys == ["zone", "nvidia.com/gpu.present"]


def test_no_gpu_when_disabled() -> None:
    objs = render_chart(CHART, values())
    spec = pod_spec(objs)
    assert "runtimeClassName" not in spec
    assert not any(k.startswith("nvidia.com/") for k in container(objs)["resources"]["limits"])
    assert "affinity" not in spec and "tolerations" not in spec


def test_gpu_values_are_schema_checked() -> None:
    assert "resourceName" in fails(values(gpu={"enabled": True, "resourceName": "gpu"}))
    assert "count" in fails(values(gpu={"enabled": True, "count": 0}))


# --------------------------------------------------------------------------- network policy


def _ports(rule: dict[str, Any]) -> set[tuple[Any, str]]:
    return {(p["port"], p["protocol"]) for p in rule["ports"]}


def test_network_policy_defaults_deny_everything_but_prometheus_and_dns() -> None:
    np = find(render_chart(CHART, values()), "NetworkPolicy")["spec"]
    assert np["policyTypes"] == ["Ingress", "Egress"]
    assert np["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "r"
    (prom,) = np["ingress"]
    assert _ports(prom) == {("http", "TCP")}
    assert prom["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        }
    ]
    (dns,) = np["egress"]
    assert _ports(dns) == {(53, "UDP"), (53, "TCP")}


def test_network_policy_with_configured_peers_and_endpoints() -> None:
    objs = render_chart(CHART, ROLLOUT_GPU_CSI)
    np = find(objs, "NetworkPolicy")["spec"]
    clients, prom = np["ingress"]
    assert clients["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}}},
        {"podSelector": {"matchLabels": {"app": "client"}}},
    ]
    # Only the serving ports, which name the container's 8080/8081.
    assert _ports(clients) == {("http", "TCP"), ("grpc", "TCP")}
    assert {p["name"] for p in container(objs)["ports"]} == {"http", "grpc"}
    assert _ports(prom) == {("http", "TCP")}
    egress = np["egress"]
    assert [r["to"] for r in egress[:2]] in (
        [[{"ipBlock": {"cidr": "10.30.0.7/32"}}], [{"ipBlock": {"cidr": "10.20.0.0/16"}}]],
        [[{"ipBlock": {"cidr": "10.20.0.0/16"}}], [{"ipBlock": {"cidr": "10.30.0.7/32"}}]],
    )
    by_cidr = {r["to"][0]["ipBlock"]["cidr"]: _ports(r) for r in egress[:2]}
    assert by_cidr == {
        "10.20.0.0/16": {(443, "TCP"), (5000, "TCP")},
        "10.30.0.7/32": {(8200, "TCP")},
    }
    assert _ports(egress[2]) == {(53, "UDP"), (53, "TCP")}
    assert len(egress) == 3
    for rule in np["ingress"] + egress:
        assert rule.get("from", rule.get("to")), f"a rule without peers allows everyone: {rule}"
        assert rule["ports"], f"a rule without ports allows every port: {rule}"


def test_network_policy_closed_when_everything_is_off() -> None:
    vals = values(networkPolicy={"prometheus": None, "egress": {"dns": {"enabled": False}}})
    np = find(render_chart(CHART, vals), "NetworkPolicy")["spec"]
    assert np["ingress"] == [] and np["egress"] == []
    assert np["policyTypes"] == ["Ingress", "Egress"]


def test_network_policy_cidr_is_schema_checked() -> None:
    bad = values(networkPolicy={"egress": {"kms": [{"cidr": "kms.example.com"}]}})
    assert "cidr" in fails(bad)


# --------------------------------------------------------------------------- rollout


def test_canary_steps_and_analysis() -> None:
    objs = render_chart(CHART, ROLLOUT_GPU_CSI)
    steps = find(objs, "Rollout")["spec"]["strategy"]["canary"]["steps"]
    assert [next(iter(s)) for s in steps] == [
        "setWeight",
        "pause",
        "analysis",
        "setWeight",
        "pause",
        "analysis",
        "setWeight",
    ]
    assert [s["setWeight"] for s in steps if "setWeight" in s] == [10, 50, 100]
    templates = [o for o in objs if o["kind"] == "AnalysisTemplate"]
    assert sorted(o["metadata"]["name"] for o in templates) == [
        f"{FULL}-latency", f"{FULL}-success-rate"]
    canary = find(objs, "Rollout")["spec"]["strategy"]["canary"]
    # Separate canary and stable Services, as Argo Rollouts uses them; both rendered.
    assert (canary["canaryService"], canary["stableService"]) == (f"{FULL}-canary",
                                                                  f"{FULL}-stable")
    for role in ("canary", "stable"):
        svc = find(objs, "Service", f"{FULL}-{role}")
        assert svc["spec"]["selector"] == find(objs, "Service", FULL)["spec"]["selector"]
    for step in (s for s in steps if "analysis" in s):
        assert step["analysis"]["templates"] == [
            {"templateName": f"{FULL}-success-rate"}, {"templateName": f"{FULL}-latency"}]
        passed = {a["name"]: a["value"] for a in step["analysis"]["args"]}
        assert passed == {"canary-service": f"{FULL}-canary",
                          "stable-service": f"{FULL}-stable", "namespace": "ns"}
        for template in templates:
            assert set(passed) == {a["name"] for a in template["spec"]["args"]}
    metrics = {m["name"]: m for t in templates for m in t["spec"]["metrics"]}
    assert sorted(metrics) == ["canary-requests", "p99-latency", "p99-latency-vs-stable",
                               "success-rate", "success-rate-vs-stable"]
    for metric in metrics.values():
        prom = metric["provider"]["prometheus"]
        assert prom["address"] == "http://prometheus-operated.monitoring.svc:9090"
        assert "{{args.canary-service}}" in prom["query"]
        assert metric["successCondition"].startswith(
            "len(result) > 0 && !isNaN(result[0]) && result[0] ")
        assert (metric["interval"], metric["count"], metric["failureLimit"],
                metric["inconclusiveLimit"]) == ("1m", 5, 1, 0)
    assert "{{args.stable-service}}" in metrics["success-rate-vs-stable"]["provider"][
        "prometheus"]["query"]
    assert metrics["success-rate"]["successCondition"].endswith("result[0] >= 0.99")
    assert metrics["canary-requests"]["successCondition"].endswith("result[0] >= 20")
    assert metrics["p99-latency"]["successCondition"].endswith("result[0] <= 0.5")


def test_pause_without_duration_waits_for_a_promotion() -> None:
    objs = render_chart(CHART, values(rollout={"enabled": True, "pauseDuration": ""}))
    steps = find(objs, "Rollout")["spec"]["strategy"]["canary"]["steps"]
    assert {"pause": {}} in steps


def test_rollout_without_analysis_only_pauses() -> None:
    objs = render_chart(CHART, VARIANTS["rollout-no-analysis"])
    steps = find(objs, "Rollout")["spec"]["strategy"]["canary"]["steps"]
    assert not any("analysis" in s for s in steps)
    assert not any(o["kind"] == "AnalysisTemplate" for o in objs)


def test_custom_steps_are_used_verbatim() -> None:
    steps = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 100}]
    objs = render_chart(CHART, values(rollout={"enabled": True, "steps": steps}))
    assert find(objs, "Rollout")["spec"]["strategy"]["canary"]["steps"] == steps


def test_rollout_weights_must_increase() -> None:
    assert "must increase" in fails(values(rollout={"enabled": True, "weights": [50, 10]}))


# --------------------------------------------------------------------------- scaling, monitoring


def test_hpa_scales_on_requests_per_second() -> None:
    objs = render_chart(CHART, ROLLOUT_GPU_CSI)
    hpa = find(objs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "name": FULL,
    }
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "secure_runtime_requests_per_second"
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "20"}
    # The HPA owns the replica count: the workload must not fight it.
    assert "replicas" not in workload(objs)["spec"]
    assert (
        find(render_chart(CHART, values()), "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"][
            "kind"
        ]
        == "Deployment"
    )


def test_replicas_without_hpa() -> None:
    objs = render_chart(CHART, NO_HPA)
    assert not any(o["kind"] == "HorizontalPodAutoscaler" for o in objs)
    assert workload(objs)["spec"]["replicas"] == 3
    bad = values(autoscaling={"minReplicas": 5, "maxReplicas": 2})
    assert "maxReplicas" in fails(bad)


def test_selectors_match_the_pods() -> None:
    objs = render_chart(CHART, values())
    pod_labels = workload(objs)["spec"]["template"]["metadata"]["labels"]

    def selects(selector: dict[str, str]) -> bool:
        return bool(selector) and all(pod_labels.get(k) == v for k, v in selector.items())

    svc = find(objs, "Service")
    assert selects(svc["spec"]["selector"])
    assert {(p["name"], p["port"]) for p in svc["spec"]["ports"]} == {
        ("http", 8080),
        ("grpc", 8081),
    }
    assert selects(find(objs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"])
    assert selects(find(objs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"])
    sm = find(objs, "ServiceMonitor")
    assert all(
        svc["metadata"]["labels"][k] == v for k, v in sm["spec"]["selector"]["matchLabels"].items()
    )
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"


def test_standard_labels_on_every_object() -> None:
    for obj in render_chart(CHART, ROLLOUT_GPU_CSI):
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "secure-runtime", obj["kind"]
        assert labels["app.kubernetes.io/instance"] == "r"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "secure-runtime-0.1.0"
        assert obj["metadata"]["namespace"] == "ns"


# --------------------------------------------------------------------------- values schema, notes


def test_unknown_values_are_rejected() -> None:
    """A typo (imgae) must not silently fall back to a default."""
    message = fails(values(imgae={"digest": IMAGE_DIGEST}))
    assert "imgae" in message


def test_notes_name_the_digest_and_what_to_provide() -> None:
    notes = render_notes(CHART, values())
    assert f"@{IMAGE_DIGEST}" in notes
    assert f"Secret {FULL}-kek" in notes
    assert "only DNS" in notes
