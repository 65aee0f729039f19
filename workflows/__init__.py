"""Hera definitions of the pipeline's Argo workflows: ``release`` and ``pr_check``.

These objects are the single definition of both workflows: ``python -m workflows render``
writes them as Argo ``WorkflowTemplate`` YAML for a cluster, and the local runner
(:mod:`pipeline.workflow`) executes the very same objects on one machine.
"""

from __future__ import annotations

from workflows.catalog import WORKFLOWS, build, render_all, to_yaml

__all__ = ["WORKFLOWS", "build", "render_all", "to_yaml"]
