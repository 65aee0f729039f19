"""The release record: what a release run proved, committed to the GitOps repository.

Why a record of its own: ``environments/<env>/release.yaml`` says what runs where and
why it was promoted or rolled back; it does not say how the image and the model came to
be trusted. The release workflow's ``record-release`` step gathers that from the files
its earlier steps left in the workspace (the verification results of the image
signature, of each attestation and of the model signature, the SBOM, the scan result,
the provenance, ``seal.json``, the policy check's SARIF) and commits one JSON document,
``releases/<revision12>-<image12>.json``, before the first promotion. The evidence
report (:mod:`pipeline.report`) joins it with the environments' history.

Fail closed: a missing or unreadable piece of evidence refuses the record (InputError,
exit 4) instead of writing a record that says less than it seems to. "Not scanned" is
kept as exactly that, never as clean. Format: docs/report.md#the-release-record.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline._json import loads_strict
from pipeline.errors import InputError, NotFoundError
from pipeline.release.gitops import GitOpsRepo, Release, actor, now, pinned

FORMAT = "secure-model-pipeline/release-record"
VERSION = 1
RECORDS_DIR = "releases"
#: Attestation kinds the release workflow attaches, and their predicate files.
ATTESTATION_KINDS = ("slsaprovenance", "cyclonedx", "vuln")
#: The files the record reads, relative to the workspace (what the workflow writes).
EVIDENCE_FILES = {
    "image-signature": "evidence/image-signature.json",
    "model-verify": "evidence/model-verify.json",
    "sbom": "sbom.json",
    "scan": "vuln.json",
    "provenance": "provenance.json",
    "policy": "policy.sarif",
    "seal": "model.sealed/seal.json",
    **{f"attestation-{k}": f"evidence/attestation-{k}.json" for k in ATTESTATION_KINDS},
}
_MAX_EVIDENCE = 64 * 1024 * 1024
_SHA_RE = re.compile(r"^[0-9a-f]{7,64}$")


@dataclass(frozen=True)
class RunInfo:
    """Where the release came from: the source commit and the workflow run."""

    git_repository: str
    revision: str
    workflow: str = "release"
    run_name: str = ""
    run_uid: str = ""
    executor: str = "local"
    run_url: str = ""


def _read(workspace: Path, key: str) -> Any:
    path = workspace / EVIDENCE_FILES[key]
    try:
        if path.stat().st_size > _MAX_EVIDENCE:
            raise InputError(f"{path}: evidence file larger than 64 MiB")
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"missing evidence {EVIDENCE_FILES[key]} in {workspace}: the step "
                         "that writes it did not run or wrote elsewhere; no record "
                         "written") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read evidence ({exc.strerror})") from None
    value = loads_strict(data, str(path))
    if not isinstance(value, dict):
        raise InputError(f"{path}: expected a JSON object")
    return value


def _get(data: Mapping[str, Any], *path: str) -> Any:
    value: Any = data
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def sbom_summary(sbom: Mapping[str, Any]) -> dict[str, Any]:
    """Format, component count and the first named components of a CycloneDX SBOM."""
    components = [c for c in sbom.get("components") or [] if isinstance(c, Mapping)]
    types: dict[str, int] = {}
    for c in components:
        kind = str(c.get("type") or "unknown")
        types[kind] = types.get(kind, 0) + 1
    names = sorted(f"{c.get('name')}@{c.get('version')}" if c.get("version") else
                   str(c.get("name")) for c in components if c.get("name"))
    return {"format": str(sbom.get("bomFormat") or "unknown"),
            "spec_version": str(sbom.get("specVersion") or ""),
            "components": len(components), "types": dict(sorted(types.items())),
            "sample": names[:10]}


def scan_summary(vuln: Mapping[str, Any]) -> dict[str, Any]:
    """The scan status as the scanner put it: ``scanned`` or ``not scanned (...)``."""
    result = _get(vuln, "scanner", "result") or {}
    scanned = bool(result.get("vulnerabilities_scanned"))
    status = str(result.get("vulnerabilities") or ("scanned" if scanned else "not scanned"))
    if not scanned and not status.startswith("not scanned"):
        status = f"not scanned ({status})"
    gate = result.get("gate") if isinstance(result.get("gate"), Mapping) else None
    return {"status": status, "scanned": scanned,
            "scanner": str(_get(vuln, "scanner", "uri") or ""),
            "version": str(_get(vuln, "scanner", "version") or ""),
            "scanners": [str(s) for s in result.get("scanners") or []],
            "counts": dict(result.get("counts") or {}),
            "findings": len(result.get("findings") or []),
            "notes": [str(n) for n in result.get("notes") or []],
            "gate": dict(gate) if gate else None}


def provenance_summary(predicate: Mapping[str, Any]) -> dict[str, Any]:
    """SLSA provenance v1: who built it, from which source, with which recipe."""
    external = _get(predicate, "buildDefinition", "externalParameters") or {}
    return {"builder": str(_get(predicate, "runDetails", "builder", "id") or ""),
            "build_type": str(_get(predicate, "buildDefinition", "buildType") or ""),
            "source": str(external.get("source") or ""),
            "revision": str(external.get("revision") or ""),
            "dependencies": len(_get(predicate, "buildDefinition", "resolvedDependencies")
                                or [])}


def _attestation(kind: str, verified: Mapping[str, Any]) -> dict[str, Any]:
    statements = [s for s in verified.get("statements") or [] if isinstance(s, Mapping)]
    if not verified.get("verified") or not statements:
        raise InputError(f"attestation {kind}: the evidence does not say it verified")
    types = sorted({str(s.get("predicateType") or s.get("predicate_type") or "")
                    for s in statements})
    return {"type": kind, "predicate_type": types[0] if types else "", "verified": True,
            "statements": len(statements)}


def policy_summary(sarif: Mapping[str, Any]) -> dict[str, Any]:
    """Each result of the policy check's SARIF (rule, level, message, where)."""
    results = []
    objects = None
    tools = []
    for run in sarif.get("runs") or []:
        tools.append(str(_get(run, "tool", "driver", "name") or ""))
        objects = _get(run, "properties", "objects") if objects is None else objects
        for r in run.get("results") or []:
            loc = _get((r.get("locations") or [{}])[0], "physicalLocation",
                       "artifactLocation", "uri") if r.get("locations") else None
            results.append({"rule": str(r.get("ruleId") or ""),
                            "level": str(r.get("level") or "warning"),
                            "message": str(_get(r, "message", "text") or ""),
                            "location": str(loc or "")})
    errors = sum(1 for r in results if r["level"] == "error")
    return {"passed": errors == 0, "errors": errors,
            "warnings": sum(1 for r in results if r["level"] == "warning"),
            "objects": objects, "tools": tools, "results": results}


def build_record(workspace: Path, release: Release, run: RunInfo) -> dict[str, Any]:
    """The release record (a JSON-ready mapping) from the workspace's evidence files."""
    image_sig = _read(workspace, "image-signature")
    image_digest = release.image.rsplit("@", 1)[1]
    if not image_sig.get("verified") or image_sig.get("digest") != image_digest:
        raise InputError(f"the image signature evidence is about {image_sig.get('digest')}, "
                         f"not the released {image_digest} (or says it did not verify)")
    model_verify = _read(workspace, "model-verify")
    if model_verify.get("verified") is not True:
        raise InputError("the model signature evidence does not say it verified")
    seal = _read(workspace, "seal")
    policy = policy_summary(_read(workspace, "policy"))
    sig_tag = image_digest.replace(":", "-") + ".sig"
    return {
        "format": FORMAT, "version": VERSION,
        "release": release.to_dict(),
        "source": {"repository": run.git_repository, "revision": run.revision},
        "run": {"workflow": run.workflow, "name": run.run_name, "uid": run.run_uid,
                "executor": run.executor, "url": run.run_url},
        "image": {
            "reference": release.image, "digest": image_digest,
            "signature": {"verified": True, "signers": list(image_sig.get("signers") or []),
                          "threshold": image_sig.get("threshold"),
                          "manifest": str(image_sig.get("signature_manifest") or ""),
                          "tag": sig_tag, "identity": str(image_sig.get("identity") or "")},
            "attestations": [_attestation(k, _read(workspace, f"attestation-{k}"))
                             for k in ATTESTATION_KINDS],
            "sbom": sbom_summary(_read(workspace, "sbom")),
            "scan": scan_summary(_read(workspace, "scan")),
            "provenance": provenance_summary(_read(workspace, "provenance")),
        },
        "model": {
            "reference": release.model, "digest": release.model.rsplit("@", 1)[1],
            "signature": {"verified": model_verify.get("verified") is True,
                          "files_checked": model_verify.get("files_checked") is True,
                          "files": len(model_verify.get("files") or {}),
                          "format": str(_get(seal, "signature", "format") or ""),
                          "path": str(_get(seal, "signature", "path") or "")},
            "seal": {"name": str(seal.get("name") or ""),
                     "format": f"{seal.get('format')} v{seal.get('version')}",
                     "aead": str(_get(seal, "aead", "scheme") or ""),
                     "segment_size": _get(seal, "aead", "segment_size"),
                     "key_provider": str(_get(seal, "key", "provider") or ""),
                     "key_id": str(_get(seal, "key", "key_id") or ""),
                     "files": len(seal.get("files") or []),
                     "sealed_files": sorted(str(f.get("path")) for f in seal.get("files") or []
                                            if isinstance(f, Mapping) and f.get("sealed"))},
        },
        "policy": policy,
        "admission": {
            "decision": "admitted" if policy["passed"] else "denied",
            "basis": "the chart rendered with both digests, checked by the admission "
                     "policies and the image policy (signatures and attestations verified "
                     "in the registry): the same engine as the webhook",
        },
        "who": actor(), "when": now(),
    }


def record_relpath(release: Release, revision: str) -> str:
    """``releases/<revision12>-<image12>.json``: one file per (source commit, image)."""
    if not _SHA_RE.match(revision):
        raise InputError(f"revision {revision!r} is not a git commit id (hex): pass the "
                         "resolved commit (the checkout step writes it)")
    image_hex = release.image.rsplit(":", 1)[1][:12]
    return f"{RECORDS_DIR}/{revision[:12]}-{image_hex}.json"


def record_release(repo: GitOpsRepo, workspace: Path, image: str, model: str, run: RunInfo
                   ) -> tuple[str, str, dict[str, Any]]:
    """Build the record and commit it; returns (relative path, commit, record)."""
    import json

    release = Release(pinned(image, "image"), pinned(model, "model"))
    if not workspace.is_dir():
        raise NotFoundError(f"workspace {workspace} does not exist")
    record = build_record(workspace, release, run)
    rel = record_relpath(release, run.revision)
    check_record(record, rel)
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    sha = repo.commit_files({rel: text}, f"release: record {release.label} from "
                                         f"{run.revision[:12]} ({run.workflow} run "
                                         f"{run.run_name or run.run_uid or 'local'})")
    return rel, sha, record


#: The shape readers rely on: path -> type (dict, list of dicts, list of str, str).
_SHAPE: dict[tuple[str, ...], Any] = {
    ("release",): dict, ("release", "image"): str, ("release", "model"): str,
    ("source",): dict, ("run",): dict, ("image",): dict, ("image", "digest"): str,
    ("image", "reference"): str, ("model", "reference"): str,
    ("image", "signature"): dict, ("image", "signature", "signers"): [str],
    ("image", "attestations"): [dict], ("image", "sbom"): dict,
    ("image", "sbom", "sample"): [str], ("image", "sbom", "types"): dict,
    ("image", "scan"): dict, ("image", "scan", "notes"): [str],
    ("image", "scan", "counts"): dict, ("image", "provenance"): dict,
    ("model",): dict, ("model", "signature"): dict, ("model", "seal"): dict,
    ("model", "seal", "sealed_files"): [str], ("policy",): dict,
    ("policy", "results"): [dict], ("admission",): dict,
}


def check_record(data: Any, where: str) -> dict[str, Any]:
    """``data`` if it has the release record's shape, else InputError naming the field.

    Why: records are files in a git repository anyone with push access can edit; a
    reader must refuse a malformed one clearly instead of failing half-way.
    """
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{where}: not a release record (format {FORMAT!r})")
    if data.get("version") != VERSION:
        raise InputError(f"{where}: release record version {data.get('version')!r} is not "
                         f"{VERSION}")
    for path, kind in _SHAPE.items():
        value: Any = data
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        name = ".".join(path)
        if isinstance(kind, list):
            if not isinstance(value, list) or not all(isinstance(v, kind[0]) for v in value):
                raise InputError(f"{where}: {name} must be a list of {kind[0].__name__}")
        elif not isinstance(value, kind):
            raise InputError(f"{where}: {name} must be a {kind.__name__}")
    return data


def load_records(repo: GitOpsRepo) -> list[dict[str, Any]]:
    """Every release record committed under ``releases/`` (HEAD), newest first.

    Each gets ``_path`` (its file in the repository) and ``_commit`` (the commit that
    wrote its current content), so a reader can link to them.
    """
    records = []
    for rel in repo.committed_files(RECORDS_DIR):
        if not rel.endswith(".json"):
            continue
        text = repo.read(rel)
        if text is None:
            continue
        data = loads_strict(text, rel)
        if isinstance(data, dict) and data.get("format") == FORMAT:
            check_record(data, rel)
            log = repo.log_of(rel)
            data["_path"] = rel
            data["_commit"] = log[0][0] if log else ""
            records.append(data)
    return sorted(records, key=lambda r: str(r.get("when") or ""), reverse=True)


def find_record(repo: GitOpsRepo, release: Release) -> dict[str, Any] | None:
    """The newest record of exactly ``release`` (image and model), if one was committed."""
    for record in load_records(repo):
        if record.get("release") == release.to_dict():
            return record
    return None


__all__ = ["ATTESTATION_KINDS", "EVIDENCE_FILES", "FORMAT", "RECORDS_DIR", "VERSION", "RunInfo",
           "build_record", "check_record", "find_record", "load_records", "policy_summary",
           "provenance_summary", "record_relpath", "record_release", "sbom_summary",
           "scan_summary"]
