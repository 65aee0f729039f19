"""Finding what is attached to a digest without read-modify-write: unique discovery tags.

Every signature or attestation is its own manifest, pushed by digest with ``subject``
set, and tagged with a name nobody else will ever write::

    sha256-<subject hex>.<kind>.<first 48 hex of the attachment manifest's digest>

(7 + 64 + 1 + 3 + 1 + 48 = 124 characters, under the registry's 128.) Writing a
new tag never overwrites anything, so concurrent writers cannot lose each other's
attachments; a reader lists the repository's tags (``/v2/<name>/tags/list``,
paginated with ``n``/``last`` and the ``Link`` header) and picks the ones for its
digest. The tag name is no authority: the manifest behind it must have the digest
the name starts with, and its signatures are verified like any other.

Transport and names only, no crypto: what an attachment says is pipeline.signing's.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urljoin

from pipeline.errors import InputError, NotFoundError
from pipeline.oci import _referrers
from pipeline.oci.digest import parse_digest

if TYPE_CHECKING:
    from pipeline.oci.client import RegistryClient

__all__ = [
    "DIGEST_PREFIX",
    "MAX_TAGS",
    "PAGE_SIZE",
    "attachment_tags",
    "discovery_tag",
    "fallback_index",
    "fallback_tag",
    "list_tags",
    "tag_matches",
]

#: Hex digits of the attachment manifest's digest kept in its tag (tags are <= 128 chars).
DIGEST_PREFIX = 48
#: Tags asked for per page (registries may send fewer; the Link header says what is next).
PAGE_SIZE = 1000
#: A repository listing more tags than this is refused (a registry feeding pages forever).
MAX_TAGS = 1_000_000
_SUFFIX = re.compile(f"[0-9a-f]{{{DIGEST_PREFIX}}}")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


def _prefix(subject_digest: str, kind: str) -> str:
    algorithm, encoded = parse_digest(subject_digest)
    if not re.fullmatch(r"[a-z]{2,8}", kind):
        raise InputError(f"attachment kind {kind!r} is not a short lower-case word")
    return f"{algorithm}-{encoded}.{kind}."


def discovery_tag(subject_digest: str, kind: str, attachment_digest: str) -> str:
    """The tag unique to one attachment (``kind`` is ``sig`` or ``att``) of a subject."""
    _, encoded = parse_digest(attachment_digest)
    return _prefix(subject_digest, kind) + encoded[:DIGEST_PREFIX]


def fallback_tag(subject_digest: str) -> str:
    """The referrers fallback index's tag of ``subject_digest``: ``<alg>-<hex>`` (OCI 1.1)."""
    algorithm, encoded = parse_digest(subject_digest)
    return f"{algorithm}-{encoded}"


def fallback_index(client: RegistryClient, repository: str,
                   subject_digest: str) -> list[dict[str, Any]]:
    """The descriptors the fallback index of ``subject_digest`` lists (empty: none)."""
    return _referrers.tag_index(client, repository, fallback_tag(subject_digest))


def tag_matches(tag: str, attachment_digest: str) -> bool:
    """Whether ``attachment_digest`` is the manifest ``tag``'s name promises."""
    _, encoded = parse_digest(attachment_digest)
    return tag.rsplit(".", 1)[-1] == encoded[:DIGEST_PREFIX]


def attachment_tags(tags: list[str], subject_digest: str, kind: str) -> list[str]:
    """The discovery tags of ``subject_digest``'s attachments of ``kind`` among ``tags``."""
    prefix = _prefix(subject_digest, kind)
    return sorted(
        t for t in tags
        if t.startswith(prefix) and _SUFFIX.fullmatch(t[len(prefix):])
    )


def _next_url(client: RegistryClient, links: dict[str, dict[str, str]]) -> str:
    """The next page the ``Link`` header names (``...?n=1000&last=<tag>``), else none."""
    link = links.get("next", {}).get("url")
    return urljoin(client.base_url + "/", link) if link else ""


def list_tags(client: RegistryClient, repository: str, *, page_size: int = PAGE_SIZE) -> list[str]:
    """Every tag of ``repository``, following pagination; empty when it has none (404).

    Pages are asked for with ``n`` and followed by the ``Link`` header (what
    distribution, Harbor, ECR and GHCR send); a registry that repeats a page or never
    stops is refused (InputError) instead of being followed forever.
    """
    url = f"/v2/{repository}/tags/list?" + urlencode({"n": page_size})
    what = f"tags of {repository}"
    tags: list[str] = []
    seen_urls: set[str] = set()
    while url:
        if url in seen_urls:
            raise InputError(f"{what}: the registry's pagination repeats a page ({url})")
        seen_urls.add(url)
        try:
            response = client._request("GET", url, scope=client._scope(repository), what=what)
        except NotFoundError:
            return tags
        try:
            body = response.json()
        except ValueError:
            raise InputError(f"{what}: registry answered non-JSON") from None
        page = body.get("tags") if isinstance(body, dict) else None
        if page is None:
            page = []
        if not isinstance(page, list):
            raise InputError(f"{what}: 'tags' is not a list")
        tags.extend(str(tag) for tag in page if isinstance(tag, str) and _TAG.match(tag))
        if len(tags) > MAX_TAGS:
            raise InputError(f"{what}: more than {MAX_TAGS} tags, refusing to list further")
        url = _next_url(client, response.links)
    return tags
