"""The local canary on pods: the executor's traffic over a :class:`LocalCluster`.

Why pods and not two URLs: Argo Rollouts runs the canary from the Rollout's template, next
to the stable ReplicaSet, behind the chart's Services. Locally the same happens on
:class:`~pipeline.deploy.cluster.LocalCluster`: the chart rendered for the environment's
current release is applied (its Rollout's pods are the stable set), the chart rendered for
the new release gives the canary set's template (new image and model), and the chart's
``-canary``/``-stable`` Services are narrowed to their own set
(:meth:`LocalCluster.select_pod_set`, Argo's pod-template-hash injection), so the
AnalysisTemplates' ``service=`` selectors see the two apart. ``setWeight`` becomes
:meth:`LocalCluster.set_weights` on the main Service.

A first release has no stable set: as Argo Rollouts does for an initial deploy, it goes
straight to 100 % (:func:`initial_definition`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.charts import RenderedChart
from pipeline.deploy.cluster import LocalCluster
from pipeline.errors import ConfigError, PolicyError, UnreachableError
from pipeline.release.analysis import Prometheus, wait_for_scrapes
from pipeline.release.canary import CanaryDefinition, CanaryStage

#: Argo Rollouts' default ``progressDeadlineSeconds``.
DEFAULT_PROGRESS_DEADLINE = 600.0


def initial_definition(definition: CanaryDefinition) -> CanaryDefinition:
    """The definition of an initial deploy: one step, 100 %, no analysis (Argo Rollouts
    skips the steps when there is no stable ReplicaSet yet)."""
    return dataclasses.replace(definition, steps=(), stages=(CanaryStage(100),))


def _rollout(chart: RenderedChart, name: str) -> dict[str, Any]:
    for obj in (o.obj for o in chart.objects):
        if obj.get("kind") == "Rollout" and obj["metadata"]["name"] == name:
            return obj
    raise ConfigError(f"chart {chart.chart}: no Rollout {name!r} rendered")


class ClusterTraffic:
    """:class:`~pipeline.release.executor.Traffic` over a LocalCluster's pod sets.

    ``stable`` is the chart rendered for the running release (None: a first release);
    ``canary`` the chart rendered for the new one. :meth:`start` applies and waits for
    the stable pods and starts the canary set (at weight 0); the first weight above 0
    waits (up to the Rollout's ``progressDeadlineSeconds``) for it to
    be ready, then moves on either way: a canary that never serves fails its analysis
    (no traffic is a failure) and is rolled back, as Argo Rollouts aborts it.
    """

    def __init__(self, cluster: LocalCluster, definition: CanaryDefinition,
                 canary: RenderedChart, stable: RenderedChart | None, *,
                 on_event: Callable[[str], None] | None = None,
                 progress_deadline: float | None = None) -> None:
        self.cluster, self.definition = cluster, definition
        self.canary_chart, self.stable_chart = canary, stable
        self.say = on_event or (lambda _m: None)
        self.service = definition.rollout  # the chart's main Service is named as the Rollout
        self.stable_set = definition.rollout
        self.canary_set = f"{definition.rollout}-canary"
        rollout = _rollout(canary, definition.rollout)
        spec = rollout.get("spec") or {}
        self.canary_workload: Mapping[str, Any] = rollout
        self.deadline = float(progress_deadline if progress_deadline is not None else
                              spec.get("progressDeadlineSeconds", DEFAULT_PROGRESS_DEADLINE))
        self._canary_waited = False
        self._switched: float | None = None  # wall clock of the last weight change

    @property
    def url(self) -> str:
        """Where users' requests go: the main Service (nginx over both sets)."""
        return self.cluster.service_url(self.service)

    def start(self) -> None:
        """Apply the running release (or, first release, the new one) and wait for it."""
        base = self.stable_chart or self.canary_chart
        self.cluster.apply([o.obj for o in base.objects], base.namespace)
        self._refuse_errors(self.stable_set)
        if self.stable_chart is not None:
            # Narrowed before any pod is ready (scraped): no stable series ever carries the
            # canary Service's label. The canary set starts now, at weight 0, as Argo
            # Rollouts creates the canary ReplicaSet when the Rollout's template changes.
            self.cluster.set_weights(self.service, {self.stable_set: 100})
            self.cluster.select_pod_set(self.definition.stable_service, self.stable_set)
            self._start_canary()
        try:
            self.cluster.wait_ready(self.service, timeout=self.deadline)
        except UnreachableError as exc:
            what = "the running release" if self.stable_chart is not None else "the release"
            raise UnreachableError(f"{what} did not become ready: {exc}") from None
        self.say(f"{'stable' if self.stable_chart is not None else 'release'} pods ready "
                 f"behind {self.service} at {self.url}")

    def _refuse_errors(self, subject: str) -> None:
        """A workload whose pods could not even start (refused image, missing --secret)."""
        if subject not in self.cluster.pod_sets:
            errors = [e.message for e in self.cluster.errors()]
            raise PolicyError(f"pods of {subject} could not start: {'; '.join(errors)}")

    def _start_canary(self) -> None:
        started = self.cluster.start_pod_set(self.canary_set, self.canary_workload)
        if started is None:
            self.say(f"canary pods could not start: "
                     f"{'; '.join(e.message for e in self.cluster.errors())}")
            return
        self.cluster.select_pod_set(self.definition.canary_service, self.canary_set)

    def _wait_canary(self) -> None:
        self._canary_waited = True
        if self.canary_set not in self.cluster.pod_sets:
            return
        end = time.monotonic() + self.deadline
        while not self.cluster.ready(self.definition.canary_service):
            if time.monotonic() > end:
                self.say(f"canary not ready after {self.deadline:g}s "
                         "(progressDeadlineSeconds); its analysis will see no traffic")
                return
            time.sleep(0.1)
        self.say(f"canary pods ready ({self.cluster.pod_sets[self.canary_set].image})")

    def set_weight(self, weight: int) -> None:
        if self.stable_chart is None:
            return  # the first release already takes everything
        if weight > 0 and not self._canary_waited:
            self._wait_canary()
        canary = weight if self.canary_set in self.cluster.pod_sets else 0
        self.cluster.set_weights(self.service, {self.stable_set: 100 - canary,
                                                self.canary_set: canary}
                                 if canary < 100 else {self.canary_set: 100})
        self._switched = time.time()
        if weight == 0:
            self.cluster.stop_pod_set(self.canary_set)

    def wait_observed(self, prometheus: Prometheus, *, scrapes: int = 2,
                      timeout: float = 30.0) -> None:
        """Return once Prometheus has scraped every ready pod behind the canary and the
        stable Service ``scrapes`` times since the last weight change
        (:func:`~pipeline.release.analysis.wait_for_scrapes` says why). It never passes
        anything: after ``timeout`` the analysis judges what there is (no data fails).
        """
        if self.stable_chart is None or self._switched is None:
            return
        namespace = self.definition.namespace
        expected = {f'namespace="{namespace}",service="{service}"':
                    len([p for p in self.cluster.pod_sets[pod_set].pods if p.ready])
                    for service, pod_set in ((self.definition.canary_service, self.canary_set),
                                             (self.definition.stable_service, self.stable_set))
                    if pod_set in self.cluster.pod_sets}
        short = wait_for_scrapes(prometheus, expected, self._switched, scrapes=scrapes,
                                 timeout=timeout)
        if short:
            self.say(f"Prometheus scraped {'; '.join(short)} fewer than {scrapes} times in "
                     f"{timeout:g}s after the weight change; analysing what there is")


__all__ = ["ClusterTraffic", "DEFAULT_PROGRESS_DEADLINE", "initial_definition"]
