"""SBOM and trivy scan of a built image, and the gate's exit codes (real trivy, offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.build.debian import PURL_DISTRO
from pipeline.build.image import build_image
from pipeline.cli import run
from pipeline.errors import EXIT_CONFIG, EXIT_POLICY
from pipeline.oci import RegistryOptions
from pipeline.scan.sbom import validate_sbom
from tests.support.build import Built, copy_project
from tests.support.sarif import results_by_rule, validate_sarif

pytestmark = pytest.mark.integration

# A GitHub token shape trivy's built-in rules know (not a real token).
PLANTED = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"


def test_sbom_lists_debian_and_python_packages(built: Built, tmp_path: Path, capsys) -> None:
    out = tmp_path / "sbom.json"
    assert run(["sbom", str(built.layout), "-o", str(out)]) == 0
    document = json.loads(out.read_text())
    validate_sbom(document)
    purls = {c["purl"] for c in document["components"]}
    assert any(p.startswith("pkg:deb/debian/libc6@") for p in purls)
    assert any(p.startswith("pkg:deb/debian/python3.11-minimal@") for p in purls)
    assert "pkg:pypi/idna@3.20" in purls
    # the distro comes from the image's os-release and agrees with the provenance's purls
    debs = [p for p in purls if p.startswith("pkg:deb/")]
    assert debs and all(f"distro={PURL_DISTRO}" in p for p in debs), debs
    assert document["metadata"]["component"]["version"] == built.digest
    capsys.readouterr()
    assert run(["sbom", f"{built.layout}:latest"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again == document  # same image, same SBOM (serial and timestamp derive from it)


def test_scan_without_db_says_not_scanned_and_gate_follows_env(built: Built, capsys) -> None:
    assert run(["scan", str(built.layout), "--env", "dev", "--format", "json"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["vulnerabilities"].startswith("not scanned")
    assert data["vulnerabilities_scanned"] is False
    assert data["gate"]["passed"] is True and data["findings"] == []
    assert "not scanned" in captured.err
    assert run(["scan", str(built.layout), "--env", "prod"]) == EXIT_POLICY
    assert "not scanned" in capsys.readouterr().err


def test_cosign_vuln_report_is_written_even_when_the_gate_refuses(
    built: Built, tmp_path: Path, capsys
) -> None:
    """trivy's --format cosign-vuln, for `pipeline attest --type vuln --predicate`."""
    report = tmp_path / "vuln.json"
    assert run(["scan", str(built.layout), "--env", "prod", "--format", "cosign-vuln",
                "-o", str(report)]) == EXIT_POLICY
    predicate = json.loads(report.read_text())
    assert predicate["scanner"]["uri"] == "pkg:github/aquasecurity/trivy"
    result = predicate["scanner"]["result"]
    assert result["vulnerabilities"].startswith("not scanned")
    assert result["gate"]["passed"] is False  # prod refuses an unscanned image
    assert capsys.readouterr().out == ""  # the report went to the file only
    assert run(["scan", str(built.layout), "--env", "dev", "--format", "cosign-vuln"]) == 0
    assert json.loads(capsys.readouterr().out)["scanner"]["result"]["gate"]["passed"] is True


def test_scan_finds_a_planted_secret_without_leaking_it(build_env, tmp_path: Path, capsys) -> None:
    project = copy_project(tmp_path / "p")
    (project / "settings.py").write_text(f'GITHUB_TOKEN = "{PLANTED}"\n')
    layout = tmp_path / "layout"
    build_image(project, layout)
    code = run(["scan", str(layout), "--env", "dev", "--format", "json"])
    captured = capsys.readouterr()
    assert code == EXIT_POLICY
    data = json.loads(captured.out)
    secrets = [f for f in data["findings"] if f["kind"] == "secret"]
    # The source and its compiled bytecode (the app layer ships reproducible .pyc) both
    # carry the token: both are findings.
    targets = sorted(f["target"] for f in secrets)
    assert any(t.endswith("/settings.py") or "/settings.py:" in t for t in targets), targets
    assert any("__pycache__/settings.cpython-" in t for t in targets), targets
    assert PLANTED not in captured.out + captured.err


def test_scan_sarif_locates_the_planted_secret(build_env, tmp_path: Path, capsys) -> None:
    """--format sarif: valid SARIF 2.1.0, the secret at its file and line, never its value."""
    project = copy_project(tmp_path / "p")
    (project / "settings.py").write_text(f'# settings\nGITHUB_TOKEN = "{PLANTED}"\n')
    layout = tmp_path / "layout"
    build_image(project, layout)
    report = tmp_path / "scan.sarif"
    code = run(["scan", str(layout), "--env", "dev", "--format", "sarif", "-o", str(report)])
    assert code == EXIT_POLICY  # the gate still refuses; the report is written first
    text = report.read_text()
    assert PLANTED not in text + capsys.readouterr().out
    log = validate_sarif(json.loads(text))
    secrets = [r for results in results_by_rule(log).values() for r in results
               if r["properties"]["kind"] == "secret"]
    assert secrets and all(r["level"] == "error" for r in secrets)
    # The source file, not its bytecode (which carries the token too), has the line.
    source = [r for r in secrets if r["locations"][0]["physicalLocation"]["artifactLocation"]
              ["uri"].endswith("settings.py")]
    assert len(source) == 1, secrets
    where = source[0]["locations"][0]["physicalLocation"]
    assert where["artifactLocation"]["uri"].endswith("settings.py")
    assert where["artifactLocation"]["uriBaseId"] == "IMAGEROOT"
    assert where["region"] == {"startLine": 2}
    notes = log["runs"][0]["invocations"][0]["toolExecutionNotifications"]
    assert any("not scanned" in n["message"]["text"] for n in notes)  # no DB here: said


def test_missing_trivy_db_is_a_config_error(built: Built, tmp_path: Path) -> None:
    assert run(["scan", str(built.layout), "--trivy-db", str(tmp_path)]) == EXIT_CONFIG


def test_scan_of_a_non_layout_is_refused(tmp_path: Path) -> None:
    assert run(["scan", str(tmp_path)]) != 0


def test_signed_sbom_and_scan_attestations_verify(
    built: Built, registry, tmp_path: Path, capsys
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from pipeline.scan.attest import SBOM_PREDICATE, VULN_PREDICATE, attach
    from pipeline.scan.gate import evaluate, parse_policy
    from pipeline.scan.sbom import image_sbom
    from pipeline.scan.trivy import scan_image
    from pipeline.signing.attestation import verify_attestations

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = tmp_path / "release.key", tmp_path / "release.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    ref = registry.ref("models/attested", "v1")
    assert run(["build", str(built.project), "--out", str(built.layout),
                "--push", ref, "--insecure"]) == 0
    capsys.readouterr()
    sbom = image_sbom(str(built.layout))
    result = scan_image(str(built.layout))
    decision = evaluate(result, parse_policy({}, environment="dev"))
    options = RegistryOptions(insecure=True)
    attached = attach(ref, private, sbom=sbom, result=result, decision=decision,
                      registry_options=options)
    assert [a["digest"] for a in attached] == [built.digest, built.digest]
    boms = verify_attestations(ref, SBOM_PREDICATE, public, registry_options=options)
    assert boms[0]["predicate"]["metadata"]["component"]["version"] == built.digest
    vulns = verify_attestations(ref, VULN_PREDICATE, public, registry_options=options)
    scanned = vulns[0]["predicate"]["scanner"]["result"]
    assert scanned["vulnerabilities"].startswith("not scanned")
    assert scanned["gate"]["passed"] is True
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    stranger = tmp_path / "stranger.pub"
    stranger.write_bytes(other.public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo))
    from pipeline.errors import VerificationError

    with pytest.raises(VerificationError):
        verify_attestations(ref, SBOM_PREDICATE, stranger, registry_options=options,
                            use_cache=False)
