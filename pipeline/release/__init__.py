"""Releases: canary promotion gated on Prometheus, GitOps state, rollback, local traffic.

Git is the database: per environment the chart values pinning the image and sealed
model digests, and a release record, one commit per step; rollback is a revert.
``promote`` walks the canary stages (10% -> 50% -> 100% by default), each gated on the
same PromQL analysis Argo Rollouts runs; ``local`` and ``traffic`` split traffic on one
machine (nginx weights, a local Prometheus). See docs/release.md.

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
    from pipeline.release.gitops import STATUSES, Commit, GitOpsRepo, Release, ReleaseState, pinned
    from pipeline.release.local import LocalTarget, PrometheusServer, TrafficLoop
    from pipeline.release.promote import (
        DEFAULT_STAGES,
        PromoteResult,
        check_image_policy,
        parse_stages,
        promote,
        rollback,
    )
    from pipeline.release.traffic import Nginx

_LAZY = {
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
    "Commit",
    "GitOpsRepo",
    "LocalTarget",
    "Measurement",
    "Nginx",
    "Prometheus",
    "PrometheusServer",
    "PromoteResult",
    "Release",
    "ReleaseState",
    "Thresholds",
    "TrafficLoop",
    "analyse",
    "check_image_policy",
    "parse_stages",
    "pinned",
    "promote",
    "rollback",
]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
