"""The admission webhook over real HTTPS, with real signed images in a real registry.

The Kubernetes API server cannot run here, so its requests are recorded AdmissionReview
exchanges (tests/fixtures/admission/recorded-*.json, checked against the hand-written
admission.k8s.io/v1 schema beside them). The only edits at test time are placeholders
in image strings ({{REGISTRY}}, {{DIGEST_APP}}, ...) for this run's registry and digests.
Everything else is real: the uvicorn server with TLS on 127.0.0.1, docker-registry,
cosign-format signatures made by the project's signer, the default CEL policies.
"""

from __future__ import annotations

import base64
import copy
import http.client
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.admission.cache import VerdictCache
from pipeline.admission.decide import Decider
from pipeline.admission.server import bind, build_server, create_app
from pipeline.oci import RegistryOptions
from pipeline.oci.reference import Reference
from pipeline.oci.transfer import push_layout
from pipeline.policy.check import DEFAULT_POLICY_DIR
from pipeline.policy.image_policy import ImagePolicy
from pipeline.policy.vap import load_policies
from pipeline.policy.workloads import workload_kind
from pipeline.signing.image import sign_image
from pipeline.signing.keypair import create_signing_keypair
from tests.fixtures_registry import RegistryServer, _write_certificates, write_image
from tests.support.slow_clients import disconnect_mid_body, wait_until

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "admission"
SCHEMA = json.loads((FIXTURES / "admissionreview-v1.schema.json").read_text())
RECORDED = sorted(FIXTURES.glob("recorded-*.json"))


def _dead_registry() -> str:
    """127.0.0.1:<a port nobody listens on>: a registry that is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


class Webhook:
    def __init__(self, url: str, ca: Path, subs: dict[str, str], cache: VerdictCache):
        self.url, self.subs, self.cache, self.ca = url, subs, cache, ca
        self.port = int(url.rsplit(":", 1)[1])
        self.http = httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), timeout=30)

    def review(self, name: str) -> dict[str, Any]:
        text = (FIXTURES / name).read_text()
        for key, value in self.subs.items():
            text = text.replace("{{" + key + "}}", value)
        return json.loads(text)

    def post(self, path: str, body: Any, raw: bytes | None = None) -> httpx.Response:
        content = raw if raw is not None else json.dumps(body).encode()
        return self.http.post(self.url + path, content=content,
                              headers={"content-type": "application/json"})

    def decide(self, path: str, review: dict[str, Any]) -> dict[str, Any]:
        reply = self.post(path, review)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        jsonschema.validate(body, SCHEMA)
        assert body["response"]["uid"] == review["request"]["uid"]
        return body["response"]


@pytest.fixture(scope="module")
def webhook(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Webhook]:
    work = tmp_path_factory.mktemp("admission")
    release, release_pub = work / "release.key", work / "release.pub"
    other, other_pub = work / "other.key", work / "other.pub"
    create_signing_keypair(release, release_pub)
    create_signing_keypair(other, other_pub)
    digests = {}
    for repo, key in (("adm/app", release), ("adm/unsigned", None), ("adm/other", other),
                      ("adm/model", release)):
        layout, _ = write_image(work / repo.replace("/", "-"),
                                layers=[{"app.txt": f"{repo} {work}\n".encode()}])
        ref = Reference.parse(f"{registry.host}/{repo}:v1")
        with registry.client() as client:
            digests[repo] = push_layout(layout, ref, client, tag="v1")
        if key is not None:
            sign_image(f"{registry.host}/{repo}@{digests[repo]}", key,
                       registry_options=RegistryOptions(insecure=True))
    dead = _dead_registry()
    policy = work / "image-policy.yaml"
    policy.write_text(
        "version: 1\ndefault: deny\nrequireDigest: true\nrules:\n"
        f"  - name: adm\n    images: ['{registry.host}/adm/*', '{dead}/adm/*']\n"
        "    authorities:\n      - key: release.pub\n")
    cache = VerdictCache(ttl=300)
    decider = Decider(load_policies(DEFAULT_POLICY_DIR), ImagePolicy.load(policy),
                      RegistryOptions(insecure=True, retries=1, timeout=5, backoff=0.01), cache)
    ca, cert, key = _write_certificates(work)
    server = build_server(create_app(decider, max_request_bytes=256 * 1024), cert, key)
    sock = bind("127.0.0.1", 0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    subs = {"REGISTRY": registry.host, "DEAD_REGISTRY": dead, "DIGEST_APP": digests["adm/app"],
            "DIGEST_UNSIGNED": digests["adm/unsigned"], "DIGEST_OTHER": digests["adm/other"],
            "DIGEST_MODEL": digests["adm/model"]}
    hook = Webhook(f"https://127.0.0.1:{sock.getsockname()[1]}", ca, subs, cache)
    yield hook
    hook.http.close()
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: p.name)
def test_recorded_reviews_are_schema_valid(path: Path) -> None:
    jsonschema.validate(json.loads(path.read_text()), SCHEMA)


def test_recorded_fixture_set_is_complete() -> None:
    assert len(RECORDED) >= 14


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: p.name)
def test_recorded_reviews_name_their_kind_consistently(path: Path) -> None:
    """request.kind/resource are what the API server sends for the object: a judged kind's
    registered group, version and plural (the unknown-kind fixture excepted)."""
    request = json.loads(path.read_text())["request"]
    gvk, gvr = request["kind"], request["resource"]
    obj = request["object"] or request["oldObject"]  # a DELETE sends only oldObject
    assert obj["apiVersion"] == (f"{gvk['group']}/{gvk['version']}" if gvk["group"]
                                 else gvk["version"])
    assert obj["kind"] == gvk["kind"] and request["requestKind"] == gvk
    kind = workload_kind(obj)
    if path.name == "recorded-unknown-kind.json":
        assert kind is None
    else:
        assert kind is not None
        assert (gvr["group"], gvr["version"], gvr["resource"]) == (
            kind.group, kind.version, kind.resource)
        assert ("namespace" in request) == kind.namespaced


#: Recorded reviews of KServe, Argo and unknown kinds: (fixture, allowed, words in the denial).
KIND_CASES = [
    ("recorded-inferenceservice-signed.json", True, ()),
    ("recorded-inferenceservice-unsigned.json", False,
     ("image-policy: predictor container kserve-container: image", "no signatures found")),
    ("recorded-inferenceservice-s3-model.json", False,
     ("'s3://models/sklearn/iris'", "no signature can be verified")),
    ("recorded-inferenceservice-model-tag.json", False, ("predictor model storageUri",)),
    ("recorded-servingruntime-signed.json", True, ()),
    ("recorded-cronworkflow-signed.json", True, ()),
    ("recorded-workflow-unsigned-sidecar.json", False,
     ("template train sidecar metrics: image", "no signatures found")),
    ("recorded-unknown-kind.json", False,
     ("kind 'ModelDeployment' (apiVersion 'ml.example.com/v1')", "remove its resource")),
]


@pytest.mark.parametrize("name, allowed, words", KIND_CASES, ids=[c[0] for c in KIND_CASES])
def test_kserve_argo_and_unknown_kinds(webhook: Webhook, name: str, allowed: bool,
                                       words: tuple[str, ...]) -> None:
    answer = webhook.decide("/validate", webhook.review(name))
    assert answer["allowed"] is allowed, answer
    for word in words:
        assert word in answer["status"]["message"], answer["status"]["message"]
    if not allowed:
        assert answer["status"]["code"] == 403


def test_mutate_pins_a_model_reference_keeping_its_scheme(webhook: Webhook) -> None:
    review = webhook.review("recorded-inferenceservice-model-tag.json")
    answer = webhook.decide("/mutate", review)
    assert answer["allowed"] is True, answer
    operations = json.loads(base64.b64decode(answer["patch"]))
    uri = f"oci://{webhook.subs['REGISTRY']}/adm/model:v1"
    assert operations == [
        {"op": "test", "path": "/spec/predictor/model/storageUri", "value": uri},
        {"op": "replace", "path": "/spec/predictor/model/storageUri",
         "value": f"{uri}@{webhook.subs['DIGEST_MODEL']}"}]
    mutated = copy.deepcopy(review)
    mutated["request"]["object"] = _apply(review["request"]["object"], operations)
    assert webhook.decide("/validate", mutated)["allowed"] is True


def test_signed_digest_pinned_compliant_pod_is_allowed(webhook: Webhook) -> None:
    answer = webhook.decide("/validate", webhook.review("recorded-pod-signed-digest.json"))
    assert answer["allowed"] is True, answer
    assert "status" not in answer and "patch" not in answer


def test_unsigned_image_is_denied(webhook: Webhook) -> None:
    answer = webhook.decide("/validate", webhook.review("recorded-pod-unsigned.json"))
    assert answer["allowed"] is False
    assert answer["status"]["code"] == 403
    assert "image-policy" in answer["status"]["message"]
    assert "no signatures found" in answer["status"]["message"]


def test_image_signed_by_another_key_is_denied(webhook: Webhook) -> None:
    answer = webhook.decide("/validate", webhook.review("recorded-pod-other-key.json"))
    assert answer["allowed"] is False
    assert "not signed by a trusted key" in answer["status"]["message"]


def test_cel_violation_is_denied_with_every_policy_message(webhook: Webhook) -> None:
    answer = webhook.decide("/validate", webhook.review("recorded-pod-privileged.json"))
    assert answer["allowed"] is False
    message = answer["status"]["message"]
    assert "policy restricted-pod-security: privileged containers are not allowed" in message
    assert "allowPrivilegeEscalation: false" in message
    assert "image-policy" not in message  # the image itself is signed: only CEL refuses


def _apply(document: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 test/replace, as the API server applies them (the only ops we emit)."""
    out = copy.deepcopy(document)
    for op in operations:
        *parents, last = op["path"].lstrip("/").split("/")
        node: Any = out
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        index: Any = int(last) if isinstance(node, list) else last
        if op["op"] == "test":
            assert node[index] == op["value"], op
        else:
            assert op["op"] == "replace", op
            node[index] = op["value"]
    return out


def test_tag_only_image_is_pinned_by_mutate_then_allowed_by_validate(webhook: Webhook) -> None:
    review = webhook.review("recorded-deployment-tag.json")
    refused = webhook.decide("/validate", review)
    assert refused["allowed"] is False
    assert "pinned by digest" in refused["status"]["message"]

    answer = webhook.decide("/mutate", review)
    assert answer["allowed"] is True, answer
    assert answer["patchType"] == "JSONPatch"
    operations = json.loads(base64.b64decode(answer["patch"]))
    digest = webhook.subs["DIGEST_APP"]
    expected = f"{webhook.subs['REGISTRY']}/adm/app:v1@{digest}"
    assert operations[-1] == {"op": "replace", "path": "/spec/template/spec/containers/0/image",
                              "value": expected}
    assert any(digest in w for w in answer["warnings"])

    mutated = copy.deepcopy(review)
    mutated["request"]["object"] = _apply(review["request"]["object"], operations)
    assert webhook.decide("/validate", mutated)["allowed"] is True


def test_mutate_denies_a_tag_whose_image_the_policy_refuses(webhook: Webhook) -> None:
    review = webhook.review("recorded-deployment-tag.json")
    container = review["request"]["object"]["spec"]["template"]["spec"]["containers"][0]
    container["image"] = f"{webhook.subs['REGISTRY']}/adm/unsigned:v1"
    answer = webhook.decide("/mutate", review)
    assert answer["allowed"] is False and "patch" not in answer
    assert "no signatures found" in answer["status"]["message"]


def test_registry_down_is_denied_with_the_reason(webhook: Webhook) -> None:
    answer = webhook.decide("/validate", webhook.review("recorded-pod-registry-down.json"))
    assert answer["allowed"] is False
    assert webhook.subs["DEAD_REGISTRY"] in answer["status"]["message"]


def test_mutate_with_registry_down_is_denied(webhook: Webhook) -> None:
    review = webhook.review("recorded-deployment-tag.json")
    container = review["request"]["object"]["spec"]["template"]["spec"]["containers"][0]
    container["image"] = f"{webhook.subs['DEAD_REGISTRY']}/adm/app:v1"
    answer = webhook.decide("/mutate", review)
    assert answer["allowed"] is False
    assert "cannot resolve" in answer["status"]["message"]


def _malformed(webhook: Webhook) -> dict[str, bytes]:
    good = webhook.review("recorded-pod-signed-digest.json")

    def edited(change) -> bytes:
        doc = copy.deepcopy(good)
        change(doc)
        return json.dumps(doc).encode()

    return {
        "not JSON": b"{not json",
        "not an object": b"[1, 2]",
        "wrong apiVersion": edited(lambda d: d.update(apiVersion="admission.k8s.io/v1beta1")),
        "wrong kind": edited(lambda d: d.update(kind="TokenReview")),
        "no request": edited(lambda d: d.pop("request")),
        "no uid": edited(lambda d: d["request"].pop("uid")),
        "no object": edited(lambda d: d["request"].pop("object")),
        "not an operation": edited(lambda d: d["request"].update(operation="PATCH")),
        "too large": edited(lambda d: d["request"]["object"]["metadata"].update(
            annotations={"x": "y" * 300_000})),
    }


def test_malformed_reviews_are_http_400_never_allowed(webhook: Webhook) -> None:
    for case, body in _malformed(webhook).items():
        for path in ("/validate", "/mutate"):
            reply = webhook.post(path, None, raw=body)
            assert reply.status_code == 400, (case, path, reply.text)
            assert set(reply.json()) == {"error", "code"}, (case, reply.text)
            assert reply.json()["error"].startswith("malformed AdmissionReview: "), case


@pytest.mark.parametrize("path", ["/validate", "/mutate"])
def test_delete_and_connect_are_allowed_without_judging(webhook: Webhook, path: str) -> None:
    """Operations the webhook does not judge get ``allowed: true`` (as peers answer), not
    HTTP 400: a configuration registered for DELETE must not block deleting pods. The
    DELETE is a recorded review (object null, oldObject the pod); the image in oldObject is
    unsigned here, so an answer that judged it would deny."""
    review = webhook.review("recorded-pod-delete.json")
    review["request"]["oldObject"]["spec"]["containers"][0]["image"] = (
        f"{webhook.subs['REGISTRY']}/adm/unsigned@{webhook.subs['DIGEST_UNSIGNED']}")
    answer = webhook.decide(path, review)
    assert answer == {"uid": review["request"]["uid"], "allowed": True}
    connect = copy.deepcopy(review)
    connect["request"].update(operation="CONNECT", oldObject=None, subResource="exec",
                              object={"apiVersion": "v1", "kind": "PodExecOptions",
                                      "command": ["sh"]})
    assert webhook.decide(path, connect)["allowed"] is True
    metrics = webhook.http.get(webhook.url + "/metrics").text
    webhook_name = path.strip("/")
    assert f'admission_decisions_total{{result="not_judged",webhook="{webhook_name}"}}' in metrics


def test_health_readiness_and_metrics(webhook: Webhook) -> None:
    assert webhook.http.get(webhook.url + "/healthz").json() == {"status": "ok"}
    ready = webhook.http.get(webhook.url + "/readyz").json()
    assert ready["status"] == "ready" and ready["policies"] >= 5
    webhook.decide("/validate", webhook.review("recorded-pod-unsigned.json"))
    metrics = webhook.http.get(webhook.url + "/metrics").text
    assert 'admission_decisions_total{result="denied",webhook="validate"}' in metrics
    assert 'admission_denials_total{policy="image-policy",webhook="validate"}' in metrics
    assert "admission_decision_seconds_bucket" in metrics
    assert "admission_image_cache_hits_total" in metrics


def test_warm_cache_answers_without_verifying_again(webhook: Webhook) -> None:
    review = webhook.review("recorded-pod-signed-digest.json")
    webhook.decide("/validate", review)
    hits = webhook.cache.hits
    assert webhook.decide("/validate", review)["allowed"] is True
    assert webhook.cache.hits == hits + 1


# --------------------------------------------------------------------------- hostile input


def test_deeply_nested_review_is_400_and_the_keep_alive_connection_stays_usable(
        webhook: Webhook) -> None:
    """5000 nested lists inside a review used to be a RecursionError, a 500 and a closed
    connection. Through one real keep-alive HTTPS connection: 400, then the same socket
    answers the next review."""
    good = webhook.review("recorded-pod-signed-digest.json")
    hostile = copy.deepcopy(good)
    hostile["request"]["object"]["metadata"]["annotations"] = {"x": "{{DEEP}}"}
    body = json.dumps(hostile).encode().replace(b'"{{DEEP}}"', b"[" * 5000 + b"]" * 5000)
    context = ssl.create_default_context(cafile=str(webhook.ca))
    conn = http.client.HTTPSConnection("127.0.0.1", webhook.port, context=context, timeout=30)
    try:
        for path in ("/validate", "/mutate"):
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            reply = conn.getresponse()
            answer = json.loads(reply.read())
            assert reply.status == 400, answer
            assert "nested deeper than" in answer["error"]
            assert (reply.getheader("connection") or "").lower() != "close"
            sock = conn.sock
            assert sock is not None
            conn.request("POST", path, body=json.dumps(good).encode(),
                         headers={"Content-Type": "application/json"})
            reply = conn.getresponse()
            decided = json.loads(reply.read())
            assert reply.status == 200 and decided["response"]["allowed"] is True, decided
            assert conn.sock is sock  # the same connection: it was never closed
    finally:
        conn.close()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_clients_that_go_away_mid_body_are_not_logged_as_errors(webhook: Webhook) -> None:
    """Slowloris-style clients: TLS, headers, part of a body sent slowly, then gone. No
    ERROR record and no traceback from uvicorn or the webhook (they used to log one
    ClientDisconnect traceback each); each is counted in
    admission_client_disconnects_total, and the webhook keeps answering."""
    records = _Records()
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "uvicorn", "pipeline",
                                                    "pipeline.admission", "")]
    for logger in loggers:
        logger.addHandler(records)

    def disconnects() -> float:
        text = webhook.http.get(webhook.url + "/metrics").text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "admission_client_disconnects_total" and \
                        sample.labels == {"webhook": "validate"}:
                    return sample.value
        return 0.0

    context = ssl.create_default_context(cafile=str(webhook.ca))
    before, clients = disconnects(), 5
    try:
        disconnect_mid_body(webhook.port, "/validate",
                            (b'{"apiVersion": ', b'"admission.k8s.io/v1", '),
                            clients=clients, context=context)
        assert wait_until(disconnects, before + clients) == before + clients
    finally:
        for logger in loggers:
            logger.removeHandler(records)
    bad = [r for r in records.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]
    assert webhook.decide("/validate", webhook.review("recorded-pod-signed-digest.json"))[
        "allowed"] is True
