"""gRPC binding of OIP v2: typed contents and raw bytes decode to the same tensors REST gives.

No server: messages are built with the generated classes and parsed by the same
functions the servicer uses.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.errors import ConfigError
from secure_runtime.dataplane import DataPlane
from secure_runtime.grpc_service import (
    CONTENTS_FIELD,
    build_model_infer_response,
    parse_model_infer,
    start_grpc_server,
)
from secure_runtime.proto import grpc_predict_v2_pb2 as pb
from secure_runtime.protocol import (
    ProtocolError,
    Tensor,
    encode_bytes_elements,
    output_tensor,
    tensor_from_values,
)


def _request(datatype: str, shape: list[int], values: list | None = None,
             raw: bytes | None = None) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    item = request.inputs.add(name="x", datatype=datatype, shape=shape)
    if values is not None:
        getattr(item.contents, CONTENTS_FIELD[datatype]).extend(values)
    if raw is not None:
        request.raw_input_contents.append(raw)
    return request


@pytest.mark.parametrize(
    ("datatype", "values"),
    [("FP32", [0.5, -1.25, 3.0, 4.0]), ("FP64", [1e-300, 2.0, 3.0, -4.5]),
     ("INT8", [-128, 0, 5, 127]), ("INT64", [2**40, -1, 0, 7]), ("UINT8", [0, 1, 2, 255]),
     ("UINT32", [0, 2**32 - 1, 5, 6]), ("BOOL", [True, False, True, True])],
)
def test_typed_and_raw_contents_decode_alike(datatype: str, values: list) -> None:
    reference = tensor_from_values("x", datatype, [2, 2], values)
    typed = parse_model_infer(_request(datatype, [2, 2], values)).inputs[0]
    raw_bytes = reference.value.numpy().tobytes()
    raw = parse_model_infer(_request(datatype, [2, 2], raw=raw_bytes)).inputs[0]
    for tensor in (typed, raw):
        assert tensor.shape == (2, 2) and tensor.datatype == datatype
        assert torch.equal(tensor.value, reference.value)


def test_bytes_and_fp16() -> None:
    typed = parse_model_infer(_request("BYTES", [2], [b"ab", b"\xff"])).inputs[0]
    raw = parse_model_infer(
        _request("BYTES", [2], raw=encode_bytes_elements([b"ab", b"\xff"]))).inputs[0]
    assert typed.value == raw.value == [b"ab", b"\xff"]
    half = np.array([1.5, -2.0], dtype="<f2")
    fp16 = parse_model_infer(_request("FP16", [2], raw=half.tobytes())).inputs[0]
    assert fp16.value.dtype == torch.float16 and fp16.value.tolist() == [1.5, -2.0]


@pytest.mark.parametrize(
    ("request_", "needle"),
    [
        (pb.ModelInferRequest(model_name="m"), "non-empty"),
        (_request("FP16", [1]), "only in raw_input_contents"),
        (_request("FP32", [2], [1.0]), "needs 2 elements"),
        (_request("FP32", [1], [1.0], raw=b"\0" * 4), "not both"),
        (_request("INT8", [1], [300]), "out of range"),
        (_request("FP32", [1], raw=b"\0" * 3), "raw bytes"),
        (_request("NOPE", [1]), "unsupported datatype"),
    ],
)
def test_bad_messages(request_: pb.ModelInferRequest, needle: str) -> None:
    with pytest.raises(ProtocolError, match=needle):
        parse_model_infer(request_)


def test_contents_of_another_type_are_refused() -> None:
    request = _request("FP32", [1], [1.0])
    request.inputs[0].contents.int_contents.append(1)
    with pytest.raises(ProtocolError, match="contents.int_contents does not carry FP32"):
        parse_model_infer(request)


def test_raw_for_some_inputs_only_is_refused() -> None:
    request = _request("FP32", [1], raw=b"\0" * 4)
    request.inputs.add(name="y", datatype="FP32", shape=[1])
    with pytest.raises(ProtocolError, match="every input or for none"):
        parse_model_infer(request)


def test_response_forms() -> None:
    outputs = [output_tensor("a", torch.tensor([[1.0, 2.0]])),
               Tensor("b", "BYTES", (1,), [b"hi"])]
    typed = build_model_infer_response("m", "1", "id", outputs, raw=False)
    assert list(typed.outputs[0].contents.fp32_contents) == [1.0, 2.0]
    assert list(typed.outputs[1].contents.bytes_contents) == [b"hi"]
    assert not typed.raw_output_contents
    raw = build_model_infer_response("m", "1", "id", outputs, raw=True)
    assert np.frombuffer(raw.raw_output_contents[0], "<f4").tolist() == [1.0, 2.0]
    half = build_model_infer_response(
        "m", "1", "", [output_tensor("h", torch.tensor([1.0], dtype=torch.float16))], raw=False)
    assert len(half.raw_output_contents) == 1  # FP16 has no typed field: raw for all


def test_a_busy_port_is_a_config_error() -> None:
    state = DataPlane()
    first = start_grpc_server(state, "127.0.0.1", 0, max_message_bytes=1024)
    try:
        port = first.add_insecure_port("127.0.0.1:0")  # another free port, to learn its number
        with pytest.raises(ConfigError, match="cannot listen for gRPC"):
            start_grpc_server(state, "127.0.0.1", port, max_message_bytes=1024)
    finally:
        first.stop(0)


@pytest.mark.parametrize("shape", [[0, 2**62, 2**62], [0, 2**31, 2**31, 2**31], [2**41]])
def test_absurd_shapes_are_protocol_errors_not_crashes(shape: list[int]) -> None:
    """An empty tensor with huge dimensions passes the element count (0) but cannot be
    shaped: it must be a clear 400-class error, never a 500 from numpy."""
    from secure_runtime.protocol import ProtocolError, tensor_from_raw

    with pytest.raises(ProtocolError, match="too large"):
        tensor_from_values("x", "FP32", shape, [])
    with pytest.raises(ProtocolError, match="too large"):
        tensor_from_raw("x", "FP32", shape, b"")
