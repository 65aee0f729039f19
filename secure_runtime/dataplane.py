"""The runtime's data plane: health, metadata, the model repository and inference.

Shaped like KServe's model server: one data plane that knows nothing about transport,
and two thin adapters over it (:mod:`secure_runtime.rest` for OIP v2 REST,
:mod:`secure_runtime.grpc_service` for OIP v2 gRPC). Both ask the same object the same
questions, so readiness, "unknown model" and "shutting down" mean the same thing on
either port; each adapter only maps the errors defined here to its own status codes.

The repository holds one model (a runtime pod serves the sealed model it was given):
empty until start-up (:mod:`secure_runtime.startup`) has verified, decrypted and
warmed it up, then that one engine until the process ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.errors import InputError, NotFoundError, PipelineError
from secure_runtime.metrics import RuntimeMetrics
from secure_runtime.protocol import InferRequest, Tensor

if TYPE_CHECKING:
    from secure_runtime.inference import InferenceEngine

SERVER_NAME = "secure-runtime"


class RequestTooLargeError(InputError):
    """The request body is over ``max_request_bytes`` (HTTP 413, gRPC RESOURCE_EXHAUSTED)."""


class NotReadyError(PipelineError):
    """The model is not loaded yet, or the server is draining (HTTP 503, gRPC UNAVAILABLE)."""


@dataclass(frozen=True)
class InferResult:
    """What one inference produced, before either adapter encodes it."""

    model_name: str
    model_version: str
    id: str
    outputs: list[Tensor]


@dataclass
class DataPlane:
    """What the REST and gRPC adapters share: the loaded engine, readiness, metrics."""

    metrics: RuntimeMetrics = field(default_factory=RuntimeMetrics)
    engine: InferenceEngine | None = None
    draining: bool = False
    failure: BaseException | None = None
    load_report: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ health

    @property
    def live(self) -> bool:
        """The process answers: always true while it can answer at all."""
        return True

    @property
    def ready(self) -> bool:
        """True once the model is loaded and warmed up, until draining starts."""
        return self.engine is not None and not self.draining

    def start_draining(self) -> None:
        """Readiness drops at once (a signal arrived); in-flight requests still finish."""
        self.draining = True
        self.metrics.model_ready.set(0)

    # ------------------------------------------------------------------ repository

    def register(self, engine: InferenceEngine) -> None:
        """Serve ``engine`` from now on (start-up calls this once the model is warm)."""
        self.engine = engine
        self.metrics.model_ready.set(1)

    def record_failure(self, exc: BaseException) -> None:
        """Keep why the load failed (start-up turns it into the exit code) and count it."""
        self.failure = exc
        self.metrics.load_failures.labels(error=exc.__class__.__name__).inc()

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

    def model_ready(self, name: str, version: str | None = None) -> bool:
        """Whether ``name`` is ready: False before load, NotFoundError for another model."""
        engine = self.engine
        if engine is None:
            return False
        if name != engine.name or version not in (None, "", engine.version):
            raise NotFoundError(f"unknown model {name!r} (this server serves {engine.name!r})")
        return self.ready

    # ------------------------------------------------------------------ metadata

    def server_metadata(self) -> dict[str, Any]:
        """OIP server metadata: name, version, extensions."""
        from pipeline import __version__

        return {"name": SERVER_NAME, "version": __version__, "extensions": []}

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        """OIP model metadata of ``name`` (inputs, outputs, versions, platform)."""
        return self.require_model(name, version).metadata()

    # ------------------------------------------------------------------ inference

    def infer(self, engine: InferenceEngine, request: InferRequest) -> InferResult:
        """Run a parsed request on ``engine`` (from :meth:`require_model`)."""
        outputs = engine.infer(request.inputs, request.outputs)
        return InferResult(engine.name, engine.version, request.id, outputs)


__all__ = [
    "SERVER_NAME",
    "DataPlane",
    "InferResult",
    "NotReadyError",
    "RequestTooLargeError",
]
