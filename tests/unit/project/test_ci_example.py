"""docs/ci/github-actions.yml: the example CI workflow uploads SARIF, and its policy
commands are real: they run here, on a project laid out as the example expects, and
write a SARIF log the official schema accepts."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from pipeline.cli import run
from tests.support.charts import write_chart
from tests.support.sarif import validate_sarif

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "docs" / "ci" / "github-actions.yml"
POD = """apiVersion: v1
kind: Service
metadata: {name: web, namespace: ns}
spec: {ports: [{port: 80}]}
"""


def _workflow() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def _commands(job: str) -> list[list[str]]:
    steps = _workflow()["jobs"][job]["steps"]
    return [shlex.split(s["run"]) for s in steps
            if isinstance(s.get("run"), str) and s["run"].startswith("pipeline ")]


def test_the_example_uploads_every_sarif_it_writes() -> None:
    workflow = _workflow()
    assert workflow["permissions"]["security-events"] == "write"
    for job in ("policy", "scan"):
        steps = workflow["jobs"][job]["steps"]
        written = {c[c.index("-o") + 1] for c in _commands(job) if "sarif" in c and "-o" in c}
        uploads = [s for s in steps if str(s.get("uses", "")).startswith(
            "github/codeql-action/upload-sarif@")]
        assert written and {u["with"]["sarif_file"] for u in uploads} == written
        # Uploaded after a failing check too: violations are why the log exists.
        assert all("!cancelled()" in str(u.get("if")) for u in uploads)


def test_the_policy_commands_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "service.yaml").write_text(POD)
    chart = write_chart(tmp_path / "helm")
    (chart / "values-prod.yaml").write_text("replicas: 3\n")
    monkeypatch.chdir(tmp_path)
    commands = _commands("policy")
    assert commands and all(c[:3] == ["pipeline", "policy", "check"] for c in commands)
    for command in commands:
        assert run(command[1:]) == 0, capsys.readouterr()
    log = validate_sarif((tmp_path / "policy.sarif").read_text())
    assert log["runs"][0]["results"] == [] and log["runs"][0]["properties"]["objects"] == 3
    # A violation in the prod values fails the same step, located in the template.
    (chart / "values-prod.yaml").write_text("hostNetwork: true\n")
    assert run(commands[0][1:]) == 1
    results = validate_sarif((tmp_path / "policy.sarif").read_text())["runs"][0]["results"]
    assert [r["properties"]["environment"] for r in results] == ["prod"]
    assert results[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == (
        "helm/demo/templates/pods.yaml")


def test_the_scan_commands_parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """They need a built image to run (tests/integration/scan covers that): here every
    option and value must be one the command accepts."""
    import click

    from pipeline.cli import main

    monkeypatch.chdir(tmp_path)
    commands = _commands("scan")
    assert [c[:3] for c in commands] == [["pipeline", "image", "build"],
                                         ["pipeline", "image", "scan"]]
    for command in commands:
        node: click.Command = main
        args = command[1:]
        while isinstance(node, click.Group):
            node = node.commands[args.pop(0)]
        node.make_context(node.name or "", list(args))  # raises on an unknown option/value
