"""``pipeline image build|scan|sbom`` (aliases ``build``, ``scan``, ``sbom``), ``pipeline lock``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pipeline._cli._common import (
    emit,
    json_option,
    step_progress,
    wants_json,
    warn,
    write_report,
)
from pipeline._cli._registry import registry_flags
from pipeline._fileio import write_atomic
from pipeline.oci.registry import RegistryOptions


@click.command("build")
@click.argument("project_dir", type=click.Path(file_okay=False, path_type=Path), required=False)
@click.option("--pipeline-image", "pipeline_image", is_flag=True,
              help="Build the pipeline's own step image (the CLI, git, trivy; no torch) "
                   "instead of a model project's runtime image.")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="OCI image layout directory to write (created if needed).",
)
@click.option("--tag", default="latest", show_default=True, help="Tag in the layout's index.")
@click.option("--no-cache", is_flag=True, help="Rebuild every layer (results are still cached).")
@click.option("--frozen", is_flag=True, help="Fail instead of (re)writing the python lock.")
@click.option(
    "--base-lock",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Debian lock for the base layer (default: $PIPELINE_BASE_LOCK, else the committed one).",
)
@click.option("--push", "push_ref", help="Also push to this registry reference.")
@registry_flags(purpose=", with --push")
@click.option("--docker", "docker_name", help="Also load into a Docker engine under this name.")
@json_option
def build_cmd(
    project_dir: Path | None,
    pipeline_image: bool,
    out: Path,
    tag: str,
    no_cache: bool,
    frozen: bool,
    base_lock: Path | None,
    push_ref: str | None,
    registry_options: RegistryOptions,
    docker_name: str | None,
    as_json: bool,
) -> None:
    """Build PROJECT_DIR's slim image into an OCI layout; print the manifest digest.

    With --pipeline-image (and no PROJECT_DIR): the step image the workflows run in.
    """
    from pipeline.build.image import build_image
    from pipeline.errors import InputError

    if pipeline_image == (project_dir is not None):
        raise InputError("give either PROJECT_DIR or --pipeline-image")
    if pipeline_image and base_lock is not None:
        raise InputError("--base-lock is for project images; the step image has its own lock")
    with step_progress(not wants_json(as_json)) as say:
        if pipeline_image:
            from pipeline.build.step_image import build_pipeline_image

            result = build_pipeline_image(out, tag=tag, no_cache=no_cache, progress=say)
        else:
            assert project_dir is not None
            result = build_image(
                project_dir, out, tag=tag, no_cache=no_cache, frozen=frozen,
                base_lock=base_lock, progress=say,
            )
    data = result.to_dict()
    if push_ref:
        from pipeline.oci.layout import OCILayout
        from pipeline.oci.reference import Reference
        from pipeline.oci.transfer import push_layout

        ref = Reference.parse(push_ref)
        with registry_options.client(ref) as client:
            push_layout(OCILayout.open(out), ref, client, tag=tag)
        data["pushed"] = f"{ref.with_digest(result.digest)}"
    if docker_name:
        from pipeline.build.docker_load import load_into_docker

        data["docker"] = load_into_docker(out, tag, docker_name)
    emit(data, as_json, result.digest)


def _load_policy(policy_file: Path | None, environment: str | None):
    from pipeline.config import load_settings, read_yaml_mapping
    from pipeline.scan.gate import parse_policy

    if policy_file:
        raw = read_yaml_mapping(policy_file)
        raw = raw.get("scan", raw)
    else:
        raw = load_settings().section("scan")
    return parse_policy(raw, environment)


@click.command("scan")
@click.argument("target")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "cosign-vuln", "sarif"]),
    default="table",
    show_default=True,
    help="cosign-vuln: cosign's vuln predicate (findings + gate verdict), for "
    "'pipeline attest --type vuln --predicate FILE'; sarif: SARIF 2.1.0 for code scanning.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the report here (atomically) instead of stdout.",
)
@click.option(
    "--env",
    "environment",
    type=click.Choice(["dev", "prod"]),
    help="Gate environment (default from pipeline.yaml scan.environment, else prod).",
)
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="YAML file with the gate policy (the 'scan' section of pipeline.yaml).",
)
@click.option(
    "--trivy-db", type=click.Path(file_okay=False), help="trivy cache dir with db/trivy.db."
)
@click.option("--db-repository", help="OCI repository mirroring trivy-db.")
@click.option("--no-gate", is_flag=True, help="Report only; never fail on findings.")
@json_option
def scan_cmd(
    target: str,
    fmt: str,
    environment: str | None,
    policy_file: Path | None,
    trivy_db: str | None,
    db_repository: str | None,
    no_gate: bool,
    as_json: bool,
    output: Path | None = None,
) -> None:
    """Scan an OCI layout (DIR[:tag]) for secrets, misconfig and vulnerabilities; apply the gate.

    The gate runs after the report is written, so a refused image still leaves its
    report (and its exit code 11 says it was refused).
    """
    from pipeline.scan.gate import enforce, evaluate
    from pipeline.scan.trivy import scan_image

    policy = _load_policy(policy_file, environment)
    result = scan_image(target, db_dir=trivy_db, db_repository=db_repository)
    decision = evaluate(result, policy)
    data = {**result.to_dict(), "gate": decision.to_dict(), "environment": policy.environment}
    lines = [
        f"target: {target} ({result.digest})",
        f"scanner: {result.scanner}",
        f"vulnerabilities: {result.vulnerability_status}",
    ]
    for kind, per in sorted(result.counts().items()):
        lines.append(f"{kind}: " + ", ".join(f"{k}={v}" for k, v in sorted(per.items())))
    lines += [f"  {f.severity:8} {f.kind:16} {f.id} {f.target}" for f in result.findings]
    lines.append(f"gate ({policy.environment}): {'passed' if decision.passed else 'REFUSED'}")
    lines += [f"  fail: {m}" for m in decision.failures]
    for message in decision.warnings:
        warn(message)
    if fmt == "cosign-vuln":
        from pipeline.scan.attest import vuln_predicate

        report = json.dumps(vuln_predicate(result, decision), indent=2, sort_keys=True)
    elif fmt == "sarif":
        from pipeline.scan.sarif import render_sarif

        report = render_sarif(result, decision, policy.environment)
    elif as_json or fmt == "json" or wants_json(as_json):
        report = json.dumps(data, indent=2, sort_keys=True, default=str)
    else:
        report = "\n".join(lines)
    if output is not None:
        write_report(output, report + "\n")
        click.echo("\n".join(lines[:3]) + f"\nwrote {output}", err=True)
    else:
        click.echo(report)
    if not no_gate:
        enforce(decision)


@click.command("sbom")
@click.argument("target")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the SBOM here instead of stdout.",
)
@json_option
def sbom_cmd(target: str, output: Path | None, as_json: bool) -> None:
    """Print the validated CycloneDX 1.6 SBOM of an OCI layout image (DIR[:tag])."""

    from pipeline.scan.sbom import image_sbom

    document = image_sbom(target)
    text = json.dumps(document, indent=2, sort_keys=True)
    if output is None:
        click.echo(text)
        return
    write_atomic(output, text + "\n")
    emit(
        {"sbom": str(output), "components": len(document.get("components", []))},
        as_json,
        f"wrote {output} ({len(document.get('components', []))} components)",
    )


@click.group("lock")
def lock_group() -> None:
    """Regenerate the lock files that pin what goes into images."""


@lock_group.command("base")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Lock file to write (default: $PIPELINE_BASE_LOCK, else the committed "
    "debian-base.lock).",
)
@json_option
def lock_base_cmd(out: Path | None, as_json: bool) -> None:
    """Resolve the base image's Debian packages from apt metadata into the lock."""
    from pipeline.build.base_lock import lock_path
    from pipeline.build.debian import resolve_closure, write_lock

    lock = resolve_closure()
    target = lock_path(out)
    write_lock(lock, target)
    emit(
        {"lock": str(target), "packages": len(lock.packages), "digest": lock.digest()},
        as_json,
        f"wrote {target}: {len(lock.packages)} packages",
    )


@lock_group.command("deps")
@click.argument("project_dir", type=click.Path(file_okay=False, path_type=Path))
@json_option
def lock_deps_cmd(project_dir: Path, as_json: bool) -> None:
    """Resolve a project's python packages for the image platform into its lock (with hashes)."""
    from pipeline.build.image import ensure_python_lock
    from pipeline.build.project import load_project
    from pipeline.build.wheels import parse_python_lock

    spec = load_project(project_dir)
    text = ensure_python_lock(spec)
    count = len(parse_python_lock(text))
    emit(
        {"lock": str(spec.lock_path), "packages": count},
        as_json,
        f"{spec.lock_path}: {count} packages",
    )
