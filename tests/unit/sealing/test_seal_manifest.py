"""seal.json: canonical round trip, and strict refusal of anything malformed."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import InputError
from pipeline.sealing.manifest import (
    FileEntry,
    KeyInfo,
    SealManifest,
    associated_data,
    parse_manifest,
)

H = "ab" * 32


def _manifest() -> SealManifest:
    return SealManifest(
        name="tiny",
        segment_size=1 << 20,
        key=KeyInfo("local", "local:k:0011", "A256GCM", b"\x01" * 61),
        files=(
            FileEntry("model.safetensors", 3016, H, "model.safetensors.sealed", 3072, "cd" * 32),
            FileEntry("sub/config.json", 45, "ef" * 32),
        ),
    )


def test_round_trip_is_canonical() -> None:
    manifest = _manifest()
    data = manifest.to_bytes()
    parsed = parse_manifest(data)
    assert parsed == manifest
    assert parsed.to_bytes() == data
    assert [f.path for f in parsed.sealed_files] == ["model.safetensors"]
    assert parsed.file("sub/config.json").stored_path == "sub/config.json"


def _mutated(**changes: object) -> bytes:
    raw = json.loads(_manifest().to_bytes())
    for dotted, value in changes.items():
        target = raw
        parts = dotted.split("__")
        for part in parts[:-1]:
            target = target[int(part)] if part.isdigit() else target[part]
        target[parts[-1]] = value
    return json.dumps(raw).encode()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"version": 2}, "unsupported format version"),
        ({"format": "other"}, "not a sealed-model manifest"),
        ({"aead__segment_size": 12345}, "segment size"),
        ({"aead__scheme": "chacha"}, "AEAD scheme"),
        ({"key__wrapped_key": "***"}, "base64"),
        ({"files__0__path": "../etc/passwd"}, "unsafe"),
        ({"files__0__path": "/abs"}, "unsafe"),
        ({"files__1__path": "model.safetensors"}, "duplicate"),
        ({"files__0__sha256": "xyz"}, "sha256"),
        ({"files__0__size": -1}, "negative"),
        ({"files__0__size": True}, "wrong type"),
        ({"files__1__path": "seal.json"}, "reserved"),
    ],
)
def test_malformed_manifests_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_manifest(_mutated(**changes))


def test_not_json() -> None:
    with pytest.raises(InputError, match="not valid JSON"):
        parse_manifest(b"\xff{")


def test_associated_data_binds_the_path() -> None:
    assert associated_data("a") != associated_data("b")


@settings(max_examples=200, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4),
    max_leaves=20,
))
def test_arbitrary_json_raises_only_input_error(value: object) -> None:
    try:
        parse_manifest(json.dumps(value).encode())
    except InputError:
        pass
