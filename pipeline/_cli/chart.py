"""``pipeline chart render`` and the Helm value flags every chart-taking command shares.

Thin: the flags are Helm's (``-f``, ``--set``, ``--set-string``, ``--set-file``,
``--release-name``, ``--namespace``) and mean what they mean to ``helm template``; the
rendering is :func:`pipeline.charts.render`. ``pipeline workflow render-chart`` is the
same command object under its earlier name (docs/cli.md).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from pipeline._cli._common import emit, json_option, write_report

F = TypeVar("F", bound=Callable[..., Any])


def helm_value_flags(func: F) -> F:
    """Add Helm's value flags; the command receives ``chart_flags`` (a dict for render)."""
    options = [
        click.option("--values", "-f", "values_files", multiple=True,
                     type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="A values file (repeatable; later files win), as helm -f."),
        click.option("--set", "set_values", multiple=True, metavar="KEY=VALUE",
                     help="A value with Helm's typing (ints, bools, null, {a,b} lists, "
                          "a.b nested keys, a[0] indexes, \\, and \\. escapes); repeatable."),
        click.option("--set-string", "set_string", multiple=True, metavar="KEY=VALUE",
                     help="A value kept as a string (repeatable), as helm --set-string."),
        click.option("--set-file", "set_file", multiple=True, metavar="KEY=PATH",
                     help="A value read from a file (repeatable), as helm --set-file."),
        click.option("--release-name", "--release", "release_name", default="release",
                     show_default=True, help="The release name the templates see."),
        click.option("--namespace", default="default", show_default=True,
                     help="The namespace the templates see."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def chart_flags(values_files: tuple[Path, ...], set_values: tuple[str, ...],
                set_string: tuple[str, ...], set_file: tuple[str, ...], release_name: str,
                namespace: str) -> dict[str, Any]:
    """The keyword arguments of :func:`pipeline.charts.render` from the flags."""
    return {"values_files": list(values_files), "set_values": list(set_values),
            "set_string": list(set_string), "set_file": list(set_file),
            "release_name": release_name, "namespace": namespace}


@click.group("chart")
def chart_group() -> None:
    """Helm charts, rendered offline with the real Helm engine (no binary, no cluster)."""


@chart_group.command("render")
@click.argument("chart", type=click.Path(exists=True, file_okay=False, path_type=Path))
@helm_value_flags
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the YAML here (atomically) instead of stdout.")
@json_option
def render_command(chart: Path, values_files: tuple[Path, ...], set_values: tuple[str, ...],
                   set_string: tuple[str, ...], set_file: tuple[str, ...], release_name: str,
                   namespace: str, output: Path | None, as_json: bool) -> None:
    """Render CHART to multi-document YAML with helm template's # Source: lines.

    Exit 14 when the chart fails to render (values.schema.json, a template error),
    4 for a bad values file or flag.
    """
    from pipeline.charts import render

    rendered = render(chart, **chart_flags(values_files, set_values, set_string, set_file,
                                            release_name, namespace))
    text = rendered.to_yaml()
    if output is None and not as_json:
        click.echo(text, nl=False)
        return
    if output is not None:
        write_report(output, text)
    emit({"chart": str(chart), "output": str(output) if output else None,
          "objects": len(rendered.objects),
          "sources": sorted({o.source for o in rendered.objects}),
          **({} if output else {"yaml": text})},
         as_json, f"{len(rendered.objects)} objects rendered to {output}")
