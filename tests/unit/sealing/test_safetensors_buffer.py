"""The in-memory safetensors parser: same tensors as the safetensors library, strict on junk."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from pipeline.errors import InputError
from pipeline.sealing.safetensors_buffer import parse_header, tensors_from_buffer

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int8, torch.uint8,
          torch.bool, torch.float64, torch.int32]


def _load(data: bytes) -> dict[str, torch.Tensor]:
    buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return tensors_from_buffer(buffer, parse_header(memoryview(buffer.numpy())))


def _assert_same(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    assert ours.keys() == theirs.keys()
    for name, tensor in theirs.items():
        assert ours[name].dtype == tensor.dtype and ours[name].shape == tensor.shape
        assert torch.equal(ours[name], tensor), name


def test_matches_safetensors_library_for_every_dtype() -> None:
    tensors = {f"t{i}": (torch.arange(24) % 7).to(dtype).reshape(2, 3, 4)
               for i, dtype in enumerate(DTYPES)}
    tensors["scalar"] = torch.tensor(3.5)
    tensors["empty"] = torch.zeros(0, 5)
    data = st_save(tensors, metadata={"format": "pt"})
    _assert_same(_load(data), st_load(data))
    assert parse_header(data).metadata == {"format": "pt"}


def test_tensors_are_views_over_the_buffer() -> None:
    data = st_save({"w": torch.ones(1000)})
    buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    tensors = tensors_from_buffer(buffer, parse_header(memoryview(buffer.numpy())))
    assert tensors["w"].untyped_storage().data_ptr() == buffer.untyped_storage().data_ptr()
    buffer.zero_()
    assert float(tensors["w"].sum()) == 0.0


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(
    st.text(min_size=1, max_size=12),
    st.tuples(st.sampled_from(DTYPES), st.lists(st.integers(0, 4), max_size=3)),
    max_size=5,
))
def test_round_trip_property(spec: dict) -> None:
    tensors = {name: torch.zeros(shape, dtype=dtype) + 1 for name, (dtype, shape) in spec.items()}
    data = st_save(tensors)
    _assert_same(_load(data), st_load(data))


def _file(header: dict, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


@pytest.mark.parametrize(
    "blob, message",
    [
        (b"", "shorter"),
        (struct.pack("<Q", 1 << 40) + b"{}", "out of range"),
        (struct.pack("<Q", 4) + b"nope", "not valid JSON"),
        (_file([1, 2]), "not a JSON object"),
        (_file({"a": {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}}, b"0000"), "dtype"),
        (_file({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"0000"), "size"),
        (_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"00000000"), "gaps"),
        (_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"000000"),
         "length"),
        (_file({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"0000"), "shape"),
        (_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, b"0000"), "offsets"),
        (_file({"__metadata__": {"k": 1}}), "metadata"),
    ],
)
def test_malformed_headers_are_refused(blob: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_header(blob)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256))
def test_arbitrary_bytes_raise_only_input_error(blob: bytes) -> None:
    try:
        parse_header(blob)
    except InputError:
        pass
