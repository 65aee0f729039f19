"""Open a sealed model: verify, then unwrap, then decrypt into memory.

The order is the security argument, so it is fixed here and every caller (the
runtime's loader, ``pipeline unseal``) goes through it:

1. ``seal.json`` is read and parsed strictly.
2. The model signature is verified against the caller's trusted signers, and the
   signed manifest must name ``seal.json`` with exactly its digest and every file
   with exactly the digest ``seal.json`` records. Only now is anything in
   ``seal.json`` (the wrapped key, the key id) believed.
3. Plain files are read into memory and checked against their digests.
4. The key provider unwraps the data key.
5. Each sealed file is decrypted (segments in parallel) into a caller-provided
   buffer: the AEAD authenticates every segment, its position, the end of the
   stream, and (through the associated data) the file's name.

The fast path does not re-hash the ciphertext: the signed ``seal.json`` commits to
the wrapped data key, and AEAD under that key authenticates every byte, so a
second SHA-256 pass (~0.6 s/GiB) would add no guarantee. ``full_verify=True``
(``pipeline unseal --verify-only``, ``pipeline verify-model``) hashes everything.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import mmap
import os
import stat
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline import _pages
from pipeline.config import Settings, load_settings
from pipeline.errors import IntegrityError, VerificationError
from pipeline.sealing import _streaming
from pipeline.sealing.manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    FileEntry,
    SealManifest,
    associated_data,
    parse_manifest,
)
from pipeline.signing.model import SIGNATURE_NAME

if TYPE_CHECKING:
    from pipeline.signing.model import Trust

#: Bytes of AEAD tag per segment: a segment's plaintext is its size less this.
TAG_SIZE = _streaming.TAG_SIZE


@dataclass
class OpenedModel:
    """A sealed model whose metadata and plain files have been verified."""

    path: Path
    manifest: SealManifest
    manifest_sha256: str
    files: dict[str, bytes]
    signature_verified: bool
    timings: dict[str, float] = field(default_factory=dict)


def resolve_trust(trust: Trust | None, settings: Settings) -> Trust | None:
    """The caller's trust, else ``trust.public_keys`` from pipeline.yaml or ``$PIPELINE_TRUST``.

    An explicit empty ``Trust()`` is kept as it is: it trusts nobody, so verification
    fails; it never widens to whatever the environment happens to configure.
    """
    from pipeline.signing.model import Trust

    if trust is not None:
        return trust
    configured = settings.keys().trust
    return Trust(public_keys=configured) if configured else None


def _read_manifest(path: Path) -> tuple[bytes, SealManifest]:
    manifest_path = path / MANIFEST_NAME
    if not path.is_dir():
        raise VerificationError(f"{path}: not a sealed model directory")
    if not manifest_path.exists() and not manifest_path.is_symlink():
        raise VerificationError(f"{path}: no {MANIFEST_NAME} (not a sealed model)")
    with os.fdopen(_open_regular(path, MANIFEST_NAME), "rb") as handle:
        data = handle.read(MAX_MANIFEST_BYTES + 1)  # parse_manifest refuses anything longer
    return data, parse_manifest(data)


def _stored_files(path: Path) -> set[str]:
    found: set[str] = set()
    for root, dirs, files in os.walk(path):
        # os.walk lists a symlink to a directory among ``dirs`` and does not enter it:
        # report it as an entry of its own, so it is refused as a file not in seal.json.
        found.update(
            (Path(root) / d).relative_to(path).as_posix()
            for d in dirs
            if os.path.islink(os.path.join(root, d))
        )
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            found.add((Path(root) / name).relative_to(path).as_posix())
    return found


def _check_signed_digests(
    signed: dict[str, str], manifest_bytes: bytes, manifest: SealManifest
) -> None:
    """The signed manifest and seal.json must describe exactly the same files."""
    if signed.get(MANIFEST_NAME) != hashlib.sha256(manifest_bytes).hexdigest():
        raise IntegrityError(f"{MANIFEST_NAME} does not match the signed manifest (tampered?)")
    expected = {f.stored_path: f.stored_sha256 for f in manifest.files}
    expected[MANIFEST_NAME] = signed[MANIFEST_NAME]
    for name in sorted(set(signed) | set(expected)):
        if name not in signed:
            raise IntegrityError(f"{name}: listed in {MANIFEST_NAME} but not signed")
        if name not in expected:
            raise IntegrityError(f"{name}: signed but not listed in {MANIFEST_NAME}")
        if signed[name] != expected[name]:
            raise IntegrityError(f"{name}: digest differs between signature and {MANIFEST_NAME}")


def open_sealed(
    path: str | os.PathLike[str],
    *,
    trust: Trust | None = None,
    allow_unsigned: bool = False,
    full_verify: bool = False,
    settings: Settings | None = None,
) -> OpenedModel:
    """Steps 1-3: parse, verify the signature, read and check plain files.

    Raises :class:`VerificationError` when no trusted signer is configured, unless
    ``allow_unsigned`` is set (an explicit opt-out, for development only).
    """
    started = time.perf_counter()
    root = Path(path)
    settings = settings or load_settings()
    manifest_bytes, manifest = _read_manifest(root)
    if manifest.signature != SIGNATURE_NAME:
        raise VerificationError(
            f"{MANIFEST_NAME}: unexpected signature file {manifest.signature!r}"
        )
    effective = resolve_trust(trust, settings)
    verified = False
    if effective is not None:
        from pipeline.signing.model import verify_model, verify_model_signature

        check = verify_model if full_verify else verify_model_signature
        signed = check(root, effective, signature_name=SIGNATURE_NAME)
        _check_signed_digests(signed, manifest_bytes, manifest)
        verified = True
    elif not allow_unsigned:
        raise VerificationError(
            f"{root}: no trusted signer given (pass --trust PUBLIC_PEM or configure trust); "
            "refusing to load an unverified model"
        )
    expected = {f.stored_path for f in manifest.files} | {MANIFEST_NAME}
    if verified or (root / SIGNATURE_NAME).exists():
        expected.add(SIGNATURE_NAME)
    extra = _stored_files(root) - expected
    if extra:
        raise IntegrityError(f"{root}: files not in {MANIFEST_NAME}: {', '.join(sorted(extra))}")
    files = {entry.path: _read_plain(root, entry) for entry in manifest.plain_files}
    for entry in manifest.sealed_files:
        _check_sealed_size(root, entry, manifest.segment_size)
    return OpenedModel(
        path=root,
        manifest=manifest,
        manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
        files=files,
        signature_verified=verified,
        timings={"verify": time.perf_counter() - started},
    )


def _open_regular(root: Path, name: str) -> int:
    """Open a file of the sealed model: a regular file, never through a final symlink.

    Symlinks, FIFOs and devices are refused as the signer refuses them (a FIFO would
    block the loader, ``/dev/zero`` would exhaust its memory).
    """
    try:
        fd = os.open(root / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise IntegrityError(f"{name}: missing from the sealed model") from None
    except OSError as exc:  # ELOOP: a symlink
        raise IntegrityError(
            f"{name}: not a regular file in the sealed model ({exc.strerror or exc})"
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IntegrityError(f"{name}: not a regular file in the sealed model")
    return fd


def _read_plain(root: Path, entry: FileEntry) -> bytes:
    fd = _open_regular(root, entry.path)
    with os.fdopen(fd, "rb") as handle:
        if os.fstat(fd).st_size != entry.size:
            raise IntegrityError(f"{entry.path}: content does not match {MANIFEST_NAME}")
        data = handle.read(entry.size + 1)  # bounded: the file may grow meanwhile
    if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
        raise IntegrityError(f"{entry.path}: content does not match {MANIFEST_NAME}")
    return data


def _check_sealed_size(root: Path, entry: FileEntry, segment_size: int) -> None:
    try:
        size = (root / entry.stored_path).stat().st_size
    except FileNotFoundError:
        raise IntegrityError(f"{entry.stored_path}: missing from the sealed model") from None
    if size != entry.sealed_size:
        raise IntegrityError(
            f"{entry.stored_path}: {size} bytes, {MANIFEST_NAME} says {entry.sealed_size} "
            "(truncated or extended)"
        )
    if _streaming.plaintext_size(size, segment_size) != entry.size:
        raise IntegrityError(f"{entry.stored_path}: sizes in {MANIFEST_NAME} are inconsistent")


def unwrap_data_key(model: OpenedModel, settings: Settings | None = None) -> bytearray:
    """Step 4: the key provider named in the (verified) manifest unwraps the data key."""
    from pipeline.sealing.keys import get_provider

    started = time.perf_counter()
    key = model.manifest.key
    provider = get_provider(key.provider, settings or load_settings())
    data_key = provider.unwrap(key.key_id, key.wrapped_key)
    if len(data_key) != _streaming.KEY_SIZE:
        data_key[:] = bytes(len(data_key))
        raise IntegrityError("unwrapped data key has the wrong length")
    model.timings["unwrap"] = time.perf_counter() - started
    return data_key


@contextlib.contextmanager
def mapped_ciphertext(path: Path) -> Iterator[memoryview]:
    """A read-only memory map of a ciphertext file: decryption reads the page cache directly.

    Not ``MAP_POPULATE``: that maps the whole file on the calling thread before any
    decryption starts (60-240 ms per GiB measured here, when the cache holds the file
    in small folios). Each decrypting thread maps the chunk it reads instead
    (``decrypt_file_into``'s ``prefetch``).
    """
    with os.fdopen(_open_regular(path.parent, path.name), "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            yield memoryview(b"")
            return
        mapped = mmap.mmap(handle.fileno(), 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        view = memoryview(mapped)
        try:
            yield view
        finally:
            view.release()
            mapped.close()


def decrypt_file_into(
    model: OpenedModel,
    entry: FileEntry,
    data_key: bytes | bytearray,
    out: memoryview,
    *,
    threads: int | None = None,
    prefault: Callable[[int, int], None] | None = None,
) -> None:
    """Step 5 for one file: decrypt ``entry`` into ``out`` (exactly ``entry.size`` bytes).

    ``prefault`` is handed to the decrypting threads (see ``_streaming.decrypt_into``).
    """
    if out.nbytes != entry.size:
        raise ValueError("output buffer size differs from the plaintext size")
    with mapped_ciphertext(model.path / entry.stored_path) as ciphertext:
        prefetch = None
        if ciphertext.nbytes:
            prefetch = _pages.populator(_pages.buffer_address(ciphertext), ciphertext.nbytes,
                                        _pages.MADV_POPULATE_READ)
        try:
            _streaming.decrypt_into(
                data_key,
                ciphertext,
                out,
                associated_data(entry.path),
                segment_size=model.manifest.segment_size,
                threads=threads,
                prefault=prefault,
                prefetch=prefetch,
            )
        except IntegrityError as exc:
            # The stream layer knows segments, not files: say which file is bad.
            raise IntegrityError(f"{entry.stored_path}: {exc}") from None


class SealedStream:
    """One sealed file open for decryption a segment group at a time (the pipelined loader).

    Errors name the file: ``model-00002-of-00004.safetensors.sealed: sealed stream
    segment 17 of 64 failed authentication ...``, after the output buffer was zeroed.
    """

    def __init__(self, entry: FileEntry, reader: _streaming.SegmentReader,
                 prefetch: Callable[[int, int], None] | None,
                 release: Callable[[int, int], None] | None = None) -> None:
        self.entry = entry
        self._reader = reader
        self._prefetch = prefetch
        self._release = release

    @property
    def segment_count(self) -> int:
        return self._reader.layout.count

    @property
    def max_segment_plaintext(self) -> int:
        return self._reader.max_segment_plaintext

    def groups(self, capacity: int) -> list[tuple[int, int]]:
        """Segment ranges whose plaintext fits ``capacity`` bytes (see ``SegmentReader``)."""
        return self._reader.groups(capacity)

    def plaintext_range(self, first: int, end: int) -> tuple[int, int]:
        return self._reader.plaintext_range(first, end)

    def decrypt(self, first: int, end: int, out: memoryview, *, threads: int | None = None,
                pool: ThreadPoolExecutor | None = None) -> None:
        """Decrypt segments ``[first, end)`` into ``out``; zeroed and IntegrityError if bad."""
        try:
            self._reader.decrypt(first, end, out, threads=threads, prefetch=self._prefetch,
                                 pool=pool)
        except IntegrityError as exc:
            raise IntegrityError(f"{self.entry.stored_path}: {exc}") from None
        if self._release is not None:
            # Read and authenticated: unmap it, so the process's resident set holds the
            # ring, not the whole ciphertext (the page cache keeps the file).
            layout = self._reader.layout
            self._release(layout.ciphertext_bounds(first)[0], layout.ciphertext_bounds(end - 1)[1])


@contextlib.contextmanager
def sealed_stream(
    model: OpenedModel, entry: FileEntry, data_key: bytes | bytearray
) -> Iterator[SealedStream]:
    """Map ``entry``'s ciphertext and yield it as a :class:`SealedStream`.

    The file must still be the size ``seal.json`` records (checked when the model was
    opened, checked again here: one that shrank since would otherwise be a stream of
    another valid size, or a fault past the end of the mapping).
    """
    expected = entry.sealed_size
    if expected is None:
        raise ValueError(f"{entry.path} is not a sealed file")
    with mapped_ciphertext(model.path / entry.stored_path) as ciphertext:
        if ciphertext.nbytes != expected:
            segment = model.manifest.segment_size
            at = min(ciphertext.nbytes, expected) // segment
            raise IntegrityError(
                f"{entry.stored_path}: {ciphertext.nbytes} bytes now, {MANIFEST_NAME} says "
                f"{expected}: truncated or extended after it was opened (from "
                f"segment {at} of {-(-expected // segment)})"
            )
        address = _pages.buffer_address(ciphertext)
        prefetch = _pages.populator(address, ciphertext.nbytes, _pages.MADV_POPULATE_READ)
        release = _pages.releaser(address, ciphertext.nbytes)
        try:
            reader = _streaming.SegmentReader(
                data_key, ciphertext, associated_data(entry.path),
                segment_size=model.manifest.segment_size,
            )
        except IntegrityError as exc:
            raise IntegrityError(f"{entry.stored_path}: {exc}") from None
        try:
            yield SealedStream(entry, reader, prefetch, release)
        finally:
            reader.close()


def zero(buffer: bytearray | memoryview) -> None:
    """Overwrite key material or plaintext in place (best effort: Python may hold copies)."""
    view = memoryview(buffer).cast("B")
    if view.nbytes:
        ctypes.memset(ctypes.addressof(ctypes.c_char.from_buffer(view)), 0, view.nbytes)
