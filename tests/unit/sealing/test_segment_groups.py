"""Segment groups for the ring loader: tile the stream, fit the buffer, greedy, any layout.

Property-tested over plaintext sizes, segment sizes and capacities, against the
per-segment definition (``Layout.plaintext_bounds``), because the loader allocates its
ring from these numbers: a group that overflowed its buffer would be a memory error,
a gap would be plaintext never decrypted.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.sealing._segments import (
    MIN_SEGMENT_SIZE,
    TAG_SIZE,
    Layout,
    max_segment_plaintext,
    segment_groups,
)

segment_sizes = st.one_of(st.sampled_from([4096, 1 << 20]),
                          st.integers(MIN_SEGMENT_SIZE, 1 << 16))


@given(size=st.integers(0, 1 << 22), segment=segment_sizes, extra=st.integers(0, 1 << 18))
def test_groups_tile_the_stream_and_fit(size: int, segment: int, extra: int) -> None:
    layout = Layout.for_plaintext(size, segment)
    capacity = max_segment_plaintext(layout) + extra
    groups = segment_groups(layout, capacity)
    assert groups[0][0] == 0 and groups[-1][1] == layout.count
    for (_, end), (first, _) in zip(groups, groups[1:], strict=False):
        assert end == first  # consecutive, no gap, no overlap
    for first, end in groups:
        assert first < end
        start, stop = layout.plaintext_bounds(first)[0], layout.plaintext_bounds(end - 1)[1]
        assert stop - start <= capacity  # fits the buffer
        if end < layout.count:  # greedy: one more segment would not
            assert layout.plaintext_bounds(end)[1] - start > capacity


@settings(deadline=None)
@given(size=st.integers(0, 1 << 18), segment=segment_sizes)
def test_max_segment_plaintext_is_the_largest_segment(size: int, segment: int) -> None:
    layout = Layout.for_plaintext(size, segment)
    largest = max(b - a for a, b in map(layout.plaintext_bounds, range(layout.count)))
    assert max_segment_plaintext(layout) == largest <= segment - TAG_SIZE


def test_capacity_below_one_segment_is_refused() -> None:
    layout = Layout.for_plaintext(10 << 20, 1 << 20)
    with pytest.raises(ValueError, match="below one segment"):
        segment_groups(layout, (1 << 20) - TAG_SIZE - 1)


def test_a_large_stream_of_small_segments_is_cheap() -> None:
    """16 GiB of 4 KiB segments: arithmetic per group (a few hundred), not per segment."""
    layout = Layout.for_plaintext(16 << 30, 4096)
    groups = segment_groups(layout, 64 << 20)
    per_group = (64 << 20) // (4096 - TAG_SIZE)  # whole segments per 64 MiB
    assert len(groups) == -(-layout.count // per_group)
    assert sum(e - f for f, e in groups) == layout.count
    assert all(layout.plaintext_bounds(e - 1)[1] - layout.plaintext_bounds(f)[0] <= 64 << 20
               for f, e in groups)
