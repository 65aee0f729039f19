"""A canary and a stable pod set's metrics, served by prometheus-client with the runtime's
metric names (secure_runtime.metrics.RuntimeMetrics), scraped every second by a real
Prometheus labelled as the chart's ServiceMonitor labels its targets."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from prometheus_client import start_http_server

from pipeline.release.canary import scrape_labels
from pipeline.release.local import PrometheusServer, free_port
from secure_runtime.metrics import RuntimeMetrics
from tests.support.canary import definition


@dataclass
class Feed:
    """What the fed pods answer; change it while the test runs."""

    canary_status: str = "200"
    canary_latency: float = 0.004


@contextmanager
def canary_prometheus(status: str = "200", namespace: str = "prod",
                      feed: Feed | None = None) -> Iterator[str]:
    """Yields the Prometheus URL once the 5 s window holds canary and stable traffic."""
    feed = feed or Feed(status)
    rendered, canary = definition(namespace)
    scrape = scrape_labels(rendered, canary)
    stop = threading.Event()
    with ExitStack() as stack:
        urls: dict[str, str] = {}
        feeders = []
        for role in ("canary", "stable"):
            metrics = RuntimeMetrics()
            port = free_port()
            server, _thread = start_http_server(port, addr="127.0.0.1",
                                                registry=metrics.registry)
            stack.callback(server.shutdown)
            urls[scrape["roles"][role]["job"]] = f"http://127.0.0.1:{port}"

            def run(metrics: RuntimeMetrics = metrics, role: str = role) -> None:
                for _ in range(60000):  # bounded: at most ~600 s of traffic
                    if stop.wait(0.01):
                        return
                    canary_pod = role == "canary"
                    code = feed.canary_status if canary_pod else "200"
                    delay = feed.canary_latency if canary_pod else 0.004
                    metrics.requests.labels(protocol="http", endpoint="/v2/models/m/infer",
                                            status=code).inc()
                    metrics.latency.labels(protocol="http",
                                           endpoint="/v2/models/m/infer").observe(delay)
                    # health probes must not count: they would hide the errors
                    metrics.requests.labels(protocol="http", endpoint="/v2/health/ready",
                                            status="200").inc(5)

            thread = threading.Thread(target=run, daemon=True)
            thread.start()
            feeders.append(thread)
        labels = {scrape["roles"][r]["job"]: scrape["roles"][r] for r in ("canary", "stable")}
        try:
            with PrometheusServer(urls, labels=labels) as prom:
                time.sleep(3.5)
                yield prom.url
        finally:
            stop.set()
            for thread in feeders:
                thread.join(5)
