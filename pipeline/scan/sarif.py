"""A scan as SARIF 2.1.0, for GitHub code scanning and the SAST dashboards that read it.

Why the rules carry ``security-severity``: code scanning ranks security alerts by that
property (critical ≥ 9.0, high ≥ 7.0, medium ≥ 4.0), not by the SARIF level. A
vulnerability scan that could not run (no DB) is a tool notification at ``warning``, so an
empty result list never reads as "clean"; the gate's verdict is in the run's properties
and its refusals are ``error`` notifications.

Locations are files inside the image (``uriBaseId`` ``IMAGEROOT``), with the line for
secrets and misconfigurations where trivy reports one.
"""

from __future__ import annotations

from urllib.parse import quote

from pipeline import __version__
from pipeline._sarif import Result, Rule, dumps, sarif_log
from pipeline.scan.findings import NOT_SCANNED, Finding, ScanResult
from pipeline.scan.gate import GateDecision

TOOL = "secure-model-pipeline scan"
IMAGE_ROOT = "IMAGEROOT"
_LEVEL = {"CRITICAL": "error", "HIGH": "error", "MEDIUM": "warning", "LOW": "note"}
_SECURITY_SEVERITY = {"CRITICAL": "9.5", "HIGH": "8.0", "MEDIUM": "5.5", "LOW": "2.0"}


def _level(severity: str) -> str:
    return _LEVEL.get(severity.upper(), "note")


def _rule(finding: Finding) -> Rule:
    help_uri = (f"https://nvd.nist.gov/vuln/detail/{finding.id}"
                if finding.id.startswith("CVE-") else "")
    return Rule(
        finding.id or finding.kind, finding.title or finding.id or finding.kind,
        full=finding.title, help_uri=help_uri, level=_level(finding.severity),
        properties={"tags": ["security", finding.kind],
                    "security-severity": _SECURITY_SEVERITY.get(finding.severity.upper(),
                                                                "0.0")},
    )


def _message(finding: Finding) -> str:
    if finding.kind == "vulnerability":
        fixed = f", fixed in {finding.fixed_version}" if finding.fixed_version else ", no fix"
        return (f"{finding.severity} {finding.id}: {finding.package} "
                f"{finding.installed_version}{fixed}. {finding.title}").strip()
    return f"{finding.severity} {finding.kind} {finding.id}: {finding.title}".strip()


def render_sarif(result: ScanResult, decision: GateDecision | None = None,
                 environment: str = "") -> str:
    """The scan ``result`` (and the gate ``decision``) as one SARIF 2.1.0 log."""
    rules: dict[str, Rule] = {}
    results = []
    for finding in result.findings:
        rule = rules.setdefault(finding.id or finding.kind, _rule(finding))
        path = (finding.path or finding.target).lstrip("/")
        package = (f"{finding.package}@{finding.installed_version}"
                   if finding.package else "")
        results.append(Result(
            rule.id, _level(finding.severity), _message(finding),
            quote(path, safe="/") if path else "", finding.line, IMAGE_ROOT if path else "",
            logical_name=package, logical_kind="package",
            identity="\0".join((path, str(finding.line), package, finding.kind)),
            properties={"kind": finding.kind, "severity": finding.severity},
        ))
    notes: list[tuple[str, str]] = []
    if not result.vulnerabilities_scanned:
        notes.append(("warning", f"vulnerabilities: {NOT_SCANNED}"))
    notes += [("note", note) for note in result.notes]
    properties: dict[str, object] = {"target": result.target, "digest": result.digest,
                                     "scanner": result.scanner,
                                     "vulnerabilities": result.vulnerability_status}
    if decision is not None:
        notes += [("error", f"gate ({environment or 'default'}): {m}") for m in decision.failures]
        notes += [("warning", f"gate ({environment or 'default'}): {m}")
                  for m in decision.warnings]
        properties["gate"] = {"environment": environment, **decision.to_dict()}
    return dumps(sarif_log(
        TOOL, __version__, sorted(rules.values(), key=lambda r: r.id), results,
        notifications=notes,
        uri_bases={IMAGE_ROOT: f"the root file system of the scanned image {result.target}"},
        properties=properties,
    ))


__all__ = ["IMAGE_ROOT", "TOOL", "render_sarif"]
