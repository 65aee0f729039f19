"""``pipeline image push|pull``, ``pipeline model push|pull|attach-signature`` (and aliases).

Move images and sealed models through registries.
"""

from __future__ import annotations

import click

from pipeline._cli._common import emit, json_option, transfer_progress, wants_json
from pipeline._cli._registry import registry_flags
from pipeline.oci.registry import RegistryOptions


@click.command("push")
@click.argument("layout_dir", type=click.Path(file_okay=False))
@click.argument("reference")
@click.option("--tag", default=None, help="Which manifest of the layout (its index.json tag).")
@registry_flags(credentials=True)
@json_option
def push(
    layout_dir: str,
    reference: str,
    tag: str | None,
    registry_options: RegistryOptions,
    as_json: bool,
) -> None:
    """Push the image in OCI layout LAYOUT_DIR to REFERENCE; prints the digest."""
    from pipeline.oci.layout import OCILayout
    from pipeline.oci.reference import Reference
    from pipeline.oci.transfer import push_layout

    ref = Reference.parse(reference)
    layout = OCILayout.open(layout_dir)
    with registry_options.client(ref) as client:
        with transfer_progress(client, f"pushing {ref}", not wants_json(as_json)):
            digest = push_layout(layout, ref, client, tag=tag)
    pinned = ref.with_digest(digest)
    emit({"reference": str(pinned), "digest": digest}, as_json, digest)


@click.command("pull")
@click.argument("reference")
@click.argument("layout_dir", type=click.Path(file_okay=False))
@click.option("--tag", default=None, help="Tag to record in index.json (default: the ref's).")
@registry_flags(credentials=True)
@json_option
def pull(
    reference: str,
    layout_dir: str,
    tag: str | None,
    registry_options: RegistryOptions,
    as_json: bool,
) -> None:
    """Pull REFERENCE into the OCI layout LAYOUT_DIR (created or extended); prints the digest."""
    from pipeline.oci.reference import Reference
    from pipeline.oci.transfer import pull_to_layout

    ref = Reference.parse(reference)
    with registry_options.client(ref) as client:
        with transfer_progress(client, f"pulling {ref}", not wants_json(as_json)):
            digest = pull_to_layout(ref, layout_dir, client, tag=tag)
    emit(
        {"reference": str(ref.with_digest(digest)), "digest": digest, "layout": layout_dir},
        as_json,
        digest,
    )


@click.command("push-model")
@click.argument("sealed_dir", type=click.Path(file_okay=False))
@click.argument("reference")
@registry_flags(credentials=True)
@json_option
def push_model_cmd(
    sealed_dir: str,
    reference: str,
    registry_options: RegistryOptions,
    as_json: bool,
) -> None:
    """Push the sealed model in SEALED_DIR as an OCI artifact to REFERENCE; prints the digest."""
    from pipeline.distribution import push_model
    from pipeline.oci.reference import Reference

    ref = Reference.parse(reference)
    with registry_options.client(ref) as client:
        with transfer_progress(client, f"pushing {ref}", not wants_json(as_json)):
            digest = push_model(sealed_dir, ref, client=client)
    emit({"reference": str(ref.with_digest(digest)), "digest": digest}, as_json, digest)


@click.command("pull-model")
@click.argument("reference")
@click.argument("dest", type=click.Path(file_okay=False))
@click.option(
    "--trust",
    "trust_keys",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Public key (PEM) the model signature must verify with (its own model.sig or "
    "an attached one); repeatable. Without it nothing is verified here.",
)
@registry_flags(credentials=True)
@json_option
def pull_model_cmd(
    reference: str,
    dest: str,
    trust_keys: tuple[str, ...],
    registry_options: RegistryOptions,
    as_json: bool,
) -> None:
    """Pull the sealed model artifact REFERENCE into DEST (new or empty directory)."""
    from pathlib import Path

    from pipeline.distribution import pull_model
    from pipeline.oci.reference import Reference
    from pipeline.signing import Trust

    ref = Reference.parse(reference)
    trust = Trust(public_keys=tuple(Path(k) for k in trust_keys)) if trust_keys else None
    with registry_options.client(ref) as client:
        with transfer_progress(client, f"pulling {ref}", not wants_json(as_json)):
            path = pull_model(ref, dest, client=client, trust=trust)
    emit(
        {"reference": str(ref), "path": str(path), "verified": trust is not None},
        as_json,
        str(path),
    )


@click.command("attach-model-signature")
@click.argument("reference")
@click.argument("signature", type=click.Path(exists=True, dir_okay=False))
@registry_flags(credentials=True)
@json_option
def attach_model_signature_cmd(
    reference: str,
    signature: str,
    registry_options: RegistryOptions,
    as_json: bool,
) -> None:
    """Attach the model-signing bundle SIGNATURE to the model artifact REFERENCE (referrer)."""
    from pipeline.distribution import attach_model_signature
    from pipeline.oci.reference import Reference

    ref = Reference.parse(reference)
    with registry_options.client(ref) as client:
        digest = attach_model_signature(ref, signature, client=client)
    emit({"reference": str(ref), "signature_manifest": digest}, as_json, digest)
