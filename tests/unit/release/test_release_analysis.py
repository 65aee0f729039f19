"""Analysis thresholds, queries and the nginx config (pure parts of pipeline.release)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pipeline.errors import ConfigError, InputError
from pipeline.release.analysis import Thresholds, judge, queries
from pipeline.release.traffic import render_config

T = Thresholds(min_requests=10, window="30s")


def test_healthy_numbers_pass() -> None:
    assert judge(100, 0.995, 0.2, T).ok


@pytest.mark.parametrize(("requests", "rate", "p99", "why"), [
    (100, 0.98, 0.2, "success rate 0.980 < 0.990"),
    (100, 0.0, 0.2, "success rate 0.000 < 0.990"),
    (100, 1.0, 0.75, "p99 750.0 ms > 500 ms"),
    (3.4, 1.0, 0.1, "too little traffic: requests 3 < 10 in 30s"),
    (math.nan, math.nan, math.nan, "too little traffic: requests 0 < 10"),
])
def test_unhealthy_or_missing_numbers_fail(requests: float, rate: float, p99: float,
                                           why: str) -> None:
    m = judge(requests, rate, p99, T)
    assert not m.ok and any(f.startswith(why) for f in m.failures), m.failures


def test_no_data_never_passes() -> None:
    # NaN from an empty result (no canary traffic) is a failure on every count.
    failures = judge(math.nan, math.nan, math.nan, T).failures
    assert len(failures) == 3 and not any("nan" in f.lower() for f in failures), failures


def test_measurement_reads_as_formatted_numbers_with_thresholds() -> None:
    m = judge(119.6, 1.0, 0.0042, T)
    assert m.describe(T) == "requests 120 >= 10; success rate 1.000 >= 0.990; p99 4.2 ms <= 500 ms"
    assert m.to_dict()["requests"] == 120 and m.to_dict()["ok"] is True
    failed = judge(50, 0.0, 0.003, T)
    assert failed.failures == ("success rate 0.000 < 0.990",)


def test_measurements_record_each_metric_with_its_threshold() -> None:
    """The evidence a report plots: generic records, NaN as None and never ok."""
    metrics = {m["name"]: m for m in judge(120, 0.5, 0.004, T).to_dict()["metrics"]}
    assert metrics["success_rate"] == {"name": "success_rate", "value": 0.5,
                                       "threshold": 0.99, "comparison": ">=",
                                       "unit": "ratio", "ok": False}
    assert metrics["p99_seconds"]["ok"] is True and metrics["p99_seconds"]["threshold"] == 0.5
    assert metrics["requests"]["threshold"] == 10.0
    empty = judge(math.nan, math.nan, math.nan, T).to_dict()["metrics"]
    assert [m["value"] for m in empty] == [None, None, None]
    assert not any(m["ok"] for m in empty)


def test_all_errors_query_divides_into_zero_not_nan() -> None:
    # The numerator of a canary answering only 5xx has no series: "or vector(0)" makes
    # it 0, so the rate reads 0.000 instead of NaN.
    q = queries("canary", T)["success_rate"]
    assert q.startswith("(sum(rate(") and " or vector(0)) / sum(rate(" in q


def test_queries_select_the_canary_job_and_inference_endpoints() -> None:
    q = queries("canary", T)
    assert q["requests"] == ('sum(increase(secure_runtime_requests_total{job="canary",'
                             'endpoint=~"/v2/models/.+"}[30s]))')
    assert 'status!~"5..|INTERNAL|UNKNOWN|DATA_LOSS"' in q["success_rate"]
    assert q["p99_seconds"].startswith("histogram_quantile(0.99, sum by (le) (rate("
                                       "secure_runtime_request_duration_seconds_bucket{")


def test_thresholds_from_yaml_with_flag_overrides(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("success_rate: 0.95\np99_seconds: 0.25\ncount: 5\n")
    t = Thresholds.load(path, count=2, interval=None)
    assert (t.success_rate, t.p99_seconds, t.count, t.interval) == (0.95, 0.25, 2, 10.0)
    path.write_text("succes_rate: 0.95\n")
    with pytest.raises(ConfigError, match="unknown threshold"):
        Thresholds.load(path)
    with pytest.raises(ConfigError):
        Thresholds(success_rate=1.5)
    with pytest.raises(ConfigError):
        Thresholds(window="30 seconds")


def test_nginx_config_weights_and_loopback_only(tmp_path: Path) -> None:
    conf = render_config(tmp_path, 8080, "http://127.0.0.1:1", "http://127.0.0.1:2", 10, 3)
    assert "server 127.0.0.1:1 weight=90; server 127.0.0.1:2 weight=10;" in conf
    assert "listen 127.0.0.1:8080;" in conf and 'return 200 "3";' in conf
    # nginx has no weight 0: the side without a share is left out.
    conf = render_config(tmp_path, 8080, "http://127.0.0.1:1", "http://127.0.0.1:2", 0, 1)
    assert "127.0.0.1:2" not in conf
    with pytest.raises(InputError, match="127.0.0.1"):
        render_config(tmp_path, 8080, "http://10.0.0.1:1", "http://127.0.0.1:2", 10, 1)
