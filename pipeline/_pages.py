"""Faulting pages in ahead of use, one system call per chunk, on the thread that uses them.

Decryption reads a memory-mapped ciphertext and writes into fresh memory; on a cold
start both page tables are empty, and a trap per 4 KiB page is most of the load's cost
(each trap is especially dear in a VM). ``MADV_POPULATE_READ`` / ``MADV_POPULATE_WRITE``
(Linux 5.14) fault a whole range in one call. The decrypting threads call a
:func:`populator` for the chunk they are about to read or write, so the work is spread
over every core and overlaps the cryptography, instead of one ``MAP_POPULATE`` (or one
pre-touching pass) on a single thread before anything else can start.

ctypes releases the GIL around ``madvise`` and ``mlock2``; Python's ``mmap.madvise``
does not.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
from collections.abc import Callable

MADV_DONTNEED = 4
MADV_POPULATE_READ = 22
MADV_POPULATE_WRITE = 23
MADV_DONTDUMP = 16
#: mlock2(2) flag: lock pages as they are faulted in, without faulting them now.
MLOCK_ONFAULT = 1

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.madvise.restype = ctypes.c_int
_mlock2 = getattr(_libc, "mlock2", None)  # glibc >= 2.27
if _mlock2 is not None:
    _mlock2.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    _mlock2.restype = ctypes.c_int


class _PyBuffer(ctypes.Structure):
    """CPython's ``Py_buffer`` (stable since 3.3); only ``buf`` is read."""

    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    ]


_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
_get_buffer.restype = ctypes.c_int
_release_buffer = ctypes.pythonapi.PyBuffer_Release
_release_buffer.argtypes = [ctypes.POINTER(_PyBuffer)]
_release_buffer.restype = None


def buffer_address(data: object) -> int:
    """Address of the first byte of a (possibly read-only) contiguous buffer."""
    view = _PyBuffer()
    if _get_buffer(data, ctypes.byref(view), 0) != 0:  # PyBUF_SIMPLE; raises on failure
        raise TypeError("object does not expose a buffer")
    try:
        return int(view.buf or 0)
    finally:
        _release_buffer(ctypes.byref(view))


def madvise(address: int, length: int, advice: int) -> int:
    """``madvise(2)`` with the GIL released; 0, or the errno."""
    if length <= 0:
        return 0
    if _libc.madvise(ctypes.c_void_p(address), length, advice) == 0:
        return 0
    return ctypes.get_errno()


def lock_on_fault(address: int, length: int) -> int:
    """``mlock2(MLOCK_ONFAULT)``: lock the range's resident pages, and every other page
    the moment it is faulted in (by whichever thread touches it); 0, or the errno.

    Applied before a buffer is written, memory that will hold plaintext is never
    swappable and no pass over its pages is needed afterwards (``mlock`` of a populated
    GiB walks 262,144 page-table entries on one thread); applied again to a range still
    locked, the kernel only checks its flags. ``RLIMIT_MEMLOCK`` applies to the whole
    range at once: ENOMEM/EPERM without ``CAP_IPC_LOCK`` or a large enough limit
    (ENOSYS where libc or the kernel lacks ``mlock2``).
    """
    if length <= 0:
        return 0
    if _mlock2 is None:
        return errno.ENOSYS
    if _mlock2(ctypes.c_void_p(address), length, MLOCK_ONFAULT) == 0:
        return 0
    return ctypes.get_errno()


def populator(address: int, size: int, advice: int) -> Callable[[int, int], None]:
    """A function that faults in bytes ``[start, end)`` of the ``size`` bytes at ``address``.

    ``advice`` is ``MADV_POPULATE_READ`` or ``MADV_POPULATE_WRITE``. Best effort: where the
    kernel lacks it (EINVAL before 5.14) it stops trying, and on any other refusal (a
    cgroup at its memory limit) it does nothing; the access itself then faults the
    pages, as it would have anyway. It never changes what the memory holds.
    """
    page = mmap.PAGESIZE
    supported = [True]

    def populate(start: int, end: int) -> None:
        if not supported[0]:
            return
        low = (address + max(0, start)) // page * page
        high = address + min(end, size)
        if high > low and madvise(low, high - low, advice) == errno.EINVAL:
            supported[0] = False

    return populate


def releaser(address: int, size: int) -> Callable[[int, int], None]:
    """A function that unmaps bytes ``[start, end)`` of a *shared file* mapping at ``address``.

    For a ciphertext the loader has finished reading: ``MADV_DONTNEED`` on a shared file
    mapping drops the process's page-table entries only (the page cache keeps the
    file), so a 16 GiB model does not leave 16 GiB of file pages counted in the
    process's resident set. Only whole pages inside the range are released.
    Best effort, like :func:`populator`; never use it on private or anonymous memory.
    """
    page = mmap.PAGESIZE

    def release(start: int, end: int) -> None:
        low = -(-(address + max(0, start)) // page) * page
        high = (address + min(end, size)) // page * page
        if high > low:
            madvise(low, high - low, MADV_DONTNEED)

    return release
