"""Local deploys: a chart's rendered objects run on this machine, as a cluster would.

``pipeline deploy --local`` and promotion's local canary share :class:`LocalCluster`:
Deployments and Rollouts become pods from their images pulled by digest (unpacked once
per digest, cached), each under bubblewrap with its own network namespace; Services
become nginx upstreams on 127.0.0.1; ServiceMonitors become Prometheus scrape jobs with
the operator's target labels. See docs/deploy.md.

Usage::

    from pipeline.charts import render
    from pipeline.deploy import LocalCluster

    chart = render("helm/secure-runtime", values_files=["values.yaml"])
    with LocalCluster(Path("state"), secret_dirs={"release-secure-runtime-kek": keys}) as c:
        c.apply([o.obj for o in chart.objects], chart.namespace)
        c.wait_ready()
        url = c.service_url("release-secure-runtime")
        c.start_pod_set("canary", "release-secure-runtime", image="reg/app@sha256:...",
                        replicas=1)
        c.set_weights("release-secure-runtime", {"release-secure-runtime": 90,
                                                 "canary": 10})
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline._facade import lazy_exports

if TYPE_CHECKING:
    from pipeline.deploy.cluster import Event, LocalCluster, PodSet
    from pipeline.deploy.image import ImageCache, UnpackedImage
    from pipeline.deploy.objects import Plan, plan
    from pipeline.deploy.run import deploy_chart

_LAZY = {
    "Event": "pipeline.deploy.cluster",
    "LocalCluster": "pipeline.deploy.cluster",
    "PodSet": "pipeline.deploy.cluster",
    "ImageCache": "pipeline.deploy.image",
    "UnpackedImage": "pipeline.deploy.image",
    "Plan": "pipeline.deploy.objects",
    "plan": "pipeline.deploy.objects",
    "deploy_chart": "pipeline.deploy.run",
}

__all__ = ["Event", "ImageCache", "LocalCluster", "Plan", "PodSet", "UnpackedImage",
           "deploy_chart", "plan"]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
