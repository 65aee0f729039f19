"""OCI 1.1 referrers: the API, and the tag-schema fallback for registries without it.

``GET /v2/<repo>/referrers/<digest>`` lists the manifests whose ``subject`` is the
digest. A registry without that API (distribution 2.8, the local one) answers 404;
then the index at the fallback tag ``<alg>-<hex>`` is read instead, and every
manifest pushed with a ``subject`` is added to that index (what OCI distribution 1.1
tells clients to do), by an optimistic merge that reads its write back. The fallback
index is writable by anyone who can push, so readers re-check each listed manifest's
``subject``.
"""

from __future__ import annotations

import json
import random
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from pipeline.errors import InputError, NotFoundError
from pipeline.oci import media_types as mt
from pipeline.oci.digest import parse_digest

if TYPE_CHECKING:

    from pipeline.oci.client import RegistryClient


def referrers(
    client: RegistryClient, repository: str, digest: str, artifact_type: str | None = None
) -> list[dict[str, Any]]:
    """Descriptors of manifests whose ``subject`` is ``digest`` (OCI 1.1).

    Uses ``GET /v2/<repo>/referrers/<digest>``; when the registry has no such
    API (404), reads the fallback tag ``<alg>-<hex>`` instead.
    """
    algorithm, encoded = parse_digest(digest)
    what = f"referrers of {repository}@{digest}"
    url = f"/v2/{repository}/referrers/{digest}"
    if artifact_type:
        url += "?" + urlencode({"artifactType": artifact_type})
    response = client._request(
        "GET",
        url,
        scope=client._scope(repository),
        missing_ok=True,
        what=what,
        headers={"Accept": mt.OCI_INDEX},
    )
    manifests: list[dict[str, Any]] = []
    content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
    if response.status_code == 200 and content_type == mt.OCI_INDEX:
        try:
            manifests = list(response.json().get("manifests") or [])
        except (ValueError, AttributeError):
            raise InputError(f"{what}: referrers answer is not an image index") from None
    else:
        manifests = tag_index(client, repository, f"{algorithm}-{encoded}")
    if artifact_type:
        manifests = [m for m in manifests if m.get("artifactType") == artifact_type]
    return manifests


def tag_index(client: RegistryClient, repository: str, tag: str) -> list[dict[str, Any]]:
    """The descriptors listed by the fallback index at ``tag`` (empty when there is none)."""
    try:
        body, media_type, _ = client.get_manifest(repository, tag, accept=(mt.OCI_INDEX,))
    except NotFoundError:
        return []
    if media_type != mt.OCI_INDEX:
        raise InputError(f"referrers tag {repository}:{tag} is not an OCI image index")
    manifests = json.loads(body).get("manifests") or []
    if not isinstance(manifests, list):
        raise InputError(f"referrers tag {repository}:{tag} has no manifest list")
    return [m for m in manifests if isinstance(m, dict)]


def index_subject(
    client: RegistryClient, repository: str, manifest: Any, media_type: str, digest: str,
    size: int,
) -> None:
    """List a just-pushed manifest with a ``subject`` in its subject's fallback index."""
    subject = manifest.get("subject") if isinstance(manifest, dict) else None
    if not isinstance(subject, dict):
        return
    descriptor: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": size}
    if manifest.get("artifactType"):
        descriptor["artifactType"] = manifest["artifactType"]
    elif isinstance(manifest.get("config"), dict):
        descriptor["artifactType"] = manifest["config"].get("mediaType")
    if manifest.get("annotations"):
        descriptor["annotations"] = manifest["annotations"]
    add_to_tag_index(client, repository, subject.get("digest", ""), descriptor)


#: Read-merge-write rounds on the fallback index before giving up (a racing writer won).
_INDEX_ATTEMPTS = 8


def add_to_tag_index(
    client: RegistryClient, repository: str, subject_digest: str, descriptor: dict[str, Any]
) -> bool:
    """Add ``descriptor`` to the fallback index of ``subject_digest``.

    Read, merge, write, read back: the registry has no compare-and-swap, so a concurrent
    writer may overwrite the index; then merge again after a jittered backoff. True when
    a read-back listed it (signatures and attestations keep their own discovery tags and
    do not depend on this; see pipeline.signing._attachments).
    """
    algorithm, encoded = parse_digest(subject_digest)
    tag = f"{algorithm}-{encoded}"
    for attempt in range(_INDEX_ATTEMPTS):
        existing = tag_index(client, repository, tag)
        if any(m.get("digest") == descriptor["digest"] for m in existing):
            return True
        index = {
            "schemaVersion": 2,
            "mediaType": mt.OCI_INDEX,
            "manifests": [*existing, descriptor],
        }
        body = json.dumps(index, sort_keys=True, separators=(",", ":")).encode()
        client.put_manifest(repository, tag, body, mt.OCI_INDEX)
        if any(m.get("digest") == descriptor["digest"]
               for m in tag_index(client, repository, tag)):
            return True
        delay = random.uniform(0, 0.05 * (2**attempt))
        deadline = getattr(client, "deadline", None)
        time.sleep(delay if deadline is None else deadline.bound(delay))
    return False
