"""sigstore policy-controller ClusterImagePolicy documents loaded into the one engine.

The policies are written the way policy-controller's documentation and e2e test data
write them (``kind: ClusterImagePolicy``, ``images[].glob``, ``authorities[]`` with
``key.data`` / ``keyless.identities`` / ``ctlog``, ``attestations[].policy``), with keys
generated here. What the engine cannot honour must be refused when the file is loaded,
naming the field; nothing is silently ignored.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline.cli import run
from pipeline.errors import EXIT_CONFIG, ConfigError
from pipeline.oci.reference import Reference
from pipeline.policy.cluster_image_policy import RegoPolicy, to_rules
from pipeline.policy.image_policy import ImagePolicy
from pipeline.policy.model_policy import model_references
from pipeline.signing.keypair import create_signing_keypair

DIGEST = "sha256:" + "ab" * 32


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> str:
    work = tmp_path_factory.mktemp("cip")
    create_signing_keypair(work / "k.key", work / "k.pub")
    return (work / "k.pub").read_text()


def _indent(text: str, spaces: int) -> str:
    return textwrap.indent(text, " " * spaces)


def _cip(pem: str, authorities: str = "", extra: str = "", name: str = "image-policy-key"
         ) -> str:
    authorities = authorities or f"""\
  - key:
      data: |
{_indent(pem, 8)}"""
    return f"""\
apiVersion: policy.sigstore.dev/v1beta1
kind: ClusterImagePolicy
metadata:
  name: {name}
spec:
{extra}  images:
  - glob: "**demo**"
  authorities:
{authorities}
"""


def _load(tmp_path: Path, text: str) -> ImagePolicy:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return ImagePolicy.load(path)


def test_key_and_keyless_authorities_become_one_rule_of_alternatives(
        pem: str, tmp_path: Path) -> None:
    authorities = f"""\
  - name: release-key
    key:
      data: |
{_indent(pem, 8)}
  - keyless:
      url: https://fulcio.sigstore.dev
      identities:
      - issuer: https://token.actions.githubusercontent.com
        subjectRegExp: ^https://github.com/example-org/demo/
    ctlog:
      url: https://rekor.sigstore.dev
"""
    policy = _load(tmp_path, _cip(pem, authorities))
    [rule] = policy.rules
    assert rule.name == "image-policy-key" and rule.mode == "enforce"
    assert [a.name for a in rule.alternatives] == ["release-key", "authority-1"]
    assert len(rule.alternatives[0].keys) == 1
    keyless = rule.alternatives[1].keyless[0]
    assert keyless.issuer == "https://token.actions.githubusercontent.com"
    # Go's MatchString finds the pattern anywhere; our subjects match whole.
    assert keyless.subject == ".*(?:^https://github.com/example-org/demo/).*"
    # policy-controller matches globs against the whole reference.
    assert rule.matches(Reference.parse(f"reg.example/team/demo-app@{DIGEST}"))
    assert rule.matches(Reference.parse("reg.example/demo:v1"))
    assert not rule.matches(Reference.parse(f"reg.example/team/app@{DIGEST}"))
    # No rule of ours: images no policy matches are denied (default deny).
    assert policy.default_allow is False and policy.models is None


def test_warn_mode_and_docker_hub_shorthand(pem: str, tmp_path: Path) -> None:
    text = _cip(pem, extra="  mode: warn\n").replace('"**demo**"', '"*"')
    [rule] = _load(tmp_path, text).rules
    assert rule.mode == "warn" and not rule.enforcing
    assert rule.matches(Reference.parse(f"busybox@{DIGEST}"))
    assert not rule.matches(Reference.parse(f"quay.io/busybox@{DIGEST}"))


def test_static_authorities_and_rego_attestations(pem: str, tmp_path: Path) -> None:
    authorities = f"""\
  - name: verify custom attestation
    key:
      data: |
{_indent(pem, 8)}
    attestations:
    - name: custom-match-predicate
      predicateType: custom
      policy:
        type: rego
        data: |
          package sigstore
          default isCompliant = false
          isCompliant {{
            input.predicateType == "https://cosign.sigstore.dev/attestation/v1"
            input.predicate.Data == "foobar e2e test"
          }}
  - static:
      action: fail
      message: only signed demo images
"""
    [rule] = _load(tmp_path, _cip(pem, authorities)).rules
    first, second = rule.alternatives
    [requirement] = first.attestations
    assert requirement.predicate_type == "https://cosign.sigstore.dev/attestation/v1"
    good = {"predicateType": "https://cosign.sigstore.dev/attestation/v1",
            "predicate": {"Data": "foobar e2e test"}}
    assert requirement.policy.check(good) is None
    assert "isCompliant is not true" in requirement.policy.check(
        {**good, "predicate": {"Data": "something else"}})
    assert "isCompliant is not true" in requirement.policy.check({})  # undefined input
    assert second.static == "fail" and second.message == "only signed demo images"


#: (what is changed, the words the error must contain).
def _refusals(pem: str) -> list[tuple[str, str, tuple[str, ...]]]:
    key = f"""\
  - key:
      data: |
{_indent(pem, 8)}"""
    return [
        ("secretRef", "  - key:\n      secretRef:\n        name: cosign-pub\n",
         ("authorities[0].key.secretRef", "Secret", "key.data")),
        ("kms", "  - key:\n      kms: awskms:///arn:aws:kms:us-east-1:1:key/x\n",
         ("authorities[0].key.kms", "KMS")),
        ("hash", key + "\n      hashAlgorithm: sha512\n", ("hashAlgorithm", "sha512")),
        ("ctlog on a key", key + "\n    ctlog:\n      url: http://rekor.rekor-system.svc\n",
         ("authorities[0].ctlog", "transparency-log")),
        ("issuerRegExp", "  - keyless:\n      identities:\n      - issuerRegExp: .*k8s.*\n"
                         "        subjectRegExp: .*default\n",
         ("identities[0].issuerRegExp", "matched exactly")),
        ("trustRootRef", "  - keyless:\n      trustRootRef: my-root\n      identities:\n"
                         "      - issuer: https://x\n        subject: a\n",
         ("keyless.trustRootRef", "TrustRoot")),
        ("cue", key + "\n    attestations:\n    - name: a\n      predicateType: custom\n"
                      "      policy:\n        type: cue\n        data: 'predicate: Data: \"x\"'\n",
         ("attestations[0].policy.type", "CUE", "Rego")),
        ("remote policy", key + "\n    attestations:\n    - name: a\n      predicateType: vuln\n"
                                "      policy:\n        type: rego\n        remote:\n"
                                "          url: https://example.com/p.rego\n",
         ("policy.remote", "inline")),
        ("keyless attestations", "  - keyless:\n      identities:\n      - issuer: https://x\n"
                                 "        subject: a\n    attestations:\n    - name: a\n"
                                 "      predicateType: vuln\n",
         ("authorities[0].attestations", "keys only")),
        ("source", key + "\n    source:\n    - oci: registry.example/signatures\n",
         ("authorities[0].source", "another repository")),
        ("bundle format", key + "\n    signatureFormat: bundle\n",
         ("signatureFormat", "legacy")),
        ("timestamps", key + "\n    rfc3161timestamp:\n      trustRootRef: tsa\n",
         ("rfc3161timestamp",)),
        ("unknown field", key + "\n    treshold: 2\n", ("unknown field(s) treshold",)),
        ("bad rego", key + "\n    attestations:\n    - name: a\n      predicateType: vuln\n"
                           "      policy:\n        type: rego\n        data: |\n"
                           "          package sigstore\n          isCompliant {\n",
         ("policy.data", "not valid Rego")),
        ("rego package", key + "\n    attestations:\n    - name: a\n      predicateType: vuln\n"
                               "      policy:\n        type: rego\n        data: |\n"
                               "          package example\n          isCompliant := true\n",
         ("package sigstore",)),
        ("two kinds", key + "\n    keyless:\n      identities:\n      - issuer: https://x\n"
                            "        subject: a\n", ("exactly one of key, keyless, static",)),
    ]


def test_fields_we_cannot_honour_are_refused_naming_the_field(pem: str, tmp_path: Path
                                                             ) -> None:
    for case, authorities, words in _refusals(pem):
        with pytest.raises(ConfigError) as caught:
            _load(tmp_path, _cip(pem, authorities.rstrip("\n")))
        message = str(caught.value)
        assert message.startswith(str(tmp_path / "policy.yaml")), (case, message)
        assert "ClusterImagePolicy image-policy-key" in message, (case, message)
        for word in words:
            assert word in message, (case, message)


@pytest.mark.parametrize("spec, words", [
    ("  match:\n  - group: apps\n    version: v1\n    resource: deployments\n",
     ("spec.match", "resource selectors")),
    ("  policy:\n    type: cue\n    data: 'x: 1'\n", ("spec.policy",)),
    ("  mode: audit\n", ("spec.mode", "enforce or warn")),
])
def test_policy_level_fields_we_cannot_honour(pem: str, tmp_path: Path, spec: str,
                                              words: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, _cip(pem, extra=spec))
    for word in words:
        assert word in str(caught.value)


def test_invalid_glob_and_empty_authorities(pem: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"spec.images\[0\].glob: invalid glob"):
        _load(tmp_path, _cip(pem).replace('"**demo**"', '"demo[0-9]"'))
    with pytest.raises(ConfigError, match="spec.authorities: must list at least one"):
        _load(tmp_path, _cip(pem).split("  authorities:")[0] + "  authorities: []\n")


def test_our_documents_beside_cluster_image_policies(pem: str, tmp_path: Path) -> None:
    """One document of ours carries the settings; namespaced ones only rules."""
    key = tmp_path / "k.pub"
    key.write_text(pem)
    ours = ("version: 1\ndefault: allow\nrules:\n  - name: team\n"
            "    images: ['reg.example/team/*']\n    authorities: [{key: k.pub}]\n"
            "    mode: audit\n")
    namespaced = ("version: 1\nmetadata: {namespace: team-b}\nrules:\n  - name: only-b\n"
                  "    images: ['reg.example/b/*']\n    authorities: [{key: k.pub}]\n")
    policy = _load(tmp_path, "---\n".join([ours, _cip(pem), namespaced]))
    assert [r.name for r in policy.rules] == ["team", "image-policy-key", "only-b"]
    assert policy.default_allow and policy.namespaced
    assert policy.rules[0].mode == "audit"
    ref = Reference.parse(f"reg.example/b/app@{DIGEST}")
    assert [r.name for r in policy.rules_for(ref, "team-b")] == ["only-b"]
    assert policy.rules_for(ref, "team-a") == []
    assert [r.name for r in policy.rules_for(ref, None)] == ["only-b"]  # unknown: strict
    with pytest.raises(ConfigError, match="a second image-policy document"):
        _load(tmp_path, "---\n".join([ours, ours]))
    with pytest.raises(ConfigError, match="default can only be set in the document without"):
        _load(tmp_path, namespaced + "default: allow\n")
    with pytest.raises(ConfigError, match="reach outside this document's namespace"):
        _load(tmp_path, namespaced.replace("    authorities", "    namespaces: [x]\n"
                                                              "    authorities"))
    with pytest.raises(ConfigError, match="'mode' must be one of enforce, warn, audit"):
        _load(tmp_path, ours.replace("mode: audit", "mode: dryrun"))


def test_cli_refuses_a_cluster_image_policy_it_cannot_honour(
        pem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.policy.check import DEFAULT_POLICY_DIR
    from tests.fixtures_registry import _write_certificates

    _, cert, key = _write_certificates(tmp_path)
    policy = tmp_path / "cip.yaml"
    policy.write_text(_cip(pem, "  - key:\n      kms: gcpkms://projects/p/keys/k"))
    code = run(["admission", "serve", "--policies", str(DEFAULT_POLICY_DIR), "--image-policy",
                str(policy), "--tls-cert", str(cert), "--tls-key", str(key), "--port", "0"])
    assert code == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "spec.authorities[0].key.kms" in err and "Traceback" not in err


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["images", "glob", "authorities", "key", "keyless", "data", "static",
                         "action", "identities", "issuer", "subject", "subjectRegExp",
                         "attestations", "predicateType", "policy", "type", "mode", "name",
                         "ctlog", "url", "x"]), inner, max_size=4),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(json_values)
def test_any_spec_parses_or_is_a_config_error(spec: Any) -> None:
    """The parser never fails with anything but ConfigError, whatever the spec holds."""
    document = {"apiVersion": "policy.sigstore.dev/v1beta1", "kind": "ClusterImagePolicy",
                "metadata": {"name": "fuzz"}, "spec": spec}
    try:
        rules = to_rules(document, "document 0", Path("."))
    except ConfigError:
        return
    assert len(rules) == 1 and rules[0].alternatives


def test_rego_policy_is_compiled_once_per_thread() -> None:
    policy = RegoPolicy("package sigstore\nisCompliant { input.ok == true }\n", "here", "p")
    assert policy.check({"ok": True}) is None
    assert policy.check({"ok": False}) is not None
    assert policy.check({"ok": True}) is None  # the same interpreter, a new input


# -- where pods name their model ------------------------------------------------------------
def _pod(args: list[str], annotations: dict[str, str] | None = None,
         command: list[str] | None = None) -> dict[str, Any]:
    container = {"name": "secure-runtime", "image": f"r/app@{DIGEST}",
                 "command": command or ["python", "-m", "secure_runtime"], "args": args}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"template": {"metadata": {"annotations": annotations or {}},
                                  "spec": {"containers": [container]}}}}


def test_model_references_from_args_and_the_chart_annotation() -> None:
    ref = f"reg.example/models/tiny@{DIGEST}"
    slots, refused = model_references(_pod(["--model", ref, "--port", "8080"]))
    assert [(s.label, s.reference) for s in slots] == [
        ("container secure-runtime --model", ref)] and not refused
    slots, refused = model_references(_pod([f"--model={ref}"],
                                           {"secure-model-pipeline.dev/model": ref}))
    assert len(slots) == 1 and not refused
    _, refused = model_references(_pod(["--model", ref], {
        "secure-model-pipeline.dev/model": "reg.example/models/tiny@sha256:" + "cd" * 32}))
    assert "admission and load must name the same model" in refused[0]
    _, refused = model_references(_pod(["--model", "/models/tiny"]))
    assert "cannot be verified from the registry" in refused[0]
    _, refused = model_references(_pod(["--port", "1"]))
    assert "without --model" in refused[0]
    _, refused = model_references(_pod(["--model", ref, "--model", ref.replace("ab", "cd")]))
    assert "names several models" in refused[0]
    _, refused = model_references(_pod(["--model", "$(MODEL)"]))
    assert "expanded from the environment" in refused[0]
    # A container that is not the secure runtime is not judged by its --model flag.
    assert model_references(_pod(["--model", "gpt2"], command=["vllm", "serve"])) == ([], [])
    doc = yaml.safe_load(yaml.safe_dump(_pod([], {"secure-model-pipeline.dev/model": ref},
                                             command=["sh"])))
    assert [s.label for s in model_references(doc)[0]] == [
        "annotation secure-model-pipeline.dev/model"]


model_specs = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["rules", "name", "models", "authorities", "key", "keyProviders",
                         "attestations", "type", "mode", "namespaces", "x"]), inner,
        max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(model_specs, json_values)
@example(None, 5)
@example({"rules": [{"models": 1}]}, {"--model": 1})
def test_any_models_section_or_pod_parses_or_is_refused(section: Any, spec: Any) -> None:
    """The model policy parser fails only with ConfigError; model_references never fails."""
    try:
        ImagePolicy.from_documents([{"version": 1, "models": section}])
    except ConfigError:
        pass
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"annotations": spec},
           "spec": {"containers": [{"name": "c", "command": ["python", "-m",
                                                              "secure_runtime"],
                                    "args": spec}]}}
    slots, refused = model_references(pod)
    assert all(isinstance(s.reference, str) for s in slots)
    assert all(isinstance(r, str) for r in refused)
