"""The sealed tiny model served by ``python -m secure_runtime``: REST, gRPC and /metrics.

One runtime process (as root here, so ``--allow-root``) serves every test of this
module; answers are compared with the model's own module run in-process on the
plaintext weights of examples/tiny.
"""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from secure_runtime.proto import grpc_predict_v2_pb2 as pb
from secure_runtime.proto import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.support.runtime import (
    TINY,
    Runtime,
    free_port,
    make_workspace,
    metric,
    metric_samples,
    runtime_args,
    seal,
    start_runtime,
)
from tests.support.slow_clients import disconnect_mid_body, wait_until

pytestmark = pytest.mark.integration
MAX_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    root = tmp_path_factory.mktemp("runtime-serving")
    ws = make_workspace(root)
    sealed = seal(ws, TINY, root / "tiny.sealed")
    port, grpc_port = free_port(), free_port()
    args = runtime_args(ws, sealed, port, "--allow-root", "--max-request-bytes", str(MAX_BYTES),
                        grpc_port=grpc_port)
    rt = start_runtime(args, root / "runtime.log", port, grpc_port=grpc_port)
    try:
        rt.wait_ready()
        yield rt
    finally:
        rt.close()


@pytest.fixture(scope="module")
def reference() -> torch.nn.Module:
    """examples/tiny's module with its plaintext weights, built here without the runtime."""
    code = types.ModuleType("tiny_reference")
    exec(compile((TINY / "model.py").read_text(), str(TINY / "model.py"), "exec"), code.__dict__)
    module = code.build_model(json.loads((TINY / "config.json").read_text()))
    module.load_state_dict(load_file(str(TINY / "model.safetensors")))
    return module.eval()


@pytest.fixture(scope="module")
def stub(runtime: Runtime) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{runtime.grpc_port}")
    yield pb_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def _batch(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 16)).astype(np.float32)


def _request(batch: np.ndarray, **extra: object) -> dict[str, object]:
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(batch.shape),
                        "data": batch.reshape(-1).tolist()}], **extra}


def _expected(reference: torch.nn.Module, batch: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return reference(torch.from_numpy(batch)).numpy()


# --------------------------------------------------------------------------- REST


def test_live_and_ready(runtime: Runtime) -> None:
    assert runtime.get("/v2/health/live").json() == {"live": True}
    assert runtime.get("/v2/health/ready").json() == {"ready": True}
    assert runtime.get("/v2/models/tiny/ready").json() == {"name": "tiny", "ready": True}
    assert runtime.get("/v2").json()["name"] == "secure-runtime"


def test_model_metadata_describes_inputs(runtime: Runtime) -> None:
    meta = runtime.get("/v2/models/tiny").json()
    assert meta["name"] == "tiny"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 16]}]
    assert meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 4]}]


def test_infer_matches_the_plaintext_model(runtime: Runtime, reference: torch.nn.Module) -> None:
    batch = _batch(5)
    answer = runtime.post("/v2/models/tiny/infer", json=_request(batch, id="req-1"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_name"] == "tiny" and body["id"] == "req-1"
    (out,) = body["outputs"]
    assert out["name"] == "output" and out["datatype"] == "FP32" and out["shape"] == [5, 4]
    got = np.asarray(out["data"], dtype=np.float32).reshape(5, 4)
    np.testing.assert_allclose(got, _expected(reference, batch), rtol=1e-6, atol=1e-7)


def test_nested_data_and_version_route(runtime: Runtime, reference: torch.nn.Module) -> None:
    batch = _batch(2, seed=3)
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 16],
                        "data": batch.tolist()}], "outputs": [{"name": "output"}]}
    answer = runtime.post("/v2/models/tiny/versions/1/infer", json=body)
    assert answer.status_code == 200, answer.text
    got = np.asarray(answer.json()["outputs"][0]["data"], dtype=np.float32).reshape(2, 4)
    np.testing.assert_allclose(got, _expected(reference, batch), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b'{"inputs": [', "not valid JSON"),
        (b"[]", "JSON object"),
        (b'{"inputs": []}', "non-empty list"),
        (json.dumps({"inputs": [{"name": "input", "datatype": "INT32", "shape": [1, 16],
                                 "data": [1] * 16}]}).encode(), "datatype INT32"),
        (json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 15],
                                 "data": [0.5] * 15}]}).encode(), "shape [1, 15]"),
        (json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16],
                                 "data": [0.5] * 3}]}).encode(), "needs 16 elements"),
        (json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16],
                                 "data": ["x"] * 16}]}).encode(), "must be numbers"),
        (json.dumps({"inputs": [{"name": "other", "datatype": "FP32", "shape": [1, 16],
                                 "data": [0.5] * 16}]}).encode(), "unknown input 'other'"),
        (json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16],
                                 "data": [0.5] * 16}], "outputs": [{"name": "nope"}]}).encode(),
         "unknown output 'nope'"),
        (json.dumps({"text": ["hello"]}).encode(), "takes tensors"),
    ],
)
def test_bad_requests_get_a_clear_400(runtime: Runtime, body: bytes, needle: str) -> None:
    answer = runtime.post("/v2/models/tiny/infer", data=body,
                          headers={"Content-Type": "application/json"})
    assert answer.status_code == 400, answer.text
    assert needle in answer.json()["error"]


def test_unknown_model_is_404(runtime: Runtime) -> None:
    for answer in (runtime.get("/v2/models/other"),
                   runtime.post("/v2/models/other/infer", json=_request(_batch(1))),
                   runtime.get("/v2/models/tiny/versions/7")):
        assert answer.status_code == 404, answer.text
        assert "unknown model" in answer.json()["error"]
    assert runtime.get("/no/such/route").status_code == 404


def test_oversized_body_is_413(runtime: Runtime) -> None:
    big = b" " * (MAX_BYTES + 1)
    answer = runtime.post("/v2/models/tiny/infer", data=big)
    assert answer.status_code == 413
    assert "limit" in answer.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the streamed size is what counts
        for _ in range(MAX_BYTES // 4096 + 2):
            yield b" " * 4096

    answer = runtime.post("/v2/models/tiny/infer", data=chunks())
    assert answer.status_code == 413
    # ...and the server still answers normally afterwards
    assert runtime.post("/v2/models/tiny/infer", json=_request(_batch(1))).status_code == 200


def test_clients_that_go_away_mid_body_are_not_server_errors(runtime: Runtime) -> None:
    """Slowloris-style clients send headers and part of a body slowly, then disconnect.

    Nobody is left to answer and the server did nothing wrong, so the log gets no ERROR
    line and no traceback (a slowloris run used to log ~49 ClientDisconnect tracebacks).
    Each is counted as a 400 on the route, which is how the test knows it was handled.
    """
    route = "/v2/models/{name}/infer"

    def handled() -> float:
        return metric(metric_samples(runtime.get("/metrics").text),
                      "secure_runtime_requests_total", protocol="http", endpoint=route,
                      status="400") or 0.0

    before, log_before = handled(), len(runtime.log())
    clients = 5
    disconnect_mid_body(runtime.port, "/v2/models/tiny/infer",
                        (b'{"inputs": [', b'{"name": "input", '), clients=clients, length=4000)
    assert wait_until(handled, before + clients) == before + clients
    new_log = runtime.log()[log_before:]
    assert "Traceback" not in new_log and "ERROR" not in new_log, new_log
    assert "ClientDisconnect" not in new_log
    assert runtime.post("/v2/models/tiny/infer", json=_request(_batch(1))).status_code == 200


# --------------------------------------------------------------------------- gRPC


def test_grpc_health_and_metadata(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    assert stub.ServerLive(pb.ServerLiveRequest()).live is True
    assert stub.ServerReady(pb.ServerReadyRequest()).ready is True
    assert stub.ModelReady(pb.ModelReadyRequest(name="tiny")).ready is True
    assert stub.ServerMetadata(pb.ServerMetadataRequest()).name == "secure-runtime"
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name="tiny"))
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("input", "FP32", [-1, 16])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        ("output", "FP32", [-1, 4])]


def test_grpc_infer_equals_rest(runtime: Runtime, stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    batch = _batch(4, seed=7)
    rest = runtime.post("/v2/models/tiny/infer", json=_request(batch)).json()["outputs"][0]
    rest_values = np.asarray(rest["data"], dtype=np.float32)

    typed = pb.ModelInferRequest(model_name="tiny", id="g1")
    tensor = typed.inputs.add(name="input", datatype="FP32", shape=[4, 16])
    tensor.contents.fp32_contents.extend(batch.reshape(-1).tolist())
    answer = stub.ModelInfer(typed)
    assert answer.id == "g1" and answer.model_name == "tiny"
    (out,) = answer.outputs
    assert (out.name, out.datatype, list(out.shape)) == ("output", "FP32", [4, 4])
    np.testing.assert_array_equal(np.asarray(out.contents.fp32_contents, np.float32), rest_values)

    raw = pb.ModelInferRequest(model_name="tiny")
    raw.inputs.add(name="input", datatype="FP32", shape=[4, 16])
    raw.raw_input_contents.append(batch.astype("<f4").tobytes())
    answer = stub.ModelInfer(raw)
    assert len(answer.raw_output_contents) == 1
    np.testing.assert_array_equal(np.frombuffer(answer.raw_output_contents[0], "<f4"),
                                  rest_values)


def _grpc_error(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value


def test_grpc_errors(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    wrong_shape = pb.ModelInferRequest(model_name="tiny")
    wrong_shape.inputs.add(name="input", datatype="FP32", shape=[1, 15]).contents.fp32_contents \
        .extend([0.0] * 15)
    err = _grpc_error(lambda: stub.ModelInfer(wrong_shape))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT and "shape [1, 15]" in err.details()

    wrong_field = pb.ModelInferRequest(model_name="tiny")
    wrong_field.inputs.add(name="input", datatype="FP32", shape=[1, 16]).contents.int_contents \
        .extend([1] * 16)
    err = _grpc_error(lambda: stub.ModelInfer(wrong_field))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT and "int_contents" in err.details()

    short_raw = pb.ModelInferRequest(model_name="tiny")
    short_raw.inputs.add(name="input", datatype="FP32", shape=[1, 16])
    short_raw.raw_input_contents.append(b"\0" * 60)
    err = _grpc_error(lambda: stub.ModelInfer(short_raw))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT and "raw bytes" in err.details()

    err = _grpc_error(lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name="other")))
    assert err.code() is grpc.StatusCode.NOT_FOUND

    huge = pb.ModelInferRequest(model_name="tiny")
    huge.inputs.add(name="input", datatype="FP32", shape=[MAX_BYTES // 64, 16])
    huge.raw_input_contents.append(b"\0" * (MAX_BYTES + 64))
    err = _grpc_error(lambda: stub.ModelInfer(huge))
    assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


# --------------------------------------------------------------------------- metrics


def test_metrics(runtime: Runtime, stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    before = metric_samples(runtime.get("/metrics").text)
    infer = "/v2/models/tiny/infer"
    route = "/v2/models/{name}/infer"  # labels are route templates, never raw paths
    n_before = metric(before, "secure_runtime_requests_total", protocol="http",
                      endpoint=route, status="200") or 0.0
    for seed in range(3):
        assert runtime.post(infer, json=_request(_batch(1, seed))).status_code == 200
    assert runtime.post(infer, data=b"{").status_code == 400
    request = pb.ModelInferRequest(model_name="tiny")
    request.inputs.add(name="input", datatype="FP32", shape=[1, 16]).contents.fp32_contents \
        .extend([0.0] * 16)
    stub.ModelInfer(request)

    text = runtime.get("/metrics").text
    samples = metric_samples(text)
    assert metric(samples, "secure_runtime_requests_total", protocol="http", endpoint=route,
                  status="200") == n_before + 3
    assert (metric(samples, "secure_runtime_requests_total", protocol="http", endpoint=route,
                   status="400") or 0) >= 1
    assert not [k for k in samples if ("endpoint", infer) in k[1]]
    assert (metric(samples, "secure_runtime_requests_total", protocol="grpc",
                   endpoint="ModelInfer", status="OK") or 0) >= 1
    count = metric(samples, "secure_runtime_request_duration_seconds_count", protocol="http",
                   endpoint=route)
    assert count is not None and count >= n_before + 4
    assert metric(samples, "secure_runtime_request_duration_seconds_bucket", protocol="grpc",
                  endpoint="ModelInfer", le="+Inf") is not None
    # the /metrics request itself is in flight while it renders
    assert metric(samples, "secure_runtime_in_flight_requests", protocol="http") == 1.0
    assert metric(samples, "secure_runtime_in_flight_requests", protocol="grpc") == 0.0
    for phase in ("verify", "unwrap", "decrypt", "to_device", "build", "total"):
        value = metric(samples, "secure_runtime_model_load_seconds", phase=phase)
        assert value is not None and value >= 0, phase
    total = metric(samples, "secure_runtime_model_load_seconds", phase="total")
    assert total and total > 0
    assert metric(samples, "secure_runtime_model_ready") == 1.0
    assert metric(samples, "secure_runtime_model_signature_verified") == 1.0
    assert metric(samples, "secure_runtime_core_dumps_disabled") == 1.0
    assert (metric(samples, "secure_runtime_weights_bytes") or 0) > 0


# --------------------------------------------------------------------------- process state


def _proc(pid: int, name: str) -> str:
    return Path(f"/proc/{pid}/{name}").read_text()


def test_core_dumps_are_off_and_weights_locked(runtime: Runtime) -> None:
    limits = _proc(runtime.pid, "limits")
    (line,) = [x for x in limits.splitlines() if x.startswith("Max core file size")]
    assert line.split()[4:6] == ["0", "0"], line
    # root has CAP_IPC_LOCK: every weight byte must be locked
    status = dict(x.split(":", 1) for x in _proc(runtime.pid, "status").splitlines())
    assert int(status["VmLck"].split()[0]) > 0
    samples = metric_samples(runtime.get("/metrics").text)
    assert metric(samples, "secure_runtime_weights_mlock_complete") == 1.0
    assert "weights locked in memory" in runtime.log()
