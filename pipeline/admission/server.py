"""The webhook's HTTPS server: FastAPI routes over :class:`~pipeline.admission.Decider`.

Fail closed at every layer: a body that is not a well-formed AdmissionReview (wrong
apiVersion or kind, no uid, no object, not JSON, too large) is HTTP 400, which the API
server, with ``failurePolicy: Fail``, turns into a rejection; an exception while
deciding is ``allowed: false`` with the exception's class only (details go to the log,
without request bodies or credentials). The decision runs in a worker thread because
verification does blocking registry I/O.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from pipeline.admission.decide import Decider, Decision
from pipeline.admission.metrics import AdmissionMetrics
from pipeline.admission.review import ReviewError, parse_review, response
from pipeline.errors import ConfigError

log = logging.getLogger("pipeline.admission")

#: An UPDATE carries object and oldObject (etcd stores up to 1.5 MiB each), plus slack.
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status_code=status,
                    media_type="application/json")


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (ReviewError) as soon as it exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ReviewError(f"AdmissionReview of {declared} bytes exceeds the limit of "
                          f"{limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ReviewError(f"AdmissionReview exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(decider: Decider, *, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
               metrics: AdmissionMetrics | None = None) -> FastAPI:
    """The app: POST /validate and /mutate, GET /healthz, /readyz and /metrics."""
    metrics = metrics or AdmissionMetrics()
    metrics.watch_cache(decider.cache)
    app = FastAPI(title="pipeline admission webhook", docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.metrics = metrics
    app.state.decider = decider

    async def handle(request: Request, webhook: str,
                     decide: Callable[[Any], Decision]) -> Response:
        started = time.perf_counter()
        try:
            body = await _read_body(request, max_request_bytes)
            review = parse_review(body, max_request_bytes)
        except ClientDisconnect:
            # The client went away mid-body (a timeout, a slowloris): nobody to answer and
            # nothing wrong with the webhook, so no ERROR and no traceback; counted instead.
            metrics.disconnects.labels(webhook).inc()
            log.debug("%s: client disconnected before sending the whole body", webhook)
            return Response(status_code=400)
        except ReviewError as exc:
            metrics.decisions.labels(webhook, "bad_request").inc()
            metrics.latency.labels(webhook).observe(time.perf_counter() - started)
            log.warning("%s: malformed AdmissionReview refused (400): %s", webhook, exc)
            return _json({"error": f"malformed AdmissionReview: {exc}", "code": 400}, 400)
        try:
            decision = await run_in_threadpool(decide, review)
            result = ("not_judged" if not decision.judged
                      else "allowed" if decision.allowed else "denied")
        except Exception as exc:  # noqa: BLE001 - any failure must be a denial
            log.error("%s: uid %s: %s: internal error, denied: %s", webhook, review.uid,
                      review.label, exc.__class__.__name__)
            decision = Decision()
            decision.deny("internal", f"internal error while deciding "
                                      f"({exc.__class__.__name__}); denied (fail closed)")
            result = "error"
        metrics.decisions.labels(webhook, result).inc()
        for policy in decision.denied_by:
            metrics.denials.labels(webhook, policy).inc()
        for rule in decision.would_deny:
            metrics.would_deny.labels(webhook, rule).inc()
        metrics.latency.labels(webhook).observe(time.perf_counter() - started)
        log.info("%s: uid %s: %s: %s%s", webhook, review.uid, review.label, result,
                 "" if decision.allowed else " by " + ", ".join(decision.denied_by))
        return _json(response(review.uid, decision.allowed, decision.reasons,
                              warnings=decision.warnings, patch=decision.patch))

    @app.post("/validate")
    async def validate(request: Request) -> Response:
        return await handle(request, "validate", decider.validate)

    @app.post("/mutate")
    async def mutate(request: Request) -> Response:
        return await handle(request, "mutate", decider.mutate)

    @app.get("/healthz")
    async def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        # Policies are loaded (and compiled) before the app exists: serving means ready.
        return _json({"status": "ready", "policies": len(decider.policies.policies),
                      "imageRules": len(decider.image_policy.rules)})

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def check_tls(cert: Path, key: Path) -> None:
    """Load the pair once so a wrong path or mismatched key is a ConfigError at start."""
    for what, path in (("certificate", cert), ("key", key)):
        if not Path(path).is_file():
            raise ConfigError(f"TLS {what} not found: {path}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"TLS certificate {cert} and key {key} cannot be used together: "
                          f"{exc}") from None


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before serving so a busy port is a ConfigError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only
    # when the socket says it is TCP. Without it, Nagle holds a response's body until the
    # client ACKs its headers, and delayed ACK makes every answer ~40 ms late.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def build_server(app: FastAPI, cert: Path, key: Path, *, log_level: str = "warning") -> Any:
    """A uvicorn server for ``app`` with TLS 1.2+ from ``cert``/``key`` files."""
    import uvicorn

    check_tls(cert, key)
    config = uvicorn.Config(app, ssl_certfile=str(cert), ssl_keyfile=str(key),
                            log_level=log_level, access_log=False, lifespan="off",
                            server_header=False, timeout_keep_alive=30)
    return uvicorn.Server(config)


__all__ = ["DEFAULT_MAX_REQUEST_BYTES", "bind", "build_server", "check_tls", "create_app"]
