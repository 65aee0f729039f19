"""Ask the registry now: are the release's image signature and attestations still there
and still valid under the keys the reader trusts?

Why: the release record says what the release run verified; an auditor may want the
registry's answer today (a signature deleted, a key rotated). The answer is added to the
report as it is; a failure to verify, the registry unreachable included, is stated and
counted as a gap, never turned into an error that hides the rest of the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError, UnreachableError
from pipeline.oci.registry import RegistryOptions
from pipeline.release.gitops import Release
from pipeline.release.record import ATTESTATION_KINDS


def verify_now(release: Release, keys: Sequence[Path],
               registry_options: RegistryOptions | None = None) -> dict[str, Any]:
    """The registry's answer for ``release.image``: signature and each attestation kind."""
    from pipeline.signing.attestation import verify_attestations
    from pipeline.signing.image import verify_image

    out: dict[str, Any] = {"keys": [str(k) for k in keys], "image": release.image}
    try:
        found = verify_image(release.image, list(keys), registry_options=registry_options,
                             use_cache=False)
        out["signature"] = {"verified": True, "signers": list(found.get("signers") or []),
                            "manifest": str(found.get("signature_manifest") or "")}
    except UnreachableError as exc:
        # One answer for all: asking three more times would only wait three more times.
        out["signature"] = {"verified": False, "error": str(exc)}
        out["attestations"] = [{"type": kind, "verified": False,
                                "error": f"not checked: {exc}"} for kind in ATTESTATION_KINDS]
        return out
    except PipelineError as exc:
        out["signature"] = {"verified": False, "error": str(exc)}
    attestations = []
    for kind in ATTESTATION_KINDS:
        try:
            statements = verify_attestations(release.image, kind, list(keys),
                                             registry_options=registry_options,
                                             use_cache=False)
            attestations.append({"type": kind, "verified": True,
                                 "statements": len(statements)})
        except PipelineError as exc:
            attestations.append({"type": kind, "verified": False, "error": str(exc)})
    out["attestations"] = attestations
    return out


def live_gaps(live: dict[str, Any]) -> list[str]:
    """What the registry did not confirm, one line each."""
    gaps = []
    if not live["signature"]["verified"]:
        gaps.append(f"registry now: image signature NOT verified: {live['signature']['error']}")
    gaps += [f"registry now: {a['type']} attestation NOT verified: {a['error']}"
             for a in live["attestations"] if not a["verified"]]
    return gaps


__all__ = ["live_gaps", "verify_now"]
