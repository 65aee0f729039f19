"""Hera definitions of the pipeline's Argo workflows: ``release``, ``pr_check``, ``rollback``.

These objects are the single definition of both workflows: ``pipeline workflow render``
writes them as Argo ``WorkflowTemplate`` YAML for a cluster, and the local runner
(:mod:`pipeline.workflow`) executes the very same objects on one machine. The folder is
the top-level ``workflows/`` of the repository, installed as ``pipeline.workflows``
(pyproject's ``package-dir``).
"""

from __future__ import annotations

from pipeline.workflows.catalog import WORKFLOWS, build, render_all, to_yaml

__all__ = ["WORKFLOWS", "build", "render_all", "to_yaml"]
