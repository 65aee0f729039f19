"""Releases: canary promotion gated on Prometheus, GitOps state, rollback, local traffic.

Git is the database: per environment the chart values pinning the image and sealed
model digests, and a release record, one commit per step; rollback is a revert.
``promote`` walks the canary stages (10% -> 50% -> 100% by default), checking the gates
(``gates``) before each and analysing each with PromQL; a :class:`CanaryExecutor` carries
the steps out (today ``local`` and ``traffic``: nginx weights, a local Prometheus).
``environments`` and ``argocd`` lay the repository out for Argo CD, push, and wait for
the sync; ``lock`` keeps one promotion per environment. See docs/release.md.

Usage::

    from pipeline.release import GitOpsRepo, Prometheus, Thresholds, analyse, promote

    prom, limits = Prometheus("http://127.0.0.1:9090"), Thresholds()
    result = promote(GitOpsRepo(Path("gitops")), "prod", image, model,
                     analyse=lambda weight: analyse(prom, "canary", limits))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline._facade import lazy_exports

if TYPE_CHECKING:
    from pipeline.release.analysis import (
        AnalysisResult,
        Measurement,
        Prometheus,
        Thresholds,
        analyse,
    )
    from pipeline.release.argocd import ArgoCD
    from pipeline.release.environments import Publisher, init_repository
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
    "Measurement": "pipeline.release.analysis",
    "Prometheus": "pipeline.release.analysis",
    "Thresholds": "pipeline.release.analysis",
    "analyse": "pipeline.release.analysis",
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
    "CanaryExecutor",
    "Commit",
    "EnvironmentLock",
    "Gates",
    "GitOpsRepo",
    "LocalTarget",
    "Measurement",
    "Nginx",
    "Prometheus",
    "PrometheusServer",
    "PromoteResult",
    "Publisher",
    "Release",
    "ReleaseState",
    "Stage",
    "Thresholds",
    "TrafficLoop",
    "analyse",
    "check_image_policy",
    "init_repository",
    "parse_stages",
    "pinned",
    "promote",
    "rollback",
]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
