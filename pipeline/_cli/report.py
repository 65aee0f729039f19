"""``pipeline report``: the evidence report of the release that runs in an environment.

Thin: :func:`pipeline.report.collect` reads the GitOps repository, ``render_html``
writes the page (atomically); ``--json`` prints the same data.
"""

from __future__ import annotations

from pathlib import Path

import click

from pipeline._cli._common import emit, json_option
from pipeline._cli._registry import registry_flags
from pipeline.oci.registry import RegistryOptions


@click.command("report")
@click.option("--gitops", type=click.Path(path_type=Path), required=True,
              help="GitOps repository (working tree or bare); read, never written.")
@click.option("--env", "env", required=True, help="Environment name (e.g. dev).")
@click.option("--release", "release_ref", default=None,
              help="Report on this release instead (its image or model reference, from "
                   "ENV's history: e.g. a candidate a roll-back refused).")
@click.option("--html", "html_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write the HTML page here.")
@click.option("--verify-key", "verify_keys", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Also ask the registry now: verify the image signature and each "
                   "attestation with this public key (repeatable).")
@registry_flags(purpose=" (with --verify-key)")
@json_option
def report_command(gitops: Path, env: str, release_ref: str | None, html_file: Path | None,
                   verify_keys: tuple[Path, ...], registry_options: RegistryOptions,
                   as_json: bool) -> None:
    """Show the chain of evidence of what runs in ENV: commit, run, image, signatures,
    attestations, sealed model, policy, admission, canary analysis, roll-backs."""
    from pipeline._fileio import write_atomic
    from pipeline.report import collect, render_html

    data = collect(gitops, env, release_ref)
    if verify_keys:
        from pipeline.release.gitops import Release
        from pipeline.report.live import live_gaps, verify_now

        release = Release(data["release"]["image"], data["release"]["model"])
        data["live"] = verify_now(release, verify_keys, registry_options)
        data["gaps"] = [*data["gaps"], *live_gaps(data["live"])]
        data["complete"] = data["complete"] and not live_gaps(data["live"])
    if html_file is not None:
        write_atomic(html_file, render_html(data), mode=0o644)
        data["html"] = str(html_file)
    what = "runs" if data["runs"] else "does not run now"
    lines = [f"{env}: {data['release']['label']} ({what}; {env} is "
             f"{data['state']['status']})",
             f"  steps: {len(data['steps'])}, roll-backs: {len(data['rollbacks'])}"]
    lines += [f"  gap: {g}" for g in data["gaps"]]
    if html_file is not None:
        lines.append(f"report: {html_file}")
    emit(data, as_json, "\n".join(lines))
