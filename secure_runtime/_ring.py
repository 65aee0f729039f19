"""The pipelined sealed load: decrypt into a small ring of host buffers while the last one copies.

For a GPU the plaintext's home is device memory, so holding the whole model in host
memory first (and then one small copy per tensor) costs the host RAM of the model and
serialises decryption and the copy. Here instead:

    file 1..N -> segment groups -> ring slot k (host; pinned for CUDA)
              -> async copy into ONE destination allocation at the file's offset
              -> once every copy is done: tensors are views over that allocation

* **Overlap.** While slot ``k`` copies (a CUDA stream, or a copying thread on the CPU),
  the next group decrypts into slot ``k+1`` on every core. A slot is reused only after
  its copy has finished (its event, or its future).
* **Bounded host memory.** Only the ring (``slots x slot_bytes``, 3 x 64 MiB by default)
  holds plaintext on the host, whatever the model's size; ciphertext already read is
  unmapped again (``SealedStream``), so the resident set stays the ring.
* **Scrubbing.** Each slot is zeroed before reuse and after the last copy; on any
  failure (a tag that does not verify in segment k, a truncated file, a bad header)
  in-flight copies are waited for, then the destination and every slot are zeroed and
  dropped, and the error names the file and the segment.
* **Layout.** Each file's plaintext (header included) lands contiguously at an offset
  aligned to :data:`ALIGN` in the destination, so a tensor that straddles two slots
  (or two groups) is whole there, and dtype views are as aligned as in the file itself.
  The safetensors header is collected on the host as it passes (it is metadata, not
  weights) and parsed after its segments authenticated.

The same code runs with ``device="cpu"``: the destination is one anonymous host
mapping and the "copy" a memcpy on a copying thread (what the CPU tests exercise:
order, zeroing, straddling, errors mid-stream). The CPU load does not use it by
default (decrypting straight into the final buffer is one pass less, see
``loader.py``). Every CUDA call is inside :class:`CudaCopier`, which only a CUDA
device creates: a CPU load never initialises CUDA.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from pipeline.errors import InputError
from pipeline.sealing.manifest import FileEntry
from pipeline.sealing.open import TAG_SIZE, OpenedModel, sealed_stream
from pipeline.sealing.safetensors_buffer import (
    SafetensorsHeader,
    header_length,
    parse_header_bytes,
    tensors_from_buffer,
)

log = logging.getLogger("secure_runtime.loader")

#: Every file starts at a multiple of this in the destination (the CUDA allocator's own
#: granularity is 512; 256 keeps every dtype view aligned as it is in the file).
ALIGN = 256


@dataclass(frozen=True)
class RingConfig:
    """How many host buffers, and how big: the host's plaintext is at most their product."""

    slots: int = 3
    slot_bytes: int = 64 << 20

    def __post_init__(self) -> None:
        if self.slots < 1 or self.slot_bytes < 1:
            raise ValueError("a ring needs at least one slot of at least one byte")


@dataclass
class RingStats:
    """What the pipeline did (for tests and the benchmark; no plaintext in here)."""

    groups: int = 0
    slots_allocated: int = 0
    slot_bytes: int = 0
    copies: list[tuple[int, int, int]] = field(default_factory=list)  # (slot, dst offset, n)
    decrypt_seconds: float = 0.0


class Copier(Protocol):
    """Where plaintext goes: one destination allocation, filled by asynchronous copies."""

    destination: torch.Tensor

    def new_slot(self, size: int) -> torch.Tensor:
        """A host buffer the copier can copy from (pinned, for CUDA)."""

    def copy(self, slot: int, source: torch.Tensor, offset: int) -> None:
        """Start copying ``source`` to ``destination[offset:]``; returns at once."""

    def wait(self, slot: int) -> None:
        """Block until the last copy started from ``slot`` has finished."""

    def finish(self) -> None:
        """Block until every copy has finished."""

    def scrub(self) -> None:
        """Wait for in-flight copies, zero the destination and drop it (failure path)."""


class HostCopier:
    """CPU: the destination is anonymous host memory; one thread does the memcpys."""

    def __init__(self, size: int, buffer: Callable[[int], torch.Tensor]) -> None:
        self.destination = buffer(size)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ring-copy")
        self._pending: dict[int, Future[None]] = {}

    def new_slot(self, size: int) -> torch.Tensor:
        return torch.empty(size, dtype=torch.uint8)

    def copy(self, slot: int, source: torch.Tensor, offset: int) -> None:
        target = self.destination[offset : offset + source.numel()]

        def run() -> None:
            target.copy_(source)  # releases the GIL: decryption goes on meanwhile

        self._pending[slot] = self._pool.submit(run)

    def wait(self, slot: int) -> None:
        pending = self._pending.pop(slot, None)
        if pending is not None:
            pending.result()

    def finish(self) -> None:
        for slot in list(self._pending):
            self.wait(slot)
        self._pool.shutdown(wait=True)

    def scrub(self) -> None:
        for pending in self._pending.values():
            pending.exception()  # wait; the failure that brought us here is what counts
        self._pending.clear()
        self._pool.shutdown(wait=True)
        self.destination.zero_()
        self.destination = self.destination[:0]  # dropped: freed once nothing views it


class CudaCopier:
    """CUDA: one device allocation, copies on a side stream, one event per slot."""

    def __init__(self, size: int, device: str) -> None:
        self.device = torch.device(device)
        self.destination = torch.empty(size, dtype=torch.uint8, device=self.device)
        self.stream = torch.cuda.Stream(device=self.device)  # type: ignore[no-untyped-call]
        self._events: dict[int, torch.cuda.Event] = {}

    def new_slot(self, size: int) -> torch.Tensor:
        return torch.empty(size, dtype=torch.uint8, pin_memory=True)

    def copy(self, slot: int, source: torch.Tensor, offset: int) -> None:
        target = self.destination[offset : offset + source.numel()]
        with torch.cuda.stream(self.stream):
            target.copy_(source, non_blocking=True)
            event = torch.cuda.Event()  # type: ignore[no-untyped-call]
            event.record(self.stream)
        self._events[slot] = event

    def wait(self, slot: int) -> None:
        event = self._events.pop(slot, None)
        if event is not None:
            event.synchronize()

    def finish(self) -> None:
        self.stream.synchronize()
        self._events.clear()
        # Later work on the default stream (views, clones, the module) sees the bytes.
        torch.cuda.current_stream(self.device).wait_stream(self.stream)

    def scrub(self) -> None:
        self.stream.synchronize()
        self._events.clear()
        self.destination.zero_()
        torch.cuda.synchronize(self.device)
        self.destination = self.destination[:0]
        torch.cuda.empty_cache()  # the zeroed block goes back to the driver if unreferenced


def byte_view(tensor: torch.Tensor) -> memoryview:
    """A writable memoryview of a 1-D uint8 CPU tensor (no copy)."""
    array: Any = tensor.numpy()  # numpy's stubs do not declare the buffer protocol
    return memoryview(array)


class _HeaderBytes:
    """The first bytes of one file's plaintext, collected as its groups pass through the ring."""

    def __init__(self, entry: FileEntry) -> None:
        self.entry = entry
        self.data = bytearray()
        self.needed = 8  # until the length prefix is known

    def feed(self, start: int, chunk: torch.Tensor) -> None:
        if len(self.data) >= self.needed or start != len(self.data):
            return
        take = min(chunk.numel(), self.needed - len(self.data))
        self.data += byte_view(chunk[:take])
        if self.needed == 8 and len(self.data) >= 8:
            try:
                self.needed = 8 + header_length(self.data[:8], self.entry.size)
            except InputError as exc:
                raise InputError(f"{self.entry.path}: {exc}") from None
            if take < chunk.numel():
                self.feed(start + take, chunk[take:])

    def parse(self) -> SafetensorsHeader:
        try:
            if len(self.data) < self.needed:
                raise InputError("not a safetensors file: truncated header")
            return parse_header_bytes(memoryview(self.data)[8 : self.needed], self.entry.size)
        except InputError as exc:
            raise InputError(f"{self.entry.path}: {exc}") from None
        finally:
            self.data[:] = bytes(len(self.data))


def layout(entries: Sequence[FileEntry]) -> tuple[list[int], int]:
    """Each file's offset in the destination (aligned to :data:`ALIGN`) and the total size."""
    offsets: list[int] = []
    position = 0
    for entry in entries:
        offsets.append(position)
        position += -(-entry.size // ALIGN) * ALIGN
    return offsets, position


def new_copier(device: str, size: int, host_buffer: Callable[[int], torch.Tensor]) -> Copier:
    """The copier for ``device``; only a CUDA device touches ``torch.cuda``."""
    if device.startswith("cuda"):
        return CudaCopier(size, device)
    return HostCopier(size, host_buffer)


def decrypt_through_ring(
    opened: OpenedModel,
    data_key: bytes | bytearray,
    copier: Copier,
    *,
    ring: RingConfig | None = None,
    threads: int | None = None,
    stats: RingStats | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Decrypt every weight file through the ring into ``copier.destination``.

    Returns the tensors and, for each, the weight file it came from.

    On return every copy has finished and every slot is zeroed and released; the
    tensors view ``copier.destination``. On failure the destination and the slots are
    zeroed before the exception (naming file and segment) propagates.
    """
    ring = ring or RingConfig()
    stats = stats if stats is not None else RingStats()
    entries = list(opened.manifest.sealed_files)
    offsets, _ = layout(entries)
    slots: list[torch.Tensor] = []
    used: list[int] = []  # bytes of each slot holding plaintext now
    headers: list[SafetensorsHeader] = []
    workers = max(1, threads or _default_threads())
    pool = ThreadPoolExecutor(max(1, workers - 1), thread_name_prefix="ring-aead")
    # One segment's plaintext must fit a slot (a manifest may name segments up to 2 GiB).
    slot_bytes = max(ring.slot_bytes, opened.manifest.segment_size - TAG_SIZE)
    try:
        for entry, base in zip(entries, offsets, strict=True):
            with sealed_stream(opened, entry, data_key) as stream:
                collected = _HeaderBytes(entry)
                for first, end in stream.groups(slot_bytes):
                    index = stats.groups % ring.slots
                    if index == len(slots):  # allocated as first needed: a small model
                        slots.append(copier.new_slot(slot_bytes))  # uses fewer
                        used.append(0)
                        stats.slots_allocated += 1
                        stats.slot_bytes = slot_bytes
                    copier.wait(index)
                    if used[index]:
                        slots[index][: used[index]].zero_()  # zeroed before reuse
                    p0, p1 = stream.plaintext_range(first, end)
                    chunk = slots[index][: p1 - p0]
                    started = time.perf_counter()
                    used[index] = p1 - p0  # decrypt zeroes it itself on failure; count it
                    stream.decrypt(first, end, byte_view(chunk), threads=workers,
                                   pool=pool)
                    stats.decrypt_seconds += time.perf_counter() - started
                    collected.feed(p0, chunk)
                    copier.copy(index, chunk, base + p0)
                    stats.copies.append((index, base + p0, p1 - p0))
                    stats.groups += 1
                headers.append(collected.parse())
            pad = -entry.size % ALIGN  # alignment gap: zeros, not what the allocator held
            if pad:
                copier.destination[base + entry.size : base + entry.size + pad].zero_()
        copier.finish()
        tensors: dict[str, torch.Tensor] = {}
        origins: dict[str, str] = {}
        for entry, base, header in zip(entries, offsets, headers, strict=True):
            view = copier.destination[base : base + entry.size]
            for name, tensor in tensors_from_buffer(view, header).items():
                if name in tensors:
                    raise InputError(f"tensor {name!r} appears in more than one weight file")
                tensors[name] = tensor
                origins[name] = entry.path
    except BaseException:
        copier.scrub()
        raise
    finally:
        pool.shutdown(wait=True)
        for index, slot in enumerate(slots):
            if used[index]:
                slot[: used[index]].zero_()  # after the last copy (waited for above)
        slots.clear()
    return tensors, origins


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
