"""The admission-webhook chart, rendered by the real Helm v4 engine and schema-checked.

Every variant is rendered with helm-python-sdk (no helm binary, no cluster), linted, and
each object validated: core kinds (the webhook configurations are core
admissionregistration.k8s.io/v1 objects) with kubernetes-validate's official schemas,
cert-manager's Issuer/Certificate with the CRD schemas registered below. The container's
arguments are parsed by the real ``pipeline admission serve`` click command, the shipped
policies are compared byte for byte with policies/, and the rendered Deployment must pass
our own ``pipeline policy check``.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from pipeline import cli
from pipeline._cli.admission import serve_command
from pipeline.policy import load_policies
from pipeline.policy.workloads import KINDS
from tests.support.helm import (
    ChartRenderError,
    find,
    lint_chart,
    merged_values,
    register_crd_schema,
    render_chart,
    render_notes,
    validate_manifests,
)

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "helm" / "admission-webhook"
POLICIES = ROOT / "policies"
IMAGE_DIGEST = "sha256:" + "c3" * 32
CA_BUNDLE = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUIKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo="
REQUIRED = {"image": {"digest": IMAGE_DIGEST}, "caBundle": CA_BUNDLE}
FULL = "r-admission-webhook"
SERVICE_HOST = f"{FULL}.ns.svc"

# cert-manager.io/v1 (cert-manager deploy/crds/crd-{issuers,certificates}.yaml): required
# fields, the names of every level this chart uses, the types of the fields it sets.
_STR: dict[str, Any] = {"type": "string"}
_META = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": _STR,
        "namespace": _STR,
        "labels": {"type": "object"},
        "annotations": {"type": "object"},
    },
}


def _closed(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


def _top(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return _closed(
        {
            "apiVersion": {"const": "cert-manager.io/v1"},
            "kind": {"const": kind},
            "metadata": _META,
            "spec": spec,
            "status": {"type": "object"},
        },
        ["apiVersion", "kind", "metadata", "spec"],
    )


register_crd_schema(
    "cert-manager.io/v1",
    "Issuer",
    _top(
        "Issuer",
        {
            **_closed(
                {n: {"type": "object"} for n in ("acme", "ca", "selfSigned", "vault", "venafi")}
            ),
            "minProperties": 1,
            "maxProperties": 1,
        },
    ),
)
register_crd_schema(
    "cert-manager.io/v1",
    "Certificate",
    _top(
        "Certificate",
        _closed(
            {
                "secretName": _STR,
                "commonName": _STR,
                "dnsNames": {"type": "array", "items": _STR},
                "duration": _STR,
                "renewBefore": _STR,
                "usages": {
                    "type": "array",
                    "items": {
                        "enum": [
                            "signing",
                            "digital signature",
                            "content commitment",
                            "key encipherment",
                            "key agreement",
                            "data encipherment",
                            "cert sign",
                            "crl sign",
                            "encipher only",
                            "decipher only",
                            "any",
                            "server auth",
                            "client auth",
                            "code signing",
                            "email protection",
                            "s/mime",
                            "ipsec end system",
                            "ipsec tunnel",
                            "ipsec user",
                            "timestamping",
                            "ocsp signing",
                            "microsoft sgc",
                            "netscape sgc",
                        ]
                    },
                },
                "privateKey": _closed(
                    {
                        "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                        "size": {"type": "integer"},
                        "rotationPolicy": {"enum": ["Never", "Always"]},
                        "encoding": {"enum": ["PKCS1", "PKCS8"]},
                    }
                ),
                "issuerRef": _closed({"name": _STR, "kind": _STR, "group": _STR}, ["name"]),
                "secretTemplate": {"type": "object"},
                "subject": {"type": "object"},
            },
            ["secretName", "issuerRef"],
        ),
    ),
)


def values(**overrides: Any) -> dict[str, Any]:
    """The required values, deep-merged with ``overrides``."""
    return merged_values(REQUIRED, **overrides)


CERT_MANAGER = {
    "image": {"digest": IMAGE_DIGEST},
    "certManager": {"enabled": True},
    "serviceMonitor": {"enabled": True},
}
EVERYTHING = values(
    registryCA={"configMap": "registry-ca"},
    serviceMonitor={"enabled": True},
    webhook={"excludeNamespaces": ["cert-manager"], "timeoutSeconds": 15,
             "answerMarginSeconds": 4},
    server={"cacheTTL": 60, "logLevel": "debug"},
    networkPolicy={
        "ingress": {"from": [{"ipBlock": {"cidr": "10.0.0.0/24"}}]},
        "egress": {"registry": [{"cidr": "10.20.0.0/16", "ports": [443, 5000]}]},
    },
)
VARIANTS = {
    "defaults": values(),
    "cert-manager": CERT_MANAGER,
    "cert-manager-issuer": {
        **CERT_MANAGER,
        "certManager": {
            "enabled": True,
            "issuerRef": {"name": "platform-ca", "kind": "ClusterIssuer"},
        },
    },
    "everything": EVERYTHING,
}


def container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    (only,) = find(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return only


def fails(vals: dict[str, Any]) -> str:
    with pytest.raises(ChartRenderError) as info:
        render_chart(CHART, vals)
    return str(info.value)


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render_chart(CHART, vals) for name, vals in VARIANTS.items()}


# --------------------------------------------------------------------------- render + schemas


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_object_validates_and_lint_is_clean(name: str, rendered: dict) -> None:
    validate_manifests(rendered[name], "1.30")
    assert lint_chart(CHART, VARIANTS[name]) == []


def test_validates_on_oldest_supported_kubernetes(rendered: dict) -> None:
    validate_manifests(rendered["everything"], "1.27")


def test_defaults_render_the_expected_objects(rendered: dict) -> None:
    assert sorted(o["kind"] for o in rendered["defaults"]) == [
        "ConfigMap",
        "ConfigMap",
        "Deployment",
        "MutatingWebhookConfiguration",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
        "ValidatingWebhookConfiguration",
    ]
    assert FULL in render_notes(CHART, values())


# --------------------------------------------------------------------------- the CLI contract


def test_args_parse_with_the_real_serve_command(rendered: dict) -> None:
    c = container(rendered["defaults"])
    assert c["command"] == ["pipeline"]
    assert c["args"][:2] == ["admission", "serve"]
    # The subcommand path exists in the real CLI.
    group = cli.main.get_command(click.Context(cli.main), "admission")
    assert group is not None and group.get_command(click.Context(group), "serve") is serve_command
    ctx = serve_command.make_context("serve", list(c["args"][2:]))
    p = ctx.params
    shipped = sorted(f.name for f in (CHART / "files" / "policies").glob("*.yaml"))
    assert [q.name for q in p["policy_dirs"]] == shipped
    assert all(str(q).startswith("/etc/admission-webhook/policies/") for q in p["policy_dirs"])
    assert str(p["image_policy"]) == "/etc/admission-webhook/image-policy/image-policy.yaml"
    assert str(p["tls_cert"]) == "/etc/admission-webhook/tls/tls.crt"
    assert str(p["tls_key"]) == "/etc/admission-webhook/tls/tls.key"
    assert (p["host"], p["port"], p["cache_ttl"], p["registry_timeout"]) == (
        "0.0.0.0",
        8443,
        300.0,
        7.0,  # timeoutSeconds 10 - answerMarginSeconds 3
    )
    assert (p["max_request_bytes"], p["log_level"], p["insecure_registry"]) == (
        4194304,
        "info",
        False,
    )
    assert c["ports"] == [{"name": "https", "containerPort": 8443, "protocol": "TCP"}]


def test_every_flag_of_every_variant_is_a_serve_option(rendered: dict) -> None:
    known = {o for prm in serve_command.params for o in prm.opts}
    for name, objs in rendered.items():
        flags = {a for a in container(objs)["args"] if a.startswith("--")}
        assert flags <= known, (name, flags - known)
    args = container(rendered["everything"])["args"]
    assert args[args.index("--ca-file") + 1] == "/etc/admission-webhook/registry-ca/ca.crt"
    assert args[args.index("--registry-timeout") + 1] == "11"  # 15 - 4
    assert args[args.index("--log-level") + 1] == "debug"


def test_tls_and_policy_mounts_match_the_args(rendered: dict) -> None:
    objs = rendered["defaults"]
    c = container(objs)
    spec = find(objs, "Deployment")["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in spec["volumes"]}
    assert all(m.get("readOnly") for n, m in mounts.items() if n != "tmp")
    assert mounts["tls"]["mountPath"] == "/etc/admission-webhook/tls"
    assert vols["tls"]["secret"]["secretName"] == f"{FULL}-tls"
    assert vols["policies"]["configMap"]["name"] == f"{FULL}-policies"
    assert vols["image-policy"]["configMap"]["name"] == f"{FULL}-image-policy"
    assert vols["image-keys"]["configMap"]["name"] == f"{FULL}-image-keys"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["PIPELINE_RELEASE_PUBLIC_KEY"] == "/etc/admission-webhook/keys/release.pub"
    # Every ${VAR} of the shipped image policy is set, or the server exits 3.
    used = set(re.findall(r"\$\{(\w+)\}", (CHART / "files" / "image-policy.yaml").read_text()))
    assert used and used <= set(env)


# --------------------------------------------------------------------------- shipped policies


def test_shipped_policies_are_identical_to_the_repository_policies() -> None:
    shipped = {p.name: p.read_bytes() for p in (CHART / "files" / "policies").iterdir()}
    shipped["image-policy.yaml"] = (CHART / "files" / "image-policy.yaml").read_bytes()
    repo = {p.name: p.read_bytes() for p in POLICIES.glob("*.yaml")}
    assert shipped == repo, "copy policies/*.yaml into helm/admission-webhook/files/"


def test_configmaps_carry_the_policies_and_they_compile(rendered: dict, tmp_path: Path) -> None:
    objs = rendered["defaults"]
    data = find(objs, "ConfigMap", f"{FULL}-policies")["data"]
    assert set(data) == {p.name for p in POLICIES.glob("*.yaml")} - {"image-policy.yaml"}
    for name, text in data.items():
        assert yaml.safe_load_all(text) and list(yaml.safe_load_all(text)) == list(
            yaml.safe_load_all((POLICIES / name).read_text())
        )
        (tmp_path / name).write_text(text)
    assert load_policies(tmp_path).policies  # the server's loader accepts them
    image = find(objs, "ConfigMap", f"{FULL}-image-policy")["data"]["image-policy.yaml"]
    assert yaml.safe_load(image) == yaml.safe_load((POLICIES / "image-policy.yaml").read_text())


def test_a_policy_change_rolls_the_pods() -> None:
    a = find(render_chart(CHART, values()), "Deployment")
    b = find(render_chart(CHART, values(fullnameOverride="other")), "Deployment")
    ann_a = a["spec"]["template"]["metadata"]["annotations"]["checksum/policies"]
    ann_b = b["spec"]["template"]["metadata"]["annotations"]["checksum/policies"]
    assert re.fullmatch("[0-9a-f]{64}", ann_a) and ann_a != ann_b


# --------------------------------------------------------------------------- digest only


def test_image_is_referenced_by_digest(rendered: dict) -> None:
    for objs in rendered.values():
        image = container(objs)["image"]
        assert image.endswith("@" + IMAGE_DIGEST)
        assert ":" not in image.split("@")[0].rsplit("/", 1)[-1]


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ({"digest": ""}, "image.digest is required: admission-webhook deploys by digest only"),
        ({"digest": "latest"}, 'image.digest "latest" is not a digest'),
        ({"digest": "sha256:" + "A" * 64}, "is not a digest"),
        ({"tag": "1.2"}, 'image.tag "1.2" is set but tags are not accepted'),
        ({"repository": "reg.example:5000/pipeline:v1"}, "carries a tag"),
        ({"repository": f"reg.example/pipeline@{IMAGE_DIGEST}"}, "must not contain a digest"),
    ],
)
def test_tags_and_missing_digests_fail_rendering(image: dict, message: str) -> None:
    assert message in fails(values(image=image))


def test_a_registry_port_is_not_a_tag() -> None:
    objs = render_chart(CHART, values(image={"repository": "reg.example:5000/pipeline"}))
    assert container(objs)["image"] == f"reg.example:5000/pipeline@{IMAGE_DIGEST}"


# --------------------------------------------------------------------------- pod security


def test_restricted_pod_security(rendered: dict) -> None:
    objs = rendered["defaults"]
    dep = find(objs, "Deployment")
    assert dep["spec"]["replicas"] == 2
    spec = dep["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert find(objs, "ServiceAccount")["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(objs)["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(key)


def test_probes_use_https_health_endpoints(rendered: dict) -> None:
    c = container(rendered["defaults"])
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "https", "scheme": "HTTPS"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "https", "scheme": "HTTPS"}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_rendered_deployment_passes_pipeline_policy_check(
    name: str, rendered: dict, tmp_path: Path
) -> None:
    manifest = tmp_path / "deployment.yaml"
    manifest.write_text(yaml.safe_dump(find(rendered[name], "Deployment")))
    assert cli.run(["policy", "check", str(manifest), "--policies", str(POLICIES)]) == 0


def test_policy_check_is_not_a_rubber_stamp(rendered: dict, tmp_path: Path) -> None:
    dep = copy.deepcopy(find(rendered["defaults"], "Deployment"))
    dep["spec"]["template"]["spec"]["containers"][0]["securityContext"][
        "allowPrivilegeEscalation"
    ] = True
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(yaml.safe_dump(dep))
    assert cli.run(["policy", "check", str(manifest), "--policies", str(POLICIES)]) != 0


# --------------------------------------------------------------------------- webhooks


def _webhooks(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        kind: find(objs, kind)["webhooks"][0]
        for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
    }


def _registered(hook: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(group, version, resource, scope) of every rule of a webhook, sorted, repeats kept."""
    return sorted(
        (group, version, resource, rule["scope"])
        for rule in hook["rules"] for group in rule["apiGroups"]
        for version in rule["apiVersions"] for resource in rule["resources"]
    )


def _judged() -> list[tuple[str, str, str, str]]:
    """The same for every kind the webhook judges (pipeline.policy.workloads.KINDS)."""
    return sorted((k.group, k.version, k.resource, "Namespaced" if k.namespaced else "Cluster")
                  for k in KINDS)


def test_chart_registers_exactly_the_kinds_the_webhook_judges(rendered: dict) -> None:
    """A kind registered but not judged would be denied on every request; a kind judged but
    not registered would never be sent. Both lists must be the same, each kind once."""
    assert len(_judged()) == len(set(_judged())) == len(KINDS) >= 17
    for hook in _webhooks(rendered["defaults"]).values():
        assert _registered(hook) == _judged()


def test_webhook_configurations_fail_closed(rendered: dict) -> None:
    hooks = _webhooks(rendered["defaults"])
    paths = {k: h["clientConfig"]["service"]["path"] for k, h in hooks.items()}
    assert paths == {
        "ValidatingWebhookConfiguration": "/validate",
        "MutatingWebhookConfiguration": "/mutate",
    }
    for hook in hooks.values():
        assert hook["failurePolicy"] == "Fail"
        assert hook["sideEffects"] == "None"
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["timeoutSeconds"] == 10
        assert hook["clientConfig"]["service"] == {
            **hook["clientConfig"]["service"],
            "name": FULL,
            "namespace": "ns",
            "port": 443,
        }
        assert hook["clientConfig"]["caBundle"] == CA_BUNDLE
        assert _registered(hook) == _judged()
        assert all(rule["operations"] == ["CREATE", "UPDATE"] for rule in hook["rules"])
        (expr,) = hook["namespaceSelector"]["matchExpressions"]
        assert expr == {
            "key": "kubernetes.io/metadata.name",
            "operator": "NotIn",
            "values": ["kube-system", "ns"],
        }


def test_failure_policy_ignore_is_refused_by_the_schema() -> None:
    assert "failurePolicy" in fails(values(webhook={"failurePolicy": "Ignore"}))


def test_extra_excluded_namespaces(rendered: dict) -> None:
    for hook in _webhooks(rendered["everything"]).values():
        (expr,) = hook["namespaceSelector"]["matchExpressions"]
        assert expr["values"] == ["kube-system", "ns", "cert-manager"]
        assert hook["timeoutSeconds"] == 15


def test_service_routes_443_to_the_container_port(rendered: dict) -> None:
    (port,) = find(rendered["defaults"], "Service")["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (443, "https")


def test_registry_timeout_must_stay_below_the_webhook_timeout() -> None:
    assert "must be below webhook.timeoutSeconds" in fails(
        values(webhook={"timeoutSeconds": 10, "answerMarginSeconds": 10})
    )
    # The budget is derived, not set: the old key is refused by the schema.
    assert "registryTimeout" in fails(values(server={"registryTimeout": 3}))


def _server_args(manifests: list) -> list[str]:
    deployment = find(manifests, "Deployment")
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"]
                    if "--registry-timeout" in (c.get("args") or [])]
    return container["args"]


def test_registry_budget_is_derived_from_the_api_server_timeout(rendered: dict) -> None:
    """--registry-timeout = timeoutSeconds - answerMarginSeconds: 10 - 3, and 15 - 4."""
    for variant, budget in (("defaults", "7"), ("everything", "11")):
        args = _server_args(rendered[variant])
        assert args[args.index("--registry-timeout") + 1] == budget, variant


def test_secrets_in_env_and_unset_image_policy_variables_are_refused() -> None:
    env = [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
    assert "reads a Secret" in fails(values(server={"extraEnv": env}))
    # null deletes a default key in Helm.
    assert "PIPELINE_PLATFORM_KEY_B" in fails(
        values(imagePolicy={"env": {"PIPELINE_PLATFORM_KEY_B": None}})
    )


def test_unknown_values_are_refused_by_the_schema() -> None:
    assert "webhok" in fails(values(webhok={}))


# --------------------------------------------------------------------------- TLS


def test_without_cert_manager_ca_bundle_is_required() -> None:
    no_ca = {"image": {"digest": IMAGE_DIGEST}}
    assert "caBundle is required unless certManager.enabled" in fails(no_ca)
    not_pem = values(caBundle="aGVsbG8=")
    assert "base64-encoded PEM" in fails(not_pem)


def test_without_cert_manager_there_is_no_certificate(rendered: dict) -> None:
    objs = rendered["defaults"]
    assert not [o for o in objs if o["apiVersion"].startswith("cert-manager.io/")]
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        assert "annotations" not in find(objs, kind)["metadata"]


def test_cert_manager_issues_the_serving_certificate_and_injects_the_ca(rendered: dict) -> None:
    objs = rendered["cert-manager"]
    issuer = find(objs, "Issuer")
    assert issuer["spec"] == {"selfSigned": {}}
    cert = find(objs, "Certificate")
    assert cert["spec"]["secretName"] == f"{FULL}-tls"
    assert cert["spec"]["issuerRef"] == {"name": issuer["metadata"]["name"], "kind": "Issuer"}
    assert SERVICE_HOST in cert["spec"]["dnsNames"]
    assert "server auth" in cert["spec"]["usages"]
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        obj = find(objs, kind)
        assert obj["metadata"]["annotations"] == {
            "cert-manager.io/inject-ca-from": f"ns/{cert['metadata']['name']}"
        }
        assert "caBundle" not in obj["webhooks"][0]["clientConfig"]
    spec = find(objs, "Deployment")["spec"]["template"]["spec"]
    (tls,) = [v for v in spec["volumes"] if v["name"] == "tls"]
    assert tls["secret"]["secretName"] == cert["spec"]["secretName"]
    monitor = find(objs, "ServiceMonitor")["spec"]["endpoints"][0]
    assert monitor["scheme"] == "https" and monitor["tlsConfig"]["serverName"] == SERVICE_HOST


def test_cert_manager_with_an_existing_issuer(rendered: dict) -> None:
    objs = rendered["cert-manager-issuer"]
    assert not [o for o in objs if o["kind"] == "Issuer"]
    assert find(objs, "Certificate")["spec"]["issuerRef"] == {
        "name": "platform-ca",
        "kind": "ClusterIssuer",
    }


# --------------------------------------------------------------------------- network, PDB


def test_network_policy_defaults(rendered: dict) -> None:
    np = find(rendered["defaults"], "NetworkPolicy")["spec"]
    assert np["policyTypes"] == ["Ingress", "Egress"]
    # The API server's source is not selectable: only the webhook port is open, from anywhere.
    assert np["ingress"] == [{"ports": [{"port": "https", "protocol": "TCP"}]}]
    (dns,) = np["egress"]
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}


def test_network_policy_with_control_plane_cidr_and_registry(rendered: dict) -> None:
    np = find(rendered["everything"], "NetworkPolicy")["spec"]
    api, prom = np["ingress"]
    assert api["from"] == [{"ipBlock": {"cidr": "10.0.0.0/24"}}]
    assert prom["ports"] == [{"port": "https", "protocol": "TCP"}]
    registry, _dns = np["egress"]
    assert registry["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
    assert [p["port"] for p in registry["ports"]] == [443, 5000]


def test_pod_disruption_budget(rendered: dict) -> None:
    pdb = find(rendered["defaults"], "PodDisruptionBudget")["spec"]
    assert pdb["minAvailable"] == 1
    assert pdb["selector"]["matchLabels"]["app.kubernetes.io/name"] == "admission-webhook"
