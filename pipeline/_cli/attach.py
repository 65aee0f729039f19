"""``pipeline attach repair REF``: bring a digest's signature and attestation indexes in step."""

from __future__ import annotations

import click

from pipeline._cli._common import emit, json_option
from pipeline._cli._registry import registry_flags
from pipeline.oci.registry import RegistryOptions


@click.group("attach")
def attach_group() -> None:
    """Signatures and attestations attached to images: keep them discoverable."""


@attach_group.command("repair")
@click.argument("reference")
@registry_flags(credentials=True)
@json_option
def repair_command(reference: str, registry_options: RegistryOptions, as_json: bool) -> None:
    """Re-tag every attachment of REFERENCE and fill its cosign tags and referrers index.

    Safe to run at any time and by anyone who may push; exit 15 when a discovery tag
    is still refused by the registry.
    """
    from pipeline.errors import AttachmentError
    from pipeline.signing.attachments import repair_attachments

    result = repair_attachments(reference, registry_options=registry_options)
    kinds = result["kinds"]
    emit(result, as_json, f"repaired {result['digest']}: "
                          f"{kinds['sig']['attachments']} signature(s), "
                          f"{kinds['att']['attachments']} attestation(s); "
                          f"{kinds['sig']['tags_added'] + kinds['att']['tags_added']} "
                          "discovery tag(s) added")
    if result["problems"]:
        raise AttachmentError("; ".join(result["problems"]))
