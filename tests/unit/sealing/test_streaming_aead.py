"""Our Tink-streaming reader/writer against the ``tink`` package itself, plus tampering.

Tink is the reference: a keyset holding OUR raw 32-byte key is built as a cleartext
AesGcmHkdfStreamingKey, so the same key material goes through both implementations and
the bytes must be interchangeable in both directions.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import struct

import pytest
import tink
from tink import streaming_aead

from pipeline.errors import InputError, IntegrityError, KeyProviderError
from pipeline.sealing import _streaming as sa
from tests.support.tink_reference import tink_primitive

streaming_aead.register()

AD = b"model/weights.safetensors"
S4K = sa.SEGMENT_SIZE_4KB
S1M = sa.SEGMENT_SIZE_1MB


class _Keep(io.BytesIO):
    """Tink closes the destination when its stream closes: keep the bytes."""

    value = b""

    def close(self) -> None:
        self.value = self.getvalue()
        super().close()


def tink_encrypt(key: bytes, plaintext: bytes, ad: bytes, segment_size: int) -> bytes:
    sink = _Keep()
    with tink_primitive(key, segment_size).new_encrypting_stream(sink, ad) as stream:
        stream.write(plaintext)
    return sink.value


def tink_decrypt(key: bytes, ciphertext: bytes, ad: bytes, segment_size: int) -> bytes:
    primitive = tink_primitive(key, segment_size)
    with primitive.new_decrypting_stream(io.BytesIO(ciphertext), ad) as stream:
        return stream.read()


def boundary_sizes(segment_size: int) -> list[int]:
    first = segment_size - sa.HEADER_SIZE - sa.TAG_SIZE
    per = segment_size - sa.TAG_SIZE
    sizes = {0, 1, 2, first - 1, first, first + 1, first + per - 1, first + per, first + per + 1}
    sizes |= {first + 3 * per, first + 3 * per + 17}
    return sorted(sizes)


SIZES_4K = boundary_sizes(S4K) + [random.Random(4).randrange(1, 40 * S4K) for _ in range(4)]
SIZES_1M = boundary_sizes(S1M) + [random.Random(1).randrange(1, 3 * S1M) for _ in range(2)]
CASES = [(S4K, n) for n in SIZES_4K] + [(S1M, n) for n in SIZES_1M]


@pytest.fixture(scope="module")
def key() -> bytes:
    return os.urandom(sa.KEY_SIZE)


def payload(n: int) -> bytes:
    return random.Random(n).randbytes(n)


@pytest.mark.parametrize(("segment_size", "n"), CASES)
def test_ours_to_tink(key: bytes, segment_size: int, n: int) -> None:
    plaintext = payload(n)
    ciphertext = sa.encrypt_bytes(key, plaintext, AD, segment_size=segment_size)
    assert len(ciphertext) == sa.ciphertext_size(n, segment_size)
    assert tink_decrypt(key, ciphertext, AD, segment_size) == plaintext


@pytest.mark.parametrize(("segment_size", "n"), CASES)
def test_tink_to_ours(key: bytes, segment_size: int, n: int) -> None:
    plaintext = payload(n)
    ciphertext = tink_encrypt(key, plaintext, AD, segment_size)
    assert len(ciphertext) == sa.ciphertext_size(n, segment_size)
    assert sa.plaintext_size(len(ciphertext), segment_size) == n
    assert sa.decrypt_bytes(key, ciphertext, AD, segment_size=segment_size) == plaintext
    out = bytearray(n)
    sa.decrypt_into(key, ciphertext, memoryview(out), AD, segment_size=segment_size, threads=3)
    assert out == plaintext


@pytest.mark.parametrize("segment_size", [S4K, S1M])
def test_encrypt_file_matches_tink_and_hashes(tmp_path, key: bytes, segment_size: int) -> None:
    # Several batches and a short last segment, so the pipelined writer is exercised.
    n = (9 if segment_size == S1M else 5000) * segment_size + 123
    plaintext = payload(n)
    src = tmp_path / "w.bin"
    src.write_bytes(plaintext)
    dst = tmp_path / "w.bin.sealed"
    with dst.open("wb") as out:
        result = sa.encrypt_file(key, src, out, AD, segment_size=segment_size, threads=2)
    ciphertext = dst.read_bytes()
    assert result == sa.EncryptResult(
        plaintext_size=n,
        ciphertext_size=len(ciphertext),
        plaintext_sha256=hashlib.sha256(plaintext).hexdigest(),
        ciphertext_sha256=hashlib.sha256(ciphertext).hexdigest(),
    )
    assert tink_decrypt(key, ciphertext, AD, segment_size) == plaintext
    out_buf = bytearray(n)
    sa.decrypt_into(key, ciphertext, memoryview(out_buf), AD, segment_size=segment_size)
    assert out_buf == plaintext


@pytest.mark.parametrize("n", [0, 1, S4K - 56, S4K - 56 + 1])
def test_encrypt_file_small(tmp_path, key: bytes, n: int) -> None:
    src = tmp_path / "small.bin"
    src.write_bytes(payload(n))
    buf = io.BytesIO()
    result = sa.encrypt_file(key, src, buf, AD, segment_size=S4K, threads=1)
    assert result.plaintext_size == n
    assert result.ciphertext_size == len(buf.getvalue()) == sa.ciphertext_size(n, S4K)
    assert tink_decrypt(key, buf.getvalue(), AD, S4K) == payload(n)


def test_stream_layout_is_tinks(key: bytes) -> None:
    ciphertext = sa.encrypt_bytes(key, b"abc", AD, segment_size=S4K)
    assert ciphertext[0] == 0x28 == sa.HEADER_SIZE
    header = sa.parse_header(ciphertext)
    assert (len(header.salt), len(header.nonce_prefix)) == (32, 7)
    assert header.salt == ciphertext[1:33] and header.nonce_prefix == ciphertext[33:40]
    # Fresh salt and nonce prefix every time: same input, different stream.
    assert sa.encrypt_bytes(key, b"abc", AD, segment_size=S4K) != ciphertext


def test_empty_plaintext_is_one_tagged_segment(key: bytes) -> None:
    ciphertext = sa.encrypt_bytes(key, b"", AD, segment_size=S1M)
    assert len(ciphertext) == sa.HEADER_SIZE + sa.TAG_SIZE == 56
    assert sa.decrypt_bytes(key, ciphertext, AD, segment_size=S1M) == b""


def test_decrypt_into_numpy_buffer_multithreaded(key: bytes) -> None:
    np = pytest.importorskip("numpy")
    n = 5 * S1M + 999
    plaintext = payload(n)
    ciphertext = sa.encrypt_bytes(key, plaintext, AD)
    out = np.empty(n, dtype=np.uint8)
    sa.decrypt_into(key, memoryview(ciphertext), memoryview(out), AD, threads=4)
    assert out.tobytes() == plaintext


# ------------------------------------------------------------------------- tampering


@pytest.fixture(scope="module")
def sealed(key: bytes) -> tuple[bytes, bytes]:
    """A 4KB-segment stream of 6 segments (short last one) and its plaintext."""
    plaintext = payload(5 * (S4K - 16) + 100)
    return plaintext, sa.encrypt_bytes(key, plaintext, AD, segment_size=S4K)


def _refused(key: bytes, ciphertext: bytes | bytearray, ad: bytes = AD) -> IntegrityError:
    n = len(ciphertext)
    try:
        size = sa.plaintext_size(n, S4K)
    except IntegrityError as error:  # truncation caught by the size rule alone
        with pytest.raises(IntegrityError):
            sa.decrypt_bytes(key, bytes(ciphertext), ad, segment_size=S4K)
        return error
    out = bytearray(b"\xaa" * size)
    with pytest.raises(IntegrityError) as caught:
        sa.decrypt_into(key, bytes(ciphertext), memoryview(out), ad, segment_size=S4K, threads=2)
    assert out == bytes(size), "output must be zeroed after a failure"
    return caught.value


def _flip(data: bytes, index: int, mask: int = 0x01) -> bytearray:
    flipped = bytearray(data)
    flipped[index] ^= mask
    return flipped


@pytest.mark.parametrize("where", [0, 1, 20, 33, 39])
def test_flipped_header_bit(key: bytes, sealed, where: int) -> None:
    _, ciphertext = sealed
    _refused(key, _flip(ciphertext, where))


@pytest.mark.parametrize("segment", range(6))
@pytest.mark.parametrize("part", ["start", "middle", "tag"])
def test_flipped_segment_bit(key: bytes, sealed, segment: int, part: str) -> None:
    _, ciphertext = sealed
    start = sa.HEADER_SIZE if segment == 0 else segment * S4K
    end = min((segment + 1) * S4K, len(ciphertext))
    index = {"start": start, "middle": (start + end) // 2, "tag": end - 1}[part]
    error = _refused(key, _flip(ciphertext, index, 0x80))
    assert f"segment {segment} of 6" in str(error)


@pytest.mark.parametrize(
    "cut",
    [1, 15, 16, 17, 100, S4K - 1, S4K, S4K + 1, S4K + 16, 5 * S4K, 5 * S4K + 17, 5 * S4K + 1],
)
def test_truncated(key: bytes, sealed, cut: int) -> None:
    _, ciphertext = sealed
    assert cut < len(ciphertext)
    _refused(key, ciphertext[:cut] if cut < 57 else ciphertext[: len(ciphertext) - cut])


@pytest.mark.parametrize("length", [0, 1, 39, 40, 55, 56])
def test_short_streams(key: bytes, sealed, length: int) -> None:
    _, ciphertext = sealed
    _refused(key, ciphertext[:length])


def test_truncated_at_segment_boundary_fails_on_last_flag(key: bytes, sealed) -> None:
    # Dropping whole trailing segments leaves a valid size: only the last-segment flag
    # in the nonce can notice, and it must.
    _, ciphertext = sealed
    error = _refused(key, ciphertext[: 3 * S4K])
    assert "segment 2 of 3" in str(error)


def test_extended_with_appended_segment(key: bytes, sealed) -> None:
    _, ciphertext = sealed
    _refused(key, ciphertext + ciphertext[S4K : 2 * S4K])


def _segments(ciphertext: bytes) -> list[bytes]:
    return [ciphertext[i : i + S4K] for i in range(0, len(ciphertext), S4K)]


def test_segments_swapped(key: bytes, sealed) -> None:
    _, ciphertext = sealed
    parts = _segments(ciphertext)
    parts[1], parts[2] = parts[2], parts[1]
    error = _refused(key, b"".join(parts))
    assert "segment 1 of 6" in str(error)


def test_segments_reversed_middle(key: bytes, sealed) -> None:
    _, ciphertext = sealed
    parts = _segments(ciphertext)
    parts[1:5] = parts[1:5][::-1]
    _refused(key, b"".join(parts))


def test_segment_dropped(key: bytes, sealed) -> None:
    _, ciphertext = sealed
    parts = _segments(ciphertext)
    del parts[3]
    error = _refused(key, b"".join(parts))
    assert "segment 3 of 5" in str(error)


def test_segment_spliced_from_other_stream(key: bytes, sealed) -> None:
    plaintext, ciphertext = sealed
    other = sa.encrypt_bytes(key, plaintext, AD, segment_size=S4K)
    parts, foreign = _segments(ciphertext), _segments(other)
    parts[2] = foreign[2]
    _refused(key, b"".join(parts))


def test_wrong_key(sealed) -> None:
    _, ciphertext = sealed
    error = _refused(os.urandom(32), ciphertext)
    assert "segment 0 of 6" in str(error)


def test_wrong_associated_data(key: bytes, sealed) -> None:
    _, ciphertext = sealed
    _refused(key, ciphertext, b"model/other.safetensors")


def test_wrong_segment_size_is_refused(key: bytes) -> None:
    ciphertext = sa.encrypt_bytes(key, payload(3 * S4K), AD, segment_size=S4K)
    with pytest.raises(IntegrityError):
        sa.decrypt_bytes(key, ciphertext, AD, segment_size=8192)


def test_tink_refuses_our_tampering_too(key: bytes, sealed) -> None:
    # Sanity check of the reference: the same flipped tag is rejected by Tink.
    _, ciphertext = sealed
    with pytest.raises(tink.TinkError):
        tink_decrypt(key, bytes(_flip(ciphertext, 2 * S4K - 1)), AD, S4K)


# ------------------------------------------------------------------- argument checks


def test_bad_key_length() -> None:
    with pytest.raises(KeyProviderError):
        sa.encrypt_bytes(b"short", b"x", AD)
    with pytest.raises(KeyProviderError):
        sa.decrypt_bytes(bytes(31), bytes([0x28]) + bytes(55), AD)


def test_output_buffer_checks(key: bytes, sealed) -> None:
    plaintext, ciphertext = sealed
    with pytest.raises(InputError, match="output buffer"):
        sa.decrypt_into(
            key, ciphertext, memoryview(bytearray(len(plaintext) - 1)), AD, segment_size=S4K
        )
    with pytest.raises(InputError, match="read-only"):
        sa.decrypt_into(key, ciphertext, memoryview(bytes(len(plaintext))), AD, segment_size=S4K)


@pytest.mark.parametrize("segment_size", [0, 56, -1, 1 << 31, 4096.0, True])
def test_bad_segment_size(segment_size) -> None:
    with pytest.raises(InputError):
        sa.ciphertext_size(10, segment_size)


def test_encrypt_file_missing_source(tmp_path, key: bytes) -> None:
    with pytest.raises(InputError, match="no such file"):
        sa.encrypt_file(key, tmp_path / "absent", io.BytesIO(), AD)


def test_nonce_layout_matches_tink(key: bytes) -> None:
    # Decrypt segment 1 of a Tink stream by hand: nonce_prefix || be32(1) || 0x00.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    plaintext = payload(3 * S4K)
    ciphertext = tink_encrypt(key, plaintext, AD, S4K)
    header = sa.parse_header(ciphertext)
    derived = HKDF(hashes.SHA256(), 32, header.salt, AD).derive(key)
    nonce = header.nonce_prefix + struct.pack(">I", 1) + b"\x00"
    segment = AESGCM(derived).decrypt(nonce, ciphertext[S4K : 2 * S4K], None)
    first = S4K - 56
    assert segment == plaintext[first : first + S4K - 16]


def test_encrypt_file_refuses_a_source_that_grows(key: bytes) -> None:
    # /proc files report size 0 but yield bytes: exactly a file growing after fstat.
    with pytest.raises(InputError, match="grew"):
        sa.encrypt_file(key, "/proc/self/status", io.BytesIO(), AD)


def test_encrypt_file_propagates_write_failure_without_hanging(tmp_path, key: bytes) -> None:
    class Full(io.RawIOBase):
        """Takes the header and the first batch, then the disk is full (in the sink thread)."""

        written = 0

        def writable(self) -> bool:
            return True

        def write(self, data) -> int:  # noqa: ANN001
            if self.written > S1M:
                raise OSError(28, "No space left on device")
            self.written += len(data)
            return len(data)

    src = tmp_path / "w.bin"
    src.write_bytes(payload(12 * S1M))
    sink = Full()
    with pytest.raises(OSError, match="No space"):
        sa.encrypt_file(key, src, sink, AD)
    assert 0 < sink.written < 12 * S1M


def test_encrypt_file_reports_every_plaintext_byte(tmp_path, key: bytes) -> None:
    """Progress bars are fed with exactly the plaintext size, batch by batch."""
    src = tmp_path / "plain.bin"
    src.write_bytes(os.urandom(5 * (1 << 20) + 123))
    seen: list[int] = []
    sa.encrypt_file(key, src, io.BytesIO(), b"ad", on_bytes=seen.append)
    assert sum(seen) == src.stat().st_size and len(seen) > 1
