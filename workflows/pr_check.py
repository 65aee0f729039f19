"""``pr-check``: what a pull request must pass before review; nothing is signed or pushed.

Cheap first: the manifests' policy check runs before the image build, so a PR that breaks
a policy fails in seconds; then the build and a scan of the built image (the scan gate
uses ``scan-env``, ``dev`` by default: no vulnerability DB means "not scanned", a warning).
"""

from __future__ import annotations

from hera.workflows import DAG, Parameter, WorkflowTemplate
from pipeline.workflows.common import CHECKOUT_SOURCE, WORKSPACE, step, workspace_claim, wp

PARAMETERS = {
    "pipeline-image": "registry.example/ml/pipeline@sha256:" + "0" * 64,
    "git-repo": "",
    "git-revision": "HEAD",
    "manifests": "deploy",
    "scan-env": "dev",
}


def build() -> WorkflowTemplate:
    """The ``pr-check`` WorkflowTemplate: checkout → policy → build → scan."""
    with WorkflowTemplate(
        name="pr-check",
        entrypoint="pr-check",
        arguments=[Parameter(name=k, value=v) for k, v in PARAMETERS.items()],
        volume_claim_templates=[workspace_claim()],
        labels={"app.kubernetes.io/part-of": "secure-model-pipeline"},
    ) as template:
        checkout = step("checkout", CHECKOUT_SOURCE)
        policy = step("policy-check", f"""
pipeline policy check "{WORKSPACE}/src/{wp('manifests')}"
""")
        image = step("build", f"""
pipeline build {WORKSPACE}/src --out {WORKSPACE}/image
""")
        scan = step("scan", f"""
pipeline scan {WORKSPACE}/image --env "{wp('scan-env')}" --format cosign-vuln \\
    -o {WORKSPACE}/vuln.json
""")
        with DAG(name="pr-check"):
            t_checkout = checkout(name="checkout")
            t_policy = policy(name="policy-check")
            t_build = image(name="build")
            t_scan = scan(name="scan")
            t_checkout >> t_policy >> t_build >> t_scan
    return template
