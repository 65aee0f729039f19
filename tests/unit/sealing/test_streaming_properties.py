"""Property tests of the streaming format: round trips, corruption, the size bijection."""

from __future__ import annotations

import hashlib
import io
import mmap
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import InputError, IntegrityError
from pipeline.sealing import _streaming as sa

S4K = sa.SEGMENT_SIZE_4KB
KEY = bytes(range(32))
AD = b"props"
SEGMENT_SIZES = st.sampled_from([S4K, sa.SEGMENT_SIZE_1MB, sa.MIN_SEGMENT_SIZE, 100, 65536])

# Sizes that straddle segment boundaries are the interesting ones, so mix in offsets
# around multiples of the plaintext segment size.
_FIRST = S4K - sa.HEADER_SIZE - sa.TAG_SIZE
_PER = S4K - sa.TAG_SIZE
PLAINTEXT_SIZES = st.one_of(
    st.integers(0, 12 * S4K),
    st.builds(lambda k, d: max(0, _FIRST + k * _PER + d), st.integers(0, 8), st.integers(-2, 2)),
)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), n=PLAINTEXT_SIZES, threads=st.integers(1, 4))
def test_round_trip(data: st.DataObject, n: int, threads: int) -> None:
    plaintext = data.draw(st.binary(min_size=n, max_size=n)) if n < 64 else os.urandom(n)
    ad = data.draw(st.binary(max_size=40))
    ciphertext = sa.encrypt_bytes(KEY, plaintext, ad, segment_size=S4K)
    assert len(ciphertext) == sa.ciphertext_size(n, S4K)
    out = bytearray(n)
    sa.decrypt_into(KEY, ciphertext, memoryview(out), ad, segment_size=S4K, threads=threads)
    assert out == plaintext


_CORRUPTION_PLAINTEXT = os.urandom(3 * S4K + 77)
_CORRUPTION_STREAM = sa.encrypt_bytes(KEY, _CORRUPTION_PLAINTEXT, AD, segment_size=S4K)


@settings(max_examples=300, deadline=None)
@given(
    index=st.integers(0, len(_CORRUPTION_STREAM) - 1),
    mask=st.integers(1, 255),
)
def test_any_single_byte_corruption_is_detected(index: int, mask: int) -> None:
    corrupted = bytearray(_CORRUPTION_STREAM)
    corrupted[index] ^= mask
    out = bytearray(b"\xff" * len(_CORRUPTION_PLAINTEXT))
    with pytest.raises(IntegrityError):
        sa.decrypt_into(KEY, corrupted, memoryview(out), AD, segment_size=S4K, threads=2)
    assert not any(out)


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(1, len(_CORRUPTION_STREAM) - 1))
def test_any_truncation_is_detected(cut: int) -> None:
    with pytest.raises(IntegrityError):
        sa.decrypt_bytes(KEY, _CORRUPTION_STREAM[:cut], AD, segment_size=S4K)


@settings(max_examples=500)
@given(n=st.integers(0, 1 << 45), segment_size=SEGMENT_SIZES)
def test_size_bijection(n: int, segment_size: int) -> None:
    segments = -(-(n + sa.HEADER_SIZE) // (segment_size - sa.TAG_SIZE))
    if segments > sa.MAX_SEGMENTS:  # the uint32 segment counter would wrap: refused
        with pytest.raises(InputError):
            sa.ciphertext_size(n, segment_size)
        return
    c = sa.ciphertext_size(n, segment_size)
    assert c >= n + sa.HEADER_SIZE + sa.TAG_SIZE
    assert sa.plaintext_size(c, segment_size) == n


@settings(max_examples=500)
@given(c=st.integers(-10, 1 << 45), segment_size=SEGMENT_SIZES)
def test_every_ciphertext_size_is_canonical_or_refused(c: int, segment_size: int) -> None:
    # Whatever the size, either it is exactly what the writer produces for some n, or
    # it is refused as truncated/extended: never a second size for the same plaintext.
    try:
        n = sa.plaintext_size(c, segment_size)
    except IntegrityError:
        full, rest = divmod(c, segment_size)
        too_many = full + (rest > 0) > sa.MAX_SEGMENTS
        assert c < 56 or (full and 0 < rest <= sa.TAG_SIZE) or too_many
        return
    assert n >= 0
    assert sa.ciphertext_size(n, segment_size) == c


@pytest.mark.parametrize("segment_size", [S4K, sa.SEGMENT_SIZE_1MB])
def test_invalid_sizes_rejected(segment_size: int) -> None:
    for c in [0, 1, 55, segment_size + 1, segment_size + 16, 3 * segment_size + 5]:
        with pytest.raises(IntegrityError):
            sa.plaintext_size(c, segment_size)
    with pytest.raises(InputError):
        sa.ciphertext_size(-1, segment_size)


@settings(max_examples=300)
@given(data=st.binary(max_size=80))
def test_parse_header_accepts_only_tink_headers(data: bytes) -> None:
    if len(data) >= 40 and data[0] == 0x28:
        header = sa.parse_header(data)
        assert header.salt == data[1:33] and header.nonce_prefix == data[33:40]
    else:
        with pytest.raises(IntegrityError):
            sa.parse_header(data)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(0, 6 * S4K), flip=st.booleans())
def test_decrypt_from_mmap_releases_the_map(tmp_path_factory, n: int, flip: bool) -> None:
    # The runtime decrypts from an mmap and closes it afterwards: no slice of it may
    # outlive the call, on success or failure (else close() raises BufferError).
    stream = bytearray(sa.encrypt_bytes(KEY, os.urandom(n), AD, segment_size=S4K))
    if flip:
        stream[-1] ^= 1
    path = tmp_path_factory.mktemp("mm") / "s"
    path.write_bytes(stream)
    with path.open("rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        view = memoryview(mapped)
        out = bytearray(n)
        try:
            sa.decrypt_into(KEY, view, memoryview(out), AD, segment_size=S4K, threads=2)
        except IntegrityError:
            assert flip
        else:
            assert not flip
        view.release()
        mapped.close()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(0, 5 << 20), threads=st.integers(1, 3))
def test_encrypt_file_round_trip_across_batches(tmp_path_factory, n: int, threads: int) -> None:
    plaintext = os.urandom(n)
    src = tmp_path_factory.mktemp("ef") / "w.bin"
    src.write_bytes(plaintext)
    sink = io.BytesIO()
    result = sa.encrypt_file(KEY, src, sink, AD, segment_size=S4K, threads=threads)
    stream = sink.getvalue()
    assert result.ciphertext_sha256 == hashlib.sha256(stream).hexdigest()
    assert result.plaintext_sha256 == hashlib.sha256(plaintext).hexdigest()
    assert sa.decrypt_bytes(KEY, stream, AD, segment_size=S4K) == plaintext
