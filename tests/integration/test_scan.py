"""SBOM and trivy scan of a built image, and the gate's exit codes (real trivy, offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.build.image import build_image
from pipeline.cli import run
from pipeline.errors import EXIT_CONFIG, EXIT_POLICY
from pipeline.scan.sbom import validate_sbom
from tests.integration._build_support import Built, copy_project

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
    assert secrets and "settings.py" in secrets[0]["target"]
    assert PLANTED not in captured.out + captured.err


def test_missing_trivy_db_is_a_config_error(built: Built, tmp_path: Path) -> None:
    assert run(["scan", str(built.layout), "--trivy-db", str(tmp_path)]) == EXIT_CONFIG


def test_scan_of_a_non_layout_is_refused(tmp_path: Path) -> None:
    assert run(["scan", str(tmp_path)]) != 0
