"""``pipeline policy check --format sarif``: SARIF 2.1.0 that code scanning accepts.

Every log is validated against the official OASIS schema (tests/fixtures/sarif/). Results
point at the file and line a person edits: the manifest, or for a chart the template that
produced the object (the ``# Source:`` of ``helm template``).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import run
from pipeline.errors import EXIT_INPUT, EXIT_RENDER, EXIT_VIOLATIONS
from tests.support.charts import POD_LINE, write_chart
from tests.support.sarif import results_by_rule, validate_sarif

ROOT = Path(__file__).resolve().parents[3]
RUNTIME = ROOT / "helm" / "secure-runtime"
DIGESTS = ["--set", "image.digest=sha256:" + "a1" * 32, "--set", "model.digest=sha256:" + "b2" * 32]
BAD_POD = """apiVersion: v1
kind: Service
metadata: {name: s, namespace: ns}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Pod
metadata: {name: bad, namespace: ns}
spec:
  hostNetwork: true
  containers:
  - {name: app, image: "nginx:latest"}
"""


def _sarif(capsys: pytest.CaptureFixture[str]) -> dict:
    return validate_sarif(json.loads(capsys.readouterr().out))


WEBHOOK = [str(ROOT / "helm" / "admission-webhook"), "--set", "image.digest=sha256:" + "c3" * 32]


@pytest.mark.parametrize("args", [
    [str(RUNTIME), *DIGESTS],
    [str(RUNTIME), *DIGESTS, "--set", "rollout.enabled=true"],
    [str(RUNTIME), *DIGESTS, "--set", "gpu.enabled=true"],
    [*WEBHOOK, "--set", "certManager.enabled=true", "--set", "serviceMonitor.enabled=true"],
], ids=["runtime", "runtime-rollout", "runtime-gpu", "webhook-cert-manager"])
def test_the_project_charts_pass_with_an_empty_result_list(
        args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's interface: policy check helm/secure-runtime --set ... --format sarif."""
    code = run(["policy", "check", *args, "--format", "sarif"])
    log = _sarif(capsys)
    assert code == 0, log["runs"][0]["results"]
    run_ = log["runs"][0]
    assert run_["results"] == []
    rules = {r["id"] for r in run_["tool"]["driver"]["rules"]}
    assert {"pod-host-isolation", "image-digest-pinning"} <= rules
    assert run_["properties"]["objects"] >= 5


def test_chart_findings_point_at_the_template_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    write_chart(tmp_path)
    monkeypatch.chdir(tmp_path)
    code = run(["policy", "check", "demo", "--set", "hostNetwork=true", "--release-name", "r",
                "--namespace", "team", "--format", "sarif"])
    assert code == EXIT_VIOLATIONS
    log = _sarif(capsys)
    found = results_by_rule(log)["pod-host-isolation"]
    assert len(found) == 1
    result = found[0]
    assert result["level"] == "error"
    assert result["locations"][0]["physicalLocation"] == {
        "artifactLocation": {"uri": "demo/templates/pods.yaml", "uriBaseId": "%SRCROOT%"},
        "region": {"startLine": POD_LINE}}
    assert result["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == "team/Pod/r-pod"
    assert result["properties"]["chart"] == "demo"
    assert set(result["partialFingerprints"]) == {"secureModelPipelineFinding/v1"}
    rule = log["runs"][0]["tool"]["driver"]["rules"][result["ruleIndex"]]
    assert "policies/pod-host-isolation.yaml" in rule["properties"]["policyFile"]


def test_manifest_findings_carry_file_and_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "bad.yaml").write_text(BAD_POD)
    monkeypatch.chdir(tmp_path)
    assert run(["policy", "check", "deploy", "--format", "sarif"]) == EXIT_VIOLATIONS
    by_rule = results_by_rule(_sarif(capsys))
    assert {"pod-host-isolation", "image-digest-pinning"} <= set(by_rule)
    prints = [r["partialFingerprints"] for rs in by_rule.values() for r in rs]
    assert len({json.dumps(p) for p in prints}) == len(prints)  # one alert per finding
    for results in by_rule.values():
        for result in results:
            assert result["locations"][0]["physicalLocation"] == {
                "artifactLocation": {"uri": "deploy/bad.yaml", "uriBaseId": "%SRCROOT%"},
                "region": {"startLine": 6}}


def test_github_annotations_carry_the_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    write_chart(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert run(["policy", "check", "demo", "--set", "hostNetwork=true",
                "--format", "github"]) == EXIT_VIOLATIONS
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("::error")]
    template = os.path.join("demo", "templates", "pods.yaml")
    assert any(x.startswith(f"::error file={template},line={POD_LINE},title=policy "
                            "pod-host-isolation::") for x in lines), lines


def test_a_chart_that_fails_to_render_exits_14(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    chart = write_chart(tmp_path)
    assert run(["policy", "check", str(chart), "--set", "mustFail=true",
                "--format", "sarif"]) == EXIT_RENDER
    captured = capsys.readouterr()
    assert captured.out == ""  # no report of a check that did not run
    assert "failed to render" in captured.err and "mustFail is set" in captured.err
    assert "Traceback" not in captured.err
    assert run(["policy", "check", str(RUNTIME)]) == EXIT_RENDER  # no digests: by tag refused
    assert "digest is required: secure-runtime deploys by digest only" in capsys.readouterr().err


def test_a_values_file_of_the_wrong_type_exits_4(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    chart = write_chart(tmp_path)
    values = tmp_path / "values-prod.yaml"
    values.write_text("- replicas: 2\n")
    assert run(["policy", "check", str(chart), "-f", str(values)]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert str(values) in err and "expected a mapping" in err
    wrong = tmp_path / "wrong-type.yaml"
    wrong.write_text("replicas: [1]\n")  # a mapping, but the schema wants an integer
    assert run(["policy", "check", str(chart), "-f", str(wrong)]) == EXIT_RENDER
    assert "replicas" in capsys.readouterr().err


def test_per_environment_names_the_environment_that_fails(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chart = write_chart(tmp_path)
    (chart / "values-dev.yaml").write_text("replicas: 1\n")
    (chart / "values-prod.yaml").write_text("replicas: many\n")
    assert run(["policy", "check", str(chart), "--per-environment"]) == EXIT_RENDER
    err = capsys.readouterr().err
    assert f"environment prod ({chart / 'values-prod.yaml'})" in err and "replicas" in err
    (chart / "values-prod.yaml").unlink()
    (chart / "values-dev.yaml").unlink()
    assert run(["policy", "check", str(chart), "--per-environment", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["objects"] == 2  # once, as "default"


def _limit_file_size() -> None:
    # A file-size limit makes every write past 2 KiB fail with EFBIG: a real write failure
    # (as a full disk would be), not a mock.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))


def test_a_failed_report_write_leaves_the_earlier_report(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(BAD_POD)
    out_dir = tmp_path / "reports"
    out_dir.mkdir()
    report = out_dir / "policy.sarif"
    report.write_text("earlier report\n")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "policy", "check", str(tmp_path / "bad.yaml"),
         "--format", "sarif", "-o", str(report)],
        capture_output=True, text=True, timeout=180, check=False, env=env,
        preexec_fn=_limit_file_size)  # noqa: PLW1509 - the child sets its own limit
    assert done.returncode == EXIT_INPUT, done.stderr
    assert "cannot write the report" in done.stderr and "Traceback" not in done.stderr
    assert report.read_text() == "earlier report\n"
    assert sorted(p.name for p in out_dir.iterdir()) == ["policy.sarif"]  # no temporary file
    # Without the limit the same command writes a valid log (exit 1: violations).
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "policy", "check", str(tmp_path / "bad.yaml"),
         "--format", "sarif", "-o", str(report)],
        capture_output=True, text=True, timeout=180, check=False, env=env)
    assert done.returncode == EXIT_VIOLATIONS
    assert results_by_rule(validate_sarif(json.loads(report.read_text())))["pod-host-isolation"]
    assert oct(report.stat().st_mode & 0o777) == "0o644"
