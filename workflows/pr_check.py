"""``pr-check``: what a pull request must pass before review; nothing is signed or pushed.

Cheap first: the policy checks run before the image build, so a PR that breaks a policy
fails in seconds; then the build and a scan of the built image (the scan gate uses
``scan-env``, ``dev`` by default: no vulnerability DB means "not scanned", a warning).

Two policy steps: ``policy-check`` checks the manifests under ``manifests`` (``deploy`` by
default, a directory of the repository); ``chart-check`` renders every chart under
``charts`` (``helm`` by default) once per environment, each ``values-<env>.yaml`` beside
its ``Chart.yaml`` (once with its defaults when it has none), with ``chart-set`` (Helm
``--set`` syntax, ``a=1,b=2``) on top, and checks each rendering. A repository without the
``charts`` directory has no charts to check; ``manifests`` must exist. Both write SARIF
next to the workspace (``policy.sarif``, ``charts.sarif``) for code-scanning upload.
"""

from __future__ import annotations

from hera.workflows import DAG, Parameter, WorkflowTemplate
from pipeline.workflows.common import CHECKOUT_SOURCE, WORKSPACE, step, workspace_claim, wp

PARAMETERS = {
    "pipeline-image": "registry.example/ml/pipeline@sha256:" + "0" * 64,
    "git-repo": "",
    "git-revision": "HEAD",
    "manifests": "deploy",
    "charts": "helm",
    "chart-set": "",
    "scan-env": "dev",
}


def build() -> WorkflowTemplate:
    """The ``pr-check`` WorkflowTemplate: checkout → policy ∥ charts → build → scan."""
    with WorkflowTemplate(
        name="pr-check",
        entrypoint="pr-check",
        arguments=[Parameter(name=k, value=v) for k, v in PARAMETERS.items()],
        volume_claim_templates=[workspace_claim()],
        labels={"app.kubernetes.io/part-of": "secure-model-pipeline"},
    ) as template:
        checkout = step("checkout", CHECKOUT_SOURCE)
        policy = step("policy-check", f"""
pipeline policy check "{WORKSPACE}/src/{wp('manifests')}" --format sarif \\
    -o {WORKSPACE}/policy.sarif
""")
        charts = step("chart-check", f"""
charts="{WORKSPACE}/src/{wp('charts')}"
if [ ! -d "$charts" ]; then
    echo "no directory $charts: no charts to check"
    exit 0
fi
sets=()
if [ -n "{wp('chart-set')}" ]; then sets=(--set "{wp('chart-set')}"); fi
pipeline policy check "$charts" --per-environment "${{sets[@]}}" --format sarif \\
    -o {WORKSPACE}/charts.sarif
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
            t_charts = charts(name="chart-check")
            t_build = image(name="build")
            t_scan = scan(name="scan")
            t_checkout >> [t_policy, t_charts] >> t_build >> t_scan
    return template
