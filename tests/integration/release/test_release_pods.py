"""``pipeline promote --local`` on the chart's pods: no servers started by hand.

The built tiny image is pushed to a loopback registry, signed and attested; sealed models
are pushed next to it. Each promotion starts the pods itself on a LocalCluster (as
``pipeline deploy --local`` does): the stable pod set from the environment's running
release, the canary set from the new image+model, the chart's ``-canary``/``-stable``
Services narrowed to their own set, the analysis' PromQL against the LocalCluster's
Prometheus. A first release goes straight to 100 %, as Argo Rollouts' initial deploy.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from pipeline.release.gitops import GitOpsRepo, Release
from pipeline.signing.attestation import attest
from pipeline.signing.image import sign_image
from tests.support.build import Built
from tests.support.canary import CHART, FAST, definition, rendered_steps
from tests.support.deploy import PYTHON, ROOT, DeployInputs, push_image
from tests.support.runtime import TINY, runtime_env, seal, write_broken_project
from tests.support.signed_release import INSECURE, VULN, push_sealed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

INFER = "/v2/models/tiny/infer"
BODY = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16],
                    "data": [0.1 * i for i in range(1, 17)]}]}


@dataclass(frozen=True)
class PodRelease:
    image: str
    models: dict[str, str]  # first, second, broken: all signed by the trusted signer
    policy: Path
    trust: Path
    values: Path
    inputs: DeployInputs


@pytest.fixture(scope="module")
def pod_release(built_tiny: Built, registry: object, deploy_inputs: DeployInputs,
                tmp_path_factory: pytest.TempPathFactory) -> PodRelease:
    work = tmp_path_factory.mktemp("promote-pods")
    ws = deploy_inputs.ws
    image = push_image(built_tiny, registry, "promote/tiny").ref
    sign_image(image, ws.private, registry_options=INSECURE)
    attest(image, "vuln", VULN, ws.private, registry_options=INSECURE)
    models = {
        "first": push_sealed(registry, deploy_inputs.models / "tiny", "promote/models/tiny",
                             "first"),  # type: ignore[arg-type]
        "second": push_sealed(registry, seal(ws, TINY, work / "second.sealed"),  # type: ignore[arg-type]
                              "promote/models/tiny", "second"),
        "broken": push_sealed(registry, seal(ws, write_broken_project(work / "broken"),  # type: ignore[arg-type]
                                             work / "broken.sealed"),
                              "promote/models/tiny", "broken"),
    }
    shutil.copy(ws.public, work / "release.pub")
    policy = work / "image-policy.yaml"
    host = registry.host  # type: ignore[attr-defined]
    policy.write_text(
        "version: 1\ndefault: deny\nrequireDigest: true\nrules:\n"
        f"  - name: release\n    images: ['{host}/promote/*']\n"
        "    authorities:\n      - key: release.pub\n"
        "    attestations:\n      - type: vuln\n")
    values = work / "prod-values.yaml"
    values.write_text(yaml.safe_dump({
        **FAST,
        "trust": {"publicKey": ws.public.read_text()},
        "autoscaling": {"enabled": False},
        "replicaCount": 1,
        "probes": {"startup": {"periodSeconds": 1}, "readiness": {"periodSeconds": 1}},
        "runtime": {"extraArgs": ["--no-grpc", "--registry-insecure"]},
    }))
    return PodRelease(image, models, policy, ws.public, values, deploy_inputs)


def _promote(gitops: Path, rel: PodRelease, model: str, log: Path) -> tuple[int, dict, str]:
    """The issue's interface, as a user runs it (a real process)."""
    args = [PYTHON, "-m", "pipeline", "--json", "promote", "--gitops", str(gitops),
            "--env", "prod", "--image", rel.image, "--model", rel.models[model],
            "--local", "--chart", str(CHART), "-f", str(rel.values),
            "--secret", f"secure-runtime-kek={rel.inputs.keys}",
            "--image-policy", str(rel.policy), "--trust", str(rel.trust),
            "--state-dir", str(rel.inputs.state), "--insecure",
            "--traffic-path", INFER, "--traffic-body", str(log.parent / "body.json")]
    (log.parent / "body.json").write_text(json.dumps(BODY))
    done = subprocess.run(args, capture_output=True, text=True, env=runtime_env(),
                          cwd=str(ROOT), timeout=600)
    log.write_text(done.stderr)
    out = json.loads(done.stdout) if done.stdout.strip() else {}
    return done.returncode, out, done.stderr


def test_promote_local_runs_the_rendered_steps_on_pods(pod_release: PodRelease,
                                                        tmp_path: Path) -> None:
    gitops = tmp_path / "gitops"
    # First release: nothing runs yet, so straight to 100 % (Argo's initial deploy).
    code, out, err = _promote(gitops, pod_release, "first", tmp_path / "first.log")
    assert code == 0, err[-4000:]
    assert out["status"] == "promoted" and out["executed"] == [{"setWeight": 100}]

    # Second: stable pods from the first release, canary pods from the new model.
    code, out, err = _promote(gitops, pod_release, "second", tmp_path / "second.log")
    assert code == 0, err[-4000:]
    assert out["status"] == "promoted"
    second = Release(pod_release.image, pod_release.models["second"])
    rendered, _ = definition("prod", values=yaml.safe_load(pod_release.values.read_text()),
                             release=second)
    keys = ("template", "metric", "query", "count", "failureLimit", "inconclusiveLimit",
            "successCondition")
    ran = [{"analysis": [{k: m[k] for k in keys} for m in step["analysis"]]}
           if "analysis" in step else step for step in out["executed"]]
    assert ran == rendered_steps(rendered)
    first_stage = out["stages"][0]
    values = {m["metric"]: m["value"][0] for m in first_stage["measurements"]}
    # The canary Service saw only the canary pods: its own requests, all answered.
    assert values["success-rate"] == 1.0 and values["canary-requests"] >= 5
    state = GitOpsRepo(gitops, create=False).current("prod")
    assert state is not None and state.status == "promoted"
    assert state.stable is not None and state.stable.model == pod_release.models["second"]


def test_failing_canary_on_pods_rolls_back_with_exit_11(pod_release: PodRelease,
                                                        tmp_path: Path) -> None:
    gitops = tmp_path / "gitops"
    code, _out, err = _promote(gitops, pod_release, "first", tmp_path / "first.log")
    assert code == 0, err[-4000:]
    # The broken model passes every gate (it is signed) and becomes ready, then fails
    # every real request: the canary Service's success rate is 0 and it is rolled back.
    code, _out, err = _promote(gitops, pod_release, "broken", tmp_path / "broken.log")
    assert code == 11, err[-4000:]
    assert "analysis failed at 50%" in err and "nan" not in err.lower()
    # Exactly 0: the canary Service's series come from the canary pods only (narrowed as
    # Argo Rollouts narrows it); a stable pod behind it would have answered some.
    assert "success rate 0.000 < 0.990" in err
    current = GitOpsRepo(gitops, create=False).current("prod")
    assert current is not None
    assert (current.status, current.weight) == ("rolled-back", 0)
    assert current.stable is not None and current.stable.model == pod_release.models["first"]
    assert current.failed is not None and current.failed.model == pod_release.models["broken"]
