"""The local executor of the Argo workflows defined with Hera in ``workflows/``.

One definition, two executors: the rendered ``WorkflowTemplate`` runs on Argo Workflows
in a cluster, or here, step by step (DAG order, parameters substituted, each step on
the host or inside the pipeline's own image), refusing any Argo feature it cannot
honour. Charts render with :mod:`pipeline.charts`. See
docs/workflows.md.

Usage::

    from pipeline.workflow import run_workflow, install_hook, RunStore, init_project

    result = run_workflow("release", {"git-repo": "."}, workdir=Path("run"))
    init_project(Path("my-model"))                 # the layout the workflows expect
    install_hook(Path("my-model.git"))              # git push runs release / pr-check
    RunStore(Path("my-model.git")).all()            # the runs pushes queued, newest first
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline._facade import lazy_exports

if TYPE_CHECKING:
    from pipeline.workflow.gitrepo import resolve_git_repo
    from pipeline.workflow.hooks import HookInstall, install_hook, on_push
    from pipeline.workflow.plan import Plan, Task, plan_from_dict, topological_order
    from pipeline.workflow.runner import (
        Runner,
        RunResult,
        StepRecord,
        WorkflowStepError,
        load_plan,
        run_workflow,
    )
    from pipeline.workflow.runs import Run, RunStore
    from pipeline.workflow.scaffold import Scaffold, init_project

_LAZY = {
    "HookInstall": "pipeline.workflow.hooks",
    "install_hook": "pipeline.workflow.hooks",
    "on_push": "pipeline.workflow.hooks",
    "resolve_git_repo": "pipeline.workflow.gitrepo",
    "Run": "pipeline.workflow.runs",
    "RunStore": "pipeline.workflow.runs",
    "Scaffold": "pipeline.workflow.scaffold",
    "init_project": "pipeline.workflow.scaffold",
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
    "HookInstall",
    "Plan",
    "Run",
    "RunResult",
    "RunStore",
    "Runner",
    "Scaffold",
    "StepRecord",
    "Task",
    "WorkflowStepError",
    "init_project",
    "install_hook",
    "load_plan",
    "on_push",
    "plan_from_dict",
    "resolve_git_repo",
    "run_workflow",
    "topological_order",
]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
