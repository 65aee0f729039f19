"""Attachments (signatures, attestations) that concurrent writers cannot lose.

Why: cosign keeps every signature of a digest as a layer of one ``.sig`` manifest
(attestations: ``.att``), and adding one is read-modify-write with no compare-and-swap,
so of several signers racing on one digest the last wins and the others' signatures
vanish while every command exits 0 (sigstore/cosign#2432). Here:

* every attachment is its **own manifest**, pushed by digest with ``subject`` set
  (OCI 1.1), whose single layer is exactly the layer cosign would add (same blob,
  same annotations), so the manifest is a pure function of the layer and the subject;
* it gets a **discovery tag** unique to it (pipeline.oci.discovery): a new tag, never
  an overwrite. Readers list tags and take the union of those, the registry's
  referrers API where it has one, and the cosign tag;
* the cosign ``.sig``/``.att`` tag and the referrers fallback index (``sha256-<hex>``)
  are still written, for cosign and other tools, **optimistically**: read, merge,
  write, read back; an entry lost to a concurrent writer is merged again after a
  jittered backoff. They are never trusted to be complete; :func:`repair` rebuilds
  both from the union at any time (``pipeline attach repair``);
* a writer succeeds only when its own attachment is **durably discoverable** (its
  discovery tag reads back, or the registry's referrers API lists it); otherwise
  :class:`~pipeline.errors.AttachmentError` (exit 15) says what is missing.

Nothing here verifies signatures: a found layer is only a candidate, checked by
pipeline.signing.image / attestation like any other.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import (
    AttachmentError,
    InputError,
    IntegrityError,
    NotFoundError,
    PipelineError,
    VerificationError,
)
from pipeline.oci import discovery as disc
from pipeline.oci import media_types as mt
from pipeline.oci.digest import sha256_digest
from pipeline.signing import _cosign_store as store
from pipeline.signing import simple_signing as ss

#: Rounds of read-merge-write-read on a shared tag before giving up (repair finishes it).
MERGE_ATTEMPTS = 8
#: First backoff between rounds (seconds); doubled per round, with full jitter.
MERGE_BACKOFF = 0.05
_KINDS = ("sig", "att")


def layer_key(layer: dict[str, Any]) -> tuple[str, str]:
    """What makes two layers the same attachment: the blob and its signature annotation."""
    annotations = layer.get("annotations") or {}
    return str(layer.get("digest")), str(annotations.get(ss.SIGNATURE_ANNOTATION, ""))


@dataclass
class Found:
    """Everything discovered about one subject's attachments of one kind."""

    subject: str
    kind: str
    #: Discovery tags listed for the subject (sorted): part of every cache key.
    tags: list[str] = field(default_factory=list)
    #: The digest the cosign tag points at now (None: no cosign tag).
    cosign_digest: str | None = None
    #: Candidate layers with where each came from, duplicates removed.
    layers: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    #: Attachment manifest digest per layer key (layers found as their own manifest).
    manifests: dict[tuple[str, str], str] = field(default_factory=dict)
    #: Why something listed could not be read (a moved tag, a malformed manifest).
    reasons: list[str] = field(default_factory=list)
    #: Whether the fallback index tag exists (seen in the tag list).
    has_index: bool = False

    def add(self, layer: dict[str, Any], source: str, manifest: str | None = None) -> None:
        key = layer_key(layer)
        if manifest is not None:
            self.manifests.setdefault(key, manifest)
        if all(layer_key(existing) != key for existing, _ in self.layers):
            self.layers.append((layer, source))

    @property
    def cache_key(self) -> tuple[Any, ...]:
        """Immutable facts naming what was found: discovery tags embed manifest digests."""
        return (self.subject, self.kind, tuple(self.tags), self.cosign_digest)


def list_found(registry: Any, repository: str, subject: str, kind: str) -> Found:
    """Cheap first step of discovery: one tag listing, plus a HEAD of the cosign tag.

    Enough for a cache key; :func:`load` fetches the manifests behind it.
    """
    tags = disc.list_tags(registry, repository)
    found = Found(subject, kind, disc.attachment_tags(tags, subject, kind))
    found.has_index = disc.fallback_tag(subject) in tags
    cosign_tag = store.attached_tag(subject, kind)
    if cosign_tag in tags:
        found.cosign_digest = store.head_attached(registry, repository, cosign_tag)
    return found


def _subject_of(manifest: dict[str, Any]) -> str | None:
    subject = manifest.get("subject")
    return subject.get("digest") if isinstance(subject, dict) else None


def load(registry: Any, repository: str, found: Found) -> Found:
    """Fetch the cosign tag and the attachment manifests; their layers into ``found``.

    The cosign tag comes first: an attachment manifest is a pure function of its subject
    and its layer, so the discovery tag of every layer the cosign tag holds can be
    computed, and only tags it does not explain are fetched (uncontended, that is one
    manifest, to learn the subject's descriptor). A discovery tag whose manifest is not
    the one its name promises, or is about another digest, is skipped with a reason.
    """
    if len(found.tags) > store.MAX_LAYERS:
        raise VerificationError(
            f"{repository}: more than {store.MAX_LAYERS} attachments listed for {found.subject}"
        )
    cosign_layers: list[dict[str, Any]] = []
    if found.cosign_digest is not None:
        attached = store.fetch_attached(registry, repository, found.cosign_digest)
        if attached is not None:
            cosign_layers = attached.layers
            for layer in cosign_layers:
                found.add(layer, store.attached_tag(found.subject, found.kind))
    explained: set[str] = set()
    for tag in found.tags:
        if tag in explained:
            continue
        manifest = _load_tag(registry, repository, found, tag)
        subject = manifest.get("subject") if manifest is not None else None
        if isinstance(subject, dict) and cosign_layers and not explained:
            for layer in cosign_layers:
                try:
                    digest = sha256_digest(attachment_manifest(subject, layer))
                except (KeyError, TypeError):
                    break  # not our shape: fetch every tag
                explained.add(disc.discovery_tag(found.subject, found.kind, digest))
                found.manifests.setdefault(layer_key(layer), digest)
    return found


def _load_tag(registry: Any, repository: str, found: Found, tag: str) -> dict[str, Any] | None:
    """One discovery tag's manifest, checked, its layers added; None when unusable."""
    try:
        attached = store.fetch_attached(registry, repository, tag)
    except VerificationError as exc:
        found.reasons.append(f"{tag}: {exc}")
        return None
    if attached is None:
        return None  # deleted between listing and reading
    if not disc.tag_matches(tag, attached.digest):
        found.reasons.append(f"{tag}: points at {attached.digest}, not the manifest its "
                             "name promises (moved)")
        return None
    if _subject_of(attached.manifest) != found.subject:
        found.reasons.append(f"{tag}: attachment is about another digest")
        return None
    for layer in attached.layers:
        found.add(layer, f"attachment {attached.digest}", attached.digest)
    return attached.manifest


def discover(registry: Any, repository: str, subject: str, kind: str) -> Found:
    """The union of the discovery tags and the cosign tag for ``subject`` (no referrers)."""
    return load(registry, repository, list_found(registry, repository, subject, kind))


def add_referrers(registry: Any, repository: str, found: Found, artifact_type: str) -> Found:
    """Add what the referrers API (or, without one, the fallback index) lists to ``found``.

    The index is writable by anyone who can push: each manifest's ``subject`` is re-checked.
    """
    try:
        descriptors = registry.referrers(repository, found.subject, artifact_type)
    except (InputError, IntegrityError, VerificationError) as exc:
        found.reasons.append(f"referrers: {exc}")
        return found
    for descriptor in descriptors[: store.MAX_LAYERS]:
        digest = descriptor.get("digest")
        if not isinstance(digest, str) or digest in found.manifests.values():
            continue
        try:
            attached = store.fetch_attached(registry, repository, digest)
        except VerificationError as exc:
            found.reasons.append(f"referrer {digest}: {exc}")
            continue
        if attached is None or _subject_of(attached.manifest) != found.subject:
            continue
        for layer in attached.layers:
            found.add(layer, f"referrer {digest}", digest)
    return found


# -- writing -------------------------------------------------------------------------------
def attachment_manifest(subject: dict[str, Any], layer: dict[str, Any]) -> bytes:
    """The manifest of one attachment: a pure function of its subject and its layer.

    Deterministic (sorted keys), so re-publishing a layer found only in a cosign tag
    yields the very same digest, and so the same discovery tag.
    """
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "artifactType": layer["mediaType"],
        "config": {"mediaType": mt.OCI_EMPTY, "digest": mt.EMPTY_DIGEST, "size": 2},
        "layers": [layer],
        "subject": {
            "mediaType": subject["mediaType"],
            "digest": subject["digest"],
            "size": subject["size"],
        },
    }
    predicate = (layer.get("annotations") or {}).get("predicateType")
    if predicate:
        manifest["annotations"] = {"predicateType": predicate}
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


@dataclass
class Published:
    """What :func:`publish` did for one attachment, and what still holds it."""

    manifest: str
    tag: str
    tag_ok: bool
    referrers_api: bool
    cosign_ok: bool
    index_ok: bool
    problems: list[str] = field(default_factory=list)

    @property
    def durable(self) -> bool:
        return self.tag_ok or self.referrers_api


def _sleep(attempt: int, deadline: Any) -> None:
    delay = random.uniform(0, MERGE_BACKOFF * (2**attempt))  # full jitter: writers spread out
    if deadline is not None:
        delay = deadline.bound(delay)
    time.sleep(delay)


def optimistic(
    read: Callable[[], Any],
    merge: Callable[[Any], Any | None],
    write: Callable[[Any], object],
    holds: Callable[[Any], bool],
    *,
    attempts: int = MERGE_ATTEMPTS,
    deadline: Any = None,
) -> bool:
    """Read, merge, write, read back; again after a jittered backoff until it holds.

    ``merge(current)`` returns what to write, or None when ``current`` already holds
    everything. True when a read-back held it; False after ``attempts`` rounds.
    """
    for attempt in range(attempts):
        current = read()
        merged = merge(current)
        if merged is None:
            return True
        write(merged)
        if holds(read()):
            return True
        if deadline is not None and deadline.expired:
            return False
        _sleep(attempt, deadline)
    return False


def merge_cosign(registry: Any, repository: str, subject: str, kind: str,
                 layers: list[dict[str, Any]], *, deadline: Any = None,
                 blobs: dict[str, bytes] | None = None) -> bool:
    """Make the cosign tag hold ``layers`` (plus all it had); True when a read-back did."""
    tag = store.attached_tag(subject, kind)
    wanted = {layer_key(layer): layer for layer in layers}

    def read() -> list[dict[str, Any]]:
        current = store.fetch_attached(registry, repository, tag)
        return current.layers if current is not None else []

    def merge(current: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        have = {layer_key(layer) for layer in current}
        missing = [layer for key, layer in wanted.items() if key not in have]
        return [*current, *missing] if missing else None

    def holds(current: list[dict[str, Any]]) -> bool:
        return set(wanted) <= {layer_key(layer) for layer in current}

    def write(merged: list[dict[str, Any]]) -> None:
        put_with_blobs(registry, repository,
                       lambda: store.put_cosign_manifest(registry, repository, tag, merged),
                       blobs or {})

    return optimistic(read, merge, write, holds, deadline=deadline)


def merge_index(registry: Any, repository: str, subject: str,
                descriptors: list[dict[str, Any]], *, deadline: Any = None) -> bool:
    """Make the referrers fallback index list ``descriptors``; True when a read-back did."""
    tag = disc.fallback_tag(subject)
    wanted = {d["digest"]: d for d in descriptors}

    def read() -> list[dict[str, Any]]:
        return disc.fallback_index(registry, repository, subject)

    def merge(current: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        have = {m.get("digest") for m in current}
        missing = [d for digest, d in wanted.items() if digest not in have]
        return [*current, *missing] if missing else None

    def write(merged: list[dict[str, Any]]) -> None:
        index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": merged}
        body = json.dumps(index, sort_keys=True, separators=(",", ":")).encode()
        registry.put_manifest(repository, tag, body, mt.OCI_INDEX)

    def holds(current: list[dict[str, Any]]) -> bool:
        return set(wanted) <= {m.get("digest") for m in current}

    return optimistic(read, merge, write, holds, deadline=deadline)


def _descriptor(body: bytes, digest: str, layer: dict[str, Any]) -> dict[str, Any]:
    descriptor: dict[str, Any] = {"mediaType": mt.OCI_MANIFEST, "digest": digest,
                                  "size": len(body), "artifactType": layer["mediaType"]}
    predicate = (layer.get("annotations") or {}).get("predicateType")
    if predicate:
        descriptor["annotations"] = {"predicateType": predicate}
    return descriptor


def put_with_blobs(registry: Any, repository: str, put: Callable[[], Any],
                   blobs: dict[str, bytes]) -> Any:
    """``put()`` a manifest; when the registry says a blob is unknown, push it again, retry.

    Writers racing to upload the same blob (every signer of a digest signs the same
    payload; every attachment shares the empty config) can make distribution briefly
    report a just-committed blob as unknown.
    """
    for attempt in range(MERGE_ATTEMPTS):
        try:
            return put()
        except (IntegrityError, NotFoundError) as exc:
            if "BLOB_UNKNOWN" not in str(exc) or attempt == MERGE_ATTEMPTS - 1:
                raise
        _sleep(attempt, getattr(registry, "deadline", None))
        for digest, data in blobs.items():
            if not registry.blob_exists(repository, digest):
                registry.push_blob(repository, data, digest)
    raise AssertionError("unreachable")  # pragma: no cover


def _push_manifest(registry: Any, repository: str, subject: dict[str, Any],
                   layer: dict[str, Any], blobs: dict[str, bytes] | None = None,
                   ) -> tuple[bytes, str, bool]:
    registry.push_blob(repository, mt.EMPTY_JSON, mt.EMPTY_DIGEST)
    body = attachment_manifest(subject, layer)
    digest, indexed = put_with_blobs(
        registry, repository,
        lambda: registry.put_attachment(repository, sha256_digest(body), body, mt.OCI_MANIFEST),
        {mt.EMPTY_DIGEST: mt.EMPTY_JSON, **(blobs or {})},
    )
    return body, digest, indexed


def _tag(registry: Any, repository: str, tag: str, body: bytes, digest: str,
         blobs: dict[str, bytes] | None = None) -> str | None:
    """Put the discovery tag and read it back; None when it holds, else what went wrong."""
    try:
        put_with_blobs(registry, repository,
                       lambda: registry.put_attachment(repository, tag, body, mt.OCI_MANIFEST),
                       {mt.EMPTY_DIGEST: mt.EMPTY_JSON, **(blobs or {})})
    except (InputError, IntegrityError, NotFoundError) as exc:  # a rejected tag (auth: raise)
        return f"the registry rejected discovery tag {tag}: {exc}"
    now = store.head_attached(registry, repository, tag)
    if now != digest:
        return f"discovery tag {tag} reads back as {now}, not {digest}"
    return None


def _listed_by_api(registry: Any, repository: str, subject: str, digest: str) -> bool:
    """Whether the registry's own referrers API (not the fallback index) lists ``digest``."""
    try:
        response = registry._request(
            "GET", f"/v2/{repository}/referrers/{subject}", scope=registry._scope(repository),
            missing_ok=True, what=f"referrers of {repository}@{subject}",
            headers={"Accept": mt.OCI_INDEX},
        )
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if response.status_code != 200 or content_type != mt.OCI_INDEX:
            return False
        manifests = response.json().get("manifests") or []
    except (PipelineError, ValueError, AttributeError):
        return False
    return any(isinstance(m, dict) and m.get("digest") == digest for m in manifests)


def publish(
    registry: Any,
    repository: str,
    subject: dict[str, Any],
    kind: str,
    layer: dict[str, Any],
    *,
    blob: bytes | None = None,
    deadline: Any = None,
) -> Published:
    """Publish one attachment (its blob already pushed) and keep every index in step.

    Raises AttachmentError (exit 15) when it is not durably discoverable afterwards;
    a cosign tag or fallback index that could not be brought in step is only a
    problem listed in the result (``pipeline attach repair`` finishes it).
    """
    if kind not in _KINDS:
        raise InputError(f"attachment kind {kind!r} is not one of {_KINDS}")
    subject_digest = str(subject["digest"])
    blobs = {str(layer["digest"]): blob} if blob is not None else {}
    body, digest, indexed = _push_manifest(registry, repository, subject, layer, blobs)
    tag = disc.discovery_tag(subject_digest, kind, digest)
    problem = _tag(registry, repository, tag, body, digest, blobs)
    problems = [problem] if problem else []
    api = bool(indexed) and (problem is None or _listed_by_api(
        registry, repository, subject_digest, digest))
    cosign_ok = merge_cosign(registry, repository, subject_digest, kind, [layer],
                             deadline=deadline, blobs=blobs)
    if not cosign_ok:
        problems.append(f"the cosign tag {store.attached_tag(subject_digest, kind)} lost it "
                        f"to concurrent writers {MERGE_ATTEMPTS} times")
    index_ok = True
    if not indexed:
        index_ok = merge_index(registry, repository, subject_digest,
                               [_descriptor(body, digest, layer)], deadline=deadline)
        if not index_ok:
            problems.append("the referrers fallback index lost it to concurrent writers")
    result = Published(digest, tag, problem is None, api, cosign_ok, index_ok, problems)
    if not result.durable:
        raise AttachmentError(
            f"{repository}@{subject_digest}: attachment {digest} was pushed but is not "
            f"durably discoverable ({'; '.join(problems)}); the registry has no referrers "
            f"API listing it either. Fix the registry's tag rules and run `pipeline attach "
            f"repair {registry.registry}/{repository}@{subject_digest}`"
        )
    return result


def push_blob(registry: Any, repository: str, blob: bytes) -> str:
    return str(registry.push_blob(repository, blob, sha256_digest(blob)))


# -- repair ----------------------------------------------------------------------------------
def repair(registry: Any, repository: str, subject: dict[str, Any],
           artifact_types: dict[str, str], *, deadline: Any = None) -> dict[str, Any]:
    """Bring every index of ``subject``'s attachments in step with their union.

    For each kind: every layer found anywhere (discovery tags, referrers API or
    fallback index, cosign tag) gets its own manifest and discovery tag, the cosign
    tag holds them all and the fallback index lists them all. Idempotent; verifies no
    signature (a junk layer stays junk, and verifiers refuse it).
    """
    subject_digest = str(subject["digest"])
    report: dict[str, Any] = {"digest": subject_digest, "kinds": {}}
    problems: list[str] = []
    for kind in _KINDS:
        found = discover(registry, repository, subject_digest, kind)
        add_referrers(registry, repository, found, artifact_types[kind])
        layers = [layer for layer, _ in found.layers]
        descriptors, tagged = [], 0
        for layer in layers:
            body, digest, indexed = _push_manifest(registry, repository, subject, layer)
            tag = disc.discovery_tag(subject_digest, kind, digest)
            if tag not in found.tags:
                problem = _tag(registry, repository, tag, body, digest)
                if problem:
                    problems.append(problem)
                else:
                    tagged += 1
            if not indexed:
                descriptors.append(_descriptor(body, digest, layer))
        cosign_ok = not layers or merge_cosign(registry, repository, subject_digest, kind,
                                               layers, deadline=deadline)
        index_ok = not descriptors or merge_index(registry, repository, subject_digest,
                                                  descriptors, deadline=deadline)
        if not cosign_ok:
            problems.append(f"{store.attached_tag(subject_digest, kind)} kept losing entries")
        if not index_ok:
            problems.append("the referrers fallback index kept losing entries")
        report["kinds"][kind] = {"attachments": len(layers), "tags_added": tagged,
                                 "cosign_tag": cosign_ok, "index": index_ok}
    report["problems"] = problems
    return report


def union_count(layers: Iterable[tuple[dict[str, Any], str]], media_type: str) -> int:
    return sum(1 for layer, _ in layers if layer.get("mediaType") == media_type)


__all__ = [
    "Found",
    "Published",
    "add_referrers",
    "attachment_manifest",
    "discover",
    "layer_key",
    "list_found",
    "load",
    "merge_cosign",
    "merge_index",
    "optimistic",
    "publish",
    "repair",
]
