"""Canary analysis: PromQL against a real Prometheus, judged against thresholds.

The queries use the runtime's own metric names (secure_runtime/metrics.py,
docs/runtime.md) so the same numbers gate a local rollout and the chart's Argo
Rollouts AnalysisTemplate. Every doubt fails closed:

* no traffic, too little traffic or a NaN result is a failed measurement, never a pass;
* the success-rate numerator is ``(... or vector(0))``: a canary answering only errors
  has no non-error series at all, and an empty numerator would divide into NaN (read
  as "no data") instead of 0.000 (read as "all failed");
* a Prometheus that cannot be reached raises :class:`UnreachableError` (exit 9), and
  the caller rolls back before re-raising it;
* a measurement is taken ``count`` times, ``interval`` seconds apart, and every one
  must pass: one good sample right after a weight change proves little.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import requests
import yaml

from pipeline.errors import ConfigError, UnreachableError

REQUESTS = "secure_runtime_requests_total"
LATENCY = "secure_runtime_request_duration_seconds_bucket"
# Server errors: HTTP 5xx and the gRPC codes that mean the server failed (as in the chart).
ERROR_STATUS = "5..|INTERNAL|UNKNOWN|DATA_LOSS"
# Only inference traffic counts: Prometheus' own scrapes of /metrics and health probes
# would otherwise dilute the error rate.
DEFAULT_ENDPOINTS = "/v2/models/.+"


@dataclass(frozen=True)
class Thresholds:
    """What a healthy canary looks like, and how long to look (seconds)."""

    success_rate: float = 0.99
    p99_seconds: float = 0.5
    min_requests: int = 20
    window: str = "30s"
    interval: float = 10.0
    count: int = 3
    initial_delay: float = 0.0
    endpoints: str = DEFAULT_ENDPOINTS

    def __post_init__(self) -> None:
        if not 0 <= self.success_rate <= 1:
            raise ConfigError(f"success_rate must be within 0..1, got {self.success_rate}")
        if self.p99_seconds <= 0 or self.min_requests < 1 or self.count < 1 \
                or self.interval < 0 or self.initial_delay < 0:
            raise ConfigError("thresholds: p99_seconds, min_requests and count must be "
                              "positive, interval and initial_delay not negative")
        if not (self.window[:-1].isdigit() and self.window[-1] in "smh"):
            raise ConfigError(f"window must look like 30s, 2m or 1h, got {self.window!r}")

    @classmethod
    def load(cls, path: str | Path | None, **overrides: Any) -> Thresholds:
        """Thresholds from a YAML mapping (keys as the fields), then non-None overrides."""
        values: dict[str, Any] = {}
        if path is not None:
            try:
                data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise ConfigError(f"{path}: cannot read thresholds: {exc}") from None
            if not isinstance(data, dict):
                raise ConfigError(f"{path}: thresholds must be a mapping")
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(data) - known)
            if unknown:
                raise ConfigError(f"{path}: unknown threshold(s) {unknown}; known: {sorted(known)}")
            values.update(data)
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"thresholds: {exc}") from None


@dataclass(frozen=True)
class Measurement:
    """One look at the canary: the numbers and what was wrong with them."""

    requests: float
    success_rate: float
    p99_seconds: float
    failures: tuple[str, ...] = field(default_factory=tuple)
    #: The numbers next to their thresholds, as people read them (set by :func:`judge`).
    summary: str = ""
    #: Each judged number as data: ``{name, value, threshold, comparison, unit, ok}``
    #: (set by :func:`judge`); what the evidence report plots, whatever the metric.
    metrics: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        def num(x: float) -> float | None:
            return None if math.isnan(x) else round(x, 6)

        requests_seen = None if math.isnan(self.requests) else int(round(self.requests))
        return {"requests": requests_seen, "success_rate": num(self.success_rate),
                "p99_seconds": num(self.p99_seconds), "ok": self.ok,
                "summary": self.summary, "failures": list(self.failures),
                "metrics": [dict(m) for m in self.metrics]}

    def describe(self, t: Thresholds) -> str:
        """One readable line: each number formatted, next to its threshold."""
        return "; ".join(format_numbers(self.requests, self.success_rate, self.p99_seconds, t))


@dataclass(frozen=True)
class AnalysisResult:
    """The verdict over all measurements of one stage."""

    ok: bool
    measurements: tuple[Measurement, ...]

    @property
    def reasons(self) -> list[str]:
        return [f for m in self.measurements for f in m.failures]


def queries(job: str, t: Thresholds) -> dict[str, str]:
    """The three PromQL queries for the canary scraped as ``job``."""
    sel = f'job="{job}",endpoint=~"{t.endpoints}"'
    return {
        "requests": f"sum(increase({REQUESTS}{{{sel}}}[{t.window}]))",
        "success_rate": (f'(sum(rate({REQUESTS}{{{sel},status!~"{ERROR_STATUS}"}}[{t.window}]))'
                         f" or vector(0)) / sum(rate({REQUESTS}{{{sel}}}[{t.window}]))"),
        "p99_seconds": (f"histogram_quantile(0.99, sum by (le) "
                        f"(rate({LATENCY}{{{sel}}}[{t.window}])))"),
    }


def format_numbers(requests_seen: float, success_rate: float, p99: float,
                   t: Thresholds) -> list[str]:
    """``requests 120 >= 20``, ``success rate 0.000 < 0.990``, ``p99 4.2 ms <= 500 ms``.

    Why one formatter: the live progress, the failure reasons and the commit messages
    must read the same; a number without its threshold explains nothing.
    """
    seen = 0 if math.isnan(requests_seen) else int(round(requests_seen))
    parts = [f"requests {seen} {'>=' if seen >= t.min_requests else '<'} {t.min_requests}"]
    if math.isnan(success_rate):
        parts.append(f"success rate n/a (no requests) < {t.success_rate:.3f}")
    else:
        cmp = ">=" if success_rate >= t.success_rate else "<"
        parts.append(f"success rate {success_rate:.3f} {cmp} {t.success_rate:.3f}")
    limit = f"{t.p99_seconds * 1000:.0f} ms"
    if math.isnan(p99):
        parts.append(f"p99 n/a (no requests) > {limit}")
    else:
        parts.append(f"p99 {p99 * 1000:.1f} ms {'<=' if p99 <= t.p99_seconds else '>'} {limit}")
    return parts


def judge(requests_seen: float, success_rate: float, p99: float, t: Thresholds) -> Measurement:
    """Compare one set of numbers with the thresholds (pure: unit-tested directly).

    NaN never passes: no requests means nothing was shown to work.
    """
    too_few, rate, latency = format_numbers(requests_seen, success_rate, p99, t)
    failures = []
    if math.isnan(requests_seen) or requests_seen < t.min_requests:
        failures.append(f"too little traffic: {too_few} in {t.window}")
    if math.isnan(success_rate) or success_rate < t.success_rate:
        failures.append(rate)
    if math.isnan(p99) or p99 > t.p99_seconds:
        failures.append(latency)
    return Measurement(requests_seen, success_rate, p99, tuple(failures),
                       "; ".join((too_few, rate, latency)),
                       metrics_of(requests_seen, success_rate, p99, t))


def metrics_of(requests_seen: float, success_rate: float, p99: float,
               t: Thresholds) -> tuple[dict[str, Any], ...]:
    """The judged numbers as generic records (NaN is ``None``, and never ``ok``).

    Why generic: whatever defines the canary's analysis (these thresholds, or the
    chart's AnalysisTemplate), a record of ``name, value, threshold, comparison`` is
    what an auditor and the evidence report need; they never parse the summary text.
    """
    def item(name: str, value: float, threshold: float, comparison: str,
             unit: str) -> dict[str, Any]:
        missing = math.isnan(value)
        ok = not missing and (value >= threshold if comparison == ">=" else value <= threshold)
        return {"name": name, "value": None if missing else round(value, 6),
                "threshold": threshold, "comparison": comparison, "unit": unit, "ok": ok}

    return (item("requests", requests_seen, float(t.min_requests), ">=", "requests"),
            item("success_rate", success_rate, t.success_rate, ">=", "ratio"),
            item("p99_seconds", p99, t.p99_seconds, "<=", "seconds"))


class Prometheus:
    """The instant-query half of the Prometheus HTTP API, nothing more."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        # One kept-alive connection: a new TCP connection per query cost more than the
        # query itself (bench/bench_promote.py).
        self._session = requests.Session()

    def query(self, promql: str) -> float:
        """A scalar from an instant query: the first sample, NaN when the result is empty."""
        try:
            response = self._session.get(f"{self.url}/api/v1/query",
                                         params={"query": promql}, timeout=self.timeout)
        except requests.RequestException as exc:
            raise UnreachableError(f"Prometheus at {self.url} is unreachable: "
                                   f"{exc.__class__.__name__}") from None
        if response.status_code >= 500:
            raise UnreachableError(f"Prometheus at {self.url} answered "
                                   f"HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise UnreachableError(f"{self.url} did not answer like Prometheus") from None
        if body.get("status") != "success":
            raise ConfigError(f"Prometheus refused the query {promql!r}: {body.get('error')}")
        result = body["data"]["result"]
        if body["data"]["resultType"] == "scalar":
            return float(result[1])
        return float(result[0]["value"][1]) if result else math.nan


def measure(prom: Prometheus, job: str, t: Thresholds) -> Measurement:
    """Query the three numbers once and judge them."""
    q = queries(job, t)
    return judge(prom.query(q["requests"]), prom.query(q["success_rate"]),
                 prom.query(q["p99_seconds"]), t)


def analyse(prom: Prometheus, job: str, t: Thresholds,
            sleep: Callable[[float], None] = time.sleep,
            on_measurement: Callable[[Measurement], None] | None = None) -> AnalysisResult:
    """``count`` measurements ``interval`` s apart; stops at the first failure."""
    sleep(t.initial_delay)
    taken: list[Measurement] = []
    for _ in range(t.count):
        sleep(t.interval)
        m = measure(prom, job, t)
        taken.append(m)
        if on_measurement:
            on_measurement(m)
        if not m.ok:
            return AnalysisResult(False, tuple(taken))
    return AnalysisResult(True, tuple(taken))


__all__ = ["AnalysisResult", "Measurement", "Prometheus", "Thresholds", "analyse",
           "format_numbers", "judge", "measure", "metrics_of", "queries"]
