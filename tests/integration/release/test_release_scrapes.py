"""An analysis starts only once Prometheus has data of the new split (a real Prometheus).

The race this closes: a canary pod that became ready just before the weight switch may
not have been scraped yet, and ``increase(...[window])`` over one sample is empty, read as
"no requests", a failure the canary did not cause. ``wait_for_scrapes`` counts ``up``
samples since the switch, so it holds only while Prometheus has not looked.
"""

from __future__ import annotations

import time

import pytest
from prometheus_client import start_http_server

from pipeline.release.analysis import Prometheus, wait_for_scrapes
from pipeline.release.local import PrometheusServer, free_port
from secure_runtime.metrics import RuntimeMetrics

pytestmark = pytest.mark.integration


def test_waits_for_two_scrapes_after_the_switch_and_reports_what_never_came() -> None:
    metrics = RuntimeMetrics()
    metrics.requests.labels(protocol="http", endpoint="/v2/models/m/infer", status="200").inc()
    port = free_port()
    server, _thread = start_http_server(port, addr="127.0.0.1", registry=metrics.registry)
    try:
        labels = {"canary": {"service": "app-canary", "namespace": "prod"}}
        with PrometheusServer({"canary": f"http://127.0.0.1:{port}"}, labels=labels) as prom:
            source = Prometheus(prom.url)
            selector = 'namespace="prod",service="app-canary"'
            switched = time.time()
            assert wait_for_scrapes(source, {selector: 1}, switched, timeout=30) == []
            waited = time.time() - switched
            # Two samples since the switch: a rate over the time since is defined.
            since = max(1, int((time.time() - switched) * 1000))
            counts = source.result(f"count_over_time(up{{{selector}}}[{since}ms])")
            assert isinstance(counts, list) and len(counts) == 1 and counts[0] >= 2
            assert waited >= 1.0  # scraped every 1 s: the second scrape is >= 1 s later
            rate = source.result(
                f"sum(increase(secure_runtime_requests_total{{{selector}}}[{since}ms]))")
            assert isinstance(rate, list) and len(rate) == 1  # data, not "no requests"

            # A Service with no target, and one wanting more targets than there are: both
            # come back as short after the timeout, never as observed.
            ghost = 'namespace="prod",service="app-stable"'
            short = wait_for_scrapes(source, {ghost: 1, selector: 2}, time.time() - 10,
                                     timeout=0.5, poll=0.1)
            assert short == [ghost, selector]
    finally:
        server.shutdown()
