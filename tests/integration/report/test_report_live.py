"""``pipeline report --verify-key``: the registry's answer now, next to the record.

A real registry on 127.0.0.1: an image signed and attested (provenance, SBOM, scan) by
the release key passes; an image signed but never attested has each missing attestation
stated as a gap; a stopped registry is stated too. The report is written in every case.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli import run
from pipeline.release.gitops import GitOpsRepo
from pipeline.release.promote import CallbackExecutor, promote
from pipeline.release.record import RunInfo, record_release
from pipeline.signing.attestation import attest
from pipeline.signing.image import sign_image
from pipeline.signing.keypair import create_signing_keypair
from tests.fixtures_registry import RegistryServer
from tests.support.report import REVISION, analysis, write_evidence
from tests.support.signed_release import INSECURE, push_image

pytestmark = [pytest.mark.integration]
MODEL = "127.0.0.1:5000/ml/models/tiny@sha256:" + "1" * 64


def _released(root: Path, image: str) -> GitOpsRepo:
    repo = GitOpsRepo(root / "gitops")
    record_release(repo, write_evidence(root / "ws", image), image, MODEL,
                   RunInfo("https://git.example/ml/model.git", REVISION))
    promote(repo, "dev", image, MODEL, executor=CallbackExecutor(lambda _w: analysis(1.0, 0.01)),
            stages=(100,))
    return repo


def _report(repo: GitOpsRepo, key: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    assert run(["report", "--gitops", str(repo.path), "--env", "dev", "--verify-key", str(key),
                "--insecure", "--html", str(repo.path.parent / "r.html"), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_registry_confirms_or_the_gap_is_stated(registry: RegistryServer, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    key, pub = tmp_path / "release.key", tmp_path / "release.pub"
    create_signing_keypair(key, pub)
    good = push_image(registry, tmp_path / "img", "report/runtime", "good")
    sign_image(good, key, registry_options=INSECURE)
    for kind, predicate in (("slsaprovenance", {"buildDefinition": {}, "runDetails": {}}),
                            ("cyclonedx", {"bomFormat": "CycloneDX", "specVersion": "1.6"}),
                            ("vuln", {"scanner": {"result": {}}})):
        attest(good, kind, predicate, key, registry_options=INSECURE)
    data = _report(_released(tmp_path / "a", good), pub, capsys)
    assert data["live"]["signature"]["verified"] is True
    assert [a["verified"] for a in data["live"]["attestations"]] == [True, True, True]
    assert not any(g.startswith("registry now") for g in data["gaps"])
    assert "registry, checked now" in (tmp_path / "a" / "r.html").read_text()

    bare = push_image(registry, tmp_path / "img", "report/runtime", "bare")
    sign_image(bare, key, registry_options=INSECURE)
    data = _report(_released(tmp_path / "b", bare), pub, capsys)
    assert data["live"]["signature"]["verified"] is True
    missing = [g for g in data["gaps"] if g.startswith("registry now")]
    assert len(missing) == 3 and all("attestation NOT verified" in g for g in missing)
    assert data["complete"] is False


def test_a_registry_that_is_down_is_stated(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.oci.local_registry import free_port

    key, pub = tmp_path / "release.key", tmp_path / "release.pub"
    create_signing_keypair(key, pub)
    image = f"127.0.0.1:{free_port()}/report/runtime@sha256:" + "a" * 64
    data = _report(_released(tmp_path / "c", image), pub, capsys)
    assert data["live"]["signature"]["verified"] is False
    assert any(g.startswith("registry now: image signature NOT verified") for g in data["gaps"])
    assert all(a["error"].startswith("not checked: ") for a in data["live"]["attestations"])
