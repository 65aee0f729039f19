"""The scan gate: thresholds, expiring allow-list, and 'not scanned' never counted as clean."""

from __future__ import annotations

import datetime as dt

import pytest

from pipeline.errors import ConfigError, PolicyError
from pipeline.scan.findings import Finding, ScanResult
from pipeline.scan.gate import enforce, evaluate, parse_policy
from pipeline.scan.trivy import parse_report

TODAY = dt.date(2026, 1, 15)
CVE = Finding("CVE-2024-0001", "vulnerability", "HIGH", "debian 12.15", package="libssl3")
LOW = Finding("CVE-2024-0002", "vulnerability", "LOW", "debian 12.15", package="zlib1g")


def result(*findings: Finding, scanned: bool = True) -> ScanResult:
    return ScanResult("img", "sha256:" + "0" * 64, "trivy 0.59.1", findings, scanned)


def test_clean_scanned_result_passes_in_prod() -> None:
    decision = evaluate(result(LOW), parse_policy({}), TODAY)
    assert decision.passed and not decision.failures


def test_severity_above_threshold_fails() -> None:
    decision = evaluate(result(CVE, LOW), parse_policy({"max_severity": "MEDIUM"}), TODAY)
    assert not decision.passed
    assert any("CVE-2024-0001" in f for f in decision.failures)
    assert evaluate(result(CVE), parse_policy({"max_severity": "HIGH"}), TODAY).passed


def test_allow_list_applies_until_it_expires() -> None:
    raw = {"allow": [{"id": "CVE-2024-0001", "reason": "not reachable", "expires": "2026-02-01"}]}
    policy = parse_policy(raw)
    ok = evaluate(result(CVE), policy, TODAY)
    assert ok.passed and ok.allowed
    late = evaluate(result(CVE), policy, dt.date(2026, 3, 1))
    assert not late.passed
    assert any("expired" in w for w in late.warnings)


@pytest.mark.parametrize(
    "entry",
    [
        {"id": "CVE-1", "expires": "2026-02-01"},  # no reason
        {"id": "CVE-1", "reason": "x"},  # no expiry
        {"id": "CVE-1", "reason": "x", "expires": "soon"},  # not a date
        {"reason": "x", "expires": "2026-02-01"},  # no id
    ],
)
def test_allow_entries_need_id_reason_and_expiry(entry: dict) -> None:
    with pytest.raises(ConfigError):
        parse_policy({"allow": [entry]})


def test_not_scanned_fails_in_prod_and_warns_in_dev() -> None:
    unscanned = result(scanned=False)
    prod = evaluate(unscanned, parse_policy({}), TODAY)
    assert not prod.passed and "not scanned" in prod.failures[0]
    dev = evaluate(unscanned, parse_policy({}, environment="dev"), TODAY)
    assert dev.passed and "not scanned" in dev.warnings[0]
    with pytest.raises(PolicyError):
        enforce(prod)
    assert unscanned.to_dict()["vulnerabilities"].startswith("not scanned")


def test_bad_policy_values() -> None:
    for raw in ({"max_severity": "SEVERE"}, {"environment": "staging"}, {"unscanned": "ignore"}):
        with pytest.raises(ConfigError):
            parse_policy(raw)


def test_trivy_report_parsing_drops_secret_matches() -> None:
    report = {
        "Results": [
            {
                "Target": "debian",
                "Vulnerabilities": [
                    {
                        "VulnerabilityID": "CVE-9",
                        "Severity": "critical",
                        "PkgName": "libc6",
                        "InstalledVersion": "2.36",
                        "FixedVersion": "2.37",
                    }
                ],
            },
            {
                "Target": "/app/model/x.py",
                "Secrets": [
                    {
                        "RuleID": "github-pat",
                        "Severity": "CRITICAL",
                        "StartLine": 3,
                        "Title": "GitHub PAT",
                        "Match": "ghp_SECRETVALUE",
                    }
                ],
            },
            {
                "Target": "config",
                "Misconfigurations": [
                    {"AVDID": "AVD-1", "Severity": "LOW", "Status": "PASS"},
                    {"AVDID": "AVD-2", "Severity": "HIGH", "Status": "FAIL", "Title": "root"},
                ],
            },
        ]
    }
    findings = parse_report(report, "img")
    assert [(f.kind, f.id, f.severity) for f in findings] == [
        ("misconfiguration", "AVD-2", "HIGH"),
        ("secret", "github-pat", "CRITICAL"),
        ("vulnerability", "CVE-9", "CRITICAL"),
    ]
    assert "SECRETVALUE" not in repr(findings)
