"""Helm charts rendered offline with the real Helm engine: the one render path of the project.

Why one module: the PR check, the release's policy check, ``pipeline chart render`` and a
local deploy must all see the same objects for the same chart and values, including how
``-f`` files merge and how ``--set`` types its values (Helm's own ``strvals``), so they
render through :func:`render` only. Each rendered object keeps the chart template that
produced it (Helm's ``# Source:`` line) and the line of that template it starts at, so a
finding points at the file a person edits. See docs/helm.md ("Rendering").

Usage::

    from pipeline.charts import is_chart, render

    chart = render("helm/secure-runtime", values_files=["prod.yaml"],
                   set_values=["image.digest=sha256:...", "rollout.enabled=true"])
    for item in chart.objects:
        print(item.template_path, item.line, item.obj["kind"])
"""

from __future__ import annotations

from pipeline.charts.render import RenderedChart, RenderedObject, is_chart, render
from pipeline.charts.values import ValueOptions, load_values

__all__ = ["RenderedChart", "RenderedObject", "ValueOptions", "is_chart", "load_values",
           "render"]
