"""Keeping a digest's signatures and attestations findable: ``pipeline attach repair``.

Every attachment is its own manifest with a discovery tag (see
pipeline.signing._attachments); the cosign ``.sig``/``.att`` tags and the referrers
fallback index are copies kept in step by merging, and a writer that raced too often,
a deleted discovery tag or an older tool's write can leave them short. Repair takes
the union of everything found and writes it back everywhere; any writer or verifier
may run it at any time, and running it twice changes nothing.
"""

from __future__ import annotations

from typing import Any

from pipeline.oci.reference import Reference
from pipeline.oci.registry import RegistryOptions, open_client, resolve_descriptor
from pipeline.signing import _attachments, dsse
from pipeline.signing import _cosign_store as store
from pipeline.signing import simple_signing as ss

#: The artifact type each kind of attachment is listed under in referrers.
ARTIFACT_TYPES = {"sig": ss.MEDIA_TYPE, "att": dsse.MEDIA_TYPE}


def repair_attachments(
    ref: str | Reference,
    *,
    registry_options: RegistryOptions | None = None,
    client: Any | None = None,
) -> dict[str, Any]:
    """Give every attachment of ``ref``'s digest its manifest and tag, and fill the copies.

    Returns per kind (``sig``, ``att``) how many attachments were found, how many
    discovery tags were added, and whether the cosign tag and the fallback index now
    hold them all; ``problems`` lists what could not be fixed (a rejected tag).
    Verifies no signature: that stays the verifier's job.
    """
    reference = store.as_reference(ref)
    with open_client(reference, client, registry_options) as registry:
        subject = resolve_descriptor(registry, reference)
        report = _attachments.repair(registry, reference.repository, subject, ARTIFACT_TYPES,
                                     deadline=getattr(registry, "deadline", None))
    return {"reference": str(reference), **report}


__all__ = ["ARTIFACT_TYPES", "repair_attachments"]
