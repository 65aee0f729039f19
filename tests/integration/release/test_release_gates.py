"""Gates that cannot be skipped, through ``pipeline promote`` as users run it: a real
registry holding a signed, attested image and sealed models (signed, unsigned,
tampered), the real image policy and model verification, the admission policies on the
chart rendered for the environment, and a real Prometheus for the analysis.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.cli import run
from pipeline.release.gitops import GitOpsRepo
from tests.fixtures_registry import RegistryServer
from tests.support.canary import write_values
from tests.support.prometheus import canary_prometheus
from tests.support.runtime import TINY, make_workspace, seal
from tests.support.signed_release import SignedRelease, make_signed_release

pytestmark = pytest.mark.timeout(240)

REPLICA_POLICY = """
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: at-most-three-replicas}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - apiGroups: ["apps"]
        apiVersions: ["v1"]
        operations: ["CREATE", "UPDATE"]
        resources: ["deployments"]
      - apiGroups: ["argoproj.io"]
        apiVersions: ["v1alpha1"]
        operations: ["CREATE", "UPDATE"]
        resources: ["rollouts"]
  validations:
    - expression: "!has(object.spec.replicas) || object.spec.replicas <= 3"
      message: "at most 3 replicas"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: at-most-three-replicas}
spec:
  policyName: at-most-three-replicas
  validationActions: [Deny]
"""


@pytest.fixture(scope="module")
def release(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory
            ) -> SignedRelease:
    root = tmp_path_factory.mktemp("gates")
    ws = make_workspace(root / "ws")
    signed = seal(ws, TINY, root / "signed.sealed")
    unsigned = seal(ws, TINY, root / "unsigned.sealed", sign=False)
    return make_signed_release(registry, root / "release", signed, unsigned, ws.private,
                               ws.public)


@pytest.fixture(scope="module")
def prometheus() -> Iterator[str]:
    with canary_prometheus(namespace="dev") as url:
        yield url


def _promote(gitops: Path, release: SignedRelease, prometheus: str, image: str, model: str,
             *extra: str) -> int:
    return run(["promote", "--gitops", str(gitops), "--env", "dev", "--image", image,
                "--model", model, "--image-policy", str(release.image_policy),
                "--trust", str(release.trust), "--insecure", "--prometheus", prometheus,
                "-f", str(write_values(gitops.parent / "canary-values.yaml")), *extra])


def _commits(gitops: Path) -> int:
    out = subprocess.run(["git", "-C", str(gitops), "rev-list", "--count", "--all"],
                         capture_output=True, text=True)
    return int(out.stdout.strip() or 0)


def test_a_verified_release_passes_every_gate_before_every_step(
    release: SignedRelease, prometheus: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gitops = tmp_path / "gitops"
    assert _promote(gitops, release, prometheus, release.image, release.model) == 0, \
        capsys.readouterr().err
    err = capsys.readouterr().err
    for stage in ("1/2", "2/2"):
        assert f"gate stage {stage}: image policy: allowed" in err
        assert f"gate stage {stage}: model signature: verified" in err
        assert f"gate stage {stage}: admission: " in err
    assert "ok   canary requests " in err and "success rate 1.000 >= 0.990" in err
    state = GitOpsRepo(gitops).current("dev")
    assert state is not None and (state.status, state.image, state.model) == (
        "promoted", release.image, release.model)


@pytest.mark.parametrize(("which", "words"), [
    ("image_unattested", "no verified https://cosign.sigstore.dev/attestation/vuln/v1"),
    ("model_unsigned", "no trusted model signature"),
    ("model_tampered", "does not match its signature"),
])
def test_a_release_failing_a_gate_is_exit_11_and_commits_nothing(
    release: SignedRelease, prometheus: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], which: str, words: str
) -> None:
    image = release.image_unattested if which.startswith("image") else release.image
    model = getattr(release, which) if which.startswith("model") else release.model
    gitops = tmp_path / "gitops"
    assert _promote(gitops, release, prometheus, image, model, "--json") == 11
    error = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert error["exit_code"] == 11 and error["error"].startswith("gate stage 1/2: ")
    assert words in error["error"], error
    assert _commits(gitops) == 0


def test_admission_policies_judge_the_manifests_rendered_for_the_environment(
    release: SignedRelease, prometheus: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "replicas.yaml").write_text(REPLICA_POLICY)
    values = tmp_path / "values.yaml"
    values.write_text("replicaCount: 5\nautoscaling: {enabled: false}\n")
    gitops = tmp_path / "gitops"
    assert _promote(gitops, release, prometheus, release.image, release.model,
                    "--policies", str(policies), "-f", str(values)) == 11
    err = capsys.readouterr().err
    assert "admission policies deny the rendered manifests" in err
    assert "at most 3 replicas" in err
    assert _commits(gitops) == 0
    values.write_text("replicaCount: 3\nautoscaling: {enabled: false}\n")
    assert _promote(gitops, release, prometheus, release.image, release.model,
                    "--policies", str(policies), "-f", str(values)) == 0
    assert GitOpsRepo(gitops).values("dev")["replicaCount"] == 3
