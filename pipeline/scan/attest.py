"""Attach scan results and the SBOM to an image as signed attestations.

The signing itself belongs to ``pipeline.signing.attestation`` (DSSE in-toto
statements, cosign ``.att`` tags); this module only chooses predicate types and
payloads. If that module is missing, attaching fails loudly rather than skipping.
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import ConfigError
from pipeline.scan.findings import ScanResult
from pipeline.scan.gate import GateDecision

SBOM_PREDICATE = "https://cyclonedx.org/bom"
VULN_PREDICATE = "https://cosign.sigstore.dev/attestation/vuln/v1"


def vuln_predicate(result: ScanResult, decision: GateDecision | None = None) -> dict[str, Any]:
    """cosign's vuln predicate shape, with our findings and gate verdict as the result."""
    return {
        "invocation": {
            "parameters": list(result.scanners),
            "uri": "",
            "event_id": "",
            "builder.id": "secure-model-pipeline",
        },
        "scanner": {
            "uri": "pkg:github/aquasecurity/trivy",
            "version": result.scanner,
            "db": {"uri": "", "version": ""},
            "result": {**result.to_dict(), "gate": decision.to_dict() if decision else None},
        },
        "metadata": {"scanStartedOn": "", "scanFinishedOn": ""},
    }


def _attest_fn():
    try:
        from pipeline.signing.attestation import attest  # noqa: PLC0415
    except ImportError:
        raise ConfigError(
            "attestations need pipeline.signing.attestation (not installed)"
        ) from None
    return attest


def attach(
    ref: str,
    key: Any,
    *,
    sbom: dict[str, Any] | None = None,
    result: ScanResult | None = None,
    decision: GateDecision | None = None,
    client_options: dict[str, Any] | None = None,
) -> list[Any]:
    """Sign and attach the SBOM and/or scan result to ``ref``; returns what attest returned."""
    attest = _attest_fn()
    out = []
    if sbom is not None:
        out.append(attest(ref, SBOM_PREDICATE, sbom, key))
    if result is not None:
        out.append(attest(ref, VULN_PREDICATE, vuln_predicate(result, decision), key))
    return out
