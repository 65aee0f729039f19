"""The runtime's final mlock (``hardening.lock_tensors``) and the loader's early locks.

The loader locks each plaintext buffer as it is faulted in (``mlock2(MLOCK_ONFAULT)``);
``lock_tensors`` must lock those ranges again the cheap way (never trusting the claim),
``mlock`` exactly the rest, and report the total as before.
"""

from __future__ import annotations

import errno
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pipeline import _pages
from secure_runtime import hardening, loader
from secure_runtime.hardening import _subtract, lock_tensors, unlock
from tests.support.proc_maps import kib, smaps_entry, vm_flags

_spans = st.lists(st.tuples(st.integers(0, 200), st.integers(0, 60)), max_size=6).map(
    lambda pairs: [(start, start + length) for start, length in pairs])


def _disjoint(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


@given(_spans, _spans)
def test_subtract_leaves_exactly_the_uncovered_points(
    ranges: list[tuple[int, int]], holes: list[tuple[int, int]]
) -> None:
    ranges = _disjoint(ranges)
    rest = _subtract(ranges, holes)
    points = {p for s, e in ranges for p in range(s, e)}
    covered = {p for s, e in holes for p in range(s, e)}
    assert {p for s, e in rest for p in range(s, e)} == points - covered
    assert all(s < e for s, e in rest) and rest == sorted(rest)


class _RecordingLibc:
    """hardening's libc, with mlock recorded (and still called)."""

    def __init__(self, real: Any) -> None:
        self.real, self.calls = real, []

    def mlock(self, address: Any, length: int) -> int:
        self.calls.append((address.value, length))
        return int(self.real.mlock(address, length))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_lock_tensors_skips_what_the_loader_locked_and_locks_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    early = loader.host_buffer(16 << 20)
    span = loader.lock_as_faulted(early)
    assert span is not None  # root: CAP_IPC_LOCK
    early.fill_(3)
    late = loader.host_buffer(8 << 20)
    late.fill_(4)
    libc, relock = _record(monkeypatch)
    report = lock_tensors([early[:1000], early[5 << 20 :], late], already_locked=[span])
    try:
        # One mlock call, for the late buffer only; the early one re-locked on fault
        # (on a range still locked, a flag check: no walk over its pages).
        assert relock.calls == [span]
        assert [length for _, length in libc.calls] == [8 << 20]
        assert libc.calls[0][0] == late.data_ptr()
        assert report.complete and report.requested_bytes == 24 << 20
        assert report.locked_bytes == 24 << 20
        assert sorted(report.ranges) == sorted([span, (late.data_ptr(),
                                                       late.data_ptr() + (8 << 20))])
    finally:
        unlock(report)
    assert report.locked_bytes == 0


def test_lock_tensors_without_early_locks_locks_everything() -> None:
    tensor = torch.ones(3 << 20)
    report = lock_tensors([tensor])
    try:
        assert report.complete and report.locked_bytes >= tensor.numel() * 4
    finally:
        unlock(report)


class _RecordingLockOnFault:
    """``_pages.lock_on_fault`` recorded; calls through, or answers ``errno`` instead."""

    def __init__(self, real: Any, refuse: int = 0) -> None:
        self.real, self.refuse, self.calls = real, refuse, []

    def __call__(self, address: int, length: int) -> int:
        self.calls.append((address, address + length))
        return self.refuse or int(self.real(address, length))


def _record(monkeypatch: pytest.MonkeyPatch, refuse: int = 0
            ) -> tuple[_RecordingLibc, _RecordingLockOnFault]:
    libc = _RecordingLibc(hardening._libc)
    relock = _RecordingLockOnFault(_pages.lock_on_fault, refuse)
    monkeypatch.setattr(hardening, "_libc", libc)
    monkeypatch.setattr(_pages, "lock_on_fault", relock)
    return libc, relock


def test_a_claimed_range_is_locked_again_not_trusted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A claim that is wrong (this buffer was never locked) still ends locked: the claimed
    part is re-locked with mlock2(ONFAULT), the unclaimed part gets mlock, and neither a
    claim reaching past the tensors nor one elsewhere touches other memory."""
    buffer = loader.host_buffer(16 << 20)
    buffer.fill_(5)
    start = buffer.data_ptr()
    assert "lo" not in vm_flags(start)
    libc, relock = _record(monkeypatch)
    claims = [(start - (4 << 20), start + (8 << 20)), (4096, 8192)]
    report = lock_tensors([buffer], already_locked=claims)
    try:
        assert relock.calls == [(start, start + (8 << 20))]
        assert libc.calls == [(start + (8 << 20), 8 << 20)]
        assert report.complete and report.locked_bytes == 16 << 20
        assert sorted(report.ranges) == [(start, start + (8 << 20)),
                                         (start + (8 << 20), start + (16 << 20))]
        assert kib(smaps_entry(start), "Locked") == 8 << 10  # the re-locked half
        assert kib(smaps_entry(start + (8 << 20)), "Locked") == 8 << 10
    finally:
        unlock(report)


def test_a_claimed_range_the_kernel_refuses_falls_back_to_mlock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    buffer = loader.host_buffer(8 << 20)
    buffer.fill_(6)
    start = buffer.data_ptr()
    libc, relock = _record(monkeypatch, refuse=errno.ENOMEM)
    report = lock_tensors([buffer], already_locked=[(start, start + (8 << 20))])
    try:
        assert relock.calls == [(start, start + (8 << 20))]
        assert libc.calls == [(start, 8 << 20)]  # then mlock, which the kernel allows
        assert report.complete and report.ranges == [(start, start + (8 << 20))]
    finally:
        unlock(report)
