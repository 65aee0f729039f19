"""Attach scan results and the SBOM to an image as signed attestations.

The signing itself belongs to ``pipeline.signing.attestation`` (DSSE in-toto
statements, cosign ``.att`` tags); this module only chooses predicate types and
payloads. If that module is missing, attaching fails loudly rather than skipping.
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import ConfigError
from pipeline.oci.digest import is_digest
from pipeline.oci.reference import Reference
from pipeline.oci.registry import RegistryOptions
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


def _sbom_subject(sbom: dict[str, Any] | None) -> str | None:
    """The image digest an SBOM from :func:`pipeline.scan.sbom.image_sbom` describes."""
    component = ((sbom or {}).get("metadata") or {}).get("component") or {}
    version = component.get("version")
    return version if isinstance(version, str) and is_digest(version) else None


def attach(
    ref: str,
    key: Any,
    *,
    sbom: dict[str, Any] | None = None,
    result: ScanResult | None = None,
    decision: GateDecision | None = None,
    registry_options: RegistryOptions | None = None,
    client: Any | None = None,
) -> list[Any]:
    """Sign and attach the SBOM and/or scan result to ``ref``; returns what attest returned.

    ``registry_options`` (:class:`pipeline.oci.RegistryOptions`) or an open ``client``
    reach the registry the same way ``pipeline push`` does; without them the registry's
    defaults apply (TLS, docker config credentials).
    """
    if sbom is None and result is None:
        raise ConfigError("attach needs an SBOM, a scan result, or both")
    described = {d for d in (_sbom_subject(sbom), result.digest if result else None) if d}
    if len(described) > 1:
        raise ConfigError(f"the SBOM and the scan result describe different images: {described}")
    from pipeline.signing.attestation import attest

    if described:
        # Pin the reference to the digest that was scanned: a tag that moved since must
        # not receive statements about another image (NotFoundError if it is not there).
        ref = str(Reference.parse(str(ref)).with_digest(described.pop()))
    out = []
    if sbom is not None:
        out.append(attest(ref, SBOM_PREDICATE, sbom, key, registry_options=registry_options,
                          client=client))
    if result is not None:
        out.append(attest(ref, VULN_PREDICATE, vuln_predicate(result, decision), key,
                          registry_options=registry_options, client=client))
    return out
