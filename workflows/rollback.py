"""``rollback``: revert an environment to a promoted release, as a GitOps commit.

The very command an operator runs by hand, ``pipeline rollback`` (pipeline/release:
the last good release, or ``to``; the reason recorded in the commit and in
``release.yaml``; exit 16 when the environment already runs it), against a clone of
``gitops-repo`` whose every commit is pushed back (``PIPELINE_GITOPS_REMOTE=origin``),
so Argo CD syncs it on a cluster and ``pipeline report`` lists it with its reason.

Free text (``reason``) and references (``to``) reach the script as environment
variables, never spliced into the bash source: a reason may hold quotes or ``$(...)``.
"""

from __future__ import annotations

from hera.workflows import DAG, Parameter, WorkflowTemplate
from pipeline.workflows.common import (
    ENVIRONMENT,
    GITOPS,
    gitops_checkout,
    step,
    workspace_claim,
    wp,
)

PARAMETERS = {
    "pipeline-image": "registry.example/ml/pipeline@sha256:" + "0" * 64,
    "gitops-repo": "",
    "environment": "",
    "reason": "manual roll-back",
    "to": "",
}


def build() -> WorkflowTemplate:
    """The ``rollback`` WorkflowTemplate: one step, ``pipeline rollback``."""
    with WorkflowTemplate(
        name="rollback",
        entrypoint="rollback",
        arguments=[Parameter(name=k, value=v) for k, v in PARAMETERS.items()],
        volume_claim_templates=[workspace_claim("1Gi")],
        labels={"app.kubernetes.io/part-of": "secure-model-pipeline"},
    ) as template:
        revert = step("rollback-environment", gitops_checkout(config=False) + ENVIRONMENT + f"""
to=()
if [ -n "$ROLLBACK_TO" ]; then to=(--to "$ROLLBACK_TO"); fi
pipeline rollback --gitops {GITOPS} --env "$env" --reason "$ROLLBACK_REASON" "${{to[@]}}"
""", env={"ROLLBACK_REASON": wp("reason"), "ROLLBACK_TO": wp("to")})
        with DAG(name="rollback"):
            revert(name="rollback")
    return template
