"""The evidence report: one page that ties a release's chain of proof together.

``collect`` reads the GitOps repository (git is the database): the environment's
release record history (``environments/<env>/release.yaml``, one commit per step) and the
release record the release workflow committed (``releases/*.json``,
:mod:`pipeline.release.record`). ``render_html`` turns that into one static page:
git commit -> workflow run -> image digest -> signature and attestations -> sealed
model -> policy results -> admission -> each promotion step with its analysis numbers
-> roll-backs with reasons, with inline SVG plots of every canary analysis. No network,
no JavaScript; every value is HTML-escaped (reasons and references come from users).
See docs/report.md.
"""

from __future__ import annotations

from pipeline.report.evidence import collect
from pipeline.report.html import render_html

__all__ = ["collect", "render_html"]
