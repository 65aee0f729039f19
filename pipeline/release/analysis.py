"""Canary analysis results, and the Prometheus the analysis queries.

There is no canary definition here on purpose: what is measured (the PromQL), how often
and what passes (the conditions) is the chart's AnalysisTemplates', run by Argo Rollouts
on a cluster and by :mod:`pipeline.release.executor` locally. This module holds what
both sides of the promotion share: the verdict of one stage (:class:`AnalysisResult`)
and the instant-query half of the Prometheus HTTP API, answering as Argo Rollouts'
Prometheus provider does (a vector is a list of floats, in the order Prometheus returned
them; an empty vector an empty list; a scalar a float). Fails closed: a Prometheus that
cannot be reached raises :class:`UnreachableError` (exit 9), and the promotion holds,
then rolls back.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import requests

from pipeline.errors import ConfigError, UnreachableError


class Measured(Protocol):
    """One measurement as the promotion records it."""

    @property
    def ok(self) -> bool: ...

    @property
    def failures(self) -> tuple[str, ...]: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class AnalysisResult:
    """The verdict over all measurements of one stage."""

    ok: bool
    measurements: tuple[Measured, ...]

    @property
    def reasons(self) -> list[str]:
        return [f for m in self.measurements for f in m.failures]


class Prometheus:
    """The instant-query half of the Prometheus HTTP API, nothing more."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        # One kept-alive connection: a new TCP connection per query cost more than the
        # query itself (bench/bench_promote.py).
        self._session = requests.Session()

    def _data(self, promql: str) -> dict[str, Any]:
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
        data: dict[str, Any] = body["data"]
        return data

    def result(self, promql: str) -> float | list[float]:
        """What Argo Rollouts' Prometheus provider binds to ``result``."""
        data = self._data(promql)
        kind, result = data["resultType"], data["result"]
        if kind == "scalar":
            return float(result[1])
        if kind == "vector":
            return [float(sample["value"][1]) for sample in result]
        raise ConfigError(f"query {promql!r} returned a {kind}; an analysis needs a vector "
                          "or a scalar")

    def query(self, promql: str) -> float:
        """A scalar: the first sample, NaN when the result is empty."""
        value = self.result(promql)
        if isinstance(value, list):
            return value[0] if value else math.nan
        return value


def wait_for_scrapes(prometheus: Prometheus, targets: Mapping[str, int], since: float, *,
                     scrapes: int = 2, timeout: float = 30.0, poll: float = 0.2) -> list[str]:
    """Wait until, for each label selector (``'service="x",namespace="y"'``), Prometheus
    has scraped at least that many targets ``scrapes`` times since the wall-clock time
    ``since``; return the selectors still short at ``timeout`` (empty: all observed).

    Why: ``increase``/``rate`` over a window need two samples in it. An analysis whose
    window opens before a just-started target's first scrapes reads "no data", a failure
    the canary did not cause. Counted with ``count_over_time(up{...}[since])``: ``up`` is
    written on every scrape, whatever the target exports.
    """
    end = time.monotonic() + timeout
    while True:
        window = max(1, int((time.time() - since) * 1000))
        short = []
        for selector, wanted in targets.items():
            counts = prometheus.result(f"count_over_time(up{{{selector}}}[{window}ms])")
            counts = counts if isinstance(counts, list) else [counts]
            if len(counts) < wanted or any(c < scrapes for c in counts):
                short.append(selector)
        if not short or time.monotonic() > end:
            return short
        time.sleep(poll)


__all__ = ["AnalysisResult", "Measured", "Prometheus", "wait_for_scrapes"]
