"""One promotion per environment at a time: a lock that a crash cannot leave behind.

Why ``flock`` on a file in the repository's git directory: the kernel drops the lock
when its holder dies, SIGKILL included, so a crashed promotion never blocks the next
one and no stale-lock heuristics (pid files, timeouts) are needed; a live holder is
never overtaken. The file also names the holder (pid, host, command, since when) so
the refusal can say who has it. It lives under ``.git/`` so it is never committed.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from pathlib import Path
from types import TracebackType

from pipeline.errors import ConflictError


class EnvironmentLock:
    """An exclusive, non-blocking lock on one environment of one GitOps repository."""

    def __init__(self, git_dir: Path, env: str) -> None:
        self.path = git_dir / f"pipeline-promote-{env}.lock"
        self.env = env
        self._fd: int | None = None

    def holder(self) -> dict[str, object]:
        """What the current (or last) holder wrote: empty when unreadable."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def acquire(self) -> EnvironmentLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            who = self.holder()
            raise ConflictError(
                f"another promotion of {self.env!r} is running (pid {who.get('pid', '?')} on "
                f"{who.get('host', '?')} since {who.get('since', '?')}): wait for it, or "
                "stop it and run `pipeline promote --resume`") from None
        from pipeline.release.gitops import now

        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": now(),
                "command": " ".join(sys.argv[:3])}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> EnvironmentLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


__all__ = ["EnvironmentLock"]
