"""The executor lets the metric source settle before the first analysis after a weight
change, and only then: no query ever runs on a split Prometheus has not seen yet."""

from __future__ import annotations

from pipeline.release.executor import StepExecutor
from pipeline.release.promote import Stage
from tests.support.canary import definition, fast_values


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def set_weight(self, weight: int) -> None:
        self.calls.append(f"weight {weight}")

    def result(self, promql: str) -> list[float]:
        self.calls.append("query")
        return [0.0] if "histogram_quantile" in promql else [1.0e6]  # all pass

    def settle(self) -> None:
        self.calls.append("settle")


def test_settle_runs_once_per_weight_change_before_its_first_query() -> None:
    rec = _Recorder()
    rendered, _ = definition("prod")
    (rollout,) = [o.obj for o in rendered.objects if o.obj["kind"] == "Rollout"]
    (analysis,) = [s["analysis"] for s in rollout["spec"]["strategy"]["canary"]["steps"]
                   if "analysis" in s]
    _rendered, canary = definition("prod", fast_values(
        steps=[{"setWeight": 50}, {"analysis": analysis}, {"analysis": analysis},
               {"setWeight": 100}, {"analysis": analysis}],
        analysis={"count": 1}))
    executor = StepExecutor(canary, rec, rec, sleep=lambda _s: None, settle=rec.settle)
    for number, weight in enumerate(canary.weights, 1):
        executor.set_weight(weight)
        assert executor.analyse(Stage(number, len(canary.weights), weight)).ok
    first, second = rec.calls.index("weight 50"), rec.calls.index("weight 100")
    assert rec.calls[first + 1] == "settle"  # before any query of the new split
    assert rec.calls[second + 1] == "settle"
    assert rec.calls.count("settle") == 2  # not again for the second analysis at 50 %
    assert "query" in rec.calls[first + 2:second]
