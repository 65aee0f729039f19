"""The rendered AnalysisTemplates run against a real Prometheus, and failing closed.

The pods' metrics are real prometheus-client HTTP servers with the runtime's metric names
(secure_runtime.metrics.RuntimeMetrics), scraped by the Debian Prometheus binary with the
labels the chart's ServiceMonitor gives its targets (tests/support/prometheus.py). The
queries and conditions are the chart's, rendered; no part of Prometheus is imitated.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from pipeline.errors import UnreachableError
from pipeline.release.analysis import Prometheus
from pipeline.release.executor import StepExecutor
from pipeline.release.gitops import GitOpsRepo, Release, ReleaseState
from pipeline.release.local import free_port
from pipeline.release.promote import Stage, promote
from tests.support.canary import definition
from tests.support.prometheus import Feed, canary_prometheus

pytestmark = pytest.mark.timeout(120)

IMG = "registry.local/app@sha256:" + "a" * 64
IMG2 = "registry.local/app@sha256:" + "b" * 64
MODEL = "registry.local/model@sha256:" + "1" * 64


class _Weights:
    """The pods here are fed directly: the weight is only recorded."""

    def __init__(self) -> None:
        self.weights: list[int] = []

    def set_weight(self, weight: int) -> None:
        self.weights.append(weight)


@pytest.fixture(scope="module")
def fed() -> Iterator[tuple[Feed, str]]:
    feed = Feed()
    with canary_prometheus(feed=feed) as url:
        yield feed, url


def _run(url: str, namespace: str = "prod") -> tuple[bool, list[str], StepExecutor]:
    _rendered, canary = definition(namespace)
    executor = StepExecutor(canary, _Weights(), Prometheus(url))
    verdict = executor.analyse(Stage(1, 2, 50))
    return verdict.ok, [m.summary for m in verdict.measurements], executor  # type: ignore[attr-defined]


def test_healthy_then_erroring_then_slow_canary(fed: tuple[Feed, str]) -> None:
    feed, url = fed
    ok, summaries, executor = _run(url)
    assert ok, summaries
    assert len(summaries) == 10  # five metrics, count 2
    assert "success rate 1.000 >= 0.990" in summaries
    assert "success rate vs stable 0.000 >= -0.010" in summaries
    assert any(s.startswith("p99 latency 0.00") and "<= 0.500" in s for s in summaries)
    assert [next(iter(step)) for step in executor.log] == ["pause", "analysis"]

    feed.canary_status = "500"  # every canary request fails from now on
    time.sleep(6)  # the 5 s window now holds only errors
    ok, summaries, _ = _run(url)
    # failureLimit 0: the analysis ends at the first failed measurement; 0.000, not NaN.
    assert not ok and summaries[-1] == "success rate 0.000 < 0.990", summaries
    assert not any("nan" in s.lower() for s in summaries)

    feed.canary_status, feed.canary_latency = "200", 0.9
    time.sleep(6)
    ok, summaries, _ = _run(url)
    assert not ok and summaries[-1].startswith("p99 latency 0.9"), summaries
    assert summaries[-1].endswith("> 0.500")
    feed.canary_latency = 0.004


def test_no_traffic_is_a_failure(fed: tuple[Feed, str]) -> None:
    # Another namespace: the rendered queries select no series at all.
    ok, summaries, _ = _run(fed[1], namespace="elsewhere")
    assert not ok
    assert summaries == ["canary requests n/a (no data: no requests in the window) < 5"]


def test_unreachable_prometheus_is_exit_9() -> None:
    with pytest.raises(UnreachableError, match="unreachable"):
        Prometheus(f"http://127.0.0.1:{free_port()}").result("up")


def test_promote_holds_then_rolls_back_without_prometheus() -> None:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        repo = GitOpsRepo(Path(tmp) / "g")
        repo.commit(ReleaseState("prod", IMG, MODEL, 100, "1/1", "promoted",
                                 Release(IMG, MODEL)), "prod: promote a")
        _rendered, canary = definition("prod")
        weights = _Weights()
        executor = StepExecutor(canary, weights, Prometheus(f"http://127.0.0.1:{free_port()}"),
                                sleep=lambda _s: None)
        with pytest.raises(UnreachableError, match="unreachable.*held 1s, then rolled back "
                                                   "prod to app@sha256:aaaaaaaaaaaa"):
            promote(repo, "prod", IMG2, MODEL, executor=executor, stages=canary.weights,
                    hold_seconds=1, hold_poll=0.2)
        state = repo.current("prod")
        assert state is not None
        assert (state.status, state.weight, state.image) == ("rolled-back", 0, IMG)
        assert state.reasons[0].startswith("analysis impossible: Prometheus at")
        assert weights.weights == [50, 0]
        # Both outcomes are in git: the hold, then the roll-back; never a pass.
        assert [c.message.split(":")[1].strip().split(" ")[0]
                for c in repo.history("prod")] == ["roll", "hold", "canary", "promote"]
        held = repo.history("prod")[1].state
        assert held.status == "progressing" and held.analysis.startswith("held: Prometheus at")
        # The pause ran once: the retries resumed at the analysis step.
        assert [next(iter(s)) for s in executor.log].count("pause") == 1
