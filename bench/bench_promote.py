"""The local promotion path's own overhead: weight switches, analysis queries, a whole
3-stage promotion, each against its baseline in the same run.

    .venv/bin/python -m bench.bench_promote [--switches 20] [--queries 30]

* **weight switch**: ``Nginx.set_weight`` (rewrite the config, ``nginx -s reload``, wait
  until the new generation answers and the old worker is gone: the moment nginx routes
  the new weights) against the bare ``nginx -s reload`` command, which returns before
  anything is applied.
* **analysis query**: ``Prometheus.result`` wall time (HTTP round trip, JSON, our parsing)
  against the query's own evaluation time as Prometheus reports it (``stats=all``,
  ``execTotalTime``), for the rendered ``success-rate`` metric's query (the chart's
  AnalysisTemplate, args filled in).
* **promotion**: the chart's rendered Rollout steps, 10 → 50 → 100, run by the local
  executor (:class:`~pipeline.release.executor.StepExecutor`): per stage below 100 a
  0.5 s pause and an analysis of five metrics, two measurements 0.2 s apart; real git,
  nginx and Prometheus. The wall time beyond the configured pauses and intervals is the
  executor's (commits, switches, queries, condition evaluation). Gates are not part of it
  (they talk to a registry; benchmarked with the image policy in bench_verify).

The upstreams are two prometheus-client exporters with the runtime's metric names, fed
directly (canary and stable traffic for the analysis), scraped every second with the
labels the chart's ServiceMonitor gives its targets.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from prometheus_client import start_http_server

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.release.analysis import Prometheus  # noqa: E402
from pipeline.release.canary import (  # noqa: E402
    Analysis,
    CanaryDefinition,
    Pause,
    render_definition,
    scrape_labels,
)
from pipeline.release.executor import StepExecutor  # noqa: E402
from pipeline.release.gitops import GitOpsRepo, Release  # noqa: E402
from pipeline.release.local import LocalTarget, free_port  # noqa: E402
from pipeline.release.promote import promote  # noqa: E402
from secure_runtime.metrics import RuntimeMetrics  # noqa: E402

IMAGE = "registry.local/app@sha256:" + "b" * 64
MODEL = "registry.local/model@sha256:" + "2" * 64
VALUES = {"rollout": {"enabled": True, "weights": [10, 50, 100], "pauseDuration": "500ms",
                      "analysis": {"interval": "200ms", "count": 2, "failureLimit": 0,
                                   "window": "3s", "minRequests": 5}},
          "serviceMonitor": {"interval": "1s", "scrapeTimeout": "1s"}}


def _ms(values: list[float]) -> str:
    return (f"median {statistics.median(values) * 1000:7.1f} ms, "
            f"max {max(values) * 1000:7.1f} ms")


def _exporter(stop: threading.Event) -> str:
    metrics = RuntimeMetrics()
    port = free_port()
    start_http_server(port, addr="127.0.0.1", registry=metrics.registry)

    def feed() -> None:
        for _ in range(100000):
            if stop.wait(0.005):
                return
            metrics.requests.labels(protocol="http", endpoint="/v2/models/m/infer",
                                    status="200").inc()
            metrics.latency.labels(protocol="http", endpoint="/v2/models/m/infer").observe(0.003)

    threading.Thread(target=feed, daemon=True).start()
    return f"http://127.0.0.1:{port}"


def bench_switches(target: LocalTarget, n: int) -> tuple[list[float], list[float]]:
    ours, bare = [], []
    proxy = target.nginx._proxy  # the nginx master (pipeline.deploy.services.ServiceProxy)
    for i in range(n):
        start = time.perf_counter()
        target.set_weight((10, 50, 100, 0)[i % 4])
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        subprocess.run(proxy._args("-s", "reload"), check=True, capture_output=True)
        bare.append(time.perf_counter() - start)
        proxy._wait()  # let the bare reload settle before the next round
    return ours, bare


def bench_queries(url: str, canary: CanaryDefinition, n: int
                  ) -> tuple[list[float], list[float]]:
    analysis = next(s for s in canary.steps if isinstance(s, Analysis))
    promql = next(m.query for m in analysis.metrics if m.name == "success-rate")
    prom = Prometheus(url)
    ours, own = [], []
    for _ in range(n):
        start = time.perf_counter()
        prom.result(promql)
        ours.append(time.perf_counter() - start)
        body = requests.get(f"{url}/api/v1/query", params={"query": promql, "stats": "all"},
                            timeout=5).json()
        own.append(float(body["data"]["stats"]["timings"]["execTotalTime"]))
    return ours, own


class _Timed:
    """The executor's backend, timing what it asks of nginx and Prometheus."""

    def __init__(self, target: LocalTarget, prom: Prometheus) -> None:
        self.target, self.prom = target, prom
        self.spent = {"switch": 0.0, "queries": 0.0}
        self.count = 0

    def set_weight(self, weight: int) -> None:
        start = time.perf_counter()
        self.target.set_weight(weight)
        self.spent["switch"] += time.perf_counter() - start

    def result(self, promql: str) -> float | list[float]:
        start = time.perf_counter()
        try:
            return self.prom.result(promql)
        finally:
            self.spent["queries"] += time.perf_counter() - start
            self.count += 1


def configured_waits(canary: CanaryDefinition) -> float:
    """Pauses plus the intervals between measurements: what the steps ask to wait."""
    total = 0.0
    for step in canary.steps:
        if isinstance(step, Pause):
            total += step.seconds or 0.0
        elif isinstance(step, Analysis):
            total += max(m.initial_delay + (m.count - 1) * m.interval for m in step.metrics)
    return total


def bench_promotion(target: LocalTarget, url: str, canary: CanaryDefinition
                    ) -> tuple[float, float, dict[str, float], int]:
    timed = _Timed(target, Prometheus(url))
    with tempfile.TemporaryDirectory(prefix="bench-promote-") as tmp:
        repo = GitOpsRepo(Path(tmp) / "gitops")
        start = time.perf_counter()
        result = promote(repo, "dev", IMAGE, MODEL,
                         executor=StepExecutor(canary, timed, timed), stages=canary.weights)
        wall = time.perf_counter() - start
    assert result.status == "promoted", result
    return wall, configured_waits(canary), timed.spent, timed.count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--switches", type=int, default=20)
    parser.add_argument("--queries", type=int, default=30)
    args = parser.parse_args()
    stop = threading.Event()
    stable, canary = _exporter(stop), _exporter(stop)
    rendered, definition = render_definition(ROOT / "helm" / "secure-runtime", VALUES,
                                             Release(IMAGE, MODEL), "dev")
    with LocalTarget(stable, canary, scrape=scrape_labels(rendered, definition)) as target:
        time.sleep(3.5)  # the 3 s window holds canary samples
        ours, bare = bench_switches(target, args.switches)
        print(f"weight switch, until nginx routes the new weights: {_ms(ours)}")
        print(f"  baseline, bare `nginx -s reload` (applies nothing yet): {_ms(bare)}")
        print(f"  ratio (median): {statistics.median(ours) / statistics.median(bare):.1f}x; "
              f"target < 200 ms: {'met' if max(ours) < 0.2 else 'NOT met'}")
        q_ours, q_own = bench_queries(target.prometheus.url, definition, args.queries)
        print(f"analysis query (success rate), our wall time: {_ms(q_ours)}")
        print(f"  baseline, Prometheus' own execTotalTime: {_ms(q_own)}")
        print(f"  overhead per query (median): "
              f"{(statistics.median(q_ours) - statistics.median(q_own)) * 1000:.1f} ms")
        wall, configured, spent, asked = bench_promotion(target, target.prometheus.url,
                                                         definition)
        beyond = wall - configured
        print(f"rendered 3-stage promotion (10/50/100; per stage: pause 0.5 s, 5 metrics x 2 "
              f"measurements 0.2 s apart): wall {wall:.2f} s, configured waits "
              f"{configured:.2f} s")
        rest = beyond - spent["switch"] - spent["queries"]
        print(f"  executor beyond the waits: {beyond:.2f} s = {beyond / wall:.1%} of wall: "
              f"switches {spent['switch']:.2f} s, {asked} queries {spent['queries']:.2f} s, "
              f"git commits, conditions and bookkeeping {rest:.2f} s")
        for interval in (10.0, 60.0):
            # The chart's shape at that interval: pause = interval, 2 measurements.
            real = 2 * (interval + interval)
            print(f"  with pause and interval {interval:.0f} s ({real:.0f} s configured) the "
                  f"same overhead is {beyond / (real + beyond):.1%} of wall")
    stop.set()


if __name__ == "__main__":
    main()
