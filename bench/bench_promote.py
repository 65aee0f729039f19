"""The local promotion path's own overhead: weight switches, analysis queries, a whole
3-stage promotion, each against its baseline in the same run.

    .venv/bin/python -m bench.bench_promote [--switches 20] [--queries 30]

* **weight switch**: ``Nginx.set_weight`` (rewrite the config, ``nginx -s reload``, wait
  until the new generation answers and the old worker is gone: the moment nginx routes
  the new weights) against the bare ``nginx -s reload`` command, which returns before
  anything is applied.
* **analysis query**: ``Prometheus.query`` wall time (HTTP round trip, JSON, our parsing)
  against the query's own evaluation time as Prometheus reports it (``stats=all``,
  ``execTotalTime``), for the success-rate query of the analysis.
* **promotion**: 10 → 50 → 100 with one measurement per stage, ``interval`` 0.2 s, real
  git, nginx and Prometheus; the wall time beyond the configured intervals is the
  executor's (commits, switches, queries). Gates are not part of it (they talk to a
  registry; benchmarked with the image policy in bench_verify).

The upstreams are two prometheus-client exporters with the runtime's metric names, fed
directly (canary traffic for the analysis), scraped every second.
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

from pipeline.release.analysis import Prometheus, Thresholds, analyse, queries  # noqa: E402
from pipeline.release.gitops import GitOpsRepo  # noqa: E402
from pipeline.release.local import LocalTarget, free_port  # noqa: E402
from pipeline.release.promote import CallbackExecutor, promote  # noqa: E402
from secure_runtime.metrics import RuntimeMetrics  # noqa: E402

IMAGE = "registry.local/app@sha256:" + "b" * 64
MODEL = "registry.local/model@sha256:" + "2" * 64


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
    nginx = target.nginx
    for i in range(n):
        start = time.perf_counter()
        target.set_weight((10, 50, 100, 0)[i % 4])
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        subprocess.run(nginx._args("-s", "reload"), check=True, capture_output=True)
        bare.append(time.perf_counter() - start)
        nginx._wait_generation()  # let the bare reload settle before the next round
    return ours, bare


def bench_queries(url: str, n: int) -> tuple[list[float], list[float]]:
    promql = queries("canary", Thresholds(window="3s"))["success_rate"]
    prom = Prometheus(url)
    ours, own = [], []
    for _ in range(n):
        start = time.perf_counter()
        prom.query(promql)
        ours.append(time.perf_counter() - start)
        body = requests.get(f"{url}/api/v1/query", params={"query": promql, "stats": "all"},
                            timeout=5).json()
        own.append(float(body["data"]["stats"]["timings"]["execTotalTime"]))
    return ours, own


def bench_promotion(target: LocalTarget, url: str) -> tuple[float, float, dict[str, float]]:
    limits = Thresholds(window="3s", interval=0.2, count=1, min_requests=5)
    spent = {"analysis": 0.0, "switch": 0.0}

    prom = Prometheus(url)

    def timed_analysis(_weight: int) -> object:
        start = time.perf_counter()
        verdict = analyse(prom, "canary", limits)
        spent["analysis"] += time.perf_counter() - start
        return verdict

    def timed_switch(weight: int) -> None:
        start = time.perf_counter()
        target.set_weight(weight)
        spent["switch"] += time.perf_counter() - start

    with tempfile.TemporaryDirectory(prefix="bench-promote-") as tmp:
        repo = GitOpsRepo(Path(tmp) / "gitops")
        start = time.perf_counter()
        result = promote(repo, "dev", IMAGE, MODEL,
                         executor=CallbackExecutor(timed_analysis,  # type: ignore[arg-type]
                                                   timed_switch))
        wall = time.perf_counter() - start
    assert result.status == "promoted", result
    configured = 3 * (limits.initial_delay + limits.count * limits.interval)
    return wall, configured, spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--switches", type=int, default=20)
    parser.add_argument("--queries", type=int, default=30)
    args = parser.parse_args()
    stop = threading.Event()
    stable, canary = _exporter(stop), _exporter(stop)
    with LocalTarget(stable, canary) as target:
        time.sleep(3.5)  # the 3 s window holds canary samples
        ours, bare = bench_switches(target, args.switches)
        print(f"weight switch, until nginx routes the new weights: {_ms(ours)}")
        print(f"  baseline, bare `nginx -s reload` (applies nothing yet): {_ms(bare)}")
        print(f"  ratio (median): {statistics.median(ours) / statistics.median(bare):.1f}x; "
              f"target < 200 ms: {'met' if max(ours) < 0.2 else 'NOT met'}")
        q_ours, q_own = bench_queries(target.prometheus.url, args.queries)
        print(f"analysis query (success rate), our wall time: {_ms(q_ours)}")
        print(f"  baseline, Prometheus' own execTotalTime: {_ms(q_own)}")
        print(f"  overhead per query (median): "
              f"{(statistics.median(q_ours) - statistics.median(q_own)) * 1000:.1f} ms")
        wall, configured, spent = bench_promotion(target, target.prometheus.url)
        beyond = wall - configured
        print(f"3-stage promotion (10/50/100, 1 measurement each, interval 0.2 s): "
              f"wall {wall:.2f} s, configured intervals {configured:.2f} s")
        queries_s = spent["analysis"] - configured
        commits = beyond - spent["switch"] - queries_s
        print(f"  executor beyond the intervals: {beyond:.2f} s = {beyond / wall:.1%} of wall: "
              f"switches {spent['switch']:.2f} s, queries {queries_s:.2f} s, "
              f"git commits and bookkeeping {commits:.2f} s")
        for interval in (10.0, 60.0):
            real = 3 * interval
            print(f"  with interval {interval:.0f} s (3 stages, {real:.0f} s configured) the same "
                  f"overhead is {beyond / (real + beyond):.1%} of wall")
    stop.set()


if __name__ == "__main__":
    main()
