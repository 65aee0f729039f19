"""The runtime's REST server (KServe OIP v2) and the start-up sequence around it.

Start-up order is the security argument, so it lives in one place (:func:`serve`):

1. hardening that must hold before any secret exists: not root, no core dumps;
2. listeners start: ``/v2/health/live`` answers at once, ``/v2/health/ready`` says
   503 until the model is usable (so Kubernetes neither kills a slow load nor
   routes traffic to it);
3. in the background: resolve the model (directory, or OCI reference pulled to a
   temp dir as ciphertext), verify -> unwrap -> decrypt -> to device, scrub key
   material from the environment, mlock the weights, build the module from the
   verified code, warm up once, then ready;
4. a load failure logs one clear line and stops the process with the error's
   exit code: a pod that cannot verify its model must crash-loop, never serve;
5. SIGTERM: readiness drops to 503, in-flight REST and gRPC requests finish,
   exit 0.

:func:`create_app` is the FastAPI application alone (no loading), so tests can
serve an in-memory model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline.errors import (
    EXIT_INTERNAL,
    ConfigError,
    InputError,
    NotFoundError,
    PipelineError,
)
from secure_runtime.config import DEFAULT_MAX_REQUEST_BYTES, RuntimeConfig
from secure_runtime.metrics import RuntimeMetrics
from secure_runtime.protocol import (
    ProtocolError,
    error_body,
    infer_response,
    parse_infer_request,
    parse_json_body,
)

if TYPE_CHECKING:
    from secure_runtime.inference import InferenceEngine

log = logging.getLogger("secure_runtime")

SERVER_NAME = "secure-runtime"


class RequestTooLargeError(InputError):
    """The request body is over ``max_request_bytes`` (HTTP 413)."""


class NotReadyError(PipelineError):
    """The model is not loaded yet, or the server is draining (HTTP 503)."""


@dataclass
class RuntimeState:
    """What the REST and gRPC front ends share: the engine once loaded, and metrics."""

    metrics: RuntimeMetrics = field(default_factory=RuntimeMetrics)
    engine: InferenceEngine | None = None
    draining: bool = False
    failure: BaseException | None = None
    load_report: dict[str, Any] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        """True once the model is loaded and warmed up, until draining starts."""
        return self.engine is not None and not self.draining

    def require_model(self, name: str, version: str | None = None) -> InferenceEngine:
        """The engine serving ``name`` (NotReadyError before load, NotFoundError if another)."""
        engine = self.engine
        if engine is None:
            raise NotReadyError("model is not loaded yet")
        if name != engine.name or (version not in (None, "", engine.version)):
            what = name if version in (None, "") else f"{name} version {version}"
            raise NotFoundError(f"unknown model {what!r} (this server serves {engine.name!r})")
        if self.draining:
            raise NotReadyError("server is shutting down")
        return engine


# ---------------------------------------------------------------------------- REST


def _json(body: Any, status: int = 200) -> Response:
    # allow_nan: a model may legitimately produce NaN; Python/JS clients parse it.
    return Response(json.dumps(body).encode(), status_code=status, media_type="application/json")


def http_status(exc: BaseException) -> int:
    """HTTP status for an error raised while handling a request."""
    if isinstance(exc, RequestTooLargeError):
        return 413
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, NotReadyError):
        return 503
    if isinstance(exc, ProtocolError | InputError):
        return 400
    return 500


class _MetricsMiddleware:
    """Counts every HTTP request by route template and status; times it; tracks in-flight.

    The labelled children are looked up once and kept (``labels()`` takes a lock and
    builds a key on every call; a request would pay for three of them). The keys are
    route templates and status codes, so the caches stay as small as the label sets.
    """

    def __init__(self, app: Callable[..., Awaitable[None]], metrics: RuntimeMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._in_flight = metrics.in_flight.labels(protocol="http")
        self._latency: dict[str, Any] = {}
        self._requests: dict[tuple[str, int], Any] = {}

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def record_status(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        gauge = self._in_flight
        gauge.inc()
        started = time.perf_counter()
        try:
            await self.app(scope, receive, record_status)
        finally:
            gauge.dec()
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            latency = self._latency.get(endpoint)
            if latency is None:
                latency = self._latency[endpoint] = self.metrics.latency.labels(
                    protocol="http", endpoint=endpoint
                )
            latency.observe(elapsed)
            counter = self._requests.get((endpoint, status))
            if counter is None:
                counter = self._requests[(endpoint, status)] = self.metrics.requests.labels(
                    protocol="http", endpoint=endpoint, status=str(status)
                )
            counter.inc()


class _InferenceThread:
    """One daemon thread that runs submitted calls in order, off the event loop.

    Like ``run_in_executor`` on a one-thread pool, minus what this use does not need:
    the thread is a daemon (a forward stuck past the drain deadline cannot hold the
    process open at exit) and starts on the first call. A call whose awaiting request
    was cancelled before its turn is skipped.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], Any, Any]] = queue.SimpleQueue()
        self._started = False
        self._start_lock = threading.Lock()

    async def run(self, func: Callable[[], Any]) -> Any:
        """``func()`` on the inference thread; its result or exception, here."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._started:
            with self._start_lock:
                if not self._started:
                    threading.Thread(target=self._work, name="infer", daemon=True).start()
                    self._started = True
        self._queue.put((func, loop, future))
        return await future

    def _work(self) -> None:
        while True:
            func, loop, future = self._queue.get()
            if future.cancelled():
                continue
            try:
                outcome: tuple[Any, BaseException | None] = (func(), None)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting request
                outcome = (None, exc)
            with contextlib.suppress(RuntimeError):  # that event loop has closed meanwhile
                loop.call_soon_threadsafe(_settle, future, *outcome)
            del func, loop, future, outcome


def _settle(future: Any, result: Any, exc: BaseException | None) -> None:
    if future.done():  # the request was cancelled meanwhile (client went away)
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise RequestTooLargeError(f"request body of {declared} bytes is over the "
                                           f"{limit}-byte limit")
        except ValueError:
            raise ProtocolError("invalid Content-Length") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLargeError(f"request body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    state: RuntimeState, *, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
) -> FastAPI:
    """The OIP v2 REST application over ``state`` (which may not hold a model yet).

    Inference requests run on one dedicated worker thread, off the event loop (so
    health, readiness and metrics answer while a forward runs). One is enough: the
    engine runs one ``forward`` at a time anyway. It is also cheaper per request than
    the general-purpose thread pool (``run_in_threadpool``): a single warm thread
    taking work from a queue avoids a capacity limiter and most thread hand-offs,
    ~0.1 ms per request on 2 cores (docs/performance.md, "Runtime serving").
    """
    from pipeline import __version__

    infer_thread = _InferenceThread()

    app = FastAPI(
        title=SERVER_NAME,
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # no schema/UI surface on a hardened server
    )

    @app.exception_handler(PipelineError)
    async def _pipeline_error(_: Request, exc: PipelineError) -> Response:
        status = http_status(exc)
        if status >= 500 and not isinstance(exc, NotReadyError):
            log.error("request failed: %s", exc)
        return _json(error_body(str(exc)), status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        return _json(error_body(str(exc.detail)), exc.status_code)

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> Response:
        log.exception("internal error while handling a request")
        return _json(error_body(f"internal error: {exc.__class__.__name__}"), 500)

    @app.get("/v2/health/live")
    async def live() -> Response:
        return _json({"live": True})

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return _json({"ready": state.ready}, 200 if state.ready else 503)

    @app.get("/v2")
    async def server_metadata() -> Response:
        return _json({"name": SERVER_NAME, "version": __version__, "extensions": []})

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: str | None = None) -> Response:
        return _json(state.require_model(name, version).metadata())

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None) -> Response:
        engine = state.require_model(name, version)
        return _json({"name": engine.name, "ready": state.ready})

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(name: str, request: Request, version: str | None = None) -> Response:
        engine = state.require_model(name, version)
        body = await _read_body(request, max_request_bytes)

        def run() -> dict[str, Any]:
            parsed = parse_infer_request(parse_json_body(body), text_input=engine.text_input)
            outputs = engine.infer(parsed.inputs, parsed.outputs)
            return infer_response(engine.name, parsed.id, outputs)

        return _json(await infer_thread.run(run))

    @app.get("/metrics")
    async def metrics() -> Response:
        payload, content_type = state.metrics.render()
        return Response(payload, media_type=content_type)

    app.add_middleware(_MetricsMiddleware, metrics=state.metrics)
    return app


# ---------------------------------------------------------------------------- loading


def looks_like_oci_reference(model: str) -> bool:
    """``registry/repo:tag`` or ``...@sha256:`` that is not an existing local path."""
    if os.path.exists(model) or model.startswith((".", "/", "~")):
        return False
    return "/" in model and (":" in model.rsplit("/", 1)[-1] or "@" in model)


def check_model_reference(config: RuntimeConfig) -> None:
    """Fail closed on a tag-only OCI reference: a tag can be moved after signing.

    The signature still binds the content, but pinning a digest is what makes the
    deployment reproducible and lets admission policy reason about it; tags need
    ``--allow-tag`` (``SECURE_RUNTIME_ALLOW_TAG=1``).
    """
    if looks_like_oci_reference(config.model) and "@" not in config.model and not config.allow_tag:
        raise ConfigError(
            f"model reference {config.model!r} has no digest: pin it as "
            "REGISTRY/REPO@sha256:<64 hex>, or pass --allow-tag to accept a tag"
        )


def _pull(reference: str, config: RuntimeConfig, workdir: Path) -> Path:
    try:
        from pipeline.oci.registry import RegistryOptions
        from pipeline.sealing.artifact import pull_sealed_model
    except ImportError as exc:
        raise ConfigError(f"cannot pull {reference}: OCI support is not installed ({exc})"
                          ) from None
    options = RegistryOptions(insecure=config.registry_insecure, ca_file=config.registry_ca_file)
    log.info("pulling sealed model %s", reference)
    # The signature is verified when the model is opened (load_sealed_model), not here.
    return pull_sealed_model(reference, workdir / "model", registry_options=options)


def _release_copied_buffers(loaded: Any, module: Any) -> None:
    """Zero and drop decrypted host buffers the module did not adopt (it copied them)."""
    import torch

    used: list[tuple[int, int]] = []
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.device.type == "cpu":
            storage = tensor.untyped_storage()
            used.append((storage.data_ptr(), storage.data_ptr() + storage.nbytes()))
    kept: list[torch.Tensor] = []
    for buffer in getattr(loaded, "host_buffers", []) or []:
        start, end = buffer.data_ptr(), buffer.data_ptr() + buffer.numel()
        if any(s < end and start < e for s, e in used):
            kept.append(buffer)
        else:
            buffer.zero_()
    if hasattr(loaded, "host_buffers"):
        loaded.host_buffers = kept
    loaded.tensors = {}


def load_engine(config: RuntimeConfig, state: RuntimeState) -> InferenceEngine:
    """verify -> unwrap -> decrypt -> device -> scrub env -> build -> mlock -> warm up."""
    from pipeline.config import load_settings
    from secure_runtime import build_module, load_sealed_model
    from secure_runtime.hardening import lock_tensors, scrub_environment
    from secure_runtime.inference import InferenceEngine

    started = time.perf_counter()
    workdir: Path | None = None
    try:
        source = Path(config.model).expanduser()
        if looks_like_oci_reference(config.model):
            workdir = Path(tempfile.mkdtemp(prefix="secure-runtime-"))
            source = _pull(config.model, config, workdir)
        trust = None
        if config.trust:
            from pipeline.signing.model import Trust

            trust = Trust(public_keys=tuple(config.trust))
        settings = load_settings(config.pipeline_config)
        if config.key_file is not None:
            # A Kubernetes Secret volume exposes files as symlinks into ..data/; the
            # local key provider opens with O_NOFOLLOW, so hand it the real file.
            settings = replace(settings, keyring=Path(os.path.realpath(config.key_file)))
        try:
            loaded = load_sealed_model(
                source,
                device=config.device,
                trust=trust,
                allow_unsigned=config.allow_unsigned,
                settings=settings,
            )
        finally:
            removed = scrub_environment()
        if removed:
            log.info("removed key material from the environment: %s", ", ".join(removed))
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    timings = dict(loaded.timings)
    build_started = time.perf_counter()
    from secure_runtime import loader as loader_module

    code = loader_module.load_project_code(loaded)
    module = build_module(loaded, code)
    engine = InferenceEngine(loaded, module, code)
    _release_copied_buffers(loaded, module)
    timings["build"] = time.perf_counter() - build_started
    weights = [*module.parameters(), *module.buffers(), *getattr(loaded, "host_buffers", [])]
    report = lock_tensors(weights)
    metrics = state.metrics
    metrics.weights_bytes.set(sum(p.numel() * p.element_size() for p in module.parameters()))
    metrics.mlocked_bytes.set(report.locked_bytes)
    metrics.mlock_complete.set(1 if report.complete else 0)
    if report.error:
        log.warning("weights are NOT locked in memory: %s", report.error)
    else:
        log.info("weights locked in memory: %d bytes", report.locked_bytes)
    if config.warmup:
        warm_started = time.perf_counter()
        engine.warm_up()
        timings["warmup"] = time.perf_counter() - warm_started
    timings["total"] = time.perf_counter() - started
    metrics.record_load(timings)
    metrics.signature_verified.set(1 if getattr(loaded, "signature_verified", False) else 0)
    state.load_report = {
        "model": engine.name,
        "device": engine.device,
        "signature_verified": bool(getattr(loaded, "signature_verified", False)),
        "manifest_sha256": getattr(loaded, "manifest_sha256", ""),
        "timings": timings,
        "mlocked_bytes": report.locked_bytes,
        "mlock_error": report.error,
    }
    return engine


# ---------------------------------------------------------------------------- serving


def _uvicorn_server_class() -> type:
    import uvicorn

    class _Server(uvicorn.Server):
        """uvicorn with readiness drop on signal and gRPC drained alongside HTTP."""

        def __init__(self, config: Any, state: RuntimeState, grpc_server: Any) -> None:
            super().__init__(config)
            self.state = state
            self.grpc_server = grpc_server

        def handle_exit(self, sig: int, frame: Any) -> None:
            self.state.draining = True
            self.state.metrics.model_ready.set(0)
            log.info("signal %d: draining in-flight requests, then exiting", sig)
            super().handle_exit(sig, frame)

        async def shutdown(self, sockets: Any = None) -> None:
            grpc_done = None
            if self.grpc_server is not None:
                grpc_done = self.grpc_server.stop(self.config.timeout_graceful_shutdown)
            await super().shutdown(sockets=sockets)
            if grpc_done is not None:
                await asyncio.get_running_loop().run_in_executor(None, grpc_done.wait)

    return _Server


def _background_load(config: RuntimeConfig, state: RuntimeState, server: Any) -> None:
    try:
        engine = load_engine(config, state)
    except BaseException as exc:  # noqa: BLE001 - every failure must stop the server
        state.failure = exc
        state.metrics.load_failures.labels(error=exc.__class__.__name__).inc()
        if isinstance(exc, PipelineError):
            log.error("model load failed: %s", exc)
        else:
            log.exception("model load failed with an internal error")
        server.should_exit = True
        return
    state.engine = engine
    state.metrics.model_ready.set(1)
    log.info(
        "ready: model %s on %s (load %.3f s, signature %s)",
        engine.name,
        engine.device,
        state.load_report["timings"]["total"],
        "verified" if state.load_report["signature_verified"] else "NOT verified",
    )


def serve(config: RuntimeConfig) -> int:
    """Harden, listen, load in the background, serve until SIGTERM; return the exit code."""
    import uvicorn

    from secure_runtime.hardening import check_user, disable_core_dumps

    # env={}: SECURE_RUNTIME_ALLOW_ROOT was already folded into config (flag > env > file).
    check_user(config.allow_root, env={})
    disable_core_dumps()
    check_model_reference(config)
    state = RuntimeState()
    state.metrics.core_dumps_disabled.set(1)
    app = create_app(state, max_request_bytes=config.max_request_bytes)
    grpc_server = None
    if config.grpc_port is not None:
        from secure_runtime.grpc_service import start_grpc_server

        grpc_server = start_grpc_server(
            state, config.host, config.grpc_port, max_message_bytes=config.max_request_bytes
        )
    uv_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level=config.log_level,
        log_config=None,  # uvicorn's lines go through our one log format
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=max(1, int(config.drain_seconds)),
        server_header=False,
    )
    server = _uvicorn_server_class()(uv_config, state, grpc_server)
    signalled: list[int] = []
    # uvicorn re-raises the signal after its graceful shutdown; this handler absorbs
    # it so a drained SIGTERM ends in exit 0 (also as PID 1, where default
    # dispositions are ignored by the kernel).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, _f: signalled.append(s))
    threading.Thread(
        target=_background_load, args=(config, state, server), name="model-load", daemon=True
    ).start()
    try:
        server.run()
    except SystemExit:
        raise ConfigError(f"cannot listen on {config.host}:{config.port}") from None
    finally:
        if grpc_server is not None:
            grpc_server.stop(0)
    if state.failure is not None:
        failure = state.failure
        return failure.exit_code if isinstance(failure, PipelineError) else EXIT_INTERNAL
    if not server.started and not signalled:
        raise ConfigError(f"cannot listen on {config.host}:{config.port}")
    log.info("stopped cleanly")
    return 0


__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "NotReadyError",
    "RequestTooLargeError",
    "RuntimeConfig",
    "RuntimeState",
    "check_model_reference",
    "create_app",
    "http_status",
    "load_engine",
    "looks_like_oci_reference",
    "serve",
]
