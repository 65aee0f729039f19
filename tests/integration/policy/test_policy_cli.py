"""``pipeline policy check`` end to end: exit codes, formats, and the runtime chart.

The chart is rendered by the real Helm engine (tests/support/helm.py) with its default
values plus the required digests, written out as Helm would print it, and must pass
every default policy; breaking one security setting through values must be refused.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from pipeline.cli import run
from pipeline.errors import EXIT_VIOLATIONS
from tests.support.helm import render_chart

CHART = Path(__file__).resolve().parents[3] / "helm" / "secure-runtime"
REQUIRED = {"image": {"digest": "sha256:" + "a1" * 32}, "model": {"digest": "sha256:" + "b2" * 32}}
BAD_POD = """apiVersion: v1
kind: Pod
metadata: {name: bad, namespace: ns}
spec:
  hostNetwork: true
  containers:
  - {name: app, image: "nginx:latest"}
"""


@pytest.fixture(scope="module")
def chart_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("chart") / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(render_chart(CHART, REQUIRED)))
    return path


def test_runtime_chart_default_values_pass_every_default_policy(
    chart_yaml: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["policy", "check", str(chart_yaml)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok:") and "against 5 policies" in out


def test_runtime_chart_gpu_rollout_passes(tmp_path: Path) -> None:
    values = {**REQUIRED, "rollout": {"enabled": True}, "gpu": {"enabled": True, "count": 1}}
    path = tmp_path / "gpu.yaml"
    objects = render_chart(CHART, values)
    assert any(o["kind"] == "Rollout" for o in objects)
    path.write_text(yaml.safe_dump_all(objects))
    assert run(["policy", "check", str(path)]) == 0


MIG_POD = """apiVersion: v1
kind: Pod
metadata: {name: mig, namespace: ns}
spec:
  containers:
  - name: app
    image: "r/app@sha256:%s"
    resources: {limits: {nvidia.com/mig-1g.10gb: 1}}
""" % ("c3" * 32)


def test_a_mig_pod_without_runtime_class_is_denied(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A MIG slice is a GPU: without the GPU runtime class the pod would not see it."""
    path = tmp_path / "mig.yaml"
    path.write_text(MIG_POD)
    assert run(["policy", "check", str(path)]) == EXIT_VIOLATIONS
    out = capsys.readouterr().out
    assert "Pod/mig: policy gpu-runtime-class" in out and "runtimeClassName" in out
    path.write_text(MIG_POD.replace("spec:\n", "spec:\n  runtimeClassName: nvidia\n", 1))
    capsys.readouterr()
    run(["policy", "check", str(path)])
    assert "gpu-runtime-class" not in capsys.readouterr().out


def test_runtime_chart_mig_rollout_passes(tmp_path: Path) -> None:
    values = {**REQUIRED, "rollout": {"enabled": True},
              "gpu": {"enabled": True, "resourceName": "nvidia.com/mig-1g.10gb"}}
    path = tmp_path / "mig.yaml"
    path.write_text(yaml.safe_dump_all(render_chart(CHART, values)))
    assert run(["policy", "check", str(path)]) == 0


def test_chart_with_token_mounted_is_refused(tmp_path: Path) -> None:
    objects = render_chart(CHART, REQUIRED)
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] = True
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    assert run(["policy", "check", str(path)]) == EXIT_VIOLATIONS


def test_violations_exit_1_with_file_line_document_kind_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("---\n" + BAD_POD.replace("name: bad", "name: ok0") + "---\n" + BAD_POD)
    assert run(["policy", "check", str(path)]) == EXIT_VIOLATIONS
    captured = capsys.readouterr()
    # The second Pod starts on line 10 (after "---", seven lines, "---").
    assert (f"{path}:10: document 1: Pod/bad: policy pod-host-isolation: hostNetwork"
            in captured.out)
    assert "policy image-digest-pinning" in captured.out and "nginx:latest" in captured.out
    assert "error: " in captured.err and "Traceback" not in captured.err


def test_stdin_and_json() -> None:
    # A real process reading a real pipe, as `helm template ... | pipeline policy check -`.
    done = subprocess.run([sys.executable, "-m", "pipeline", "--json", "policy", "check", "-"],
                          input=BAD_POD, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == EXIT_VIOLATIONS
    report = json.loads(done.stdout)
    assert report["ok"] is False and report["objects"] == 1
    first = report["violations"][0]
    assert first["file"] == "<stdin>" and first["document"] == 0 and first["kind"] == "Pod"


def test_github_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_POD)
    assert run(["policy", "check", "--format", "github", str(path)]) == EXIT_VIOLATIONS
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("::")]
    assert lines and all(line.startswith(f"::error file={path},line=1,title=policy ")
                         for line in lines)
    assert any("Pod/bad (document 0): hostNetwork" in line for line in lines)


def test_junit_format_to_file(tmp_path: Path, chart_yaml: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_POD)
    out = tmp_path / "report.xml"
    assert run(["policy", "check", "--format", "junit", "-o", str(out), str(bad),
                str(chart_yaml)]) == EXIT_VIOLATIONS
    suite = ET.parse(out).getroot().find("testsuite")
    assert suite is not None
    assert suite.get("tests") == "8" and suite.get("failures") == "1"
    failed = [c for c in suite.iter("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["Pod/bad"]


def test_malformed_yaml_exits_4_naming_file_and_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BAD_POD + "---\nkind: [\n")
    assert run(["policy", "check", str(path)]) == 4
    err = capsys.readouterr().err
    assert f"{path}: document 1" in err and "malformed YAML" in err and "Traceback" not in err


def test_non_object_document_exits_4(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("just a string\n")
    assert run(["policy", "check", str(path)]) == 4


def test_bad_policy_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "p.yaml").write_text(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\n"
        "metadata: {name: broken}\nspec:\n  matchConstraints: {resourceRules: [{apiGroups: "
        "['*'], apiVersions: ['*'], operations: ['*'], resources: ['*']}]}\n"
        "  validations: [{expression: 'object.spec.('}]\n")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(BAD_POD)
    assert run(["policy", "check", "--policies", str(policies), str(manifest)]) == 3
    err = capsys.readouterr().err
    assert "policy 'broken'" in err and "object.spec.(" in err


def test_verify_images_refuses_images_the_image_policy_denies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Default deny, no rule for this registry: refused before any network access.
    image_policy = tmp_path / "image-policy.yaml"
    image_policy.write_text("version: 1\ndefault: deny\nrequireDigest: true\nrules: []\n")
    path = tmp_path / "pod.yaml"
    digest = "sha256:" + "cd" * 32
    path.write_text(BAD_POD.replace("hostNetwork: true", "hostNetwork: false")
                    .replace("nginx:latest", f"other.example/app@{digest}"))
    code = run(["--json", "policy", "check", "--verify-images", "--image-policy",
                str(image_policy), str(path)])
    assert code == EXIT_VIOLATIONS
    report = json.loads(capsys.readouterr().out)
    assert report["images_checked"] == 1
    assert any(v["policy"] == "image-policy" and "other.example/app" in v["message"]
               for v in report["violations"])


def test_default_policies_are_valid_kubernetes_objects() -> None:
    # The same YAML is applied to clusters: it must pass the API server's schema (1.30).
    import kubernetes_validate

    policy_dir = Path(__file__).resolve().parents[3] / "policies"
    docs = [doc for path in sorted(policy_dir.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc and "apiVersion" in doc]
    assert len(docs) == 10
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30", strict=True)
