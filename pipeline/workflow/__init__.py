"""The local executor of the Argo workflows defined with Hera in ``workflows/``.

One definition, two executors: the rendered ``WorkflowTemplate`` runs on Argo Workflows
in a cluster, or here, step by step (DAG order, parameters substituted, each step on
the host or inside the pipeline's own image), refusing any Argo feature it cannot
honour. Charts render with :mod:`pipeline.charts`. See
docs/workflows.md.

Usage::

    from pipeline.workflow import run_workflow

    result = run_workflow("release", {"project": "examples/tiny"}, workdir=Path("run"))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline._facade import lazy_exports

if TYPE_CHECKING:
    from pipeline.workflow.plan import Plan, Task, plan_from_dict, topological_order
    from pipeline.workflow.runner import (
        Runner,
        RunResult,
        StepRecord,
        WorkflowStepError,
        load_plan,
        run_workflow,
    )

_LAZY = {
    "Plan": "pipeline.workflow.plan",
    "Task": "pipeline.workflow.plan",
    "plan_from_dict": "pipeline.workflow.plan",
    "topological_order": "pipeline.workflow.plan",
    "RunResult": "pipeline.workflow.runner",
    "Runner": "pipeline.workflow.runner",
    "StepRecord": "pipeline.workflow.runner",
    "WorkflowStepError": "pipeline.workflow.runner",
    "load_plan": "pipeline.workflow.runner",
    "run_workflow": "pipeline.workflow.runner",
}

__all__ = [
    "Plan",
    "RunResult",
    "Runner",
    "StepRecord",
    "Task",
    "WorkflowStepError",
    "load_plan",
    "plan_from_dict",
    "run_workflow",
    "topological_order",
]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
