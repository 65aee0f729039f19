"""Pure arithmetic of the Tink AES-GCM-HKDF streaming layout: header, sizes, segment bounds.

Kept apart from the crypto so that the size rules (which decide whether a truncated
file is even *recognised* as truncated) can be property-tested and fuzzed on their own.

Layout of one stream with ciphertext segment size ``S`` (Tink ``AesGcmHkdfStreaming``,
ciphertext offset 0)::

    header (40 B) | seg 0: S-56 B plaintext + 16 B tag | seg 1..: S-16 B + 16 B tag | last

The header occupies the start of the first ciphertext segment, which is why segment 0
carries 40 bytes less plaintext. The last segment may be short but always has a tag;
an empty plaintext is one empty last segment (56 bytes in all). A plaintext that ends
exactly on a segment boundary ends with that full segment: Tink's writers never add an
empty trailing segment, so such a stream is rejected here (one ciphertext size per
plaintext size, which keeps the size check of a sealed file exact).
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import InputError, IntegrityError

SEGMENT_SIZE_1MB = 1 << 20
SEGMENT_SIZE_4KB = 4096
KEY_SIZE = 32
TAG_SIZE = 16
NONCE_PREFIX_SIZE = 7
SALT_SIZE = KEY_SIZE  # Tink: salt size == derived key size
HEADER_SIZE = 1 + SALT_SIZE + NONCE_PREFIX_SIZE  # 40 == 0x28, also the header's first byte
#: Segment numbers are a big-endian uint32 in the nonce: a stream has at most 2**32 segments.
MAX_SEGMENTS = 1 << 32
#: Tink stores the segment size as an int32.
MAX_SEGMENT_SIZE = (1 << 31) - 1
MIN_SEGMENT_SIZE = HEADER_SIZE + TAG_SIZE + 1


@dataclass(frozen=True)
class Header:
    """The stream header: a per-stream random HKDF salt and nonce prefix."""

    salt: bytes
    nonce_prefix: bytes


def parse_header(data: bytes | bytearray | memoryview) -> Header:
    """Read the 40-byte header at the start of ``data``; anything else is an IntegrityError.

    The length byte must be exactly 0x28: Tink writes 1 + salt + nonce-prefix there, and
    another value means a different key size or not a stream of this kind at all.
    """
    view = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
    with view:
        if len(view) < 1:
            raise IntegrityError("sealed stream is empty: no header")
        if view[0] != HEADER_SIZE:
            raise IntegrityError(
                f"sealed stream header length byte is {view[0]:#04x}, expected {HEADER_SIZE:#04x}"
                " (not a Tink AES256-GCM-HKDF stream)"
            )
        if len(view) < HEADER_SIZE:
            raise IntegrityError(
                f"sealed stream is {len(view)} bytes, shorter than its {HEADER_SIZE}-byte header"
            )
        return Header(
            salt=bytes(view[1 : 1 + SALT_SIZE]),
            nonce_prefix=bytes(view[1 + SALT_SIZE : HEADER_SIZE]),
        )


def check_segment_size(segment_size: int) -> int:
    """Validate a ciphertext segment size (it comes from a manifest: untrusted input)."""
    if (
        isinstance(segment_size, bool)
        or not isinstance(segment_size, int)
        or not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE
    ):
        raise InputError(
            f"invalid ciphertext segment size {segment_size!r}: must be an integer in "
            f"[{MIN_SEGMENT_SIZE}, {MAX_SEGMENT_SIZE}]"
        )
    return segment_size


def ciphertext_size(plaintext_size: int, segment_size: int = SEGMENT_SIZE_1MB) -> int:
    """Size of the stream Tink writes for ``plaintext_size`` bytes (header included)."""
    check_segment_size(segment_size)
    if isinstance(plaintext_size, bool) or not isinstance(plaintext_size, int):
        raise InputError(f"plaintext size must be an integer, not {plaintext_size!r}")
    if plaintext_size < 0:
        raise InputError(f"plaintext size must not be negative ({plaintext_size})")
    # Count the header as if it were plaintext of the first segment (Tink's own formula).
    per_segment = segment_size - TAG_SIZE
    full, rest = divmod(plaintext_size + HEADER_SIZE, per_segment)
    count = full + (1 if rest else 0)
    if count > MAX_SEGMENTS:
        raise InputError(f"plaintext of {plaintext_size} bytes needs more than 2**32 segments")
    return full * segment_size + (rest + TAG_SIZE if rest else 0)


def plaintext_size(ciphertext_size: int, segment_size: int = SEGMENT_SIZE_1MB) -> int:
    """Inverse of :func:`ciphertext_size`; an IntegrityError when no plaintext maps to it.

    A size that no writer produces means the stream was truncated or extended, so this
    already catches most truncations before any decryption.
    """
    check_segment_size(segment_size)
    if isinstance(ciphertext_size, bool) or not isinstance(ciphertext_size, int):
        raise InputError(f"ciphertext size must be an integer, not {ciphertext_size!r}")
    if ciphertext_size < HEADER_SIZE + TAG_SIZE:
        raise IntegrityError(
            f"sealed stream of {ciphertext_size} bytes is shorter than the minimum "
            f"{HEADER_SIZE + TAG_SIZE} (header + one tag): truncated"
        )
    full, rest = divmod(ciphertext_size, segment_size)
    if full and 0 < rest <= TAG_SIZE:
        raise IntegrityError(
            f"sealed stream of {ciphertext_size} bytes ends in a {rest}-byte segment with no "
            "plaintext: truncated or extended"
        )
    if full + (1 if rest else 0) > MAX_SEGMENTS:
        raise IntegrityError(f"sealed stream of {ciphertext_size} bytes has too many segments")
    per_segment = segment_size - TAG_SIZE
    return full * per_segment + (rest - TAG_SIZE if rest else 0) - HEADER_SIZE


@dataclass(frozen=True)
class Layout:
    """Where each segment's ciphertext and plaintext lie in a stream of known size."""

    segment_size: int
    plaintext_size: int
    ciphertext_size: int

    @classmethod
    def for_plaintext(cls, size: int, segment_size: int) -> Layout:
        return cls(segment_size, size, ciphertext_size(size, segment_size))

    @classmethod
    def for_ciphertext(cls, size: int, segment_size: int) -> Layout:
        return cls(segment_size, plaintext_size(size, segment_size), size)

    @property
    def count(self) -> int:
        """Number of segments (at least one: the empty plaintext has one empty segment)."""
        return -(-self.ciphertext_size // self.segment_size)

    @property
    def first_plaintext(self) -> int:
        """Plaintext capacity of segment 0 (the header takes part of it)."""
        return self.segment_size - HEADER_SIZE - TAG_SIZE

    def plaintext_bounds(self, index: int) -> tuple[int, int]:
        """[start, end) of segment ``index``'s plaintext."""
        per = self.segment_size - TAG_SIZE
        start = 0 if index == 0 else self.first_plaintext + (index - 1) * per
        end = self.first_plaintext if index == 0 else start + per
        return start, min(end, self.plaintext_size)

    def ciphertext_bounds(self, index: int) -> tuple[int, int]:
        """[start, end) of segment ``index``'s ciphertext (tag included, header excluded)."""
        start = HEADER_SIZE if index == 0 else index * self.segment_size
        return start, min((index + 1) * self.segment_size, self.ciphertext_size)


def max_segment_plaintext(layout: Layout) -> int:
    """The most plaintext any one segment of ``layout`` holds."""
    sizes = {0, layout.count - 1} | ({1} if layout.count > 1 else set())
    return max(end - start for start, end in map(layout.plaintext_bounds, sizes))


def segment_groups(layout: Layout, capacity: int) -> list[tuple[int, int]]:
    """Split the stream into consecutive ``(first, end)`` segment ranges for a ring buffer.

    Each range holds as many whole segments as fit ``capacity`` bytes of plaintext
    (greedy: adding the next segment would overflow), so a ring buffer of that size
    takes any group. Arithmetic per group, not per segment: a 16 GiB stream of 4 KiB
    segments has four million of them. ``capacity`` below the largest segment's
    plaintext is a ValueError.
    """
    if capacity < max_segment_plaintext(layout):
        raise ValueError(f"capacity {capacity} is below one segment's plaintext")
    per = layout.segment_size - TAG_SIZE
    count = layout.count
    groups: list[tuple[int, int]] = []
    first = 0
    while first < count:
        start = layout.plaintext_bounds(first)[0]
        if first == 0:
            end = 1 + max(0, capacity - layout.first_plaintext) // per
        else:
            end = first + capacity // per
        end = max(first + 1, min(count, end))
        if end == count - 1 and layout.plaintext_bounds(count - 1)[1] - start <= capacity:
            end = count  # the short last segment still fits
        groups.append((first, end))
        first = end
    return groups
