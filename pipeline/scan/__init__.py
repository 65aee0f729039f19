"""Scanning: secrets, misconfiguration and vulnerabilities in built images, an SBOM, a gate.

trivy scans an OCI layout offline (``vulnerabilities: not scanned (no DB)`` is reported
as such, never as clean); the SBOM is CycloneDX 1.6, validated; the gate turns findings
into a verdict per environment (pipeline.yaml ``scan`` section); the results are signed
and attached to the image as attestations. See docs/image-build.md.

Usage::

    from pipeline.scan import enforce, evaluate, parse_policy, scan_image

    result = scan_image("build/app:latest")
    enforce(evaluate(result, parse_policy(settings.section("scan"), "prod")))

Names resolve lazily (the SBOM needs the ``build`` extra's cyclonedx only when used).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline._facade import lazy_exports

if TYPE_CHECKING:
    from pipeline.scan.attest import SBOM_PREDICATE, VULN_PREDICATE, attach, vuln_predicate
    from pipeline.scan.findings import Finding, ScanResult, severity_rank
    from pipeline.scan.gate import (
        AllowEntry,
        GateDecision,
        GatePolicy,
        enforce,
        evaluate,
        parse_policy,
    )
    from pipeline.scan.sbom import image_sbom, validate_sbom
    from pipeline.scan.trivy import parse_report, scan_image, trivy_binary

_LAZY = {
    "SBOM_PREDICATE": "pipeline.scan.attest",
    "VULN_PREDICATE": "pipeline.scan.attest",
    "attach": "pipeline.scan.attest",
    "vuln_predicate": "pipeline.scan.attest",
    "Finding": "pipeline.scan.findings",
    "ScanResult": "pipeline.scan.findings",
    "severity_rank": "pipeline.scan.findings",
    "AllowEntry": "pipeline.scan.gate",
    "GateDecision": "pipeline.scan.gate",
    "GatePolicy": "pipeline.scan.gate",
    "enforce": "pipeline.scan.gate",
    "evaluate": "pipeline.scan.gate",
    "parse_policy": "pipeline.scan.gate",
    "image_sbom": "pipeline.scan.sbom",
    "validate_sbom": "pipeline.scan.sbom",
    "parse_report": "pipeline.scan.trivy",
    "scan_image": "pipeline.scan.trivy",
    "trivy_binary": "pipeline.scan.trivy",
}

__all__ = [
    "SBOM_PREDICATE",
    "VULN_PREDICATE",
    "AllowEntry",
    "Finding",
    "GateDecision",
    "GatePolicy",
    "ScanResult",
    "attach",
    "enforce",
    "evaluate",
    "image_sbom",
    "parse_policy",
    "parse_report",
    "scan_image",
    "severity_rank",
    "trivy_binary",
    "validate_sbom",
    "vuln_predicate",
]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
