"""``pipeline init``, ``pipeline hooks`` and ``pipeline runs``: git push runs the workflows.

Thin: parse, call :mod:`pipeline.workflow` (scaffold, hooks, runs), print.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from pipeline._cli._common import emit, json_option, wants_json
from pipeline.errors import InputError

_REPO = click.option("--repo", "repo", required=True,
                     type=click.Path(file_okay=False, path_type=Path),
                     help="The bare repository pushed to.")


def _pairs(values: tuple[str, ...]) -> dict[str, str]:
    result = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--param {item!r}: expected KEY=VALUE")
        result[key] = value
    return result


@click.command("init")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--name", default=None, help="Project name (default: the directory's name).")
@click.option("--registry", default=None, metavar="HOST[:PORT]",
              help="Registry the release pushes to (default: 127.0.0.1:5000).")
@json_option
def init_command(directory: Path, name: str | None, registry: str | None,
                 as_json: bool) -> None:
    """Scaffold a model repository in DIRECTORY (docs/project-layout.md)."""
    from pipeline.workflow.scaffold import DEFAULT_REGISTRY, init_project

    made = init_project(directory, name=name, registry=registry or DEFAULT_REGISTRY)
    emit({"directory": str(made.root), "name": made.name, "registry": made.registry,
          "files": list(made.files)}, as_json,
         f"created {made.root} ({len(made.files)} files); next: see {made.root}/README.md")


@click.group("hooks")
def hooks_group() -> None:
    """Git hooks: a push to main runs release, other branches pr-check."""


@hooks_group.command("install")
@_REPO
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE",
              help="A parameter every run gets (repeatable); secrets name local "
                   "directories (default: created under REPO/pipeline-runs/secrets).")
@click.option("--main-branch", default="main", show_default=True,
              help="The branch whose pushes run release.")
@click.option("--force", is_flag=True, help="Replace a post-receive hook that is not ours.")
@json_option
def install_command(repo: Path, params: tuple[str, ...], main_branch: str, force: bool,
                    as_json: bool) -> None:
    """Install the post-receive hook of the bare repository REPO."""
    from pipeline.workflow.hooks import install_hook

    done = install_hook(repo, parameters=_pairs(params), main_branch=main_branch,
                        force=force)
    created = (f"; created {', '.join(done.created_secrets)}" if done.created_secrets else "")
    emit(done.to_dict(), as_json,
         f"installed {done.hook} (push to {done.main_branch}: release, other branches: "
         f"pr-check){created}")


@hooks_group.command("post-receive", hidden=True)
@_REPO
def post_receive_command(repo: Path) -> None:
    """What the installed hook runs: queue the pushed branches, start a worker."""
    from pipeline.workflow.hooks import on_push

    queued, ignored = on_push(repo, sys.stdin.read().splitlines())
    for run in queued:
        click.echo(f"pipeline: queued run {run.id}: {run.workflow} of {run.revision[:12]} "
                   f"({run.ref}); pipeline runs show {run.id} --repo {repo}")
    for ref in ignored:
        click.echo(f"pipeline: {ref}: nothing to run (a deletion or not a branch)")


@hooks_group.command("work", hidden=True)
@_REPO
def work_command(repo: Path) -> None:
    """The detached worker: run the queued runs of REPO one at a time."""
    import signal

    from pipeline.workflow.hooks import work

    # SIGTERM unwinds like Ctrl-C: the runner stops the steps, the run is recorded failed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    for run in work(repo):
        click.echo(f"run {run.id}: {run.state}" + (f": {run.reason}" if run.reason else ""))


@click.group("runs")
def runs_group() -> None:
    """Runs queued by git pushes: list, show."""


def _row(run: dict[str, Any]) -> str:
    outputs = " ".join(f"{k}={run['outputs'][k]}" for k in ("image", "model")
                       if k in run["outputs"])
    why = f"  {run['reason']}" if run.get("reason") else ""
    return (f"{run['id']}  {run['state']:<9}  {run['workflow']:<8}  "
            f"{run['revision'][:12]}  {run['ref']}  {outputs}{why}").rstrip()


@runs_group.command("list")
@_REPO
@json_option
def list_command(repo: Path, as_json: bool) -> None:
    """The runs of REPO, newest first."""
    from pipeline.workflow.runs import RunStore, run_details

    store = RunStore(repo)
    runs = [run_details(store, r) for r in store.all()]
    if wants_json(as_json):
        click.echo(json.dumps(runs, indent=2, sort_keys=True))
        return
    click.echo("\n".join(_row(r) for r in runs) if runs else f"no runs in {store.repo}")


@runs_group.command("show")
@click.argument("run_id", metavar="RUN")
@_REPO
@click.option("--step", default=None, help="Print this step's log instead of the run's.")
@json_option
def show_command(run_id: str, repo: Path, step: str | None, as_json: bool) -> None:
    """One run: state, steps, outputs (image and model digests), and its log."""
    from pipeline.workflow.runs import RunStore, run_details

    store = RunStore(repo)
    details = run_details(store, store.load(run_id))
    if wants_json(as_json):
        click.echo(json.dumps(details, indent=2, sort_keys=True))
        return
    if step is not None:
        logs = {s["name"]: s.get("log") for s in details["steps"]}
        if not logs.get(step):
            raise InputError(f"run {details['id']} has no log for step {step!r} "
                             f"(steps: {', '.join(logs) or 'none yet'})")
        click.echo(Path(logs[step]).read_text(encoding="utf-8", errors="replace"), nl=False)
        return
    lines = [f"run {details['id']}: {details['state']}",
             f"workflow: {details['workflow']}  revision: {details['revision']}  "
             f"ref: {details['ref']}",
             f"queued: {details['queued']}  started: {details['started']}  "
             f"finished: {details['finished']}"]
    if details.get("reason"):
        lines.append(f"reason: {details['reason']}")
    for key, value in sorted(details["outputs"].items()):
        lines.append(f"output {key}: {value}")
    for s in details["steps"]:
        lines.append(f"  {s['name']:<18} {s['status']:<9} exit {s['exit_code']}  "
                     f"{s['duration_s'] if s['duration_s'] is not None else '-'}s")
    lines.append(f"--- log ({details['log']}) ---")
    log = Path(details["log"])
    if log.is_file():
        lines.append(log.read_text(encoding="utf-8", errors="replace").rstrip())
    click.echo("\n".join(lines))
