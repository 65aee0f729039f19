"""Prometheus metrics of the webhook: decisions by result and policy, latency, cache.

A private registry per app (tests build several). Labels are bounded: ``webhook`` is
validate|mutate, ``result`` allowed|denied|error|bad_request|not_judged
(DELETE/CONNECT), and ``policy`` is a loaded
policy's name, ``image-policy`` or ``internal``, never anything taken from a request.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.admission.cache import VerdictCache

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class AdmissionMetrics:
    """All metrics of one webhook instance."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.decisions = Counter("admission_decisions_total", "Admission answers by result.",
                                 ["webhook", "result"], registry=r)
        self.denials = Counter("admission_denials_total",
                               "Denials by the policy that refused (one per policy).",
                               ["webhook", "policy"], registry=r)
        self.would_deny = Counter("admission_would_deny_total",
                                  "Requests a warn/audit-mode rule would have denied (allowed "
                                  "with a warning), by rule.", ["webhook", "rule"], registry=r)
        self.latency = Histogram("admission_decision_seconds",
                                 "Time from request received to answer.", ["webhook"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.disconnects = Counter("admission_client_disconnects_total",
                                   "Requests whose client went away before sending the whole "
                                   "body (not answered; not an error of the webhook).",
                                   ["webhook"], registry=r)
        self._cache_watched = False

    def watch_cache(self, cache: VerdictCache) -> None:
        """Export the cache's hit/miss counts and size, read at scrape time."""
        if not self._cache_watched:
            self.registry.register(_CacheCollector(cache))
            self._cache_watched = True


class _CacheCollector(Collector):
    def __init__(self, cache: VerdictCache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[Metric]:
        hits = CounterMetricFamily("admission_image_cache_hits",
                                   "Image verdicts served from the cache.")
        hits.add_metric([], self.cache.hits)
        misses = CounterMetricFamily("admission_image_cache_misses",
                                     "Digest-pinned image verdicts not in the cache (verified).")
        misses.add_metric([], self.cache.misses)
        yield hits
        yield misses
        yield GaugeMetricFamily("admission_image_cache_entries",
                                "Allowed verdicts currently cached.", value=len(self.cache))


__all__ = ["AdmissionMetrics"]
