"""Host memory for decrypted weights: which pages to ask the kernel for, and faulting them in.

A runtime pod loads its weights once, in a fresh process, on a node whose memory the
page cache has filled and fragmented. Two facts about that first load decide how the
plaintext buffer is allocated:

* **Huge pages are only cheap when they are already free, and not always then.** With
  transparent huge pages in ``madvise`` mode and ``defrag`` set to ``madvise`` (a
  common default, and this machine's), a fault in a range advised ``MADV_HUGEPAGE``
  makes the kernel *reclaim and compact memory synchronously* when no free 2 MiB block
  is left: a 1 GiB load was measured at 6.2 s instead of 0.4 s. Advising only as many
  huge pages as the buddy allocator holds free (``/proc/buddyinfo``) avoids the stall,
  but on the measured VM even free huge pages cost more to fault in than 4 KiB pages
  (docs/performance.md). So by default the buffer gets no advice at all (4 KiB pages
  never wait for compaction); :func:`plan_huge_pages` is that decision, a pure function
  of the kernel's settings and free lists, with the free-pages-only policy beside it.
* **Faulting in fresh memory is the dominant cost** (a zeroed page each, ~2 µs per 4 KiB
  page on the measured VM with one system call per chunk, nearly twice that with a trap
  per page). The pages are faulted in by the threads that
  decrypt into them, each for the chunk it is about to write
  (``MADV_POPULATE_WRITE``: one system call per chunk instead of one trap per page),
  so faulting runs on all cores and overlaps decryption.

Nothing here touches disk: the buffer is anonymous memory, private to the process.
"""

from __future__ import annotations

import mmap
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline import _pages

THP_DIR = Path("/sys/kernel/mm/transparent_hugepage")
BUDDYINFO = Path("/proc/buddyinfo")
MIN_FREE_KBYTES = Path("/proc/sys/vm/min_free_kbytes")

#: madvise(2) advice numbers (Linux UAPI, the same on every architecture).
MADV_HUGEPAGE = 14
MADV_NOHUGEPAGE = 15

#: Always leave at least this much free huge-page memory to the rest of the node,
#: plus an eighth of what is free (other processes allocate while we fault).
RESERVE_MIN_BYTES = 64 << 20
#: Advising fewer huge pages than this is not worth splitting the mapping for.
MIN_HUGE_PAGES = 4
#: Defrag modes under which a fault in an *advised* range may compact synchronously.
_STALLS_WHEN_ADVISED = frozenset({"always", "madvise", "defer+madvise"})
_ZONES_EXCLUDED = frozenset({"DMA"})  # 16 MiB, held back by lowmem reserves
#: The policy the loader applies (see :func:`plan_huge_pages`). Only the benchmark changes
#: it, to measure ``free`` and ``always`` in a fresh process next to the default.
MODE = "never"


@dataclass(frozen=True)
class ThpState:
    """What the kernel says about transparent huge pages right now."""

    enabled: str  # always | madvise | never
    defrag: str  # always | defer | defer+madvise | madvise | never
    huge_page_size: int  # bytes (hpage_pmd_size)
    free_huge_pages: int  # free blocks of at least huge_page_size, in huge pages
    min_free_bytes: int  # vm.min_free_kbytes: the kernel's own watermark base


@dataclass(frozen=True)
class HugePagePlan:
    """How to advise a fresh buffer: ``huge_bytes`` from its start, the rest 4 KiB pages.

    ``no_huge_rest`` advises the remainder ``MADV_NOHUGEPAGE``: only needed where the
    kernel would otherwise try (and compact for) huge pages on its own
    (``enabled=always`` with ``defrag=always``).
    """

    huge_bytes: int
    no_huge_rest: bool
    reason: str


def selected_mode(text: str) -> str:
    """The bracketed choice of a sysfs mode file: ``always [madvise] never`` -> ``madvise``."""
    found = re.search(r"\[([^\]]+)\]", text)
    return found.group(1) if found else text.strip()


def free_huge_pages(buddyinfo: str, order: int) -> int:
    """Free blocks of at least ``2**order`` pages in ``/proc/buddyinfo``, counted in such blocks.

    A free block of order ``o >= order`` holds ``2**(o - order)`` huge pages that the
    allocator hands out without compaction. The DMA zone is left out (tiny, and
    ordinary user allocations do not reach it past its lowmem reserve).
    """
    total = 0
    for line in buddyinfo.splitlines():
        # Node 0, zone   Normal   2331   1219 ...
        match = re.match(r"\s*Node\s+\d+,\s*zone\s+(\S+)\s+(.*)$", line)
        if not match or match.group(1) in _ZONES_EXCLUDED:
            continue
        counts = [int(c) for c in match.group(2).split()]
        total += sum(count << (o - order) for o, count in enumerate(counts) if o >= order)
    return total


def read_thp_state() -> ThpState | None:
    """The node's THP settings and free huge pages; None where the kernel has no THP."""
    try:
        enabled = selected_mode((THP_DIR / "enabled").read_text())
        defrag = selected_mode((THP_DIR / "defrag").read_text())
        huge = int((THP_DIR / "hpage_pmd_size").read_text())
        buddy = BUDDYINFO.read_text()
    except (OSError, ValueError):
        return None
    page = mmap.PAGESIZE
    if huge <= page or huge & (huge - 1):
        return None
    try:
        min_free = int(MIN_FREE_KBYTES.read_text()) << 10
    except (OSError, ValueError):
        min_free = 0
    order = (huge // page).bit_length() - 1
    return ThpState(enabled, defrag, huge, free_huge_pages(buddy, order), min_free)


def plan_huge_pages(size: int, state: ThpState | None, mode: str = "never") -> HugePagePlan:
    """Decide the huge-page advice for a fresh ``size``-byte buffer; never risk a stall.

    ``mode``:

    * ``never`` (the loader's default): ask for no huge pages. The buffer gets 4 KiB
      pages, unless the node runs THP ``enabled=always``, where the kernel uses free
      huge pages by itself; only under ``defrag=always`` would it compact for them,
      and there the buffer is advised ``MADV_NOHUGEPAGE``.
    * ``free``: ask for as many huge pages as the buddy allocator holds free right now,
      less a reserve (max(64 MiB, 2 x ``min_free_kbytes``) plus 1/8 of the free ones),
      so that every advised fault is served from the free lists; the whole buffer where
      ``defrag`` (``defer``, ``never``) never compacts on an advised fault.
    * ``always``: advise the whole buffer, the behaviour before issue 14, kept only to
      measure the stall it causes.

    Why ``never`` is the default (docs/performance.md, "Sealed weights"): on the
    measured VM, huge pages taken from long-free memory cost *more* to fault in than
    4 KiB pages (the host backs them on first touch), and on a serving node whose page
    cache fills memory, free huge pages are rare anyway. ``free`` wins only where the
    free blocks are warm (e.g. just released by a previous pod) or on bare metal.
    """
    if mode not in {"never", "free", "always"}:
        raise ValueError(f"huge page mode must be never, free or always, not {mode!r}")
    if state is None:
        return HugePagePlan(0, False, "no transparent huge pages on this kernel")
    if state.enabled == "never":
        return HugePagePlan(0, False, "transparent huge pages disabled (enabled=never)")
    huge = state.huge_page_size
    needed = -(-size // huge)
    if mode == "always":
        return HugePagePlan(needed * huge, False, "every page advised (mode always)")
    kernel_compacts = state.enabled == "always" and state.defrag == "always"
    if mode == "never":
        if kernel_compacts:
            return HugePagePlan(0, True, "enabled=always, defrag=always: refuse huge pages")
        return HugePagePlan(0, False, f"4 KiB pages (enabled={state.enabled})")
    if state.enabled == "always" and not kernel_compacts:
        return HugePagePlan(0, False, f"the kernel uses free huge pages unadvised "
                                      f"(defrag={state.defrag} never stalls)")
    if state.enabled == "madvise" and state.defrag not in _STALLS_WHEN_ADVISED:
        return HugePagePlan(needed * huge, False,
                            f"advised faults never compact (defrag={state.defrag})")
    reserve = -(-max(RESERVE_MIN_BYTES, 2 * state.min_free_bytes) // huge)
    reserve += state.free_huge_pages // 8
    covered = min(needed, max(0, state.free_huge_pages - reserve))
    if covered < MIN_HUGE_PAGES:
        covered = 0
    note = f"{state.free_huge_pages} huge pages free, {reserve} kept for the node"
    return HugePagePlan(covered * huge, kernel_compacts and covered < needed, note)


@dataclass
class AnonymousBuffer:
    """A private anonymous mapping whose first byte is huge-page aligned."""

    mapping: mmap.mmap
    offset: int  # of the aligned start inside ``mapping``
    size: int
    address: int  # of the aligned start
    plan: HugePagePlan


def anonymous_buffer(size: int, plan: HugePagePlan, huge_page_size: int) -> AnonymousBuffer:
    """Map ``size`` bytes (untouched: no page is allocated yet) and apply ``plan``.

    The mapping is over-allocated by one huge page so that its usable start is
    aligned: a huge page can only back an aligned 2 MiB range, and tensor data
    starts a few bytes into the buffer anyway. The unused slack is never touched,
    so it costs address space, not memory.
    """
    align = max(huge_page_size, mmap.PAGESIZE)
    mapping = mmap.mmap(-1, size + align, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    base = _pages.buffer_address(mapping)
    address = -(-base // align) * align
    rounded = -(-size // align) * align
    huge = min(plan.huge_bytes, rounded)
    # Advice is best effort: a kernel that refuses it just gives 4 KiB pages.
    _pages.madvise(address, huge, MADV_HUGEPAGE)
    if plan.no_huge_rest:
        _pages.madvise(address + huge, rounded - huge, MADV_NOHUGEPAGE)
    return AnonymousBuffer(mapping, address - base, size, address, plan)


def lock_as_faulted(address: int, size: int) -> tuple[int, int] | None:
    """Lock the untouched buffer at ``address`` page by page as it is faulted in.

    ``MADV_DONTDUMP`` and ``mlock2(MLOCK_ONFAULT)`` before any page exists: each page
    is locked the moment the decrypting thread that writes it faults it in, so memory
    holding plaintext is never swappable, and the load needs no ``mlock`` pass over a
    populated GiB afterwards (measured 0.10-0.13 s on one thread, at the end of the
    load, where nothing else overlaps it). Returns the locked page range, or None where
    the kernel refused either call (``RLIMIT_MEMLOCK`` without ``CAP_IPC_LOCK``): the runtime's
    final ``lock_tensors`` then tries again and reports, as it did before.
    """
    page = mmap.PAGESIZE
    start = address // page * page
    end = -(-(address + size) // page) * page
    if end <= start:
        return None
    if _pages.madvise(start, end - start, _pages.MADV_DONTDUMP) != 0:
        return None
    return (start, end) if _pages.lock_on_fault(start, end - start) == 0 else None


def prefaulter(address: int, size: int) -> Callable[[int, int], None]:
    """A function that faults in bytes ``[start, end)`` of the buffer at ``address``.

    Called by each decrypting thread for the chunk it is about to write, so pages are
    faulted on all cores (``MADV_POPULATE_WRITE``, see ``pipeline._pages``).
    Never changes the contents of a page already present.
    """
    return _pages.populator(address, size, _pages.MADV_POPULATE_WRITE)
