"""Listing tags for discovery against the real docker-registry (distribution 2.8).

Distribution 2.8 ignores ``n`` on ``tags/list`` and answers every tag at once; registries
that paginate (distribution 3, GHCR, Harbor: sorted pages, ``last``, a ``Link`` header)
are stood in for by the FlakyProxy's paginating mode in front of the same real registry.
"""

from __future__ import annotations

import json

import pytest

from pipeline.errors import InputError
from pipeline.oci import discovery as disc
from pipeline.oci import media_types as mt
from tests.fixtures_registry import FlakyProxy, RegistryServer

pytestmark = pytest.mark.integration


def _tag_many(registry: RegistryServer, repository: str, count: int) -> list[str]:
    with registry.client() as client:
        client.push_blob(repository, mt.EMPTY_JSON, mt.EMPTY_DIGEST)
        manifest = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                               "config": {"mediaType": mt.OCI_EMPTY, "digest": mt.EMPTY_DIGEST,
                                          "size": 2}, "layers": []}).encode()
        tags = [f"t{i:03d}" for i in range(count)]
        for tag in tags:
            client.put_manifest(repository, tag, manifest, mt.OCI_MANIFEST)
    return tags


def test_the_real_registry_answers_every_tag_in_one_request(registry: RegistryServer,
                                                            flaky_proxy: FlakyProxy) -> None:
    tags = _tag_many(registry, "paging/all", 12)
    with flaky_proxy.client() as client:
        assert sorted(disc.list_tags(client, "paging/all", page_size=5)) == tags
    assert len([p for _, p, _ in flaky_proxy.log if "/tags/list" in p]) == 1


def test_pages_are_followed_through_the_link_header(registry: RegistryServer,
                                                    flaky_proxy: FlakyProxy) -> None:
    tags = _tag_many(registry, "paging/many", 23)
    flaky_proxy.paginate = 5
    with flaky_proxy.client() as client:
        listed = disc.list_tags(client, "paging/many", page_size=5)
    assert listed == tags
    pages = [path for _, path, _ in flaky_proxy.log if "/tags/list" in path]
    assert len(pages) == 5  # 5 + 5 + 5 + 5 + 3
    assert "last=t004" in pages[1] and all("n=5" in page for page in pages)


def test_a_missing_repository_has_no_tags(registry: RegistryServer) -> None:
    with registry.client() as client:
        assert disc.list_tags(client, "paging/none-here") == []


def test_a_registry_repeating_a_page_is_refused(registry: RegistryServer,
                                                flaky_proxy: FlakyProxy) -> None:
    _tag_many(registry, "paging/loop", 3)
    flaky_proxy.link_loop = True
    with flaky_proxy.client() as client, pytest.raises(InputError, match="repeats a page"):
        disc.list_tags(client, "paging/loop")
