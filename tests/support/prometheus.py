"""A canary's metrics, served by prometheus-client with the runtime's metric names
(secure_runtime.metrics.RuntimeMetrics), scraped every second by a real Prometheus."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import start_http_server

from pipeline.release.local import PrometheusServer, free_port
from secure_runtime.metrics import RuntimeMetrics


@contextmanager
def canary_prometheus(status: str = "200") -> Iterator[str]:
    """Yields the Prometheus URL once its ``canary`` job's 3 s window holds traffic."""
    metrics = RuntimeMetrics()
    port = free_port()
    server, _thread = start_http_server(port, addr="127.0.0.1", registry=metrics.registry)
    stop = threading.Event()

    def feed() -> None:
        for _ in range(60000):  # bounded: at most ~600 s of traffic
            if stop.wait(0.01):
                return
            metrics.requests.labels(protocol="http", endpoint="/v2/models/m/infer",
                                    status=status).inc()
            metrics.latency.labels(protocol="http", endpoint="/v2/models/m/infer").observe(0.004)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        with PrometheusServer({"canary": f"http://127.0.0.1:{port}"}) as prom:
            time.sleep(3.5)
            yield prom.url
    finally:
        stop.set()
        feeder.join(5)
        server.shutdown()
