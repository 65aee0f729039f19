"""The runtime's final mlock (``hardening.lock_tensors``) and the loader's early locks.

The loader locks each plaintext buffer as it is faulted in (``mlock2(MLOCK_ONFAULT)``);
``lock_tensors`` locks every host range the same way, which on a range the loader
locked is a flag check, and falls back to ``mlock`` where libc has no ``mlock2``. Each
test reads the outcome from the kernel (``/proc/self/smaps``: ``lo`` locked, ``lf`` on
fault, ``Locked`` bytes), not from what our code says it asked for.
"""

from __future__ import annotations

import pytest
import torch

from pipeline import _pages
from secure_runtime import loader
from secure_runtime.hardening import lock_tensors, unlock
from tests.support.proc_maps import kib, smaps_entry, vm_flags


def test_lock_tensors_relocks_the_loaders_buffer_in_place_and_locks_the_rest() -> None:
    early = loader.host_buffer(16 << 20)
    span = loader.lock_as_faulted(early)
    assert span is not None  # root: CAP_IPC_LOCK
    early.fill_(3)
    late = loader.host_buffer(8 << 20)
    late.fill_(4)
    assert "lo" not in vm_flags(late.data_ptr())
    report = lock_tensors([early[:1000], early[5 << 20 :], late])
    try:
        assert report.complete and report.requested_bytes == 24 << 20
        assert report.locked_bytes == 24 << 20
        assert sorted(report.ranges) == sorted([span, (late.data_ptr(),
                                                       late.data_ptr() + (8 << 20))])
        for buffer in (early, late):
            # Locked on fault, both: the early buffer was not mlock'ed again (mlock
            # would have cleared "lf" and walked its pages), the late one is locked
            # whole without being faulted in again.
            assert {"lo", "lf", "dd"} <= vm_flags(buffer.data_ptr())
            assert kib(smaps_entry(buffer.data_ptr()), "Locked") << 10 == buffer.numel()
    finally:
        unlock(report)
    assert report.locked_bytes == 0
    assert kib(smaps_entry(late.data_ptr()), "Locked") == 0


def test_lock_tensors_without_early_locks_locks_everything() -> None:
    tensor = torch.ones(3 << 20)
    report = lock_tensors([tensor])
    try:
        assert report.complete and report.locked_bytes >= tensor.numel() * 4
    finally:
        unlock(report)


def test_without_mlock2_the_memory_is_locked_by_mlock(monkeypatch: pytest.MonkeyPatch) -> None:
    """glibc < 2.27 has no mlock2 (cannot be installed here, so it is simulated by
    removing the symbol): lock_tensors falls back to mlock, and the memory still ends
    locked, in full."""
    buffer = loader.host_buffer(8 << 20)
    buffer.fill_(6)
    start = buffer.data_ptr()
    monkeypatch.setattr(_pages, "_mlock2", None)
    report = lock_tensors([buffer])
    try:
        assert report.complete and report.ranges == [(start, start + (8 << 20))]
        flags = vm_flags(start)
        assert "lo" in flags and "lf" not in flags  # mlock's lock, not mlock2's
        assert kib(smaps_entry(start), "Locked") == 8 << 10
    finally:
        unlock(report)
