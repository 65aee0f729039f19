"""AdmissionReview parsing, answers, the verdict cache and the CLI's start-up errors.

The property test is the fail-closed guarantee: arbitrary JSON sent to the app never
gets ``allowed: true``; only a well-formed review of a compliant object could, and with
a default-deny image policy and no registry none of these objects is compliant. The one
exception is a well-formed DELETE or CONNECT, which is not judged (``allowed: true``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.admission.cache import VerdictCache
from pipeline.admission.decide import Decider
from pipeline.admission.review import NOT_JUDGED, ReviewError, parse_review, response
from pipeline.admission.server import create_app
from pipeline.cli import run
from pipeline.errors import EXIT_CONFIG
from pipeline.policy.check import DEFAULT_POLICY_DIR
from pipeline.policy.image_policy import ImagePolicy, PolicyResult
from pipeline.policy.vap import load_policies
from pipeline.policy.workloads import KINDS

DECIDER = Decider(load_policies(DEFAULT_POLICY_DIR),
                  ImagePolicy.from_mapping({"version": 1, "default": "deny", "rules": []}))
CLIENT = TestClient(create_app(DECIDER, max_request_bytes=64 * 1024))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["apiVersion", "kind", "request", "uid", "object", "operation",
                         "allowed", "spec", "containers", "image", "metadata", "x"]),
        inner, max_size=5),
    max_leaves=20,
)


def _review(obj: Any, uid: Any = "u-1", operation: Any = "CREATE") -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": uid, "operation": operation, "object": obj}}


#: Every judged kind with its apiVersion, kinds one space or one letter off, unknown kinds.
kinds = st.one_of(
    st.sampled_from([(k.api_version, k.kind) for k in KINDS]),
    st.sampled_from([("v1", "Pod "), ("v1", "pod"), ("apps/v1", "Pod"), ("example.com/v1", "Foo"),
                     ("serving.kserve.io/v1beta1", "InferenceServices"), ("v1", "Service")]),
)
pods = st.builds(lambda gvk, rest: {"apiVersion": gvk[0], "kind": gvk[1], **rest}, kinds,
                 st.fixed_dictionaries({
        "metadata": st.fixed_dictionaries({"name": st.text(max_size=8)}),
            "spec": json_values | st.fixed_dictionaries({
        "containers": st.lists(st.fixed_dictionaries({"name": st.text(max_size=5),
                                                      "image": json_values}), min_size=1,
                               max_size=2)}),
}))


def _never_allowed(body: bytes) -> None:
    for path in ("/validate", "/mutate"):
        reply = CLIENT.post(path, content=body)
        if reply.status_code == 400:
            assert set(reply.json()) == {"error", "code"}, reply.text
            continue
        assert reply.status_code == 200, reply.text
        if reply.json()["response"]["allowed"]:
            assert parse_review(body).operation in NOT_JUDGED, reply.text


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(json_values)
def test_arbitrary_json_is_never_allowed(value: Any) -> None:
    _never_allowed(json.dumps(value).encode())


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(pods, st.one_of(st.just("u-1"), json_values), st.sampled_from(["CREATE", "UPDATE", "x"]))
def test_reviews_of_unverifiable_objects_are_never_allowed(obj: Any, uid: Any, op: str) -> None:
    _never_allowed(json.dumps(_review(obj, uid, op)).encode())


@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=64))
def test_arbitrary_bytes_are_never_allowed(body: bytes) -> None:
    _never_allowed(body)


def test_parse_review_names_what_is_wrong() -> None:
    cases = {
        b"nope": "not valid JSON",
        b'{"apiVersion": "v1", "kind": "AdmissionReview"}': "apiVersion 'v1'",
        json.dumps(_review({"apiVersion": "v1", "kind": "Pod"}, uid="")).encode(): "uid is empty",
        json.dumps(_review({"kind": "Pod"})).encode(): "request.object.apiVersion",
        json.dumps(_review(None)).encode(): "request.object is missing",
    }
    for body, expected in cases.items():
        try:
            parse_review(body)
        except ReviewError as exc:
            assert expected in str(exc), (body, exc)
        else:
            raise AssertionError(f"accepted {body!r}")
    try:
        parse_review(b"{}" + b" " * 100, max_bytes=50)
    except ReviewError as exc:
        assert "exceeds the limit of 50 bytes" in str(exc)


def test_response_shapes() -> None:
    denied = response("u", False, ["a", "b"], warnings=["w" * 400])["response"]
    assert denied["status"]["code"] == 403 and denied["status"]["message"] == "a; b"
    assert len(denied["warnings"][0]) == 256
    allowed = response("u", True, patch=[{"op": "replace", "path": "/x", "value": 1}])
    assert allowed["response"]["patchType"] == "JSONPatch"


def test_cache_keeps_only_allowed_verdicts_until_the_ttl() -> None:
    now = [0.0]
    cache = VerdictCache(ttl=10, clock=lambda: now[0])
    cache.put("a", PolicyResult(True, [], "a"))
    cache.put("d", PolicyResult(False, ["unsigned"], "d"))
    assert cache.get("a") is not None and cache.get("d") is None
    now[0] = 10.0
    assert cache.get("a") is None and len(cache) == 0
    off = VerdictCache(ttl=0)
    off.put("a", PolicyResult(True, [], "a"))
    assert off.get("a") is None


def test_serve_refuses_bad_configuration_with_exit_3(tmp_path, capsys) -> None:
    policy = tmp_path / "image-policy.yaml"
    policy.write_text("version: 1\ndefault: deny\nrules: []\n")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_text("not a certificate")
    key.write_text("not a key")
    code = run(["admission", "serve", "--policies", str(DEFAULT_POLICY_DIR), "--image-policy",
                str(policy), "--tls-cert", str(cert), "--tls-key", str(key), "--port", "0"])
    assert code == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "cannot be used together" in err and "Traceback" not in err
    policy.write_text("version: 1\ntreshold: 2\n")
    assert run(["admission", "serve", "--policies", str(DEFAULT_POLICY_DIR), "--image-policy",
                str(policy), "--tls-cert", str(cert), "--tls-key", str(key)]) == EXIT_CONFIG


def test_listening_socket_is_tcp_with_nodelay() -> None:
    """asyncio only sets TCP_NODELAY on accepted sockets of a socket that says it is TCP;
    without it every answer waited ~40 ms for a delayed ACK (measured in bench_admission)."""
    import socket

    from pipeline.admission.server import bind

    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        sock.close()


def _decide(obj: Any, path: str = "/validate") -> Any:
    return CLIENT.post(path, content=json.dumps(_review(obj)).encode())


def test_unknown_kinds_are_denied_naming_the_kind_and_the_way_out() -> None:
    """An unknown kind with containers, a kind one space off, a Pod of another API group:
    their images cannot be found for sure, so they are denied, never allowed as imageless."""
    spec = {"containers": [{"name": "a", "image": "unsigned.example/app:1"}]}
    for api_version, kind in (("example.com/v1", "Foo"), ("v1", "Pod "), ("evil.example/v1", "Pod"),
                              ("v1", "pod")):
        for path in ("/validate", "/mutate"):
            reply = _decide({"apiVersion": api_version, "kind": kind, "spec": spec}, path)
            assert reply.status_code == 200, reply.text
            answer = reply.json()["response"]
            assert answer["allowed"] is False and "patch" not in answer
            message = answer["status"]["message"]
            assert f"kind {kind!r} (apiVersion {api_version!r})" in message, message
            assert "remove its resource from the rules" in message


def test_missing_or_empty_kind_is_a_bad_request() -> None:
    for obj in ({"apiVersion": "v1", "spec": {}}, {"apiVersion": "v1", "kind": ""},
                {"apiVersion": "v1", "kind": "  "}, {"apiVersion": "", "kind": "Pod"},
                {"apiVersion": "v1", "kind": 7}):
        for path in ("/validate", "/mutate"):
            reply = _decide(obj, path)
            assert reply.status_code == 400, (obj, reply.text)
            assert "request.object" in reply.json()["error"]


def test_request_kind_must_be_the_objects_kind() -> None:
    review = _review({"apiVersion": "v1", "kind": "Service", "spec": {}})
    review["request"]["kind"] = {"group": "", "version": "v1", "kind": "Pod"}
    reply = CLIENT.post("/validate", content=json.dumps(review).encode())
    assert reply.status_code == 400 and "differs from request.object" in reply.text
    review["request"]["kind"] = {"group": "", "version": "v1", "kind": "Service"}
    assert CLIENT.post("/validate", content=json.dumps(review).encode()).status_code == 200


def test_inference_service_with_an_unverifiable_model_is_denied() -> None:
    isvc = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": "m"},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "pytorch"},
                                             "storageUri": "s3://bucket/model"}}}}
    answer = _decide(isvc).json()["response"]
    assert answer["allowed"] is False
    assert "'s3://bucket/model'" in answer["status"]["message"]


@pytest.mark.parametrize("body, expected", [
    (b"[" * 5000 + b"]" * 5000, "nested deeper than"),
    (json.dumps(_review({"apiVersion": "v1", "kind": "Pod", "spec": {}})).encode()[:-1]
     + b', "request": {}}', "duplicate key 'request'"),
    (json.dumps(_review({"apiVersion": "v1", "kind": "Pod", "spec": {"n": 0}})).encode()
     .replace(b'"n": 0', b'"n": ' + b"9" * 5001), "integer of 5001 digits"),
    (json.dumps(_review({"apiVersion": "v1", "kind": "Pod", "spec": {"n": 0}})).encode()
     .replace(b'"n": 0', b'"n": NaN'), "NaN is not JSON"),
])
def test_hostile_json_is_a_bad_request(body: bytes, expected: str) -> None:
    for path in ("/validate", "/mutate"):
        reply = CLIENT.post(path, content=body)
        assert reply.status_code == 400, reply.text
        assert expected in reply.json()["error"], reply.text


def test_deep_object_inside_a_valid_review_is_a_bad_request() -> None:
    deep: Any = {}
    for _ in range(200):
        deep = {"x": deep}
    reply = _decide({"apiVersion": "v1", "kind": "Pod", "metadata": {"annotations": deep},
                     "spec": {}})
    assert reply.status_code == 400 and "nested deeper than 100" in reply.text


@pytest.mark.parametrize("operation", ["DELETE", "CONNECT"])
def test_operations_not_judged_are_allowed_even_without_an_object(operation: str) -> None:
    """Kubernetes sends what a configuration registers for; DELETE carries ``object: null``.
    Allowed as is (not judged), never HTTP 400; an unknown operation still is one."""
    review = _review(None, operation=operation)
    review["request"]["kind"] = {"group": "", "version": "v1", "kind": "Pod"}
    for path in ("/validate", "/mutate"):
        reply = CLIENT.post(path, content=json.dumps(review))
        assert reply.status_code == 200, reply.text
        assert reply.json()["response"] == {"uid": "u-1", "allowed": True}
    assert parse_review(json.dumps(review)).judged is False
    with pytest.raises(ReviewError, match="not a Kubernetes admission operation"):
        parse_review(json.dumps(_review({"apiVersion": "v1", "kind": "Pod"},
                                        operation="PATCH")))

