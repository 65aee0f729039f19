"""Writing files and directories so that a crash never leaves a half-written one behind.

Every file the pipeline produces (layouts, locks, SBOMs, predicates, caches, keyrings,
signatures, sealed models) is written under a temporary name in the same directory,
flushed to disk, then renamed over the target, and the directory entry is flushed
too: readers see the old file or the new one, never a torn one, and after a power
cut the rename is either there or not. Directories (a sealed model, a pulled one)
are built the same way: under a temporary sibling, renamed into place when complete.

``no_clobber`` publishes with ``link`` instead of ``rename``: atomic too, and it never
replaces a file that appeared in the meantime (keys are never overwritten).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

__all__ = [
    "AtomicFile",
    "atomic_directory",
    "atomic_writer",
    "fsync_directory",
    "install_file",
    "sha256_file",
    "write_atomic",
]

_BLOCK = 1 << 20


def fsync_directory(directory: Path) -> None:
    """Flush ``directory``'s entries (a rename or link in it survives a crash)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def install_file(
    source: Path, target: Path, *, mode: int | None = None, no_clobber: bool = False
) -> None:
    """Move the complete file ``source`` to ``target`` (same file system), durably.

    ``mode`` is set exactly (the umask does not apply); ``no_clobber`` raises
    FileExistsError instead of replacing an existing ``target`` (``source`` is then
    left for the caller to remove).
    """
    fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    if no_clobber:
        os.link(source, target)  # atomic and, unlike rename, never replaces a file
        os.unlink(source)
    else:
        os.replace(source, target)
    fsync_directory(Path(target).parent)


class AtomicFile:
    """A temporary file beside its target; :meth:`commit` publishes it, :meth:`abort` drops it.

    For writers that learn the target's name only at the end (content-addressed blobs).
    """

    def __init__(self, directory: Path, prefix: str = ".tmp-", *, mode: int | None = None):
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
        self.path = Path(name)
        self.file: IO[bytes] = os.fdopen(fd, "wb")
        self._mode = mode
        self._done = False

    def commit(self, target: Path, *, no_clobber: bool = False) -> None:
        """Flush, then move to ``target`` (see :func:`install_file`)."""
        try:
            self.file.flush()
            self.file.close()
            install_file(self.path, Path(target), mode=self._mode, no_clobber=no_clobber)
        except BaseException:
            self.abort()
            raise
        self._done = True

    def abort(self) -> None:
        """Close and remove the temporary file (nothing reaches the target)."""
        if not self.file.closed:
            # Closing flushes what is buffered, which fails again on a full disk: the
            # descriptor is closed regardless, and the file must go whatever happened.
            with contextlib.suppress(OSError):
                self.file.close()
        if not self._done:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        self._done = True


@contextlib.contextmanager
def atomic_writer(
    path: Path, *, mode: int | None = None, no_clobber: bool = False
) -> Iterator[IO[bytes]]:
    """A binary file to write ``path``'s new content into; published when the block ends.

    An exception in the block leaves ``path`` as it was and no temporary file behind.
    """
    path = Path(path)
    pending = AtomicFile(path.parent, f".{path.name}.", mode=mode)
    try:
        yield pending.file
    except BaseException:
        pending.abort()
        raise
    pending.commit(path, no_clobber=no_clobber)


def write_atomic(
    path: Path, data: bytes | str, *, mode: int | None = None, no_clobber: bool = False
) -> None:
    """Replace ``path`` with ``data`` atomically (text is written as UTF-8).

    Without ``mode`` the file keeps the temporary file's 0600; ``no_clobber`` raises
    FileExistsError when ``path`` exists.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_writer(Path(path), mode=mode, no_clobber=no_clobber) as handle:
        handle.write(payload)


@contextlib.contextmanager
def atomic_directory(
    target: Path,
    *,
    mode: int | None = None,
    replace: bool = False,
    take_empty: bool = False,
    on_exists: Callable[[Path], BaseException] | None = None,
) -> Iterator[Path]:
    """A temporary sibling of ``target`` to build a directory in; renamed to ``target`` at the end.

    An existing ``target`` is replaced only with ``replace`` (the old tree is moved
    aside, then removed), or, when it is an empty directory (a placeholder), with
    ``take_empty``; else ``on_exists(target)`` is raised (default FileExistsError).
    On any exception the temporary tree is removed and ``target`` is untouched.
    ``mode`` is the final directory's mode (the temporary one starts as 0700).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        fsync_directory(tmp)
        _publish_directory(tmp, target, replace, take_empty, on_exists)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _publish_directory(
    tmp: Path,
    target: Path,
    replace: bool,
    take_empty: bool,
    on_exists: Callable[[Path], BaseException] | None,
) -> None:
    if take_empty and target.is_dir() and not target.is_symlink():
        with contextlib.suppress(OSError):
            target.rmdir()  # only succeeds for an empty placeholder
    if not target.exists() and not target.is_symlink():
        os.rename(tmp, target)
    elif replace:
        old = target.with_name(f".{target.name}.old-{secrets.token_hex(4)}")
        os.rename(target, old)
        os.rename(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        raise on_exists(target) if on_exists else FileExistsError(f"{target} already exists")
    fsync_directory(target.parent)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (never the whole file in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_BLOCK):
            digest.update(chunk)
    return digest.hexdigest()
