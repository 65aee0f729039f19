"""Start-up: configuration → listeners → background load → serve → drain on a signal.

Start-up order is the security argument, so it lives in one place (:func:`serve`):

1. hardening that must hold before any secret exists: not root, no core dumps;
2. in the background, started before the servers so that decryption overlaps their
   imports and set-up: :func:`secure_runtime.repository.load_engine` (resolve the
   model, verify -> unwrap -> decrypt -> device, scrub, mlock, build, warm up), then
   the data plane serves it and readiness turns 200;
3. listeners start: ``/v2/health/live`` answers at once, ``/v2/health/ready`` says
   503 until the model is usable (so Kubernetes neither kills a slow load nor
   routes traffic to it);
4. a load failure logs one clear line and stops the process with the error's
   exit code: a pod that cannot verify its model must crash-loop, never serve;
5. SIGTERM: readiness drops to 503, in-flight REST and gRPC requests finish,
   exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

from pipeline.errors import EXIT_INTERNAL, ConfigError, PipelineError
from secure_runtime.config import RuntimeConfig
from secure_runtime.dataplane import DataPlane
from secure_runtime.repository import check_model_reference, load_engine

if TYPE_CHECKING:
    import grpc
    import uvicorn

log = logging.getLogger("secure_runtime")


def _uvicorn_server(config: uvicorn.Config, plane: DataPlane,
                    grpc_server: grpc.Server | None) -> uvicorn.Server:
    import uvicorn

    class _Server(uvicorn.Server):
        """uvicorn with readiness drop on signal and gRPC drained alongside HTTP."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            plane.start_draining()
            log.info("signal %d: draining in-flight requests, then exiting", sig)
            super().handle_exit(sig, frame)

        async def shutdown(self, sockets: Any = None) -> None:
            grpc_done = None
            if grpc_server is not None:
                grpc_done = grpc_server.stop(self.config.timeout_graceful_shutdown)
            await super().shutdown(sockets=sockets)
            if grpc_done is not None:
                await asyncio.get_running_loop().run_in_executor(None, grpc_done.wait)

    return _Server(config)


class _Stopper:
    """Stops the server from the load thread, even before the server object exists.

    The load starts first (so decryption overlaps importing and setting up the
    servers); a failure may therefore come before uvicorn is built. It is remembered
    and applied when the server is attached (uvicorn then exits right after start-up).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._stopped = False

    def attach(self, server: uvicorn.Server) -> None:
        with self._lock:
            self._server = server
            if self._stopped:
                server.should_exit = True

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            if self._server is not None:
                self._server.should_exit = True


#: The interpreter's thread switch interval while the model loads (default 5 ms).
#: The decrypting threads release the GIL for each segment and need it back for the
#: next; while the main thread imports and sets up the servers (pure Python, GIL-bound),
#: each such hand-back waits up to a whole interval. Measured (1 GiB, a GIL-bound
#: thread beside the load): 4.8 s at 5 ms, 1.6 s at 1 ms, 1.2 s at 0.5 ms, against
#: 0.43 s alone, while the other thread kept 98 % of its pace at 0.5 ms. Restored once
#: the load ends, so serving runs with the default.
LOAD_SWITCH_INTERVAL = 0.0005


def _background_load(config: RuntimeConfig, plane: DataPlane, stopper: _Stopper) -> None:
    previous = sys.getswitchinterval()
    during = min(previous, LOAD_SWITCH_INTERVAL)
    sys.setswitchinterval(during)
    try:
        engine = load_engine(config, plane)
    except BaseException as exc:  # noqa: BLE001 - every failure must stop the server
        plane.record_failure(exc)
        if isinstance(exc, PipelineError):
            log.error("model load failed: %s", exc)
        else:
            log.exception("model load failed with an internal error")
        stopper.stop()
        return
    finally:
        if sys.getswitchinterval() == during:  # unless someone else changed it meanwhile
            sys.setswitchinterval(previous)
    plane.register(engine)
    log.info(
        "ready: model %s on %s (load %.3f s, signature %s)",
        engine.name,
        engine.device,
        plane.load_report["timings"]["total"],
        "verified" if plane.load_report["signature_verified"] else "NOT verified",
    )


def _check_server_modules(config: RuntimeConfig) -> None:
    """Fail on a missing [runtime] extra first, as before the imports moved after the load.

    ``find_spec`` finds the modules without importing them (the imports, ~1.4 s, now
    overlap the load); a missing one is the same ModuleNotFoundError ``__main__`` turns
    into exit 3 naming the extra.
    """
    import importlib.util

    for name in ("uvicorn", "fastapi", *(("grpc",) if config.grpc_port is not None else ())):
        if importlib.util.find_spec(name) is None:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def serve(config: RuntimeConfig) -> int:
    """Harden, start the load, listen, serve until SIGTERM; return the exit code.

    The load thread starts as soon as the hardening holds, before the HTTP and gRPC
    stacks are even imported: decryption (GIL released, every core) then overlaps
    their imports and set-up instead of waiting for them. Readiness still says 503
    until the model is registered, so the order of the security argument is kept.
    """
    from secure_runtime.hardening import check_user, disable_core_dumps

    _check_server_modules(config)
    # env={}: SECURE_RUNTIME_ALLOW_ROOT was already folded into config (flag > env > file).
    check_user(config.allow_root, env={})
    disable_core_dumps()
    check_model_reference(config)
    plane = DataPlane()
    plane.metrics.core_dumps_disabled.set(1)
    stopper = _Stopper()
    threading.Thread(
        target=_background_load, args=(config, plane, stopper), name="model-load", daemon=True
    ).start()

    import uvicorn

    from secure_runtime.rest import create_app

    app = create_app(plane, max_request_bytes=config.max_request_bytes)
    grpc_server = None
    if config.grpc_port is not None:
        from secure_runtime.grpc_service import start_grpc_server

        grpc_server = start_grpc_server(
            plane, config.host, config.grpc_port, max_message_bytes=config.max_request_bytes
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
    server = _uvicorn_server(uv_config, plane, grpc_server)
    stopper.attach(server)
    signalled: list[int] = []
    # uvicorn re-raises the signal after its graceful shutdown; this handler absorbs
    # it so a drained SIGTERM ends in exit 0 (also as PID 1, where default
    # dispositions are ignored by the kernel).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, _f: signalled.append(s))
    try:
        server.run()
    except SystemExit:
        raise ConfigError(f"cannot listen on {config.host}:{config.port}") from None
    finally:
        if grpc_server is not None:
            grpc_server.stop(0)
    if plane.failure is not None:
        failure = plane.failure
        return failure.exit_code if isinstance(failure, PipelineError) else EXIT_INTERNAL
    if not server.started and not signalled:
        raise ConfigError(f"cannot listen on {config.host}:{config.port}")
    log.info("stopped cleanly")
    return 0


__all__ = ["serve"]
