"""Parse a safetensors file that lives in memory, and make tensors that view it.

``safetensors.torch.load(bytes)`` copies every tensor out of its input, which
costs ~0.6 s/GiB on top of decryption. The decrypted buffer is already ours, so
tensors are built as zero-copy views over it instead. The parser is strict (the
format's own rules: an 8-byte little-endian header length, a JSON header, tensors
that exactly tile the data section without gaps or overlaps) because its input is
whatever decrypted: a valid AEAD tag proves who wrote it, not that it is sane.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline._json import loads_strict
from pipeline.errors import InputError

if TYPE_CHECKING:  # torch is heavy; import it only where tensors are made
    import torch

MAX_HEADER_BYTES = 100 * 1024 * 1024

#: safetensors dtype name -> (torch dtype attribute, bytes per element)
DTYPES: dict[str, tuple[str, int]] = {
    "BOOL": ("bool", 1),
    "U8": ("uint8", 1),
    "I8": ("int8", 1),
    "F8_E5M2": ("float8_e5m2", 1),
    "F8_E4M3": ("float8_e4m3fn", 1),
    "I16": ("int16", 2),
    "U16": ("uint16", 2),
    "F16": ("float16", 2),
    "BF16": ("bfloat16", 2),
    "I32": ("int32", 4),
    "U32": ("uint32", 4),
    "F32": ("float32", 4),
    "I64": ("int64", 8),
    "U64": ("uint64", 8),
    "F64": ("float64", 8),
}


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor sits in the buffer (offsets are absolute, into the whole file)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    tensors: tuple[TensorInfo, ...]
    metadata: dict[str, str]
    data_start: int


def parse_header(buffer: bytes | bytearray | memoryview) -> SafetensorsHeader:
    """Validate the header of an in-memory safetensors file (:class:`InputError` if not one)."""
    view = memoryview(buffer)
    header_len = header_length(view[:8], view.nbytes)
    return parse_header_bytes(view[8 : 8 + header_len], view.nbytes)


def header_length(prefix: bytes | bytearray | memoryview, total: int) -> int:
    """The JSON header's length from a file's first 8 bytes; InputError if out of range."""
    if total < 8 or len(prefix) < 8:
        raise InputError("not a safetensors file: shorter than its 8-byte header length")
    (header_len,) = struct.unpack_from("<Q", prefix, 0)
    if header_len > MAX_HEADER_BYTES or 8 + header_len > total:
        raise InputError("not a safetensors file: header length out of range")
    return int(header_len)


def parse_header_bytes(header: bytes | bytearray | memoryview, total: int) -> SafetensorsHeader:
    """Validate a JSON header against the size of the whole file (``total`` bytes).

    Split from :func:`parse_header` so a file on disk is checked from its first bytes
    and its size alone (``pipeline seal`` refuses a bad file before encrypting it).
    """
    # Strict JSON: a duplicate tensor name would mean two different models to two readers.
    raw = loads_strict(header, "not a safetensors file: header")
    if not isinstance(raw, dict):
        raise InputError("not a safetensors file: header is not a JSON object")
    data_start = 8 + len(header)
    data_len = total - data_start
    metadata = raw.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise InputError("safetensors: __metadata__ must map strings to strings")
    infos = [_tensor_info(name, entry, data_start) for name, entry in raw.items()]
    _check_tiling(infos, data_start, data_len)
    return SafetensorsHeader(tensors=tuple(infos), metadata=metadata, data_start=data_start)


def check_file(path: str | os.PathLike[str]) -> SafetensorsHeader:
    """Validate the safetensors file at ``path`` by reading only its header.

    InputError (naming the file) when it is not a safetensors file: what the runtime's
    loader would refuse after decryption is refused before sealing.
    """
    with open(path, "rb") as handle:
        total = os.fstat(handle.fileno()).st_size
        try:
            header_len = header_length(handle.read(8), total)
            header = handle.read(header_len)
            if len(header) != header_len:
                raise InputError("not a safetensors file: truncated header")
            return parse_header_bytes(header, total)
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from None


def _tensor_info(name: str, entry: Any, data_start: int) -> TensorInfo:
    if not isinstance(entry, dict):
        raise InputError(f"safetensors: entry for {name!r} is not an object")
    dtype = entry.get("dtype")
    if dtype not in DTYPES:
        raise InputError(f"safetensors: tensor {name!r} has unknown dtype {dtype!r}")
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InputError(f"safetensors: tensor {name!r} has an invalid shape")
    offsets = entry.get("data_offsets")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise InputError(f"safetensors: tensor {name!r} has invalid data_offsets")
    nbytes = math.prod(shape) * DTYPES[dtype][1]
    if offsets[1] - offsets[0] != nbytes:
        raise InputError(f"safetensors: tensor {name!r} size does not match its shape")
    return TensorInfo(name, dtype, tuple(shape), data_start + offsets[0], data_start + offsets[1])


def _check_tiling(infos: list[TensorInfo], data_start: int, data_len: int) -> None:
    """Tensors must cover the data section exactly: no gaps, overlaps or trailing bytes."""
    position = data_start
    for info in sorted(infos, key=lambda i: (i.start, i.end)):
        if info.start != position:
            raise InputError("safetensors: tensor data overlaps or leaves gaps")
        position = info.end
    if position != data_start + data_len:
        raise InputError("safetensors: data section length does not match the tensors")


def tensors_from_buffer(
    buffer: torch.Tensor, header: SafetensorsHeader
) -> dict[str, torch.Tensor]:
    """Tensors that view ``buffer`` (a 1-D uint8 tensor holding the whole file).

    Views share the buffer's memory: no copy. A tensor whose offset is not a
    multiple of its element size cannot be a view; it is copied (rare: safetensors
    writers align data).
    """
    import torch

    result: dict[str, torch.Tensor] = {}
    for info in header.tensors:
        torch_dtype = getattr(torch, DTYPES[info.dtype][0])
        raw = buffer[info.start : info.end]
        if info.start % DTYPES[info.dtype][1]:
            raw = raw.clone()
        result[info.name] = raw.view(torch_dtype).reshape(info.shape)
    return result
