"""OIP v2 REST over the data plane: a thin FastAPI adapter.

Routes decode the HTTP request, ask :class:`secure_runtime.dataplane.DataPlane`, and
encode its answer; the only logic here is HTTP's own: status codes
(:func:`http_status`), the body-size limit, and per-route metrics. :func:`create_app`
builds the application alone (no loading, no listening), so tests can serve an
in-memory model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from pipeline.errors import InputError, NotFoundError, PipelineError
from secure_runtime.config import DEFAULT_MAX_REQUEST_BYTES
from secure_runtime.dataplane import SERVER_NAME, DataPlane, NotReadyError, RequestTooLargeError
from secure_runtime.metrics import RuntimeMetrics
from secure_runtime.protocol import (
    ProtocolError,
    error_body,
    infer_response,
    parse_infer_request,
    parse_json_body,
)

log = logging.getLogger("secure_runtime")

_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
_ASGIApp = Callable[[MutableMapping[str, Any], Any, _Send], Awaitable[None]]


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

    def __init__(self, app: _ASGIApp, metrics: RuntimeMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._in_flight = metrics.in_flight.labels(protocol="http")
        self._latency: dict[str, Any] = {}
        self._requests: dict[tuple[str, int], Any] = {}

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: _Send) -> None:
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


_Call = tuple[Callable[[], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


class _InferenceThread:
    """One daemon thread that runs submitted calls in order, off the event loop.

    Like ``run_in_executor`` on a one-thread pool, minus what this use does not need:
    the thread is a daemon (a forward stuck past the drain deadline cannot hold the
    process open at exit) and starts on the first call. A call whose awaiting request
    was cancelled before its turn is skipped.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._started = False
        self._start_lock = threading.Lock()

    async def run(self, func: Callable[[], Any]) -> Any:
        """``func()`` on the inference thread; its result or exception, here."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
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


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
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
    plane: DataPlane, *, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
) -> FastAPI:
    """The OIP v2 REST application over ``plane`` (which may not hold a model yet).

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

    @app.exception_handler(ClientDisconnect)
    async def _disconnected(_: Request, exc: ClientDisconnect) -> Response:
        # The client went away before sending its whole body (a timeout, a slowloris):
        # nobody to answer and no fault of the server, so no ERROR traceback.
        log.debug("client disconnected before sending the whole request")
        return Response(status_code=400)

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> Response:
        log.exception("internal error while handling a request")
        return _json(error_body(f"internal error: {exc.__class__.__name__}"), 500)

    @app.get("/v2/health/live")
    async def live() -> Response:
        return _json({"live": plane.live})

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return _json({"ready": plane.ready}, 200 if plane.ready else 503)

    @app.get("/v2")
    async def server_metadata() -> Response:
        return _json(plane.server_metadata())

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: str | None = None) -> Response:
        return _json(plane.model_metadata(name, version))

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None) -> Response:
        # REST answers 503 before load and while draining (require_model), like health.
        engine = plane.require_model(name, version)
        return _json({"name": engine.name, "ready": plane.ready})

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(name: str, request: Request, version: str | None = None) -> Response:
        engine = plane.require_model(name, version)
        body = await _read_body(request, max_request_bytes)

        def run() -> dict[str, Any]:
            parsed = parse_infer_request(parse_json_body(body), text_input=engine.text_input)
            result = plane.infer(engine, parsed)
            return infer_response(result.model_name, result.id, result.outputs)

        return _json(await infer_thread.run(run))

    @app.get("/metrics")
    async def metrics() -> Response:
        payload, content_type = plane.metrics.render()
        return Response(payload, media_type=content_type)

    app.add_middleware(_MetricsMiddleware, metrics=plane.metrics)
    return app


__all__ = ["create_app", "http_status"]
