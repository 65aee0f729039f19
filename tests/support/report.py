"""A GitOps repository holding a whole release story, for the evidence report's tests.

Everything goes through the real library: the release record is built by
:func:`pipeline.release.record.record_release` from evidence files shaped exactly as the
release workflow's steps write them (``pipeline verify --json``, ``verify-attestation
--json``, ``verify-model --json``, ``pipeline sbom``, ``scan --format cosign-vuln``,
``provenance``, ``seal.json``, the policy check's SARIF); promotions and roll-backs are
:func:`pipeline.release.promote` and :func:`~pipeline.release.promote.rollback`, each
analysis made of the canary executor's own measurement records (metric, value,
threshold, comparison).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PolicyError
from pipeline.release.analysis import AnalysisResult
from pipeline.release.executor import MetricMeasurement
from pipeline.release.gitops import GitOpsRepo
from pipeline.release.promote import CallbackExecutor, promote, rollback
from pipeline.release.record import RunInfo, record_release

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)> & "quotes" \'single\''
REVISION = "0123456789abcdef0123456789abcdef01234567"


def digest(char: str) -> str:
    return "sha256:" + char * 64


V1 = ("127.0.0.1:5000/ml/runtime@" + digest("a"), "127.0.0.1:5000/ml/models/tiny@" + digest("1"))
V2 = ("127.0.0.1:5000/ml/runtime@" + digest("b"), "127.0.0.1:5000/ml/models/tiny@" + digest("2"))
V3 = ("127.0.0.1:5000/ml/runtime@" + digest("c"), "127.0.0.1:5000/ml/models/tiny@" + digest("3"))


def write_evidence(workspace: Path, image: str, *, scanned: bool = False) -> Path:
    """The files the release workflow leaves in its workspace for ``record-release``."""
    image_digest = image.rsplit("@", 1)[1]
    ev = workspace / "evidence"
    (workspace / "model.sealed").mkdir(parents=True, exist_ok=True)
    ev.mkdir(parents=True, exist_ok=True)

    def put(rel: str, data: object) -> None:
        (workspace / rel).write_text(json.dumps(data))

    put("evidence/image-signature.json", {
        "reference": image, "digest": image_digest, "verified": True,
        "signers": ["SHA256:release-key"], "threshold": 1,
        "signature_manifest": digest("e"), "identity": image.split("@")[0], "cached": False})
    types = {"slsaprovenance": "https://slsa.dev/provenance/v1",
             "cyclonedx": "https://cyclonedx.org/bom",
             "vuln": "https://cosign.sigstore.dev/attestation/vuln/v1"}
    for kind, uri in types.items():
        put(f"evidence/attestation-{kind}.json", {
            "reference": image, "verified": True,
            "statements": [{"_type": "https://in-toto.io/Statement/v1", "predicateType": uri,
                            "subject": [{"digest": {"sha256": image_digest[7:]}}]}]})
    put("evidence/model-verify.json", {"model_dir": "model.sealed", "verified": True,
                                       "files_checked": True,
                                       "files": {"config.json": "x", "model.py": "y"}})
    put("sbom.json", {"bomFormat": "CycloneDX", "specVersion": "1.6", "components": [
        {"type": "library", "name": "idna", "version": "3.20"},
        {"type": "operating-system", "name": "debian", "version": "12"}]})
    put("vuln.json", {"scanner": {"uri": "pkg:github/aquasecurity/trivy", "version": "0.59.1",
                                  "result": {
        "scanners": ["secret", "misconfig"] + (["vuln"] if scanned else []),
        "vulnerabilities": "scanned" if scanned else
        "not scanned (no vulnerability DB configured)",
        "vulnerabilities_scanned": scanned, "counts": {}, "findings": [],
        "notes": [] if scanned else ["vulnerabilities: not scanned (no trivy DB path or "
                                     "mirror configured)"]}}})
    put("provenance.json", {
        "buildDefinition": {"buildType": "https://secure-model-pipeline.dev/build/v1",
                            "externalParameters": {"source": "git+file:///src",
                                                   "revision": REVISION},
                            "resolvedDependencies": [{"uri": "pkg:deb/debian/base"}]},
        "runDetails": {"builder": {"id": "https://secure-model-pipeline.dev/builder/local"}}})
    put("model.sealed/seal.json", {
        "format": "secure-model-pipeline/sealed-model", "version": 1, "name": "tiny",
        "aead": {"scheme": "tink-streaming-aead/AES256_GCM_HKDF", "segment_size": 1048576},
        "key": {"provider": "local", "key_id": "local:release-kek:3f1c"},
        "files": [{"path": "config.json"},
                  {"path": "model.safetensors", "sealed": {"path": "model.safetensors.sealed"}}],
        "signature": {"path": "model.sig", "format": "model-signing/sigstore-bundle-v0.3"}})
    put("policy.sarif", {"version": "2.1.0", "runs": [{
        "tool": {"driver": {"name": "secure-model-pipeline policy"}},
        "properties": {"objects": 7},
        "results": [{"ruleId": "note-only", "level": "note",
                     "message": {"text": "a note " + HOSTILE}}]}]})
    return workspace


def _measure(metric: str, value: float, op: str, limit: float, shown: str) -> MetricMeasurement:
    passed = value >= limit if op == ">=" else value <= limit
    negate = {">=": "<", "<=": ">"}[op]
    summary = f"{metric.replace('-', ' ')} {shown} {op if passed else negate} " + (
        f"{limit:.3f}" if op == ">=" else f"{limit * 1000:.0f} ms")
    return MetricMeasurement("secure-runtime-canary", metric, "promql", [value],
                             "Successful" if passed else "Failed", summary,
                             failures=() if passed else (summary,), threshold=limit,
                             comparison=op, condition=f"result[0] {op} {limit}")


def analysis(success: float, p99: float, count: int = 2) -> AnalysisResult:
    """What the canary executor returns: per measurement, one record per metric."""
    taken: list[MetricMeasurement] = []
    for _ in range(count):
        taken.append(_measure("success-rate", success, ">=", 0.99, f"{success:.3f}"))
        taken.append(_measure("latency-p99", p99, "<=", 0.5, f"{p99 * 1000:.1f} ms"))
    return AnalysisResult(all(m.ok for m in taken), tuple(taken))


@dataclass(frozen=True)
class Story:
    repo: GitOpsRepo
    record_path: str


def release_story(root: Path) -> Story:
    """dev: v1 promoted; v2 promoted; v3 rolled back by its analysis; a manual roll-back
    (with a hostile reason) to v1 and a release record for v1."""
    repo = GitOpsRepo(root / "gitops")
    run = RunInfo("https://git.example/ml/model.git", REVISION, run_name="release-x1",
                  run_uid="uid-1")
    rel, _sha, _record = record_release(repo, write_evidence(root / "ws", V1[0]), *V1, run)
    good = CallbackExecutor(lambda _w: analysis(1.0, 0.004))
    promote(repo, "dev", *V1, executor=good, stages=(50, 100))
    promote(repo, "dev", *V2, executor=good, stages=(50, 100))
    try:
        promote(repo, "dev", *V3, executor=CallbackExecutor(lambda _w: analysis(0.4, 0.9)),
                stages=(50, 100))
    except PolicyError:
        pass
    rollback(repo, "dev", HOSTILE, to=V1[0])
    return Story(repo, rel)
