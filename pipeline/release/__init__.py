"""Releases: canary promotion gated on Prometheus, GitOps state, rollback, local traffic.

Git is the database: per environment the chart values pinning the image and sealed
model digests, and a release record, one commit per step; rollback is a revert.
The canary is the chart's rendered Argo Rollouts ``Rollout`` steps and
``AnalysisTemplate``s (``canary``: :func:`render_definition`); ``promote`` walks their
stages, checking the gates (``gates``) before each; a :class:`CanaryExecutor` carries the
steps out: on a cluster Argo Rollouts, locally :class:`StepExecutor` (``executor``:
setWeight as nginx weights, pause, analysis as the templates' PromQL and conditions,
``expr``, against a local Prometheus; ``local`` and ``traffic``).
``environments`` and ``argocd`` lay the repository out for Argo CD, push, and wait for
the sync; ``lock`` keeps one promotion per environment. See docs/release.md.

Usage::

    from pipeline.release import (GitOpsRepo, Prometheus, Release, StepExecutor, promote,
                                  render_definition)

    _chart, canary = render_definition("helm/secure-runtime", values, Release(image, model),
                                       "prod")
    executor = StepExecutor(canary, target, Prometheus("http://127.0.0.1:9090"))
    result = promote(GitOpsRepo(Path("gitops")), "prod", image, model, executor=executor,
                     stages=canary.weights)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline._facade import lazy_exports

if TYPE_CHECKING:
    from pipeline.release.analysis import AnalysisResult, Prometheus
    from pipeline.release.argocd import ArgoCD
    from pipeline.release.canary import CanaryDefinition, load_definition, render_definition
    from pipeline.release.environments import Publisher, init_repository
    from pipeline.release.executor import MetricMeasurement, StepExecutor
    from pipeline.release.gates import Gates
    from pipeline.release.gitops import STATUSES, Commit, GitOpsRepo, Release, ReleaseState, pinned
    from pipeline.release.local import LocalTarget, PrometheusServer, TrafficLoop
    from pipeline.release.lock import EnvironmentLock
    from pipeline.release.promote import (
        DEFAULT_STAGES,
        CallbackExecutor,
        CanaryExecutor,
        PromoteResult,
        Stage,
        check_image_policy,
        parse_stages,
        promote,
        rollback,
    )
    from pipeline.release.traffic import Nginx

_LAZY = {
    "ArgoCD": "pipeline.release.argocd",
    "Publisher": "pipeline.release.environments",
    "init_repository": "pipeline.release.environments",
    "Gates": "pipeline.release.gates",
    "EnvironmentLock": "pipeline.release.lock",
    "CallbackExecutor": "pipeline.release.promote",
    "CanaryExecutor": "pipeline.release.promote",
    "Stage": "pipeline.release.promote",
    "AnalysisResult": "pipeline.release.analysis",
    "Prometheus": "pipeline.release.analysis",
    "CanaryDefinition": "pipeline.release.canary",
    "load_definition": "pipeline.release.canary",
    "render_definition": "pipeline.release.canary",
    "MetricMeasurement": "pipeline.release.executor",
    "StepExecutor": "pipeline.release.executor",
    "STATUSES": "pipeline.release.gitops",
    "Commit": "pipeline.release.gitops",
    "GitOpsRepo": "pipeline.release.gitops",
    "Release": "pipeline.release.gitops",
    "ReleaseState": "pipeline.release.gitops",
    "pinned": "pipeline.release.gitops",
    "LocalTarget": "pipeline.release.local",
    "PrometheusServer": "pipeline.release.local",
    "TrafficLoop": "pipeline.release.local",
    "DEFAULT_STAGES": "pipeline.release.promote",
    "PromoteResult": "pipeline.release.promote",
    "check_image_policy": "pipeline.release.promote",
    "parse_stages": "pipeline.release.promote",
    "promote": "pipeline.release.promote",
    "rollback": "pipeline.release.promote",
    "Nginx": "pipeline.release.traffic",
}

__all__ = [
    "DEFAULT_STAGES",
    "STATUSES",
    "AnalysisResult",
    "ArgoCD",
    "CallbackExecutor",
    "CanaryDefinition",
    "CanaryExecutor",
    "Commit",
    "EnvironmentLock",
    "Gates",
    "GitOpsRepo",
    "LocalTarget",
    "MetricMeasurement",
    "Nginx",
    "Prometheus",
    "PrometheusServer",
    "PromoteResult",
    "Publisher",
    "Release",
    "ReleaseState",
    "Stage",
    "StepExecutor",
    "TrafficLoop",
    "check_image_policy",
    "init_repository",
    "load_definition",
    "parse_stages",
    "pinned",
    "promote",
    "render_definition",
    "rollback",
]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
