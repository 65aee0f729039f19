"""Prometheus metrics of the runtime: traffic, latency, load phases, memory protection.

A private :class:`CollectorRegistry` per server (not the global one) so that tests
can build several apps in one process, and so ``/metrics`` shows exactly what
this runtime measures. Endpoint labels are route templates
(``/v2/models/{name}/infer``), never raw paths: an attacker must not be able to
blow up label cardinality by requesting random URLs.

The canary analysis (pipeline.release) queries these names; they are part of the
interface documented in docs/runtime.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
LOAD_PHASES = ("verify", "unwrap", "decrypt", "to_device", "build", "warmup", "total")


class _GpuMemoryCollector(Collector):
    """Reads CUDA memory at scrape time; reports nothing where there is no GPU."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            import torch
        except ImportError:  # pragma: no cover - torch is a dependency
            return
        initialized: Callable[[], bool] = torch.cuda.is_initialized  # torch leaves it untyped
        if not torch.cuda.is_available() or not initialized():
            return
        family = GaugeMetricFamily(
            "secure_runtime_gpu_memory_bytes",
            "CUDA memory held by this process.",
            labels=["device", "kind"],
        )
        for index in range(torch.cuda.device_count()):
            family.add_metric([str(index), "allocated"], torch.cuda.memory_allocated(index))
            family.add_metric([str(index), "reserved"], torch.cuda.memory_reserved(index))
        yield family


class RuntimeMetrics:
    """All metrics of one runtime instance."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "secure_runtime_requests",
            "Requests handled, by protocol, endpoint and status (HTTP code or gRPC code).",
            ["protocol", "endpoint", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "secure_runtime_request_duration_seconds",
            "Time to answer a request, by protocol and endpoint.",
            ["protocol", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "secure_runtime_in_flight_requests",
            "Requests being handled now.",
            ["protocol"],
            registry=r,
        )
        self.load_seconds = Gauge(
            "secure_runtime_model_load_seconds",
            "Seconds spent loading the model, by phase (total = start of load to ready).",
            ["phase"],
            registry=r,
        )
        self.model_ready = Gauge(
            "secure_runtime_model_ready", "1 once the model is loaded and warmed up.", registry=r
        )
        self.load_failures = Counter(
            "secure_runtime_model_load_failures",
            "Model loads that failed, by error class.",
            ["error"],
            registry=r,
        )
        self.weights_bytes = Gauge(
            "secure_runtime_weights_bytes", "Bytes of model weights held.", registry=r
        )
        self.mlocked_bytes = Gauge(
            "secure_runtime_weights_mlocked_bytes",
            "Bytes of host-resident weights locked in RAM (never swapped).",
            registry=r,
        )
        self.mlock_complete = Gauge(
            "secure_runtime_weights_mlock_complete",
            "1 when every host-resident weight byte is mlocked, 0 when mlock was refused.",
            registry=r,
        )
        self.core_dumps_disabled = Gauge(
            "secure_runtime_core_dumps_disabled",
            "1 when RLIMIT_CORE is 0 and the process is not dumpable.",
            registry=r,
        )
        self.signature_verified = Gauge(
            "secure_runtime_model_signature_verified",
            "1 when the served model's signature was verified against a trusted key.",
            registry=r,
        )
        r.register(_GpuMemoryCollector())

    def record_load(self, timings: Mapping[str, float]) -> None:
        """Export the loader's phase timings (only the phases we know, seconds)."""
        for phase in LOAD_PHASES:
            if phase in timings:
                self.load_seconds.labels(phase=phase).set(float(timings[phase]))

    def render(self) -> tuple[bytes, str]:
        """Body and content type of a ``/metrics`` response."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


__all__ = ["LATENCY_BUCKETS", "LOAD_PHASES", "RuntimeMetrics"]
