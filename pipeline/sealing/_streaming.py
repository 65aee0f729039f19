"""Tink StreamingAead AES256_GCM_HKDF_{1MB,4KB}, written and read with ``cryptography``.

Why not Tink itself: its Python streams decrypt at about 0.5 GB/s on one core and copy
every segment through Python file objects. Loading a model is the hot path, so here the
segments are decrypted on all cores, straight into one caller-owned buffer, with
``AESGCM.decrypt_into`` (which releases the GIL). The bytes on disk are exactly Tink's,
so any Tink (Java, Go, C++, Python) opens what we seal and we open what Tink seals;
tests/unit/sealing/test_streaming_aead.py proves both directions against the ``tink`` package.

Format (docs/sealed-weights.md, "Wire format"): header ``0x28 || salt(32) ||
nonce_prefix(7)``; segment key ``HKDF-SHA256(ikm=key, salt, info=associated_data)``;
segment ``i`` is ``AES-256-GCM(nonce_prefix || be32(i) || last_flag)`` with no per-segment
AAD. The last-segment flag and the segment number inside the nonce are what make a
truncated, extended, reordered or spliced stream fail authentication.

Failure is always :class:`~pipeline.errors.IntegrityError` and never leaves verified-looking
plaintext behind: on any failure the output buffer is zeroed.
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import os
import struct
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pipeline.errors import InputError, IntegrityError, KeyProviderError
from pipeline.sealing._segments import (
    HEADER_SIZE,
    KEY_SIZE,
    MAX_SEGMENT_SIZE,
    MAX_SEGMENTS,
    MIN_SEGMENT_SIZE,
    NONCE_PREFIX_SIZE,
    SALT_SIZE,
    SEGMENT_SIZE_1MB,
    SEGMENT_SIZE_4KB,
    TAG_SIZE,
    Header,
    Layout,
    check_segment_size,
    ciphertext_size,
    max_segment_plaintext,
    parse_header,
    plaintext_size,
    segment_groups,
)

__all__ = [
    "HEADER_SIZE",
    "KEY_SIZE",
    "MAX_SEGMENT_SIZE",
    "MAX_SEGMENTS",
    "MIN_SEGMENT_SIZE",
    "NONCE_PREFIX_SIZE",
    "SALT_SIZE",
    "SEGMENT_SIZE_1MB",
    "SEGMENT_SIZE_4KB",
    "TAG_SIZE",
    "EncryptResult",
    "SegmentReader",
    "Header",
    "ciphertext_size",
    "decrypt_bytes",
    "decrypt_into",
    "encrypt_bytes",
    "encrypt_file",
    "parse_header",
    "plaintext_size",
]

#: nonce = prefix (7) || uint32_be(segment) || last-segment flag (1)
_NONCE = struct.Struct(">7sI?")
#: Work is handed out in chunks of about this many bytes: big enough that the per-chunk
#: Python cost vanishes, small enough that two threads finish at nearly the same time.
_CHUNK_BYTES = 4 << 20
#: Decryption copies the ciphertext into a thread-private buffer this many bytes at a time
#: (see ``_decrypt_worker``): small enough to stay in cache for the AEAD that reads it.
_COPY_BYTES = 1 << 20
#: Encryption reads, hashes, encrypts and writes in batches of about this many bytes
#: (small enough that a batch is still in cache for the next stage: 2 MiB measured best).
_BATCH_BYTES = 2 << 20
#: Batches in flight while sealing (read / encrypt / hash+write overlap).
_RING = 3


@dataclass(frozen=True)
class EncryptResult:
    """Sizes and hex SHA-256 digests of one sealed file, as recorded in seal.json."""

    plaintext_size: int
    ciphertext_size: int
    plaintext_sha256: str
    ciphertext_sha256: str


def default_threads() -> int:
    """CPUs this process may run on (the affinity mask, which containers narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _check_key(key: bytes | bytearray) -> None:
    if not isinstance(key, bytes | bytearray | memoryview) or len(key) != KEY_SIZE:
        raise KeyProviderError(f"data key must be {KEY_SIZE} bytes")


def _segment_aead(key: bytes | bytearray, salt: bytes, associated_data: bytes) -> AESGCM:
    """Derive the per-stream AES-256 key once; one AESGCM object serves every segment."""
    _check_key(key)
    if not isinstance(associated_data, bytes | bytearray):
        raise InputError("associated data must be bytes")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=salt, info=associated_data)
    return AESGCM(hkdf.derive(key))  # no bytes() copy of the data key


def _threads(threads: int | None) -> int:
    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InputError(f"threads must be a positive integer, not {threads!r}")
    return threads


def _byte_view(data: bytes | bytearray | memoryview, *, writable: bool) -> memoryview:
    """A flat unsigned-byte view (numpy/torch buffers come as 'B' already; others are cast)."""
    try:
        view = memoryview(data)
    except TypeError:
        raise InputError(f"expected a bytes-like buffer, not {type(data).__name__}") from None
    if writable and view.readonly:
        view.release()
        raise InputError("output buffer is read-only")
    if view.format != "B" or view.ndim != 1:
        if not view.c_contiguous:
            view.release()
            raise InputError("buffer must be C-contiguous")
        cast = view.cast("B")
        view.release()
        view = cast
    return view


def _zero(view: memoryview) -> None:
    """Overwrite a writable buffer with zeros in place (one memset, no temporary copy)."""
    if view.nbytes:
        anchor = ctypes.c_char.from_buffer(view)
        ctypes.memset(ctypes.addressof(anchor), 0, view.nbytes)
        del anchor


def _for_chunks(
    count: int,
    chunk: int,
    threads: int,
    work: Callable[[int, int], bool],
    pool: ThreadPoolExecutor | None = None,
) -> None:
    """Run ``work(start, end)`` over ``range(count)`` in chunks on up to ``threads`` threads.

    Chunks are claimed from a shared counter (``next`` on ``itertools.count`` is atomic
    under the GIL), so a thread that got descheduled does not hold up the others. ``work``
    returns False to stop everyone early (a segment failed). The calling thread works too.
    """
    chunks = -(-count // chunk)
    workers = max(1, min(threads, chunks))
    counter = itertools.count()
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            start = next(counter) * chunk
            if start >= count:
                return
            if not work(start, min(start + chunk, count)):
                stop.set()
                return

    if workers == 1:
        loop()
        return
    own = pool is None
    executor = pool or ThreadPoolExecutor(workers - 1, thread_name_prefix="seal-aead")
    try:
        futures = [executor.submit(loop) for _ in range(workers - 1)]
        try:
            loop()
        except BaseException:
            stop.set()
            raise
        finally:
            errors = [f.exception() for f in futures]
        for error in errors:
            if error is not None:
                raise error
    finally:
        if own:
            executor.shutdown(wait=True)


# --------------------------------------------------------------------------- decryption


def decrypt_into(
    key: bytes | bytearray,
    ciphertext: bytes | memoryview,
    out: memoryview,
    associated_data: bytes,
    *,
    segment_size: int = SEGMENT_SIZE_1MB,
    threads: int | None = None,
    prefault: Callable[[int, int], None] | None = None,
    prefetch: Callable[[int, int], None] | None = None,
) -> None:
    """Authenticate and decrypt a whole stream into ``out`` (exactly the plaintext size).

    Segments are independent, so they are decrypted in parallel, each straight into its
    slice of ``out`` (``out`` can be a torch/numpy buffer that safetensors then parses;
    the AEAD reads a thread-private copy of the ciphertext, see ``_decrypt_worker``).
    ``prefault(start, end)``, when given, is called by the thread that is about to
    write plaintext bytes ``[start, end)``, before it writes them: a fresh ``out``
    is then faulted in on every decrypting thread, chunk by chunk (the loader passes
    ``MADV_POPULATE_WRITE``). It must not change what ``out`` holds. ``prefetch`` is the
    same for the ciphertext bytes ``[start, end)`` a thread is about to read.
    Any failure raises IntegrityError naming the first bad segment, after ``out`` has
    been zeroed: GCM writes plaintext before it checks the tag, and unauthenticated
    plaintext must not survive.
    """
    check_segment_size(segment_size)
    workers = _threads(threads)
    ct = _byte_view(ciphertext, writable=False)
    dst = _byte_view(out, writable=True)
    try:
        layout = Layout.for_ciphertext(len(ct), segment_size)
        if dst.nbytes != layout.plaintext_size:
            raise InputError(
                f"output buffer is {dst.nbytes} bytes, the stream holds "
                f"{layout.plaintext_size} bytes of plaintext"
            )
        header = parse_header(ct[:HEADER_SIZE])
        aead = _segment_aead(key, header.salt, associated_data)
        failed: list[int] = []
        work = _decrypt_worker(
            aead, header.nonce_prefix, layout, ct, dst, failed, prefault, prefetch
        )
        _for_chunks(layout.count, max(1, _CHUNK_BYTES // segment_size), workers, work)
        if failed:
            raise IntegrityError(
                f"sealed stream segment {min(failed)} of {layout.count} failed authentication "
                "(tampered, truncated, reordered, or wrong key / associated data)"
            )
    except BaseException:
        _zero(dst)
        raise
    finally:
        ct.release()
        dst.release()


def _decrypt_worker(
    aead: AESGCM,
    prefix: bytes,
    layout: Layout,
    ct: memoryview,
    dst: memoryview,
    failed: list[int],
    prefault: Callable[[int, int], None] | None = None,
    prefetch: Callable[[int, int], None] | None = None,
    dst_base: int = 0,
) -> Callable[[int, int], bool]:
    """The per-segment loop, kept lean: with 4 KiB segments Python overhead is the cost.

    ``dst`` holds the plaintext from byte ``dst_base`` of the stream on (0: the whole
    stream; a segment group's start when decrypting into a ring buffer); ``prefault``
    gets offsets into ``dst``.

    Full middle segments are walked with running offsets; only segment 0 (header) and
    the last segment (short, flagged) take the general path. Slices are temporaries
    that die with the call, so nothing keeps the caller's buffers exported.

    Each chunk's ciphertext is first copied into a buffer private to the thread, and
    the AEAD reads only that copy. ``ct`` is usually a shared memory map of the sealed
    file, and AES-GCM may read its input twice (OpenSSL's generic path GHASHes a run of
    ciphertext, then decrypts the same bytes again): a writer racing on the file could
    otherwise change bytes between the tag check and the decryption and get
    plaintext out that was never authenticated. One memcpy per window closes that.
    """
    last = layout.count - 1
    segment = layout.segment_size
    per = segment - TAG_SIZE
    decrypt = aead.decrypt_into
    nonce_of = _NONCE.pack
    local = threading.local()
    window = max(1, _COPY_BYTES // segment)

    def private(c0: int, c1: int) -> memoryview:
        """A copy of ``ct[c0:c1]`` that only this thread can see (reused per thread)."""
        size = c1 - c0
        buffer = getattr(local, "buffer", None)
        if buffer is None or buffer.nbytes < size:
            buffer = local.buffer = memoryview(bytearray(size))
        copy = buffer[:size]
        copy[:] = ct[c0:c1]
        return copy

    def one(i: int, src: memoryview, base: int) -> bool:
        c0, c1 = layout.ciphertext_bounds(i)
        p0, p1 = layout.plaintext_bounds(i)
        p0, p1 = p0 - dst_base, p1 - dst_base
        try:
            decrypt(nonce_of(prefix, i, i == last), src[c0 - base : c1 - base], None, dst[p0:p1])
        except InvalidTag:
            failed.append(i)
            return False
        return True

    def work(start: int, end: int) -> bool:
        # Fault in this chunk's pages on this thread, one call each (see ``decrypt_into``).
        if prefetch is not None:
            prefetch(layout.ciphertext_bounds(start)[0], layout.ciphertext_bounds(end - 1)[1])
        if prefault is not None:
            prefault(layout.plaintext_bounds(start)[0] - dst_base,
                     layout.plaintext_bounds(end - 1)[1] - dst_base)
        # Copy about 1 MiB at a time: the copy is still in cache when the AEAD reads it.
        for first in range(start, end, window):
            if not window_work(first, min(first + window, end)):
                return False
        return True

    def window_work(start: int, end: int) -> bool:
        base = layout.ciphertext_bounds(start)[0]
        src = private(base, layout.ciphertext_bounds(end - 1)[1])
        if start == 0:
            if not one(0, src, base):
                return False
            start = 1
        stop = min(end, last)
        c0 = start * segment - base
        p0 = layout.first_plaintext + (start - 1) * per - dst_base
        for i in range(start, stop):
            try:
                decrypt(
                    nonce_of(prefix, i, False), src[c0 : c0 + segment], None, dst[p0 : p0 + per]
                )
            except InvalidTag:
                failed.append(i)
                return False
            c0 += segment
            p0 += per
        if end > last >= start:
            return one(last, src, base)
        return True

    return work


class SegmentReader:
    """One stream, decrypted a group of segments at a time into buffers the caller reuses.

    What the runtime's pipelined loader needs: the header is parsed and the segment key
    derived once, then :meth:`decrypt` fills a ring buffer with the plaintext of segments
    ``[first, end)`` while the previous buffer is still being copied elsewhere. Same
    checks as :func:`decrypt_into` (every segment authenticated with its position and
    the last-segment flag), and the same rule on failure: the buffer is zeroed before
    the IntegrityError (naming the segment) leaves.
    """

    def __init__(
        self,
        key: bytes | bytearray,
        ciphertext: bytes | memoryview,
        associated_data: bytes,
        *,
        segment_size: int = SEGMENT_SIZE_1MB,
    ) -> None:
        check_segment_size(segment_size)
        self._ct = _byte_view(ciphertext, writable=False)
        try:
            self.layout = Layout.for_ciphertext(len(self._ct), segment_size)
            header = parse_header(self._ct[:HEADER_SIZE])
            self._prefix = header.nonce_prefix
            self._aead = _segment_aead(key, header.salt, associated_data)
        except BaseException:
            self._ct.release()
            raise

    def groups(self, capacity: int) -> list[tuple[int, int]]:
        """Consecutive ``(first, end)`` segment ranges whose plaintext fits ``capacity`` bytes
        (``_segments.segment_groups``: greedy, whole segments; ValueError below one)."""
        return segment_groups(self.layout, capacity)

    @property
    def max_segment_plaintext(self) -> int:
        """The most plaintext one segment of this stream holds."""
        return max_segment_plaintext(self.layout)

    def plaintext_range(self, first: int, end: int) -> tuple[int, int]:
        """``[start, stop)`` plaintext bytes of segments ``[first, end)``."""
        return self.layout.plaintext_bounds(first)[0], self.layout.plaintext_bounds(end - 1)[1]

    def decrypt(
        self,
        first: int,
        end: int,
        out: memoryview,
        *,
        threads: int | None = None,
        prefetch: Callable[[int, int], None] | None = None,
        pool: ThreadPoolExecutor | None = None,
    ) -> None:
        """Authenticate and decrypt segments ``[first, end)`` into ``out`` (exactly their bytes).

        ``pool`` (optional) lends the worker threads, so a load of many groups does not
        start threads per group; the calling thread works too.
        """
        layout = self.layout
        if not 0 <= first < end <= layout.count:
            raise ValueError(f"segments [{first}, {end}) outside the stream's {layout.count}")
        workers = _threads(threads)
        dst = _byte_view(out, writable=True)
        try:
            p0, p1 = self.plaintext_range(first, end)
            if dst.nbytes != p1 - p0:
                raise InputError(f"output buffer is {dst.nbytes} bytes, segments "
                                 f"[{first}, {end}) hold {p1 - p0}")
            failed: list[int] = []
            work = _decrypt_worker(self._aead, self._prefix, layout, self._ct, dst, failed,
                                   None, prefetch, dst_base=p0)
            chunk = max(1, _CHUNK_BYTES // layout.segment_size)
            _for_chunks(end - first, chunk, workers, lambda s, e: work(first + s, first + e),
                        pool)
            if failed:
                raise IntegrityError(
                    f"sealed stream segment {min(failed)} of {layout.count} failed "
                    "authentication (tampered, truncated, reordered, or wrong key / "
                    "associated data)"
                )
        except BaseException:
            _zero(dst)
            raise
        finally:
            dst.release()

    def close(self) -> None:
        """Release the ciphertext view (the caller's mapping can then be closed)."""
        self._ct.release()


def decrypt_bytes(
    key: bytes | bytearray,
    ciphertext: bytes | memoryview,
    associated_data: bytes,
    *,
    segment_size: int = SEGMENT_SIZE_1MB,
) -> bytearray:
    """Decrypt a whole stream held in memory (tests, small files); IntegrityError if bad."""
    check_segment_size(segment_size)
    with _byte_view(ciphertext, writable=False) as ct:
        size = plaintext_size(len(ct), segment_size)
        out = bytearray(size)
        with memoryview(out) as view:
            decrypt_into(key, ct, view, associated_data, segment_size=segment_size, threads=1)
    return out


# --------------------------------------------------------------------------- encryption


def _new_header() -> tuple[bytes, Header]:
    salt = os.urandom(SALT_SIZE)
    prefix = os.urandom(NONCE_PREFIX_SIZE)
    return bytes([HEADER_SIZE]) + salt + prefix, Header(salt=salt, nonce_prefix=prefix)


def _encrypt_segments(
    aead: AESGCM,
    prefix: bytes,
    layout: Layout,
    pt: memoryview,
    pt_base: int,
    ct: memoryview,
    ct_base: int,
    start: int,
    end: int,
) -> None:
    """Encrypt segments [start, end); ``pt``/``ct`` hold the stream from ``pt_base``/``ct_base``."""
    last = layout.count - 1
    encrypt = aead.encrypt_into
    nonce_of = _NONCE.pack
    for i in range(start, end):
        p0, p1 = layout.plaintext_bounds(i)
        c0, c1 = layout.ciphertext_bounds(i)
        nonce = nonce_of(prefix, i, i == last)
        encrypt(nonce, pt[p0 - pt_base : p1 - pt_base], None, ct[c0 - ct_base : c1 - ct_base])


def encrypt_bytes(
    key: bytes | bytearray,
    plaintext: bytes | memoryview,
    associated_data: bytes,
    *,
    segment_size: int = SEGMENT_SIZE_1MB,
) -> bytes:
    """Encrypt ``plaintext`` held in memory into one Tink stream (tests, small data)."""
    check_segment_size(segment_size)
    with _byte_view(plaintext, writable=False) as pt:
        layout = Layout.for_plaintext(len(pt), segment_size)
        raw_header, header = _new_header()
        aead = _segment_aead(key, header.salt, associated_data)
        out = bytearray(layout.ciphertext_size)
        out[:HEADER_SIZE] = raw_header
        with memoryview(out) as ct:
            _encrypt_segments(aead, header.nonce_prefix, layout, pt, 0, ct, 0, 0, layout.count)
    return bytes(out)


def _write_all(dst: BinaryIO, view: memoryview) -> None:
    """``write`` until done: raw files may write less than asked."""
    done = 0
    while done < len(view):
        with view[done:] as rest:
            written = dst.write(rest)
        if written is None:
            raise InputError("output stream is non-blocking and did not accept data")
        done += written


class _Readable(Protocol):
    """A binary file that can read into a caller's buffer (no copy)."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...


def _read_exact(src: _Readable, view: memoryview, name: str) -> None:
    done = 0
    while done < len(view):
        with view[done:] as rest:
            got = src.readinto(rest)
        if not got:
            raise InputError(f"{name}: file shrank while it was being sealed")
        done += got


def encrypt_file(
    key: bytes | bytearray,
    src: str | os.PathLike[str],
    dst: BinaryIO,
    associated_data: bytes,
    *,
    segment_size: int = SEGMENT_SIZE_1MB,
    threads: int | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> EncryptResult:
    """Encrypt the file ``src`` into the open binary file ``dst``; hash both sides on the fly.

    ``on_bytes`` (for progress bars) is called with the plaintext bytes of each batch
    as it is read.

    The work is pipelined over batches of segments so that all of it overlaps: reading a
    batch, SHA-256 of the plaintext (its own thread, in order), encryption (all cores,
    ``encrypt_into`` into a reused buffer) and SHA-256 + write of the ciphertext (one
    thread, in order). Each piece releases the GIL. ``dst`` is written sequentially;
    the caller owns its temp-name-then-rename.
    """
    check_segment_size(segment_size)
    workers = _threads(threads)
    _check_key(key)
    name = os.fspath(src)
    try:
        handle = open(name, "rb", buffering=0)  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise InputError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{name}: is a directory, not a file") from None
    except PermissionError:
        raise InputError(f"{name}: permission denied") from None
    with handle:
        size = os.fstat(handle.fileno()).st_size
        layout = Layout.for_plaintext(size, segment_size)
        raw_header, header = _new_header()
        aead = _segment_aead(key, header.salt, associated_data)
        pt_hash = hashlib.sha256()
        ct_hash = hashlib.sha256()
        ct_hash.update(raw_header)
        _write_all(dst, memoryview(raw_header))

        per_batch = max(1, _BATCH_BYTES // segment_size)
        capacity = min(per_batch * segment_size, layout.ciphertext_size)  # small files
        pt_buffers = [bytearray(capacity) for _ in range(_RING)]
        ct_buffers = [bytearray(capacity) for _ in range(_RING)]
        pending: list[list[Future[None]]] = [[] for _ in range(_RING)]

        def sink(view: memoryview) -> None:
            with view:
                ct_hash.update(view)
                _write_all(dst, view)

        def hash_plain(view: memoryview) -> None:
            with view:
                pt_hash.update(view)

        enc_pool = ThreadPoolExecutor(max(1, workers - 1), thread_name_prefix="seal-enc")
        hash_pool = ThreadPoolExecutor(1, thread_name_prefix="seal-sha-pt")
        sink_pool = ThreadPoolExecutor(1, thread_name_prefix="seal-sha-ct")
        try:
            for batch, first in enumerate(range(0, layout.count, per_batch)):
                end = min(first + per_batch, layout.count)
                slot = batch % _RING
                for future in pending[slot]:
                    future.result()
                p0, p1 = layout.plaintext_bounds(first)[0], layout.plaintext_bounds(end - 1)[1]
                c0, c1 = layout.ciphertext_bounds(first)[0], layout.ciphertext_bounds(end - 1)[1]
                pt = memoryview(pt_buffers[slot])[: p1 - p0]
                ct = memoryview(ct_buffers[slot])[: c1 - c0]
                _read_exact(handle, pt, name)
                if on_bytes is not None:
                    on_bytes(p1 - p0)
                hashed = hash_pool.submit(hash_plain, pt[:])

                def work(
                    s: int, e: int, pt: memoryview = pt, ct: memoryview = ct, p0: int = p0,
                    c0: int = c0,
                ) -> bool:
                    _encrypt_segments(aead, header.nonce_prefix, layout, pt, p0, ct, c0, s, e)
                    return True

                chunk = max(1, -(-(end - first) // workers))
                _for_chunks_offset(first, end, chunk, workers, work, enc_pool)
                written = sink_pool.submit(sink, ct[:])
                pending[slot] = [hashed, written]
                pt.release()
                ct.release()
            for futures in pending:
                for future in futures:
                    future.result()
            if handle.read(1):
                raise InputError(f"{name}: file grew while it was being sealed")
        finally:
            for pool in (enc_pool, hash_pool, sink_pool):
                pool.shutdown(wait=True)
            for buffer in pt_buffers:
                with memoryview(buffer) as view:
                    _zero(view)
    return EncryptResult(
        plaintext_size=layout.plaintext_size,
        ciphertext_size=layout.ciphertext_size,
        plaintext_sha256=pt_hash.hexdigest(),
        ciphertext_sha256=ct_hash.hexdigest(),
    )


def _for_chunks_offset(
    first: int,
    end: int,
    chunk: int,
    threads: int,
    work: Callable[[int, int], bool],
    pool: ThreadPoolExecutor,
) -> None:
    """:func:`_for_chunks` over ``range(first, end)`` instead of ``range(count)``."""
    _for_chunks(end - first, chunk, threads, lambda s, e: work(first + s, first + e), pool)
