"""Process hardening for a server that holds decrypted weights and, briefly, key material.

Each measure closes one way plaintext could leave the process:

* not root: a compromised model server should not own the node's files;
* no core dumps (``RLIMIT_CORE`` 0 and ``PR_SET_DUMPABLE`` 0): a crash must not
  write the weights to disk, and a non-dumpable process cannot be ptrace-attached
  or have its ``/proc/<pid>/mem`` read by other processes of the same user;
* ``mlock`` on the weights: they never reach swap; ``MADV_DONTDUMP`` as a second
  barrier should dumps be re-enabled by someone;
* secrets out of the environment: a PIN handed in by env is removed from
  ``os.environ`` *and* overwritten in the kernel's copy (``/proc/self/environ``),
  so a later ``/proc`` read or child process cannot recover it.

Failures of the first two are fatal (:class:`RuntimeSecurityError`, fail closed);
``mlock`` needs ``CAP_IPC_LOCK`` or a large enough ``RLIMIT_MEMLOCK``, which many
pods lack, so it is best effort and reported (log line and metric), never silent.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import mmap
import os
import resource
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field

import torch

from pipeline import _pages
from pipeline.errors import RuntimeSecurityError

log = logging.getLogger("secure_runtime.hardening")

PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
MADV_DONTDUMP = _pages.MADV_DONTDUMP
ALLOW_ROOT_ENV = "SECURE_RUNTIME_ALLOW_ROOT"

#: Environment variables that carry key material or the means to it; removed after load.
SECRET_ENV_NAMES: tuple[str, ...] = (
    "PIPELINE_PKCS11_PIN",
    "PIPELINE_KMS_TOKEN",
    "VAULT_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "GOOGLE_APPLICATION_CREDENTIALS_JSON",
    "AZURE_CLIENT_SECRET",
)

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]
_libc.prctl.restype = ctypes.c_int
_libc.mlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mlock.restype = ctypes.c_int
_libc.munlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.munlock.restype = ctypes.c_int


def truthy(value: str | None) -> bool:
    """Environment-style booleans: 1/true/yes/on (any case) are true."""
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def check_user(allow_root: bool, *, env: Mapping[str, str] | None = None,
               euid: int | None = None) -> None:
    """Refuse to run as root unless explicitly allowed (flag or SECURE_RUNTIME_ALLOW_ROOT=1)."""
    env = os.environ if env is None else env
    euid = os.geteuid() if euid is None else euid
    if euid == 0 and not (allow_root or truthy(env.get(ALLOW_ROOT_ENV))):
        raise RuntimeSecurityError(
            "refusing to run as root (uid 0): run as an unprivileged user, or pass "
            f"--allow-root / {ALLOW_ROOT_ENV}=1 for development"
        )


def disable_core_dumps() -> None:
    """No core file and no ptrace/proc-mem access by peers; RuntimeSecurityError if refused."""
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError) as exc:
        raise RuntimeSecurityError(f"cannot disable core dumps (RLIMIT_CORE): {exc}") from None
    if _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise RuntimeSecurityError(f"prctl(PR_SET_DUMPABLE, 0) failed: {os.strerror(err)}")
    if is_dumpable():
        raise RuntimeSecurityError("process is still dumpable after PR_SET_DUMPABLE 0")


def is_dumpable() -> bool:
    """``prctl(PR_GET_DUMPABLE)``: True when a crash could write a core / peers may attach."""
    return int(_libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)) != 0


def core_limit() -> tuple[int, int]:
    """Current (soft, hard) RLIMIT_CORE."""
    return resource.getrlimit(resource.RLIMIT_CORE)


@dataclass
class MlockReport:
    """What :func:`lock_tensors` achieved; ``error`` says why not everything is locked."""

    requested_bytes: int = 0
    locked_bytes: int = 0
    error: str | None = None
    ranges: list[tuple[int, int]] = field(default_factory=list, repr=False)

    @property
    def complete(self) -> bool:
        """True when every byte of host-resident weights is locked."""
        return self.error is None and self.locked_bytes == self.requested_bytes


def _host_ranges(tensors: Iterable[torch.Tensor]) -> list[tuple[int, int]]:
    """Page-aligned, merged address ranges of the CPU storages behind ``tensors``."""
    page = mmap.PAGESIZE
    spans: list[tuple[int, int]] = []
    for tensor in tensors:
        if tensor.device.type != "cpu":
            continue
        storage = tensor.untyped_storage()
        size = storage.nbytes()
        if size == 0:
            continue
        start = storage.data_ptr()
        spans.append((start - start % page, start + size))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        end = -(-end // page) * page
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def lock_tensors(tensors: Iterable[torch.Tensor]) -> MlockReport:
    """mlock + MADV_DONTDUMP the host memory of ``tensors`` (GPU tensors need neither).

    Locked with ``mlock2(MLOCK_ONFAULT)`` (``mlock`` where libc or the kernel lacks it):
    memory the loader locked as it was faulted in (``_hostmem.lock_as_faulted``) is
    found locked and costs a flag check (0.03 ms per GiB), where ``mlock`` would walk
    every page again on one thread at the very end of the load (0.09-0.12 s per GiB);
    memory not locked yet has its resident pages locked without being faulted in again
    (0.06 s per GiB against mlock's 0.09-0.12), and any page faulted in later is locked
    as it appears. The kernel knows what is locked, so nobody has to tell this function.
    """
    ranges = _host_ranges(tensors)
    report = MlockReport(requested_bytes=sum(end - start for start, end in ranges))
    for start, end in ranges:
        length = end - start
        _pages.madvise(start, length, MADV_DONTDUMP)
        err = _pages.lock_on_fault(start, length)
        if err in (errno.ENOSYS, errno.EINVAL):  # no mlock2, or no MLOCK_ONFAULT
            err = 0 if _libc.mlock(ctypes.c_void_p(start), length) == 0 else ctypes.get_errno()
        if err == 0:
            report.locked_bytes += length
            report.ranges.append((start, end))
        else:
            hint = " (needs CAP_IPC_LOCK or a higher RLIMIT_MEMLOCK)" if err in (
                errno.EPERM, errno.ENOMEM, errno.EAGAIN) else ""
            report.error = f"mlock of {length} bytes failed: {os.strerror(err)}{hint}"
    return report


def unlock(report: MlockReport) -> None:
    """Undo :func:`lock_tensors` (tests, or before freeing the weights)."""
    for start, end in report.ranges:
        _libc.munlock(ctypes.c_void_p(start), end - start)
    report.ranges.clear()
    report.locked_bytes = 0


def locked_kib() -> int:
    """``VmLck`` of this process in KiB (what the kernel says is locked)."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmLck:"):
                return int(line.split()[1])
    return 0


def _environ_region() -> tuple[int, int] | None:
    """Start and end address of the initial environment block (/proc/self/stat 50-51)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    try:  # fields[0] is field 3 (state); env_start is field 50
        return int(fields[47]), int(fields[48])
    except (IndexError, ValueError):
        return None


def _wipe_initial_environ(names: set[str]) -> None:
    """Overwrite ``NAME=value`` in the initial env block, which ``unsetenv`` leaves intact."""
    region = _environ_region()
    if region is None:
        return
    start, end = region
    block = ctypes.string_at(start, end - start)
    offset = 0
    for entry in block.split(b"\0"):
        name = entry.split(b"=", 1)[0].decode("latin-1")
        if name in names and b"=" in entry:
            ctypes.memset(start + offset, 0, len(entry))
        offset += len(entry) + 1


def scrub_environment(
    names: Iterable[str] = SECRET_ENV_NAMES, env: MutableMapping[str, str] | None = None
) -> list[str]:
    """Remove secret-bearing variables after use; returns the names that were present.

    Values are never logged. With the real ``os.environ`` the kernel's copy of the
    initial environment is overwritten too, so ``/proc/<pid>/environ`` stops
    showing the secret.
    """
    target = os.environ if env is None else env
    removed = [name for name in names if name in target]
    for name in removed:
        target.pop(name, None)
    if env is None and removed:
        _wipe_initial_environ(set(removed))
    return removed


def environ_block() -> bytes:
    """The kernel's view of this process's initial environment (for tests and checks)."""
    with open("/proc/self/environ", "rb") as handle:
        return handle.read()


__all__ = [
    "ALLOW_ROOT_ENV",
    "MlockReport",
    "SECRET_ENV_NAMES",
    "check_user",
    "core_limit",
    "disable_core_dumps",
    "environ_block",
    "is_dumpable",
    "lock_tensors",
    "locked_kib",
    "scrub_environment",
    "truthy",
    "unlock",
]
