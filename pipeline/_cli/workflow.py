"""``pipeline workflow``: run the Argo workflows of workflows/ locally, render them.

Thin: parse, call :mod:`pipeline.workflow`, print. A failed step exits with that step's
own exit code after a summary on stderr (never a traceback).
"""

from __future__ import annotations

from pathlib import Path

import click

from pipeline._cli._common import emit, json_option, wants_json
from pipeline._cli._registry import registry_flags
from pipeline.errors import ConfigError, InputError
from pipeline.oci.registry import RegistryOptions


def _pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    result = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"{what} {item!r}: expected KEY=VALUE")
        result[key] = value
    return result


@click.group("workflow")
def workflow_group() -> None:
    """Argo workflows (release, pr-check): run locally, render YAML."""


@workflow_group.command("run")
@click.argument("name")
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE",
              help="Workflow parameter (repeatable). Secret parameters name local "
                   "directories holding the secret's files.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory (workspace/, logs/, run.json); default: a new temporary one.")
@click.option("--parallel", type=click.IntRange(min=1), default=2, show_default=True,
              help="How many independent steps run at once.")
@click.option("--isolation", type=click.Choice(["host", "image"]), default="host",
              show_default=True,
              help="host: steps run here with this CLI; image: each step runs inside the "
                   "pipeline image (pulled by digest) under bubblewrap, with the volumes "
                   "its template mounts.")
@click.option("--pipeline-image", "pipeline_image", metavar="REPO@sha256:...",
              help="The pipeline image, by digest (sets the pipeline-image parameter).")
@click.option("--image-key", "image_keys", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="With --isolation image: run the pipeline image only if its signature "
                   "verifies against this public key (repeatable: any one).")
@registry_flags(purpose=", pulling the pipeline image with --isolation image")
@json_option
def run_command(name: str, params: tuple[str, ...], workdir: Path | None, parallel: int,
                isolation: str, pipeline_image: str | None, image_keys: tuple[Path, ...],
                registry_options: RegistryOptions, as_json: bool) -> None:
    """Run workflow NAME (release, pr-check) on this machine."""
    from pipeline.workflow.runner import WorkflowStepError, failure_summary, run_workflow

    quiet = wants_json(as_json)
    parameters = _pairs(params, "--param")
    if image_keys and isolation != "image":
        raise InputError("--image-key verifies the pipeline image: it needs --isolation image")
    if pipeline_image is not None:
        from pipeline.workflows.catalog import pinned_image

        parameters["pipeline-image"] = pinned_image(pipeline_image)

    def event(kind: str, step) -> None:  # type: ignore[no-untyped-def]
        if quiet:
            return
        if kind == "start":
            click.echo(f"▶ {step.name}", err=True)
        else:
            click.echo(f"{'✓' if step.status == 'succeeded' else '✗'} {step.name} "
                       f"({step.status}, exit {step.exit_code}, {step.duration_s}s)", err=True)

    if workdir is None:
        import tempfile

        workdir = Path(tempfile.mkdtemp(prefix=f"pipeline-{name}-"))
    result = run_workflow(name, parameters, workdir, max_parallel=parallel,
                          on_event=event, isolation=isolation,
                          registry_options=registry_options, image_keys=image_keys)
    if result.failed_step is not None:
        if quiet:
            emit(result.to_dict(), as_json)
        summary = failure_summary(result)
        raise WorkflowStepError(summary, result.exit_code)
    emit(result.to_dict(), as_json,
         f"{result.workflow}: succeeded ({len(result.steps)} steps, "
         f"{result.duration_s:.1f}s); record: {result.record}")


@workflow_group.command("render")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--pipeline-image", "pipeline_image", metavar="REPO@sha256:...",
              help="Pin every step to this pipeline image, by digest (a tag is refused).")
@json_option
def render_command(out: Path, pipeline_image: str | None, as_json: bool) -> None:
    """Write the Argo WorkflowTemplate YAML of every workflow into OUT."""
    try:
        from pipeline.workflows.catalog import render_all
    except ImportError as exc:
        raise ConfigError(f"the workflow definitions need 'hera' ({exc})") from None
    paths = render_all(out, pipeline_image=pipeline_image)
    emit({"written": [str(p) for p in paths]}, as_json, "\n".join(str(p) for p in paths))
