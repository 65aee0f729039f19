"""The canary definition read from the rendered chart, Argo Rollouts' measurement
semantics, the readable summaries, and the nginx config (pure parts of pipeline.release)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import ConfigError, InputError
from pipeline.release.canary import Analysis, Pause, SetWeight, duration_seconds, load_definition
from pipeline.release.executor import _MetricRun, assess, summarise
from pipeline.release.expr import Binary, parse
from pipeline.release.traffic import render_config
from tests.support.canary import definition, fast_values

ERR = 'status!~"5..|INTERNAL|UNKNOWN|DATA_LOSS"'


def _nodes(tree: Any) -> list[Any]:
    out, stack = [], [tree]
    while stack:
        node = stack.pop()
        out.append(node)
        stack += [getattr(node, f.name) for f in dataclasses.fields(node)
                  if dataclasses.is_dataclass(getattr(node, f.name))]
        stack += [a for a in getattr(node, "args", ())]
    return out


def test_the_default_chart_is_the_definition() -> None:
    _rendered, canary = definition("prod", {"rollout": {"enabled": True}})
    assert canary.weights == (10, 50, 100)
    assert [type(s).__name__ for s in canary.steps] == [
        "SetWeight", "Pause", "Analysis", "SetWeight", "Pause", "Analysis", "SetWeight"]
    assert (canary.canary_service, canary.stable_service) == (
        "secure-runtime-canary", "secure-runtime-stable")
    analysis = canary.steps[2]
    assert isinstance(analysis, Analysis)
    assert analysis.templates == ("secure-runtime-success-rate", "secure-runtime-latency")
    by_name = {m.name: m for m in analysis.metrics}
    assert sorted(by_name) == ["canary-requests", "p99-latency", "p99-latency-vs-stable",
                               "success-rate", "success-rate-vs-stable"]
    for metric in analysis.metrics:
        assert (metric.interval, metric.count, metric.failure_limit,
                metric.inconclusive_limit) == (60.0, 5, 1, 0)
        assert 'namespace="prod",service="secure-runtime-canary"' in metric.query
        assert "{{" not in metric.query
        assert metric.address == "http://prometheus-operated.monitoring.svc:9090"
    for compared in ("success-rate-vs-stable", "p99-latency-vs-stable"):
        assert 'service="secure-runtime-stable"' in by_name[compared].query
    assert ERR in by_name["success-rate"].query
    assert by_name["canary-requests"].success is not None
    assert by_name["canary-requests"].success.text.endswith("result[0] >= 20")


@pytest.mark.parametrize("values", [
    {"rollout": {"enabled": True}},
    fast_values(analysis={"successRate": 0.5, "p99Seconds": 2, "maxSuccessRateDrop": 0,
                          "maxP99IncreaseSeconds": 0, "minRequests": 1}),
])
def test_no_traffic_fails_and_no_condition_divides(values: dict[str, Any]) -> None:
    _rendered, canary = definition("prod", values)
    metrics = [m for s in canary.steps if isinstance(s, Analysis) for m in s.metrics]
    assert metrics
    for metric in metrics:
        assert metric.success is not None
        for no_data in ([], [math.nan]):
            assert metric.success(no_data) is False, (metric.name, no_data)
            assert assess(metric.success, metric.failure, no_data) == "Failed"
        assert not any(isinstance(n, Binary) and n.op in ("/", "%")
                       for n in _nodes(metric.success.tree)), metric.success.text
        # Every ratio's denominator is filtered with "> 0": no traffic is an empty vector.
        assert metric.query.count(" / ") == metric.query.count(") > 0)")


def test_environment_values_override_the_steps() -> None:
    _rendered, canary = definition("staging", fast_values(
        weights=[25, 75], pauseDuration="", analysis={"count": 3, "inconclusiveLimit": 2}))
    assert canary.weights == (25, 75, 100)  # Argo Rollouts completes at 100 %
    assert canary.stages[-1].steps == () and canary.stages[-1].first_step is None
    assert isinstance(canary.steps[1], Pause) and canary.steps[1].seconds is None
    metric = canary.stages[0].steps[1].metrics[0]  # type: ignore[union-attr]
    assert (metric.count, metric.inconclusive_limit) == (3, 2)
    assert 'namespace="staging"' in metric.query


def test_verbatim_steps_are_used() -> None:
    steps = [{"setWeight": 20}, {"pause": {"duration": "1m30s"}}, {"setWeight": 100}]
    _rendered, canary = definition("prod", fast_values(steps=steps))
    assert canary.steps == (SetWeight(20), Pause(90.0), SetWeight(100))
    assert canary.weights == (20, 100)


@pytest.mark.parametrize(("steps", "message"), [
    ([{"setWeight": 20}, {"experiment": {"templates": []}}], "'experiment' is not supported"),
    ([{"setWeight": 50}, {"setWeight": 20}], "increasing"),
    ([{"pause": {}}, {"setWeight": 100}], "before the first setWeight"),
    ([{"setWeight": 50}, {"analysis": {"templates": [{"templateName": "x"}]}}],
     "AnalysisTemplate 'x' was not rendered"),
    ([{"setWeight": 50}, {"analysis": {"templates": [{"templateName": "secure-runtime-latency"}],
                                       "args": [{"name": "namespace", "value": "prod"}]}}],
     r"\{\{args.canary-service\}\} has no value"),
    ([{"setWeight": 50}, {"setCanaryScale": {"replicas": 1}}], "'setCanaryScale'"),
])
def test_what_cannot_run_faithfully_is_refused(steps: list[Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        definition("prod", fast_values(steps=steps))


def test_an_unsupported_condition_is_refused_not_ignored() -> None:
    rendered, _canary = definition("prod")
    objects = []
    for item in rendered.objects:
        if item.obj["kind"] == "AnalysisTemplate":
            obj = dict(item.obj, spec=dict(item.obj["spec"]))
            obj["spec"]["metrics"] = [dict(m, successCondition="all(result, {# > 0.99})")
                                      for m in item.obj["spec"]["metrics"]]
            item = dataclasses.replace(item, obj=obj)
        objects.append(item)
    with pytest.raises(ConfigError, match="outside the subset"):
        load_definition(dataclasses.replace(rendered, objects=tuple(objects)))


def test_a_chart_without_a_rollout_is_refused() -> None:
    with pytest.raises(ConfigError, match="rollout.enabled: true"):
        definition("prod", {})


@pytest.mark.parametrize(("success", "failure", "result", "phase"), [
    ("result[0] > 1", None, [2.0], "Successful"),
    ("result[0] > 1", None, [0.0], "Failed"),
    (None, "result[0] > 1", [0.0], "Successful"),
    (None, "result[0] > 1", [2.0], "Failed"),
    ("result[0] > 1", "result[0] < 0", [0.5], "Inconclusive"),
    ("result[0] > 1", "result[0] > 1", [2.0], "Failed"),  # failure wins
    ("result[0] > 1", None, [], "Error"),                 # index out of range
])
def test_measurement_phases_follow_argo_rollouts(success: str | None, failure: str | None,
                                                 result: list[float], phase: str) -> None:
    assert assess(parse(success) if success else None, parse(failure) if failure else None,
                  result) == phase


def test_metric_limits() -> None:
    _rendered, canary = definition("prod", fast_values(analysis={"failureLimit": 1,
                                                                 "count": 3}))
    metric = canary.stages[0].steps[1].metrics[1]  # type: ignore[union-attr]
    run = _MetricRun(metric, 0.0, measured=1, failed=1)
    run.judge()
    assert run.outcome == ""  # one failure is within failureLimit 1
    run.failed, run.measured = 2, 2
    run.judge()
    assert run.outcome == "Failed"
    run = _MetricRun(metric, 0.0, measured=3, failed=1)
    run.judge()
    assert run.outcome == "Successful"
    run = _MetricRun(metric, 0.0, measured=1, inconclusive=1)
    run.judge()
    assert run.outcome == "Inconclusive"  # inconclusiveLimit 0
    run = _MetricRun(metric, 0.0, measured=5, errors=5)
    run.judge()
    assert run.outcome == "Error"  # consecutiveErrorLimit: Argo's default 4


def test_summaries_read_as_numbers_next_to_thresholds() -> None:
    _rendered, canary = definition("prod", {"rollout": {"enabled": True}})
    metrics = {m.name: m for m in canary.stages[0].steps[1].metrics}  # type: ignore[union-attr]
    assert summarise(metrics["success-rate"], [0.0], "Failed") == "success rate 0.000 < 0.990"
    assert summarise(metrics["success-rate"], [1.0], "Successful") == \
        "success rate 1.000 >= 0.990"
    assert summarise(metrics["canary-requests"], [119.6], "Successful") == \
        "canary requests 120 >= 20"
    assert summarise(metrics["p99-latency"], [0.0042], "Successful") == \
        "p99 latency 0.004 <= 0.500"
    no_data = summarise(metrics["success-rate"], [], "Failed")
    assert no_data == "success rate n/a (no data: no requests in the window) < 0.990"
    assert "nan" not in no_data.lower()


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30), ("2m", 120), ("1m30s", 90), ("250ms", 0.25), (5, 5), ("1h", 3600)])
def test_durations(text: Any, seconds: float) -> None:
    assert duration_seconds(text, "x") == seconds
    with pytest.raises(ConfigError):
        duration_seconds("soon", "x")


def test_nginx_config_weights_and_loopback_only(tmp_path: Path) -> None:
    conf = render_config(tmp_path, 8080, "http://127.0.0.1:1", "http://127.0.0.1:2", 10, 3)
    assert "server 127.0.0.1:1 weight=90; server 127.0.0.1:2 weight=10;" in conf
    assert "listen 127.0.0.1:8080;" in conf and 'return 200 "3";' in conf
    assert "proxy_next_upstream off;" in conf  # a canary error is never retried away
    # nginx has no weight 0: the side without a share is left out.
    conf = render_config(tmp_path, 8080, "http://127.0.0.1:1", "http://127.0.0.1:2", 0, 1)
    assert "127.0.0.1:2" not in conf
    with pytest.raises(InputError, match="127.0.0.1"):
        render_config(tmp_path, 8080, "http://10.0.0.1:1", "http://127.0.0.1:2", 10, 1)
