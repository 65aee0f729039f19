"""Manifest and index parsing (pipeline.oci.manifest): what is accepted, what is refused."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import InputError
from pipeline.oci import media_types as mt
from pipeline.oci.manifest import parse_manifest

DIGEST = "sha256:" + "0" * 64
CONFIG = {"mediaType": mt.OCI_CONFIG, "digest": DIGEST, "size": 2}
LAYER = {"mediaType": mt.OCI_LAYER_GZIP, "digest": DIGEST, "size": 10}


def _body(document: object) -> bytes:
    return json.dumps(document).encode()


def test_image_manifest_and_index_are_parsed() -> None:
    manifest = parse_manifest(
        _body({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": CONFIG,
               "layers": [LAYER], "artifactType": "x/y", "subject": LAYER,
               "annotations": {"a": "b"}})
    )
    assert manifest.media_type == mt.OCI_MANIFEST and not manifest.is_index
    assert manifest.blobs == (CONFIG, LAYER) and manifest.manifests == ()
    assert manifest.subject == LAYER and manifest.artifact_type == "x/y"
    index = parse_manifest(_body({"schemaVersion": 2, "manifests": [CONFIG]}), mt.OCI_INDEX)
    assert index.is_index and index.manifests == (CONFIG,) and index.blobs == ()


def test_media_type_comes_from_the_document_or_the_shape() -> None:
    assert parse_manifest(_body({"schemaVersion": 2, "manifests": []})).media_type == mt.OCI_INDEX
    docker = {"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST, "config": CONFIG, "layers": []}
    assert parse_manifest(_body(docker), mt.DOCKER_MANIFEST).media_type == mt.DOCKER_MANIFEST


@pytest.mark.parametrize(
    ("document", "media_type", "reason"),
    [
        ("[]", None, "not a JSON object"),
        ("{", None, "not valid JSON"),
        ({"schemaVersion": 1, "config": CONFIG, "layers": []}, None, "schemaVersion"),
        ({"schemaVersion": True, "config": CONFIG, "layers": []}, None, "schemaVersion"),
        ({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}, mt.OCI_MANIFEST,
         "served as"),
        ({"schemaVersion": 2, "mediaType": "text/html", "manifests": []}, None, "unsupported"),
        ({"schemaVersion": 2, "layers": []}, None, "config"),
        ({"schemaVersion": 2, "config": CONFIG, "layers": "x"}, None, "not a list"),
        ({"schemaVersion": 2, "config": {**CONFIG, "size": -1}, "layers": []}, None, "size"),
        ({"schemaVersion": 2, "config": {**CONFIG, "size": "2"}, "layers": []}, None, "size"),
        ({"schemaVersion": 2, "config": {**CONFIG, "size": False}, "layers": []}, None, "size"),
        ({"schemaVersion": 2, "config": {**CONFIG, "digest": "md5:00"}, "layers": []}, None,
         "digest"),
        ({"schemaVersion": 2, "config": CONFIG, "layers": [{**LAYER, "urls": "u"}]}, None, "urls"),
        ({"schemaVersion": 2, "config": CONFIG, "layers": [], "annotations": {"a": 1}}, None,
         "annotations"),
        ({"schemaVersion": 2, "config": CONFIG, "layers": [], "subject": {}}, None, "subject"),
        ({"schemaVersion": 2, "manifests": [], "layers": []}, None, "index has no"),
        ({"schemaVersion": 2, "config": CONFIG, "layers": [], "manifests": []},
         mt.OCI_MANIFEST, "no 'manifests'"),
    ],
)
def test_malformed_manifests_name_the_problem(document: object, media_type: str | None,
                                              reason: str) -> None:
    body = document.encode() if isinstance(document, str) else _body(document)
    with pytest.raises(InputError, match=reason):
        parse_manifest(body, media_type)


def test_oversized_manifest_is_refused() -> None:
    with pytest.raises(InputError, match="larger than"):
        parse_manifest(b" " * (4 * 1024 * 1024 + 1))


_descriptors = st.fixed_dictionaries(
    {
        "mediaType": st.sampled_from([mt.OCI_LAYER_GZIP, mt.OCI_CONFIG, "a/b"]),
        "digest": st.sampled_from([DIGEST, "sha512:" + "f" * 128]),
        "size": st.integers(min_value=0, max_value=1 << 40),
    },
    optional={"annotations": st.dictionaries(st.text(max_size=8), st.text(max_size=8),
                                             max_size=3)},
)


@settings(max_examples=150, deadline=None)
@given(config=_descriptors, layers=st.lists(_descriptors, max_size=5))
def test_valid_manifests_round_trip(config: dict, layers: list[dict]) -> None:
    document = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config,
                "layers": layers}
    parsed = parse_manifest(_body(document), mt.OCI_MANIFEST)
    assert list(parsed.blobs) == [config, *layers]


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["schemaVersion", "mediaType", "config", "layers", "manifests",
                         "digest", "size", "subject", "annotations", "urls", "x"]),
        inner, max_size=6),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(document=_json, media_type=st.sampled_from([None, *mt.ALL_MANIFEST_TYPES]))
def test_any_json_is_parsed_or_refused_with_input_error(document: object,
                                                        media_type: str | None) -> None:
    try:
        parse_manifest(_body(document), media_type)
    except InputError:
        pass


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_any_bytes_are_parsed_or_refused_with_input_error(data: bytes) -> None:
    try:
        parse_manifest(data)
    except InputError:
        pass
