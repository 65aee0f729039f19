"""KServe Open Inference Protocol v2: parse requests, validate tensors, build responses.

One parser serves REST (JSON ``data``) and gRPC (typed ``contents`` or
``raw_input_contents``), so both bindings reject exactly the same bad input with
the same message. Everything here is pure: no model, no server, no I/O, which is
what lets the property tests hammer it.

Every tensor crosses this module as :class:`Tensor`: numeric data becomes a
``torch.Tensor`` of the declared dtype and shape; BYTES becomes a flat list of
``bytes`` plus its shape (torch has no string tensors). Validation is strict
because the data comes from the network: the element count must equal the
product of the shape, JSON values must have the datatype's kind (no ``true`` in
FP32, no ``1.5`` or out-of-range value in INT8), nested arrays must be regular.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pipeline.errors import InputError

#: OIP datatype -> numpy dtype (little-endian, as the raw binary form requires).
NUMPY_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}

#: Every datatype this server accepts, BYTES included.
DATATYPES: tuple[str, ...] = (*NUMPY_DTYPES, "BYTES")

_TORCH_TO_DATATYPE: dict[torch.dtype, str] = {
    torch.bool: "BOOL",
    torch.uint8: "UINT8",
    torch.uint16: "UINT16",
    torch.uint32: "UINT32",
    torch.uint64: "UINT64",
    torch.int8: "INT8",
    torch.int16: "INT16",
    torch.int32: "INT32",
    torch.int64: "INT64",
    torch.float16: "FP16",
    torch.float32: "FP32",
    torch.float64: "FP64",
}

MAX_DIMS = 16
# Far above what a 64 MiB request can carry, far below what numpy refuses to shape:
# an empty tensor of shape [0, 2**62, 2**62] must be a 400, not a numpy error (500).
MAX_SHAPE_ELEMENTS = 1 << 40
_INT_RANGES = {
    name: (int(np.iinfo(dt).min), int(np.iinfo(dt).max))
    for name, dt in NUMPY_DTYPES.items()
    if dt.kind in "iu"
}


class ProtocolError(InputError):
    """A request that does not follow OIP v2 or the model's declared inputs (HTTP 400)."""


@dataclass
class Tensor:
    """One named tensor: ``value`` is a torch.Tensor, or a flat ``list[bytes]`` for BYTES."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    value: torch.Tensor | list[bytes]

    def as_strings(self) -> list[str]:
        """BYTES elements as UTF-8 text (what text models take); ProtocolError otherwise."""
        if self.datatype != "BYTES" or not isinstance(self.value, list):
            raise ProtocolError(f"input {self.name!r}: expected BYTES, got {self.datatype}")
        try:
            return [item.decode("utf-8") for item in self.value]
        except UnicodeDecodeError:
            raise ProtocolError(f"input {self.name!r}: BYTES element is not UTF-8 text") from None


@dataclass
class InferRequest:
    """A parsed inference request; ``outputs`` is None when every output is wanted."""

    inputs: list[Tensor]
    outputs: list[str] | None = None
    id: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------- shapes


def check_shape(name: str, shape: Any) -> tuple[int, ...]:
    """A shape must be a list of non-negative integers (no bools, no -1 in a request)."""
    if not isinstance(shape, Sequence) or isinstance(shape, str | bytes):
        raise ProtocolError(f"input {name!r}: 'shape' must be a list of integers")
    if len(shape) > MAX_DIMS:
        raise ProtocolError(f"input {name!r}: shape has {len(shape)} dimensions (max {MAX_DIMS})")
    out: list[int] = []
    for dim in shape:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
            raise ProtocolError(f"input {name!r}: shape {list(shape)!r} has an invalid dimension")
        out.append(int(dim))
    if math.prod(max(dim, 1) for dim in out) > MAX_SHAPE_ELEMENTS:
        raise ProtocolError(f"input {name!r}: shape {out!r} is too large")
    return tuple(out)


def element_count(shape: Sequence[int]) -> int:
    """Product of the dimensions (1 for a scalar shape ``[]``)."""
    return math.prod(shape)


def check_datatype(name: str, datatype: Any) -> str:
    """The datatype must be one of :data:`DATATYPES` (case-sensitive, as the spec says)."""
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise ProtocolError(
            f"input {name!r}: unsupported datatype {datatype!r} (one of {', '.join(DATATYPES)})"
        )
    return datatype


def _flatten(name: str, data: Any) -> list[Any]:
    """Row-major flattening of possibly nested lists; ragged nesting is refused."""
    if not isinstance(data, list):
        raise ProtocolError(f"input {name!r}: 'data' must be a list")
    if not data or not any(isinstance(x, list) for x in data):
        return data
    flat: list[Any] = []
    level: list[Any] = data
    while level and isinstance(level[0], list):
        width = len(level[0])
        nxt: list[Any] = []
        for item in level:
            if not isinstance(item, list) or len(item) != width:
                raise ProtocolError(f"input {name!r}: nested 'data' is not a regular array")
            nxt.extend(item)
        level = nxt
    for item in level:
        if isinstance(item, list):
            raise ProtocolError(f"input {name!r}: nested 'data' is not a regular array")
    flat = level
    return flat


# ------------------------------------------------------------------ values -> tensors


def _check_kind(name: str, datatype: str, flat: list[Any]) -> None:
    if datatype == "BOOL":
        if not all(type(x) is bool for x in flat):
            raise ProtocolError(f"input {name!r}: BOOL data must be true/false")
    elif datatype.startswith("FP"):
        if not all(type(x) is float or type(x) is int for x in flat):
            raise ProtocolError(f"input {name!r}: {datatype} data must be numbers")
    else:
        if not all(type(x) is int for x in flat):
            raise ProtocolError(f"input {name!r}: {datatype} data must be integers")
        if flat:
            low, high = _INT_RANGES[datatype]
            if min(flat) < low or max(flat) > high:
                raise ProtocolError(f"input {name!r}: value out of range for {datatype}")


def tensor_from_values(name: str, datatype: Any, shape: Any, data: Any) -> Tensor:
    """Build a :class:`Tensor` from JSON-style values (flat or nested row-major lists).

    ``datatype`` and ``shape`` may come straight from a request body (any JSON value):
    they are checked here, so a bad one is a :class:`ProtocolError`, never a crash.
    """
    datatype = check_datatype(name, datatype)
    dims = check_shape(name, shape)
    flat = _flatten(name, data)
    expected = element_count(dims)
    if len(flat) != expected:
        raise ProtocolError(
            f"input {name!r}: shape {list(dims)} needs {expected} elements, data has {len(flat)}"
        )
    if datatype == "BYTES":
        values: list[bytes] = []
        for item in flat:
            if isinstance(item, str):
                values.append(item.encode("utf-8"))
            elif isinstance(item, bytes):
                values.append(item)
            else:
                raise ProtocolError(f"input {name!r}: BYTES data must be strings")
        return Tensor(name, datatype, dims, values)
    _check_kind(name, datatype, flat)
    try:
        array = np.asarray(flat, dtype=NUMPY_DTYPES[datatype])
    except (OverflowError, ValueError) as exc:
        raise ProtocolError(f"input {name!r}: cannot convert data to {datatype}: {exc}") from None
    return Tensor(name, datatype, dims, torch.from_numpy(array.reshape(dims)))


def tensor_from_raw(name: str, datatype: str, shape: Sequence[int], raw: bytes) -> Tensor:
    """Decode the binary form: flat little-endian elements; BYTES as 4-byte-length-prefixed."""
    datatype = check_datatype(name, datatype)
    dims = check_shape(name, shape)
    expected = element_count(dims)
    if datatype == "BYTES":
        values = decode_bytes_elements(name, raw)
        if len(values) != expected:
            raise ProtocolError(
                f"input {name!r}: shape {list(dims)} needs {expected} elements, "
                f"raw data has {len(values)}"
            )
        return Tensor(name, datatype, dims, values)
    dtype = NUMPY_DTYPES[datatype]
    if len(raw) != expected * dtype.itemsize:
        raise ProtocolError(
            f"input {name!r}: shape {list(dims)} of {datatype} needs "
            f"{expected * dtype.itemsize} raw bytes, got {len(raw)}"
        )
    array = np.frombuffer(raw, dtype=dtype).reshape(dims).copy()
    if datatype == "BOOL" and array.view(np.uint8).max(initial=0) > 1:
        raise ProtocolError(f"input {name!r}: raw BOOL bytes must be 0 or 1")
    return Tensor(name, datatype, dims, torch.from_numpy(array))


def decode_bytes_elements(name: str, raw: bytes) -> list[bytes]:
    """Split the OIP BYTES binary form: each element is ``<u32 length><bytes>``."""
    out: list[bytes] = []
    offset = 0
    view = memoryview(raw)
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise ProtocolError(f"input {name!r}: truncated BYTES length prefix")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise ProtocolError(f"input {name!r}: BYTES element overruns the raw data")
        out.append(bytes(view[offset : offset + length]))
        offset += length
    return out


def encode_bytes_elements(values: Iterable[bytes]) -> bytes:
    """Inverse of :func:`decode_bytes_elements`."""
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


# ------------------------------------------------------------------ tensors -> values


def datatype_of(value: torch.Tensor | list[bytes]) -> str:
    """The OIP datatype a result is reported as (bfloat16 is widened to FP32 first)."""
    if isinstance(value, list):
        return "BYTES"
    try:
        return _TORCH_TO_DATATYPE[value.dtype]
    except KeyError:
        raise ProtocolError(f"output dtype {value.dtype} has no OIP datatype") from None


def _portable(value: torch.Tensor | list[bytes]) -> torch.Tensor | list[bytes]:
    if isinstance(value, list):
        return value
    value = value.detach()
    if value.device.type != "cpu":
        value = value.cpu()
    if value.dtype == torch.bfloat16:
        value = value.float()
    return value.contiguous()


def output_tensor(name: str, value: torch.Tensor | list[bytes], shape: Sequence[int] | None = None
                  ) -> Tensor:
    """Wrap a model result as a :class:`Tensor` on the CPU, in an OIP datatype."""
    value = _portable(value)
    if isinstance(value, list):
        dims = tuple(shape) if shape is not None else (len(value),)
        return Tensor(name, "BYTES", dims, value)
    return Tensor(name, datatype_of(value), tuple(value.shape), value)


def tensor_to_json(tensor: Tensor) -> dict[str, Any]:
    """The REST response form: flat row-major ``data``; BYTES as UTF-8 text where possible."""
    if isinstance(tensor.value, list):
        data: list[Any] = [_bytes_to_json(v) for v in tensor.value]
    else:
        data = tensor.value.reshape(-1).numpy().tolist()
    return {
        "name": tensor.name,
        "datatype": tensor.datatype,
        "shape": list(tensor.shape),
        "data": data,
    }


def _bytes_to_json(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("BYTES output is not UTF-8; request it over gRPC (raw)") from None


def tensor_to_raw(tensor: Tensor) -> bytes:
    """The binary form of a tensor (for gRPC ``raw_output_contents``)."""
    if isinstance(tensor.value, list):
        return encode_bytes_elements(tensor.value)
    array = tensor.value.numpy()
    return array.astype(NUMPY_DTYPES[tensor.datatype], copy=False).tobytes()


# ------------------------------------------------------------------ requests


def _require_str(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise ProtocolError(f"{where}: '{key}' must be a non-empty string")
    return value


def parse_json_body(body: bytes) -> Any:
    """JSON text -> Python value; ProtocolError (HTTP 400) on anything malformed."""
    try:
        return json.loads(body)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError(f"request body is not valid JSON: {exc}") from None
    except ValueError:  # not UTF-8, or an integer past CPython's 4300-digit limit
        raise ProtocolError("request body is not valid JSON (not UTF-8, or a number too "
                            "long to convert)") from None


def parse_infer_request(payload: Any, *, text_input: str | None = None) -> InferRequest:
    """Validate an OIP v2 JSON inference request (already decoded from JSON).

    ``text_input`` names the model's BYTES input; when given, the friendly form
    ``{"text": ["...", ...]}`` (or a single string) is accepted as that input.
    """
    if not isinstance(payload, dict):
        raise ProtocolError("request body must be a JSON object")
    request_id = payload.get("id", "")
    if not isinstance(request_id, str):
        raise ProtocolError("'id' must be a string")
    parameters = payload.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ProtocolError("'parameters' must be an object")
    if "inputs" not in payload and "text" in payload:
        if text_input is None:
            raise ProtocolError("this model takes tensors, not {'text': ...}; send 'inputs'")
        texts = payload["text"]
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise ProtocolError("'text' must be a string or a non-empty list of strings")
        tensor = tensor_from_values(text_input, "BYTES", [len(texts)], texts)
        return InferRequest([tensor], _requested_outputs(payload), request_id, parameters)
    raw_inputs = payload.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError("'inputs' must be a non-empty list")
    inputs: list[Tensor] = []
    seen: set[str] = set()
    for index, item in enumerate(raw_inputs):
        if not isinstance(item, dict):
            raise ProtocolError(f"inputs[{index}] must be an object")
        name = _require_str(item, "name", f"inputs[{index}]")
        if name in seen:
            raise ProtocolError(f"input {name!r} is given twice")
        seen.add(name)
        if "data" not in item:
            raise ProtocolError(f"input {name!r}: 'data' is missing")
        inputs.append(
            tensor_from_values(name, item.get("datatype"), item.get("shape"), item["data"])
        )
    return InferRequest(inputs, _requested_outputs(payload), request_id, parameters)


def _requested_outputs(payload: Mapping[str, Any]) -> list[str] | None:
    outputs = payload.get("outputs")
    if outputs is None:
        return None
    if not isinstance(outputs, list):
        raise ProtocolError("'outputs' must be a list")
    names: list[str] = []
    for index, item in enumerate(outputs):
        if not isinstance(item, dict):
            raise ProtocolError(f"outputs[{index}] must be an object")
        names.append(_require_str(item, "name", f"outputs[{index}]"))
    return names


def infer_response(model_name: str, request_id: str, outputs: Sequence[Tensor]) -> dict[str, Any]:
    """The REST response body for a successful inference."""
    return {
        "model_name": model_name,
        "id": request_id,
        "outputs": [tensor_to_json(t) for t in outputs],
    }


def error_body(message: str) -> dict[str, str]:
    """OIP error shape: ``{"error": "<message>"}``."""
    return {"error": message}


__all__ = [
    "DATATYPES",
    "InferRequest",
    "ProtocolError",
    "Tensor",
    "check_shape",
    "datatype_of",
    "decode_bytes_elements",
    "element_count",
    "encode_bytes_elements",
    "error_body",
    "infer_response",
    "output_tensor",
    "parse_infer_request",
    "parse_json_body",
    "tensor_from_raw",
    "tensor_from_values",
    "tensor_to_json",
    "tensor_to_raw",
]
