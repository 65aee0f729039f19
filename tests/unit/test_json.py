"""The strict JSON parser (pipeline._json) and the parsers built on it.

Properties: every JSON document within the limits round-trips exactly as json.loads
reads it; anything else (any bytes at all) raises only InputError; duplicate keys,
integers past MAX_INT_DIGITS, NaN/Infinity and nesting past the limit are always
refused, wherever they sit. seal.json, AdmissionReview and safetensors-header parsing
inherit this (checked on mutated real documents).
"""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline._json import MAX_DEPTH, MAX_INT_DIGITS, loads_strict
from pipeline.admission.review import ReviewError, parse_review
from pipeline.errors import InputError
from pipeline.sealing.manifest import FileEntry, KeyInfo, SealManifest, parse_manifest
from pipeline.sealing.safetensors_buffer import parse_header

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))

values = st.recursive(
    st.none() | st.booleans()
    | st.integers(min_value=-(10 ** MAX_INT_DIGITS) + 1, max_value=10 ** MAX_INT_DIGITS - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=30,
)


@SETTINGS
@given(values)
def test_property_documents_within_the_limits_read_as_json_reads_them(value: Any) -> None:
    text = json.dumps(value)
    assert loads_strict(text, "doc") == json.loads(text)
    assert loads_strict(text.encode(), "doc") == json.loads(text)


@SETTINGS
@given(st.binary(max_size=200))
def test_property_arbitrary_bytes_raise_only_input_error(data: bytes) -> None:
    try:
        loads_strict(data, "doc")
    except InputError as exc:
        assert str(exc).startswith("doc: ")


@SETTINGS
@given(values, st.text(max_size=6), values, values)
def test_property_a_duplicate_key_anywhere_is_refused(outer: Any, key: str, a: Any,
                                                      b: Any) -> None:
    dup = "{" + f"{json.dumps(key)}: {json.dumps(a)}, {json.dumps(key)}: {json.dumps(b)}" + "}"
    text = json.dumps([outer, {"x": "@@"}]).replace('"@@"', dup)
    with pytest.raises(InputError, match="duplicate key"):
        loads_strict(text, "doc")


@pytest.mark.parametrize("text, message", [
    ("9" * (MAX_INT_DIGITS + 1), f"integer of {MAX_INT_DIGITS + 1} digits"),
    ("-" + "9" * 5001, "integer of 5001 digits"),
    ('{"size": ' + "1" * 5001 + "}", "integer of 5001 digits"),
    ("[NaN]", "NaN is not JSON"),
    ('{"a": Infinity}', "Infinity is not JSON"),
    ("[-Infinity]", "-Infinity is not JSON"),
    ("1e999", "out of range"),
    ("[" * 5000 + "]" * 5000, "nested deeper than"),
    ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), f"nested deeper than {MAX_DEPTH}"),
    ('{"a": {"a": 1, "a": 2}}', "duplicate key 'a'"),
    ("{", "not valid JSON (Expecting property name"),
    (b"\xff", "not UTF-8"),
])
def test_hostile_documents_are_refused_with_what_is_wrong(text: str | bytes, message: str
                                                          ) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace("[", r"\[")):
        loads_strict(text, "doc")


def test_depth_limit_is_exact_and_the_error_class_is_the_callers() -> None:
    assert loads_strict("[" * MAX_DEPTH + "]" * MAX_DEPTH, "doc") is not None
    assert loads_strict('{"a": [1]}', "doc", max_depth=2) == {"a": [1]}
    with pytest.raises(ReviewError):
        loads_strict('{"a": [1]}', "doc", max_depth=1, error=ReviewError)


def _manifest_bytes() -> bytes:
    return SealManifest(
        name="tiny", segment_size=1 << 20,
        key=KeyInfo("local", "local:kek:00", "AES256-GCM", b"\x01" * 60),
        files=(FileEntry("config.json", 2, "a" * 64),
               FileEntry("model.safetensors", 10, "b" * 64, "model.safetensors.sealed", 60,
                         "c" * 64)),
    ).to_bytes()


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 10 ** 6), st.binary(min_size=1, max_size=8)),
                max_size=6))
def test_property_mutated_seal_json_raises_only_input_error(edits: list) -> None:
    data = bytearray(_manifest_bytes())
    for position, insert in edits:
        position %= len(data)
        data[position:position + len(insert)] = insert
    try:
        parse_manifest(bytes(data))
    except InputError:
        pass


@SETTINGS
@given(st.sampled_from(['"size": 2', '"name": "tiny"', '"version": 1', '"provider": "local"']),
       st.sampled_from(["dup", "huge", "nan"]))
def test_property_seal_json_refuses_duplicates_huge_numbers_and_nan(field: str, how: str
                                                                    ) -> None:
    text = _manifest_bytes().decode()
    assert field in text
    key, _, value = field.partition(": ")
    hostile = {"dup": f"{field}, {key}: {value}", "huge": f"{key}: {'7' * 5001}",
               "nan": f"{key}: NaN"}[how]
    with pytest.raises(InputError, match="seal.json: "):
        parse_manifest(text.replace(field, hostile, 1).encode())


@SETTINGS
@given(values)
def test_property_any_json_body_is_a_review_or_a_review_error(value: Any) -> None:
    try:
        parse_review(json.dumps(value).encode())
    except ReviewError:
        pass


@SETTINGS
@given(values, st.binary(max_size=32))
def test_property_safetensors_headers_raise_only_input_error(header: Any, data: bytes) -> None:
    raw = json.dumps(header).encode()
    try:
        parse_header(struct.pack("<Q", len(raw)) + raw + data)
    except InputError:
        pass
