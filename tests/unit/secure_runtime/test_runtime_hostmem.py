"""The plaintext buffer's page policy: no huge-page advice that could stall on compaction.

The decision (:func:`plan_huge_pages`) is a pure function of the kernel's THP settings
and free lists, tested over all of them; the buffer it shapes is checked in the
kernel's own view of the mapping (``/proc/self/smaps`` VmFlags: ``hg`` is
MADV_HUGEPAGE, ``nh`` MADV_NOHUGEPAGE), and pre-faulting in the kernel's Rss.
"""

from __future__ import annotations

import ctypes
import mmap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline import _pages
from secure_runtime import _hostmem
from secure_runtime._hostmem import (
    HugePagePlan,
    ThpState,
    anonymous_buffer,
    free_huge_pages,
    plan_huge_pages,
    prefaulter,
    selected_mode,
)
from tests.support.proc_maps import kib, smaps_entry, vm_flags

HUGE = 2 << 20
GIB = 1 << 30
ENABLED = ("always", "madvise", "never")
DEFRAG = ("always", "defer", "defer+madvise", "madvise", "never")

BUDDYINFO = """\
Node 0, zone      DMA      0      0      0      0      0      0      0      0      1      1      3
Node 0, zone    DMA32      4      1      2      2      2      2      1      4      4      2    752
Node 0, zone   Normal   2331   1219    538    547    243    802    781    544    340    200    290
"""


def _state(enabled: str = "madvise", defrag: str = "madvise", free: int = 0,
           min_free: int = 64 << 20) -> ThpState:
    return ThpState(enabled, defrag, HUGE, free, min_free)


def test_selected_mode_is_the_bracketed_choice() -> None:
    assert selected_mode("always [madvise] never\n") == "madvise"
    assert selected_mode("always defer defer+madvise [madvise] never") == "madvise"
    assert selected_mode("[defer+madvise]") == "defer+madvise"


def test_free_huge_pages_counts_blocks_of_huge_order_and_up_outside_dma() -> None:
    # order 9 counts 1, order 10 counts 2; DMA left out.
    assert free_huge_pages(BUDDYINFO, 9) == (2 + 2 * 752) + (200 + 2 * 290)
    assert free_huge_pages(BUDDYINFO, 10) == 752 + 290
    assert free_huge_pages("", 9) == 0
    assert free_huge_pages("garbage\n", 9) == 0


@pytest.mark.parametrize("enabled", ENABLED)
@pytest.mark.parametrize("defrag", DEFRAG)
@pytest.mark.parametrize("free", [0, 10, 100_000])
def test_default_policy_never_advises_huge_pages(enabled: str, defrag: str, free: int) -> None:
    plan = plan_huge_pages(GIB, _state(enabled, defrag, free))
    assert plan.huge_bytes == 0
    # Only where the kernel would compact on its own is the buffer advised NOHUGEPAGE.
    assert plan.no_huge_rest == (enabled == "always" and defrag == "always")


def test_free_policy_advises_only_what_is_free_beyond_the_reserve() -> None:
    needed = GIB // HUGE
    plenty = plan_huge_pages(GIB, _state(free=10 * needed), "free")
    assert plenty.huge_bytes == GIB and not plenty.no_huge_rest
    reserve = (128 << 20) // HUGE  # 2 x min_free_kbytes (64 MiB) beats the 64 MiB floor
    free = 300
    partial = plan_huge_pages(GIB, _state(free=free), "free")
    assert partial.huge_bytes == (free - reserve - free // 8) * HUGE
    assert plan_huge_pages(GIB, _state(free=reserve + 3), "free").huge_bytes == 0
    assert plan_huge_pages(GIB, _state(free=0), "free").huge_bytes == 0


@pytest.mark.parametrize("defrag", ["defer", "never"])
def test_free_policy_advises_everything_where_an_advised_fault_never_compacts(
    defrag: str,
) -> None:
    plan = plan_huge_pages(GIB + 1, _state("madvise", defrag, free=0), "free")
    assert plan.huge_bytes == GIB + HUGE


def test_free_policy_leaves_enabled_always_to_the_kernel_unless_it_compacts() -> None:
    assert plan_huge_pages(GIB, _state("always", "madvise", free=0), "free").huge_bytes == 0
    plan = plan_huge_pages(GIB, _state("always", "always", free=300), "free")
    assert 0 < plan.huge_bytes < GIB and plan.no_huge_rest


def test_nothing_to_advise_without_thp() -> None:
    for mode in ("never", "free", "always"):
        assert plan_huge_pages(GIB, None, mode).huge_bytes == 0
        assert plan_huge_pages(GIB, _state("never", free=10**6), mode).huge_bytes == 0


def test_always_policy_is_the_old_behaviour_and_an_unknown_mode_is_refused() -> None:
    assert plan_huge_pages(GIB, _state(free=0), "always").huge_bytes == GIB
    with pytest.raises(ValueError, match="huge page mode"):
        plan_huge_pages(GIB, _state(), "sometimes")


@given(size=st.integers(1, 64 * GIB), free=st.integers(0, 10**6),
       defrag=st.sampled_from(["always", "madvise", "defer+madvise"]),
       min_free=st.integers(0, 1 << 30))
def test_free_policy_never_asks_for_more_than_the_free_lists_hold(
    size: int, free: int, defrag: str, min_free: int
) -> None:
    """Under every defrag mode that compacts on an advised fault: advised <= free - reserve."""
    plan = plan_huge_pages(size, _state("madvise", defrag, free, min_free), "free")
    assert plan.huge_bytes % HUGE == 0
    assert plan.huge_bytes // HUGE <= max(0, free - free // 8 - (64 << 20) // HUGE)
    assert plan.huge_bytes < size + HUGE


def test_anonymous_buffer_is_aligned_and_advised_as_planned() -> None:
    size = 16 * HUGE + 12345
    none = anonymous_buffer(size, HugePagePlan(0, False, "test"), HUGE)
    assert none.address % HUGE == 0
    assert not {"hg", "nh"} & vm_flags(none.address)
    half = anonymous_buffer(size, HugePagePlan(8 * HUGE, True, "test"), HUGE)
    assert "hg" in vm_flags(half.address)
    assert "nh" in vm_flags(half.address + 8 * HUGE)
    assert "hg" not in vm_flags(half.address + 8 * HUGE)
    for buffer in (none, half):
        buffer.mapping.close()


def test_loader_buffer_is_not_advised_huge_pages_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """End to end through the loader: the default policy leaves no MADV_HUGEPAGE behind,
    even with every huge page free; the ``always`` policy (the old code) would."""
    import torch

    from secure_runtime.loader import host_buffer

    if _hostmem.read_thp_state() is None:
        pytest.skip("kernel without transparent huge pages: no advice is possible")
    plenty = _state(free=10**6)
    monkeypatch.setattr(_hostmem, "read_thp_state", lambda: plenty)
    default = host_buffer(64 << 20)
    assert default.dtype == torch.uint8 and default.numel() == 64 << 20
    assert "hg" not in vm_flags(default.data_ptr())
    monkeypatch.setattr(_hostmem, "MODE", "always")
    forced = host_buffer(64 << 20)
    assert "hg" in vm_flags(forced.data_ptr())


def test_prefaulter_faults_in_the_range_and_keeps_what_is_there() -> None:
    size = 8 << 20
    mapping = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    address = _pages.buffer_address(mapping)
    mapping[100:105] = b"hello"
    before = kib(smaps_entry(address), "Rss")
    populate = prefaulter(address, size)
    populate(4097, size - 1)  # unaligned ends: rounded out to whole pages
    after = kib(smaps_entry(address), "Rss")
    assert after - before >= (size >> 10) - 8
    assert mapping[100:105] == b"hello"
    assert mapping[size - 1 : size] == b"\0"
    populate(size, size + 10)  # empty or past the end: nothing happens
    mapping.close()


def test_buffer_address_reads_read_only_buffers() -> None:
    data = b"\x01\x02\x03"
    address = _pages.buffer_address(data)
    assert ctypes.string_at(address, 3) == data
    view = memoryview(bytearray(b"xyz"))
    assert ctypes.string_at(_pages.buffer_address(view[1:]), 2) == b"yz"
    with pytest.raises(TypeError):
        _pages.buffer_address(object())


def test_lock_as_faulted_locks_each_page_when_it_is_faulted_in() -> None:
    """mlock2(MLOCK_ONFAULT): nothing is faulted in by the lock itself; every page the
    decrypting threads then write is locked (smaps Locked), and the range is kept out of
    core dumps. Unaligned ends are rounded out to whole pages."""
    size = 8 << 20
    mapping = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    mapping.madvise(mmap.MADV_NOHUGEPAGE)  # 4 KiB faults under THP "always" too
    address = _pages.buffer_address(mapping)
    span = _hostmem.lock_as_faulted(address + 100, size - 200)
    assert span == (address, address + size)  # the suite runs as root: CAP_IPC_LOCK
    assert {"lo", "dd"} <= vm_flags(address)
    assert smaps_entry(address)["Rss"] == "0 kB"
    mapping[: size // 2] = b"\x01" * (size // 2)
    assert kib(smaps_entry(address), "Locked") == size // 2 // 1024
    mapping.close()


_REFUSED = """
import mmap, sys
from pipeline import _pages
from secure_runtime import _hostmem
m = mmap.mmap(-1, 8 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
print(_hostmem.lock_as_faulted(_pages.buffer_address(m), 8 << 20))
"""


def test_lock_as_faulted_returns_none_where_the_kernel_refuses() -> None:
    """Without CAP_IPC_LOCK and with RLIMIT_MEMLOCK 0 (many pods): None, nothing raised,
    so the runtime's final lock_tensors tries again and reports the refusal."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]
    # As root, drop CAP_IPC_LOCK first (setpriv needs CAP_SETPCAP); others lack it anyway.
    drop = (["setpriv", "--bounding-set=-ipc_lock", "--inh-caps=-ipc_lock"]
            if os.geteuid() == 0 else [])
    result = subprocess.run(
        [*drop, "prlimit", "--memlock=0:0", sys.executable, "-c", _REFUSED],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "None"
