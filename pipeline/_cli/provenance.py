"""``pipeline image provenance``: the SLSA v1 predicate of a built image, for ``image attest``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pipeline._cli._common import emit, json_option
from pipeline._fileio import write_atomic


@click.command("provenance")
@click.argument("target")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the predicate here instead of stdout.",
)
@click.option("--builder-id", default=None, help="builder.id to record (default: local builder).")
@click.option("--base-lock", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The Debian lock the image was built with (default: as pipeline build).")
@click.option("--python-lock", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The python lock, when the image's app layer does not carry it.")
@json_option
def provenance_cmd(target: str, output: Path | None, builder_id: str | None,
                   base_lock: Path | None, python_lock: Path | None, as_json: bool) -> None:
    """Print the SLSA provenance v1 predicate of an image built by `pipeline build` (DIR[:tag]).

    Every locked package is listed as a purl with its sha256; the locks are checked
    against the digests the image records. Attach it with:
    pipeline attest REF --type slsaprovenance --predicate FILE --key PEM
    """
    from pipeline.build.provenance import BUILDER_ID, image_provenance

    predicate = image_provenance(target, builder_id=builder_id or BUILDER_ID,
                                 base_lock=base_lock, python_lock=python_lock)
    text = json.dumps(predicate, indent=2, sort_keys=True)
    if output is None:
        click.echo(text)
        return
    write_atomic(output, text + "\n")
    emit({"provenance": str(output), "buildType": predicate["buildDefinition"]["buildType"]},
         as_json, f"wrote {output}")
