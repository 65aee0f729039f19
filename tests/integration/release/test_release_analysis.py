"""Analysis against a real Prometheus, and failing closed when there is none.

The exporter is a real prometheus-client HTTP server exposing the runtime's metric
names (secure_runtime.metrics.RuntimeMetrics); Prometheus is the Debian binary
scraping it every second. No part of Prometheus is imitated.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import start_http_server

from pipeline.errors import UnreachableError
from pipeline.release.analysis import Prometheus, Thresholds, analyse
from pipeline.release.gitops import GitOpsRepo, Release, ReleaseState
from pipeline.release.local import PrometheusServer, free_port
from pipeline.release.promote import promote
from secure_runtime.metrics import RuntimeMetrics

pytestmark = pytest.mark.timeout(90)

IMG = "registry.local/app@sha256:" + "a" * 64
IMG2 = "registry.local/app@sha256:" + "b" * 64
MODEL = "registry.local/model@sha256:" + "1" * 64
ENDPOINT = "/v2/models/{name}/infer"


@pytest.fixture(scope="module")
def exporter() -> Iterator[tuple[threading.Event, str]]:
    """The runtime's metrics served by prometheus-client, fed by a bounded loop."""
    metrics = RuntimeMetrics()
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=metrics.registry)
    stop = threading.Event()
    errors = threading.Event()

    def feed() -> None:
        for _ in range(20000):  # bounded: at most ~200 s of traffic
            if stop.wait(0.01):
                return
            status = "500" if errors.is_set() else "200"
            metrics.requests.labels(protocol="http", endpoint=ENDPOINT, status=status).inc()
            metrics.latency.labels(protocol="http", endpoint=ENDPOINT).observe(0.004)
            # health probes must not count: they would hide the errors
            metrics.requests.labels(protocol="http", endpoint="/v2/health/ready",
                                    status="200").inc(5)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        yield errors, f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        feeder.join(5)
        server.shutdown()


def test_healthy_then_erroring_canary(exporter: tuple[threading.Event, str]) -> None:
    errors, url = exporter
    t = Thresholds(window="3s", interval=1, count=2, min_requests=20)
    with PrometheusServer({"canary": url}) as prom_server:
        prom = Prometheus(prom_server.url)
        time.sleep(2.5)  # two scrapes with traffic inside the window
        healthy = analyse(prom, "canary", t)
        assert healthy.ok, healthy.reasons
        m = healthy.measurements[-1]
        assert m.success_rate == 1.0 and m.requests >= 20 and m.p99_seconds <= 0.005
        errors.set()  # the exporter's 5xx counter rises from now on
        time.sleep(3.5)  # the 3 s window now holds only errors
        failed = analyse(prom, "canary", Thresholds(window="3s", interval=0, count=3))
        assert not failed.ok and len(failed.measurements) == 1  # stops at the first failure
        assert any(r.startswith("success rate 0.0") for r in failed.reasons), failed.reasons


def test_unreachable_prometheus_is_exit_9(tmp_path: Path) -> None:
    with pytest.raises(UnreachableError, match="unreachable"):
        Prometheus(f"http://127.0.0.1:{free_port()}").query("up")


def test_promote_holds_then_rolls_back_without_prometheus(tmp_path: Path) -> None:
    repo = GitOpsRepo(tmp_path / "g")
    repo.commit(ReleaseState("prod", IMG, MODEL, 100, "1/1", "promoted", Release(IMG, MODEL)),
                "prod: promote a")
    prom = Prometheus(f"http://127.0.0.1:{free_port()}")
    t = Thresholds(interval=0, count=1)
    with pytest.raises(UnreachableError, match="unreachable.*held 1s, then rolled back prod to "
                                               "app@sha256:aaaaaaaaaaaa"):
        promote(repo, "prod", IMG2, MODEL, analyse=lambda w: analyse(prom, "canary", t),
                hold_seconds=1, hold_poll=0.2)
    state = repo.current("prod")
    assert state is not None
    assert (state.status, state.weight, state.image) == ("rolled-back", 0, IMG)
    assert state.reasons[0].startswith("analysis impossible: Prometheus at")
    # Both outcomes are in git: the hold, then the roll-back; never a pass.
    assert [c.message.split(":")[1].strip().split(" ")[0] for c in repo.history("prod")] == [
        "roll", "hold", "canary", "promote"]
    held = repo.history("prod")[1].state
    assert held.status == "progressing" and held.analysis.startswith("held: Prometheus at")
