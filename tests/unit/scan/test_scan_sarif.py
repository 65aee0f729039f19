"""A scan as SARIF: levels and code scanning's security-severity follow the severity, files
and lines come from trivy's report, and "not scanned" is said, never read as clean.

The input is trivy's JSON report shape (SchemaVersion 2: Results[].Vulnerabilities,
Secrets with StartLine, Misconfigurations with CauseMetadata.StartLine), written here
with the fields trivy 0.59 emits; the integration test scans a real image.
"""

from __future__ import annotations

import json

from pipeline.scan.findings import ScanResult
from pipeline.scan.gate import GateDecision
from pipeline.scan.sarif import render_sarif
from pipeline.scan.trivy import parse_report
from tests.support.sarif import results_by_rule, validate_sarif

REPORT = {
    "SchemaVersion": 2,
    "Results": [
        {"Target": "usr/lib/python3/dist-packages/requests-2.0.dist-info/METADATA",
         "Class": "lang-pkgs", "Type": "python-pkg",
         "Vulnerabilities": [{
             "VulnerabilityID": "CVE-2024-0001", "PkgName": "requests",
             "PkgPath": "usr/lib/python3/dist-packages/requests-2.0.dist-info/METADATA",
             "InstalledVersion": "2.0", "FixedVersion": "2.32.0", "Severity": "CRITICAL",
             "Title": "a critical one"}]},
        {"Target": "/app/settings.py", "Class": "secret",
         "Secrets": [{"RuleID": "github-pat", "Category": "GitHub", "Severity": "HIGH",
                      "Title": "GitHub Personal Access Token", "StartLine": 3, "EndLine": 3}]},
        {"Target": "app/Dockerfile", "Class": "config",
         "Misconfigurations": [
             {"ID": "DS002", "AVDID": "AVD-DS-0002", "Severity": "MEDIUM", "Status": "FAIL",
              "Title": "Image user should not be 'root'",
              "CauseMetadata": {"StartLine": 7, "EndLine": 7}},
             {"ID": "DS001", "AVDID": "AVD-DS-0001", "Severity": "LOW", "Status": "PASS",
              "Title": "passes"}]},
    ],
}


def _result(scanned: bool = True) -> ScanResult:
    return ScanResult("layout:latest", "sha256:" + "ab" * 32, "trivy 0.59.1",
                      tuple(parse_report(REPORT, "layout")), scanned)


def test_every_finding_is_a_located_result_with_its_level() -> None:
    log = validate_sarif(json.loads(render_sarif(_result())))
    by_rule = results_by_rule(log)
    assert set(by_rule) == {"CVE-2024-0001", "github-pat", "AVD-DS-0002"}
    cve, secret, misconfig = (by_rule[k][0] for k in ("CVE-2024-0001", "github-pat",
                                                      "AVD-DS-0002"))
    assert (cve["level"], secret["level"], misconfig["level"]) == ("error", "error", "warning")
    where = secret["locations"][0]["physicalLocation"]
    assert where == {"artifactLocation": {"uri": "app/settings.py", "uriBaseId": "IMAGEROOT"},
                     "region": {"startLine": 3}}
    assert misconfig["locations"][0]["physicalLocation"]["region"] == {"startLine": 7}
    assert "region" not in cve["locations"][0]["physicalLocation"]  # a package has no line
    assert cve["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == "requests@2.0"
    rules = {r["id"]: r for r in log["runs"][0]["tool"]["driver"]["rules"]}
    assert rules["CVE-2024-0001"]["properties"]["security-severity"] == "9.5"
    assert rules["CVE-2024-0001"]["helpUri"] == "https://nvd.nist.gov/vuln/detail/CVE-2024-0001"
    assert rules["AVD-DS-0002"]["properties"]["security-severity"] == "5.5"
    assert "invocations" in log["runs"][0]
    assert "toolExecutionNotifications" not in log["runs"][0]["invocations"][0]


def test_not_scanned_and_the_gate_are_notifications() -> None:
    decision = GateDecision(False, ("vulnerabilities not scanned (prod requires a DB)",))
    log = validate_sarif(json.loads(render_sarif(_result(scanned=False), decision, "prod")))
    notes = log["runs"][0]["invocations"][0]["toolExecutionNotifications"]
    assert notes[0]["level"] == "warning" and "not scanned" in notes[0]["message"]["text"]
    assert any(n["level"] == "error" and n["message"]["text"].startswith("gate (prod): ")
               for n in notes)
    assert log["runs"][0]["properties"]["gate"]["passed"] is False
    assert log["runs"][0]["properties"]["vulnerabilities"].startswith("not scanned")
