"""Gather the evidence of the release that runs in an environment, as plain data.

Why plain data first: ``pipeline report --json`` and the HTML page show the same
model, so a machine and an auditor read the same facts. Nothing here trusts a summary
string when numbers exist: canary measurements are read generically, as
``{name, value, threshold, comparison}`` records (``metrics`` in the recorded evidence);
older records without them are read from their known fields and summary, so the report
survives a change of how the canary analysis is defined.

Gaps are stated, never papered over: no release record, a scan that did not scan, a
signature that was not verified each become an entry of ``gaps``.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.errors import NotFoundError
from pipeline.oci.reference import Reference
from pipeline.release.gitops import Commit, GitOpsRepo, Release
from pipeline.release.record import find_record, load_records

REPORT_FORMAT = "secure-model-pipeline/evidence-report"
REPORT_VERSION = 1
_LOOPBACK = ("127.", "localhost", "[::1]")
_LEGACY = (
    ("requests", re.compile(r"requests (\d+) (>=|<) (\d+)"), ">=", "requests", 1.0),
    ("success_rate", re.compile(r"success rate ([\d.]+|n/a)\D.*?(>=|<) ([\d.]+)"), ">=",
     "ratio", 1.0),
    ("p99_seconds", re.compile(r"p99 ([\d.]+|n/a)(?: ms)?\D.*?(<=|>) ([\d.]+) ms"), "<=",
     "seconds", 0.001),
)


def registry_url(ref: str, kind: str = "manifests", what: str | None = None) -> str:
    """The registry API URL of ``ref``'s manifest (or of the tag/digest ``what``).

    Loopback registries are plain HTTP (as ``--insecure`` reaches them), others HTTPS.
    """
    parsed = Reference.parse(ref)
    scheme = "http" if parsed.registry.startswith(_LOOPBACK) else "https"
    target = what or parsed.digest or parsed.tag or "latest"
    return f"{scheme}://{parsed.registry}/v2/{parsed.repository}/{kind}/{target}"


def _unit(name: str) -> str:
    """How to format a metric's numbers (display only: the comparison is the record's)."""
    lowered = name.lower()
    if any(w in lowered for w in ("latency", "p99", "p95", "seconds", "duration")):
        return "seconds"
    if any(w in lowered for w in ("rate", "ratio", "fraction")):
        return "ratio"
    return ""


def metrics(measurement: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The measurement's metrics as ``{name, value, threshold, comparison, unit, ok}``.

    Three recorded shapes: one metric per measurement (``metric``, ``value``, ``threshold``,
    ``comparison``: the chart's AnalysisTemplates, run by the canary executor); a list
    of ``metrics``; the earliest records' ``requests``/``success_rate``/``p99_seconds``.
    """
    if isinstance(measurement.get("metric"), str):
        value = measurement.get("value")
        if isinstance(value, list):
            value = value[0] if value else None
        name = str(measurement["metric"])
        return [{"name": name, "value": _num(value),
                 "threshold": _num(measurement.get("threshold")),
                 "comparison": str(measurement.get("comparison") or ""),
                 "unit": _unit(name), "ok": measurement.get("ok") is True}]
    recorded = measurement.get("metrics")
    if isinstance(recorded, list) and recorded:
        out = []
        for m in recorded:
            if isinstance(m, Mapping) and m.get("name"):
                out.append({"name": str(m["name"]), "value": _num(m.get("value")),
                            "threshold": _num(m.get("threshold")),
                            "comparison": str(m.get("comparison") or ""),
                            "unit": str(m.get("unit") or ""), "ok": m.get("ok") is True})
        return out
    summary = str(measurement.get("summary") or "")
    out = []
    for name, pattern, comparison, unit, scale in _LEGACY:
        found = pattern.search(summary)
        value = _num(measurement.get(name))
        threshold = float(found.group(3)) * scale if found else None
        if value is None and name not in measurement and not found:
            continue
        ok = value is not None and threshold is not None and (
            value >= threshold if comparison == ">=" else value <= threshold)
        out.append({"name": name, "value": value, "threshold": threshold,
                    "comparison": comparison, "unit": unit, "ok": ok})
    return out


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _remote_url(repo: GitOpsRepo) -> str:
    done = subprocess.run(["git", "-C", str(repo.path), "remote", "get-url", "origin"],
                          capture_output=True, text=True, timeout=30)
    return done.stdout.strip() if done.returncode == 0 else ""


def _commit_proof(gitops: Path, remote: str, sha: str) -> dict[str, str]:
    href = f"{remote.removesuffix('.git')}/commit/{sha}" \
        if remote.startswith(("https://", "http://")) else ""
    return {"command": f"git -C {gitops} show {sha}", "href": href}


def _step(entry: Commit, gitops: Path, remote: str) -> dict[str, Any]:
    st = entry.state
    measurements = []
    for number, m in enumerate(st.evidence, 1):
        measurements.append({"number": number, "ok": m.get("ok") is True,
                             "summary": str(m.get("summary") or ""),
                             "failures": [str(f) for f in m.get("failures") or []],
                             "metrics": metrics(m)})
    return {"commit": entry.sha, "message": entry.message, "when": st.when or entry.date,
            "who": st.who or entry.author, "stage": st.stage, "weight": st.weight,
            "status": st.status, "analysis": st.analysis, "release": st.release.label,
            "image": st.image, "model": st.model, "forced": st.forced,
            "approved_by": st.approved_by, "reasons": list(st.reasons),
            "failed": st.failed.label if st.failed else "",
            "failed_image": st.failed.image if st.failed else "",
            "failed_model": st.failed.model if st.failed else "",
            "measurements": measurements, "proof": _commit_proof(gitops, remote, entry.sha)}


def _gaps(record: Mapping[str, Any] | None) -> list[str]:
    if record is None:
        return ["no release record in releases/: this release did not come through the "
                "release workflow's record-release step (its signatures, attestations and "
                "policy results are not on record)"]
    gaps = []
    image = record.get("image") or {}
    scan = image.get("scan") or {}
    if not scan.get("scanned"):
        gaps.append(f"vulnerabilities: {scan.get('status') or 'not scanned'}")
    if not (image.get("signature") or {}).get("verified"):
        gaps.append("image signature: not verified")
    if not ((record.get("model") or {}).get("signature") or {}).get("verified"):
        gaps.append("model signature: not verified")
    if not (record.get("policy") or {}).get("passed"):
        gaps.append("policy check: failed")
    return gaps


def _chosen(history: list[Commit], ref: str, env: str, repo: GitOpsRepo) -> Release:
    """The release ``ref`` (its image or model reference) names in ``env``'s history, or
    in the release records (a release recorded but never promoted there)."""
    for entry in history:  # newest first
        st = entry.state
        for candidate in (st.release, st.failed):
            if candidate is not None and ref in (candidate.image, candidate.model):
                return candidate
    for record in load_records(repo):
        release = Release(record["release"]["image"], record["release"]["model"])
        if ref in (release.image, release.model):
            return release
    raise NotFoundError(f"{ref!r} is not the image or model of any release of {env!r} "
                        "nor of any release record")


def collect(gitops: Path, env: str, release_ref: str | None = None) -> dict[str, Any]:
    """The evidence of what runs in ``env``, or of the release ``release_ref`` names
    (an image or model reference from its history, e.g. a refused candidate).

    NotFoundError: no repository, no release, or no such release.
    """
    if not gitops.exists():
        raise NotFoundError(f"no GitOps repository at {gitops}")
    repo = GitOpsRepo(gitops, create=False)
    state = repo.current(env)
    history = repo.history(env)
    if state is None and not release_ref:
        count = len(load_records(repo))
        hint = (f" ({count} release record(s) in releases/: --release IMAGE_OR_MODEL "
                "reports on one)") if count else ""
        raise NotFoundError(f"environment {env!r} has no release in {gitops}{hint}")
    if release_ref:
        release = _chosen(history, release_ref, env, repo)
    else:
        assert state is not None  # checked above: no state and no ref is NotFoundError
        release = state.release
    chronological = list(reversed(history))
    remote = _remote_url(repo)
    record = find_record(repo, release)
    steps = [_step(c, gitops, remote) for c in chronological
             if c.state.release == release and c.state.status != "rolled-back"]
    rollbacks = [_step(c, gitops, remote) for c in chronological
                 if c.state.status == "rolled-back"]
    key = "" if record is None else " --key release.pub"
    proofs = {
        "image": {"href": registry_url(release.image),
                  "command": f"pipeline verify {release.image}{key}"},
        "model": {"href": registry_url(release.model),
                  "command": f"pipeline pull-model {release.model} --out DIR "
                             "--trust release.pub"},
        "state": {"command": f"pipeline release status --gitops {gitops} --env {env} "
                             "--history",
                  "href": ""},
    }
    if record is not None:
        digest = str(record["image"]["digest"])
        proofs["signature"] = {
            "href": registry_url(release.image, what=digest.replace(":", "-") + ".sig"),
            "command": f"pipeline verify {release.image} --key release.pub"}
        proofs["attestations"] = {
            "href": registry_url(release.image, what=digest.replace(":", "-") + ".att"),
            "command": f"pipeline verify-attestation {release.image} --type TYPE "
                       "--key release.pub"}
        proofs["record"] = _commit_proof(gitops, remote, str(record.get("_commit") or ""))
        proofs["record"]["file"] = str(record.get("_path") or "")
        source = record.get("source") or {}
        proofs["source"] = {"command": f"git -C {source.get('repository')} show --stat "
                                       f"{source.get('revision')}",
                            "href": _source_href(str(source.get("repository") or ""),
                                                 str(source.get("revision") or ""))}
    return {
        "format": REPORT_FORMAT, "version": REPORT_VERSION,
        "environment": env, "gitops": str(gitops), "gitops_remote": remote,
        "release": release.to_dict() | {"label": release.label},
        "runs": state is not None and release == state.release,
        "state": {"status": state.status, "weight": state.weight, "stage": state.stage,
                  "analysis": state.analysis, "reasons": list(state.reasons),
                  "stable": state.stable.to_dict() if state.stable else None}
        if state is not None else {"status": "no release", "weight": 0, "stage": "-",
                                   "analysis": "", "reasons": [], "stable": None},
        "record": {k: v for k, v in record.items() if not k.startswith("_")}
        if record else None,
        "steps": steps, "rollbacks": rollbacks, "proofs": proofs,
        "gaps": _gaps(record), "complete": record is not None and not _gaps(record),
    }


def _source_href(repository: str, revision: str) -> str:
    if repository.startswith(("https://", "http://")):
        return f"{repository.removesuffix('.git')}/commit/{revision}"
    return ""


__all__ = ["REPORT_FORMAT", "REPORT_VERSION", "collect", "metrics", "registry_url"]
