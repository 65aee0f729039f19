"""ClusterImagePolicy, warn mode, namespaced rules and models verified at admission.

Real parts only: docker-registry on 127.0.0.1, models sealed and signed by the project's
sealer (examples/tiny), cosign-format image signatures and attestations, the webhook over
TLS (in a thread, and once as the ``pipeline admission serve`` process). The reviews are
the recorded AdmissionReviews of tests/fixtures/admission with their placeholders filled.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pipeline.admission.cache import VerdictCache
from pipeline.admission.decide import Decider
from pipeline.cli import run
from pipeline.distribution import build_manifest, push_model
from pipeline.oci import RegistryOptions
from pipeline.oci.digest import sha256_digest
from pipeline.oci.reference import Reference
from pipeline.oci.transfer import push_layout
from pipeline.policy.check import DEFAULT_POLICY_DIR
from pipeline.policy.image_policy import ImagePolicy
from pipeline.policy.vap import load_policies
from pipeline.sealing.artifact import pull_sealed_model
from pipeline.sealing.seal import seal_model
from pipeline.signing.attestation import attest
from pipeline.signing.image import sign_image
from pipeline.signing.keypair import create_signing_keypair
from tests.fixtures_registry import RegistryServer, _write_certificates, write_image
from tests.support.webhook import WebhookClient, serve

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
TINY = ROOT / "examples" / "tiny"
INSECURE = RegistryOptions(insecure=True)
POD = "recorded-pod-signed-digest.json"
RUNTIME_POD = "recorded-pod-secure-runtime.json"
CUSTOM = "https://cosign.sigstore.dev/attestation/v1"


def _policy(host: str, release_pem: str) -> str:
    pem = textwrap.indent(release_pem, " " * 10)
    return f"""\
# ours: the settings, two rules (one rolling out in warn mode) and the model rules
version: 1
default: deny
rules:
  - name: app
    images: ["{host}/rm/app"]
    authorities: [{{key: release.pub}}]
  - name: rollout
    images: ["{host}/rm/unsigned"]
    authorities: [{{key: release.pub}}]
    mode: warn
models:
  rules:
    - name: tiny
      models: ["{host}/mdl/**"]
      authorities: [{{key: release.pub}}]
      keyProviders: [local]
---
# ours, namespaced: in team-b the app must also be signed by the other key
version: 1
metadata: {{namespace: team-b}}
rules:
  - name: team-b-only
    images: ["{host}/rm/app"]
    authorities: [{{key: other.pub}}]
---
apiVersion: policy.sigstore.dev/v1beta1
kind: ClusterImagePolicy
metadata:
  name: demo-attested
spec:
  images:
  - glob: "{host}/rm/demo**"
  authorities:
  - name: verify custom attestation
    key:
      data: |
{pem}
    attestations:
    - name: custom-match-predicate
      predicateType: custom
      policy:
        type: rego
        data: |
          package sigstore
          default isCompliant = false
          isCompliant {{
            input.predicateType == "{CUSTOM}"
            input.predicate.Data == "foobar e2e test"
          }}
---
apiVersion: policy.secure-model-pipeline.dev/v1alpha1
kind: ClusterModelPolicy
metadata:
  name: hsm-only
spec:
  models:
  - glob: "{host}/mdl-hsm/**"
  authorities:
  - name: release
    key:
      data: |
{pem}
  keyProviders: [pkcs11]
---
apiVersion: policy.secure-model-pipeline.dev/v1alpha1
kind: ClusterModelPolicy
metadata:
  name: attested-models
spec:
  models:
  - glob: "{host}/mdl-att/**"
  authorities:
  - name: release
    key:
      data: |
{pem}
  keyProviders: [local]
  attestations:
  - name: provenance
    predicateType: slsaprovenance
"""


def _push_image(registry: RegistryServer, work: Path, repo: str, key: Path | None,
                data: str | None = None) -> str:
    layout, _ = write_image(work / repo.replace("/", "-"),
                            layers=[{"app.txt": f"{repo} {work}\n".encode()}])
    with registry.client() as client:
        digest = push_layout(layout, Reference.parse(f"{registry.host}/{repo}:v1"), client,
                             tag="v1")
    ref = f"{registry.host}/{repo}@{digest}"
    if key is not None:
        sign_image(ref, key, registry_options=INSECURE)
    if data is not None:
        attest(ref, CUSTOM, {"Data": data}, key, registry_options=INSECURE)
    return digest


@pytest.fixture(scope="module")
def world(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("rollout-models")
    release, other = work / "release.key", work / "other.key"
    create_signing_keypair(release, work / "release.pub")
    create_signing_keypair(other, work / "other.pub")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIPELINE_KEYRING", str(work / "keys" / "keyring.json"))
        patch.delenv("PIPELINE_TRUST", raising=False)
        patch.chdir(work)
        assert run(["keys", "create", "kek"]) == 0
        seal_model(TINY, work / "good.sealed", key="kek", sign_key=release)
        seal_model(TINY, work / "other.sealed", key="kek", sign_key=other)
    host = registry.host
    models = {}
    for name, sealed in (("mdl/tiny", "good"), ("mdl/untrusted", "other"),
                         ("mdl-hsm/tiny", "good"), ("mdl-att/bare", "good"),
                         ("mdl-att/attested", "good")):
        digest = push_model(work / f"{sealed}.sealed", f"{host}/{name}:v1",
                            registry_options=INSECURE)
        models[name] = f"{host}/{name}@{digest}"
    attest(models["mdl-att/attested"], "slsaprovenance",
           {"buildDefinition": {"buildType": "https://secure-model-pipeline.dev/build/v1"}},
           release, registry_options=INSECURE)
    digests = {
        "app": _push_image(registry, work, "rm/app", release),
        "unsigned": _push_image(registry, work, "rm/unsigned", None),
        "demo-good": _push_image(registry, work, "rm/demo-good", release, "foobar e2e test"),
        "demo-bad": _push_image(registry, work, "rm/demo-bad", release, "something else"),
    }
    policy_file = work / "image-policy.yaml"
    policy_file.write_text(_policy(host, (work / "release.pub").read_text()))
    cache = VerdictCache(ttl=300)
    decider = Decider(load_policies(DEFAULT_POLICY_DIR), ImagePolicy.load(policy_file),
                      RegistryOptions(insecure=True, retries=1, timeout=5, backoff=0.01), cache)
    subs = {"REGISTRY": host, "DIGEST_APP": digests["app"], "MODEL_REF": models["mdl/tiny"],
            "RUNTIME_IMAGE": f"{host}/rm/app@{digests['app']}"}
    with serve(decider, work, subs) as client:
        yield {"client": client, "models": models, "digests": digests, "host": host,
               "work": work, "cache": cache, "policy": policy_file}


def _pod(client: WebhookClient, image: str, namespace: str = "team-a") -> dict[str, Any]:
    review = client.review(POD)
    review["request"]["namespace"] = namespace
    review["request"]["object"]["metadata"]["namespace"] = namespace
    review["request"]["object"]["spec"]["containers"][0]["image"] = image
    return review


def _runtime(client: WebhookClient, model: str) -> dict[str, Any]:
    return client.review(RUNTIME_POD, MODEL_REF=model)


# -- ClusterImagePolicy with a Rego attestation policy ------------------------------------------
def test_cluster_image_policy_rego_attestation_admits_and_refuses(world: dict[str, Any]) -> None:
    client, host, digests = world["client"], world["host"], world["digests"]
    good = client.decide("/validate", _pod(client, f"{host}/rm/demo-good@{digests['demo-good']}"))
    assert good["allowed"] is True, good
    bad = client.decide("/validate", _pod(client, f"{host}/rm/demo-bad@{digests['demo-bad']}"))
    assert bad["allowed"] is False
    message = bad["status"]["message"]
    assert "rule demo-attested: no authority passed" in message
    assert "custom-match-predicate" in message and "none satisfies its policy" in message


# -- warn mode ----------------------------------------------------------------------------------
def test_warn_mode_allows_with_a_warning_and_counts_the_would_be_denial(
        world: dict[str, Any]) -> None:
    client, host = world["client"], world["host"]
    image = f"{host}/rm/unsigned@{world['digests']['unsigned']}"
    answer = client.decide("/validate", _pod(client, image))
    assert answer["allowed"] is True and "status" not in answer
    [warning] = [w for w in answer["warnings"] if "would deny" in w]
    assert "rule rollout (warn mode) would deny" in warning and "no signatures" in warning
    assert 'admission_would_deny_total{rule="rollout",webhook="validate"} 1.0' in \
        client.metrics()


# -- namespaced rules ---------------------------------------------------------------------------
def test_a_namespaced_rule_applies_only_in_its_namespace(world: dict[str, Any]) -> None:
    client, host = world["client"], world["host"]
    image = f"{host}/rm/app@{world['digests']['app']}"
    assert client.decide("/validate", _pod(client, image, "team-a"))["allowed"] is True
    denied = client.decide("/validate", _pod(client, image, "team-b"))
    assert denied["allowed"] is False
    assert "rule team-b-only" in denied["status"]["message"]
    # The team-a verdict is cached per namespace: team-a still passes, team-b still fails.
    assert client.decide("/validate", _pod(client, image, "team-a"))["allowed"] is True
    assert client.decide("/validate", _pod(client, image, "team-b"))["allowed"] is False


# -- models -------------------------------------------------------------------------------------
def test_a_signed_sealed_model_by_digest_is_admitted_and_cached(world: dict[str, Any]) -> None:
    client, cache = world["client"], world["cache"]
    review = _runtime(client, world["models"]["mdl/tiny"])
    answer = client.decide("/validate", review)
    assert answer["allowed"] is True, answer
    hits = cache.hits
    assert client.decide("/validate", review)["allowed"] is True
    assert cache.hits >= hits + 2  # the image verdict and the model verdict


def test_admission_and_load_agree_on_the_bytes(world: dict[str, Any], tmp_path: Path) -> None:
    """What the runtime pulls for the admitted reference is the admitted manifest: the
    registry client checks the manifest against the digest and every blob against it."""
    admitted = Reference.parse(world["models"]["mdl/tiny"])
    pulled = pull_sealed_model(admitted, tmp_path / "m", registry_options=INSECURE)
    assert sha256_digest(build_manifest(pulled)[0]) == admitted.digest


@pytest.mark.parametrize("model, words", [
    ("mdl/tiny:v1", ("tag-only reference refused", "by digest")),
    ("mdl/untrusted", ("model signature not trusted: untrusted key",)),
    ("missing", ("is missing from the registry",)),
    ("mdl-hsm/tiny", ("key provider 'local' is not allowed", "pkcs11")),
    ("mdl-att/bare", ("attestation", "https://slsa.dev/provenance/v1")),
])
def test_models_that_must_not_run_are_denied_saying_why(
        world: dict[str, Any], model: str, words: tuple[str, ...]) -> None:
    client, models, host = world["client"], world["models"], world["host"]
    if model == "missing":
        reference = f"{host}/mdl/tiny@{sha256_digest(b'never pushed')}"
    else:
        reference = models.get(model) or f"{host}/{model}"
    answer = client.decide("/validate", _runtime(client, reference))
    assert answer["allowed"] is False, answer
    message = answer["status"]["message"]
    assert "model-policy: container secure-runtime --model: model" in message
    for word in words:
        assert word in message, message


def test_required_model_attestation_present_is_admitted(world: dict[str, Any]) -> None:
    client = world["client"]
    answer = client.decide("/validate", _runtime(client, world["models"]["mdl-att/attested"]))
    assert answer["allowed"] is True, answer


def test_annotation_and_argument_must_agree(world: dict[str, Any]) -> None:
    client, models = world["client"], world["models"]
    review = _runtime(client, models["mdl/tiny"])
    review["request"]["object"]["metadata"]["annotations"][
        "secure-model-pipeline.dev/model"] = models["mdl/untrusted"]
    answer = client.decide("/validate", review)
    assert answer["allowed"] is False
    assert "admission and load must name the same model" in answer["status"]["message"]


# -- the command: `pipeline admission serve --image-policy CIP.yaml` ----------------------------
def test_admission_serve_accepts_a_cluster_image_policy_file(world: dict[str, Any]) -> None:
    work, host = world["work"], world["host"]
    only_cip = list(yaml.safe_load_all(world["policy"].read_text()))[2]
    assert only_cip["kind"] == "ClusterImagePolicy"
    policy = work / "cip-only.yaml"
    policy.write_text(yaml.safe_dump(only_cip))
    (work / "cli").mkdir()
    ca, cert, key = _write_certificates(work / "cli")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "admission", "serve", "--policies",
         str(DEFAULT_POLICY_DIR), "--image-policy", str(policy), "--tls-cert", str(cert),
         "--tls-key", str(key), "--host", "127.0.0.1", "--port", str(port),
         "--insecure-registry"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        url = f"https://127.0.0.1:{port}"
        http = httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), timeout=30)
        deadline = time.monotonic() + 60
        while True:
            try:
                ready = http.get(url + "/readyz").json()
                break
            except httpx.HTTPError:
                assert process.poll() is None, process.communicate()[1].decode()
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert ready["imageRules"] == 1
        cli = WebhookClient(url, ca, world["client"].subs)
        good = f"{host}/rm/demo-good@{world['digests']['demo-good']}"
        assert cli.decide("/validate", _pod(cli, good))["allowed"] is True
        delete = cli.review("recorded-pod-delete.json")
        assert cli.decide("/validate", delete) == {"uid": delete["request"]["uid"],
                                                    "allowed": True}
        cli.http.close()
        http.close()
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)
    # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught.
    assert process.returncode in (0, -signal.SIGTERM), process.returncode
