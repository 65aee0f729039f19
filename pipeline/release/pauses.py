"""An indefinite ``pause`` step, and ``pipeline promote --continue`` that ends it.

Argo Rollouts holds a Rollout at ``pause: {}`` until someone promotes it (``kubectl argo
rollouts promote``). Locally the promotion is a process that owns the pods and nginx,
so it cannot exit and come back: it waits, and ``pipeline promote --continue`` (another
process) tells it to go on. The two meet through files in the repository's git directory
(never committed): the waiter writes ``pipeline-paused-<env>`` (what waits, since when)
and polls for ``pipeline-continue-<env>``; ``--continue`` refuses when nothing waits, so
a stray ``--continue`` cannot skip a later pause.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from pipeline._fileio import write_atomic
from pipeline.errors import ConflictError


def _paths(git_dir: Path, env: str) -> tuple[Path, Path]:
    return git_dir / f"pipeline-paused-{env}", git_dir / f"pipeline-continue-{env}"


def wait_for_continue(git_dir: Path, env: str, what: str, *, poll: float = 0.2,
                      sleep: Callable[[float], None] = time.sleep) -> None:
    """Block until ``pipeline promote --continue`` for ``env``; the marker is removed."""
    paused, go = _paths(git_dir, env)
    go.unlink(missing_ok=True)  # an old --continue must not skip this pause
    write_atomic(paused, json.dumps({"pid": os.getpid(), "what": what,
                                     "since": time.time()}), mode=0o644)
    try:
        while not go.exists():
            sleep(poll)
    finally:
        go.unlink(missing_ok=True)
        paused.unlink(missing_ok=True)


def signal_continue(git_dir: Path, env: str) -> str:
    """End the pause ``env``'s promotion waits in; ConflictError (exit 16) if none waits."""
    paused, go = _paths(git_dir, env)
    try:
        info = json.loads(paused.read_text(encoding="utf-8"))
        pid = int(info["pid"])
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError, TypeError):
        raise ConflictError(f"no promotion of {env!r} is waiting at a pause "
                            "(nothing to continue)") from None
    write_atomic(go, str(pid), mode=0o644)
    return str(info.get("what", "pause"))


__all__ = ["signal_continue", "wait_for_continue"]
