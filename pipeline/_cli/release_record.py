"""``pipeline release record`` and ``pipeline release environments``: the release hand-off.

Thin: parse, call :mod:`pipeline.release.record`, print. ``record`` is what the release
workflow's ``record-release`` step runs; ``environments --first`` names the environment a
release is promoted to first (pipeline.yaml's order), so the workflow needs no flag.
"""

from __future__ import annotations

from pathlib import Path

import click

from pipeline._cli._common import emit, json_option


@click.command("record")
@click.option("--gitops", type=click.Path(path_type=Path), required=True,
              help="GitOps repository working tree (created with git init if missing).")
@click.option("--workspace", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="The release run's workspace (the evidence files, docs/report.md).")
@click.option("--image", required=True, help="The released image, pinned by digest.")
@click.option("--model", required=True, help="The released sealed model, pinned by digest.")
@click.option("--git-repo", required=True, help="The source repository (URL or path).")
@click.option("--revision", required=True, help="The source commit (full hex id).")
@click.option("--workflow", default="release", show_default=True)
@click.option("--run-name", default="", help="The workflow run's name.")
@click.option("--run-uid", default="", help="The workflow run's uid.")
@click.option("--executor", default="local", show_default=True,
              type=click.Choice(["local", "argo"]), help="Who ran the workflow.")
@click.option("--run-url", default="", help="Where the run can be seen (Argo UI, CI).")
@json_option
def record_command(gitops: Path, workspace: Path, image: str, model: str, git_repo: str,
                   revision: str, workflow: str, run_name: str, run_uid: str, executor: str,
                   run_url: str, as_json: bool) -> None:
    """Commit the release record (digests, signatures, attestations, policy results).

    With a GitOps remote configured (release.gitops.remote / PIPELINE_GITOPS_REMOTE) the
    commit is pushed, as every promotion step is.
    """
    from pipeline.config import load_settings
    from pipeline.release.gitops import GitOpsRepo
    from pipeline.release.record import RunInfo, record_release

    settings = load_settings().release()
    repo = GitOpsRepo(gitops)
    if settings.remote and repo.has_remote_branch(settings.remote, settings.branch):
        repo.fetch(settings.remote, settings.branch)
    run = RunInfo(git_repo, revision, workflow, run_name, run_uid, executor, run_url)
    rel, sha, record = record_release(repo, workspace, image, model, run)
    if settings.remote:
        repo.push(settings.remote, settings.branch)
    emit({"record": rel, "commit": sha, "release": record["release"],
          "admission": record["admission"]["decision"], "scan": record["image"]["scan"]["status"],
          "pushed": bool(settings.remote)}, as_json,
         f"recorded {rel} ({sha[:12]}); admission {record['admission']['decision']}, "
         f"vulnerabilities {record['image']['scan']['status']}")


@click.command("environments")
@click.option("--first", is_flag=True, default=False,
              help="Print only the first environment (where a release goes first).")
@json_option
def environments_command(first: bool, as_json: bool) -> None:
    """The environments of pipeline.yaml in promotion order (``dev`` when none)."""
    from pipeline.config import load_settings

    settings = load_settings().release()
    names = [e.name for e in settings.environments] or ["dev"]
    if first:
        names = names[:1]
    emit({"environments": names}, as_json, "\n".join(names))
