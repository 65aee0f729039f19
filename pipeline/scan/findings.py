"""Scanner-neutral findings and scan results.

Why ``vulnerabilities_scanned`` is a separate field: an empty vulnerability list from a
scanner that had no database means "unknown", not "clean". Keeping the two apart is
what lets the gate fail closed (prod) or warn (dev) instead of passing silently.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SEVERITIES = ("UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL")
NOT_SCANNED = "not scanned (no vulnerability DB configured)"


def severity_rank(severity: str) -> int:
    """Order of a severity; anything unrecognised ranks as UNKNOWN (0)."""
    upper = (severity or "UNKNOWN").upper()
    return SEVERITIES.index(upper) if upper in SEVERITIES else 0


@dataclass(frozen=True)
class Finding:
    """One issue: a vulnerability, a secret or a misconfiguration."""

    id: str
    kind: str  # vulnerability | secret | misconfiguration
    severity: str
    target: str
    title: str = ""
    package: str = ""
    installed_version: str = ""
    fixed_version: str = ""
    #: The file in the image the finding is in (trivy's target) and its 1-based line
    #: (0: not known, as for a package), for reports that locate findings (SARIF).
    path: str = ""
    line: int = 0


@dataclass(frozen=True)
class ScanResult:
    """Everything one scan found, and what it could not look at."""

    target: str
    digest: str
    scanner: str
    findings: tuple[Finding, ...]
    vulnerabilities_scanned: bool
    scanners: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def vulnerability_status(self) -> str:
        """``scanned`` or the explicit ``not scanned (...)`` line."""
        return "scanned" if self.vulnerabilities_scanned else NOT_SCANNED

    def counts(self) -> dict[str, dict[str, int]]:
        """Findings per kind per severity."""
        out: dict[str, dict[str, int]] = {}
        for finding in self.findings:
            per = out.setdefault(finding.kind, {})
            per[finding.severity] = per.get(finding.severity, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "digest": self.digest,
            "scanner": self.scanner,
            "scanners": list(self.scanners),
            "vulnerabilities": self.vulnerability_status,
            "vulnerabilities_scanned": self.vulnerabilities_scanned,
            "counts": self.counts(),
            "findings": [asdict(f) for f in self.findings],
            "notes": list(self.notes),
        }
