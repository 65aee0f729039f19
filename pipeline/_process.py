"""Stopping the helper processes the pipeline starts (registry, nginx, Prometheus).

Each local service is a child process that must not outlive its owner: ask politely
(SIGTERM, so it can flush and remove its files), then insist (SIGKILL).
"""

from __future__ import annotations

import subprocess

__all__ = ["stop_process"]


def stop_process(process: subprocess.Popen[bytes] | None, grace: float = 10.0) -> None:
    """Terminate ``process``, kill it after ``grace`` seconds; safe to call twice."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
