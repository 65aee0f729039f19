"""OIP v2 gRPC over the data plane: the ``GRPCInferenceService`` adapter.

Clients that move large tensors prefer gRPC: ``raw_input_contents`` carries them as
little-endian bytes with no JSON round trip. Both bindings go through
:mod:`secure_runtime.protocol`, so a request that REST refuses is refused here
with the same message (as ``INVALID_ARGUMENT`` instead of HTTP 400).

Error mapping (the gRPC twin of :func:`secure_runtime.rest.http_status`):
unknown model -> ``NOT_FOUND``, not loaded / draining -> ``UNAVAILABLE``, bad
request -> ``INVALID_ARGUMENT``, message over the size limit -> grpcio's own
``RESOURCE_EXHAUSTED``, anything else -> ``INTERNAL`` (logged, details hidden).

Shutdown: :func:`start_grpc_server` returns the ``grpc.Server``; ``stop(grace)``
refuses new calls at once and lets in-flight ones finish within ``grace``
seconds, which is what the REST side's drain does too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from typing import Any, TypeVar

import grpc

from pipeline.errors import ConfigError, InputError, NotFoundError, PipelineError
from secure_runtime.dataplane import DataPlane, NotReadyError, RequestTooLargeError
from secure_runtime.proto import grpc_predict_v2_pb2 as pb
from secure_runtime.proto import grpc_predict_v2_pb2_grpc as pb_grpc
from secure_runtime.protocol import (
    NUMPY_DTYPES,
    InferRequest,
    ProtocolError,
    Tensor,
    check_datatype,
    tensor_from_raw,
    tensor_from_values,
    tensor_to_raw,
)

log = logging.getLogger("secure_runtime.grpc")

T = TypeVar("T")

#: OIP datatype -> the typed ``InferTensorContents`` field that carries it (FP16: raw only).
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_ALL_FIELDS = frozenset(CONTENTS_FIELD.values())
DEFAULT_WORKERS = 8


class _Abort(Exception):
    """Carries a status code out of a handler so the wrapper can count it."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def grpc_status(exc: BaseException) -> grpc.StatusCode:
    """gRPC status for an error raised while handling a call."""
    if isinstance(exc, RequestTooLargeError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(exc, NotFoundError):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, NotReadyError):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(exc, InputError):
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL


# ---------------------------------------------------------------------------- codec


def _input_tensor(item: Any, raw: bytes | None) -> Tensor:
    name = item.name
    if not name:
        raise ProtocolError("input without a name")
    datatype = check_datatype(name, item.datatype)
    shape = list(item.shape)
    if any(dim < 0 for dim in shape):
        raise ProtocolError(f"input {name!r}: shape {shape} has an invalid dimension")
    present = {f.name for f, _ in item.contents.ListFields()}
    if raw is not None:
        if present:
            raise ProtocolError(
                f"input {name!r}: give either 'contents' or raw_input_contents, not both"
            )
        return tensor_from_raw(name, datatype, shape, raw)
    wanted = CONTENTS_FIELD.get(datatype)
    if wanted is None:
        raise ProtocolError(f"input {name!r}: {datatype} travels only in raw_input_contents")
    stray = present - {wanted}
    if stray:
        raise ProtocolError(
            f"input {name!r}: contents.{sorted(stray)[0]} does not carry {datatype} "
            f"(use contents.{wanted})"
        )
    values = list(getattr(item.contents, wanted))
    return tensor_from_values(name, datatype, shape, values)


def parse_model_infer(request: Any) -> InferRequest:
    """``ModelInferRequest`` -> :class:`InferRequest` (typed contents or raw, never both)."""
    raw = list(request.raw_input_contents)
    if not request.inputs:
        raise ProtocolError("'inputs' must be a non-empty list")
    if raw and len(raw) != len(request.inputs):
        raise ProtocolError(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs "
            "(give raw data for every input or for none)"
        )
    inputs: list[Tensor] = []
    seen: set[str] = set()
    for index, item in enumerate(request.inputs):
        tensor = _input_tensor(item, raw[index] if raw else None)
        if tensor.name in seen:
            raise ProtocolError(f"input {tensor.name!r} is given twice")
        seen.add(tensor.name)
        inputs.append(tensor)
    outputs = [o.name for o in request.outputs] or None
    if outputs is not None and not all(outputs):
        raise ProtocolError("requested output without a name")
    return InferRequest(inputs, outputs, request.id)


def build_model_infer_response(
    model_name: str, version: str, request_id: str, outputs: Sequence[Tensor], *, raw: bool
) -> Any:
    """Results as typed ``contents``, or all as ``raw_output_contents`` (FP16 forces raw)."""
    response = pb.ModelInferResponse(model_name=model_name, model_version=version, id=request_id)
    raw = raw or any(t.datatype not in CONTENTS_FIELD for t in outputs)
    for tensor in outputs:
        out = response.outputs.add(name=tensor.name, datatype=tensor.datatype,
                                   shape=list(tensor.shape))
        if raw:
            response.raw_output_contents.append(tensor_to_raw(tensor))
            continue
        target = getattr(out.contents, CONTENTS_FIELD[tensor.datatype])
        if isinstance(tensor.value, list):
            target.extend(tensor.value)
        else:
            array = tensor.value.reshape(-1).numpy()
            target.extend(array.astype(NUMPY_DTYPES[tensor.datatype], copy=False).tolist())
    return response


# ---------------------------------------------------------------------------- service


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Handlers of the six OIP RPCs; each call is counted and timed like a REST request."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    def _call(self, method: str, context: grpc.ServicerContext, body: Callable[[], T]) -> T:
        metrics = self.plane.metrics
        gauge = metrics.in_flight.labels(protocol="grpc")
        gauge.inc()
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            try:
                return body()
            except _Abort as abort:
                code, message = abort.code, abort.message
            except PipelineError as exc:
                code, message = grpc_status(exc), str(exc)
                if code is grpc.StatusCode.INTERNAL:
                    log.error("%s failed: %s", method, exc)
            except Exception as exc:  # noqa: BLE001 - never leak a traceback to the client
                log.exception("internal error in %s", method)
                code, message = grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}"
            context.abort(code, message)
            raise AssertionError("unreachable: context.abort raises")  # pragma: no cover
        finally:
            gauge.dec()
            metrics.latency.labels(protocol="grpc", endpoint=method).observe(
                time.perf_counter() - started
            )
            metrics.requests.labels(protocol="grpc", endpoint=method, status=code.name).inc()

    def ServerLive(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return self._call(
            "ServerLive", context, lambda: pb.ServerLiveResponse(live=self.plane.live)
        )

    def ServerReady(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return self._call(
            "ServerReady", context, lambda: pb.ServerReadyResponse(ready=self.plane.ready)
        )

    def ModelReady(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return self._call("ModelReady", context, lambda: pb.ModelReadyResponse(
            ready=self.plane.model_ready(request.name, request.version)))

    def ServerMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        def body() -> Any:
            meta = self.plane.server_metadata()
            return pb.ServerMetadataResponse(name=meta["name"], version=meta["version"],
                                             extensions=meta["extensions"])

        return self._call("ServerMetadata", context, body)

    def ModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        def body() -> Any:
            meta = self.plane.model_metadata(request.name, request.version)
            response = pb.ModelMetadataResponse(
                name=meta["name"], versions=meta["versions"], platform=meta["platform"]
            )
            for key in ("inputs", "outputs"):
                for spec in meta[key]:
                    getattr(response, key).add(
                        name=spec["name"], datatype=spec["datatype"], shape=spec["shape"]
                    )
            return response

        return self._call("ModelMetadata", context, body)

    def ModelInfer(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        def body() -> Any:
            engine = self.plane.require_model(request.model_name, request.model_version)
            result = self.plane.infer(engine, parse_model_infer(request))
            return build_model_infer_response(
                result.model_name, result.model_version, result.id, result.outputs,
                raw=bool(request.raw_input_contents),
            )

        return self._call("ModelInfer", context, body)


def start_grpc_server(
    plane: DataPlane,
    host: str,
    port: int,
    *,
    max_message_bytes: int,
    workers: int = DEFAULT_WORKERS,
) -> grpc.Server:
    """Bind and start the gRPC listener; ConfigError when the port cannot be bound."""
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),  # a second runtime on the same port must fail, not share it
    ]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
        options=options,
    )
    register: Callable[[InferenceServicer, grpc.Server], None] = (
        pb_grpc.add_GRPCInferenceServiceServicer_to_server  # generated without type stubs
    )
    register(InferenceServicer(plane), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise ConfigError(f"cannot listen for gRPC on {address}")
    server.start()
    log.info("gRPC listening on %s", address)
    return server


__all__ = [
    "CONTENTS_FIELD",
    "InferenceServicer",
    "build_model_infer_response",
    "grpc_status",
    "parse_model_infer",
    "start_grpc_server",
]
