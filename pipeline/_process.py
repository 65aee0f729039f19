"""Stopping the helper processes the pipeline starts (registry, nginx, Prometheus), waiting
for nginx to serve a new configuration, and the environment processes inherit from a git
hook.

Each local service is a child process that must not outlive its owner: ask politely
(SIGTERM, so it can flush and remove its files), then insist (SIGKILL).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import requests

from pipeline.errors import UnreachableError

__all__ = ["GIT_REPOSITORY_VARS", "NGINX_GENERATION_PATH", "nginx_workers", "stop_process",
           "wait_for_nginx_generation", "without_git_repository_env"]

#: The location every nginx config the pipeline writes answers with its generation number.
NGINX_GENERATION_PATH = "/__pipeline/generation"


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



#: Variables that say *which* repository git works on (``git rev-parse --local-env-vars``,
#: git 2.47) plus those a receive hook adds (quarantine, push options, push certificate).
#: A process a hook starts must not inherit them: ``git clone`` of another repository
#: would act on the hook's own (``fatal: not a git repository: '.'`` when the hook's
#: ``GIT_DIR=.`` meets another working directory).
GIT_REPOSITORY_VARS = frozenset({
    "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_CONFIG", "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT", "GIT_OBJECT_DIRECTORY", "GIT_DIR", "GIT_WORK_TREE",
    "GIT_IMPLICIT_WORK_TREE", "GIT_GRAFT_FILE", "GIT_INDEX_FILE", "GIT_NO_REPLACE_OBJECTS",
    "GIT_REPLACE_REF_BASE", "GIT_PREFIX", "GIT_INTERNAL_SUPER_PREFIX", "GIT_SHALLOW_FILE",
    "GIT_COMMON_DIR", "GIT_NAMESPACE", "GIT_QUARANTINE_PATH", "GIT_PUSH_OPTION_COUNT",
    "GIT_REFLOG_ACTION",
})
_GIT_PREFIXES = ("GIT_PUSH_OPTION_", "GIT_PUSH_CERT", "GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_")


def without_git_repository_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without the ``GIT_*`` variables that pin a repository or a hook's push.

    Identity (``GIT_AUTHOR_NAME``...), ``GIT_CONFIG_GLOBAL`` and transport settings
    (``GIT_SSH_COMMAND``) stay: they do not name a repository.
    """
    return {k: v for k, v in env.items()
            if k not in GIT_REPOSITORY_VARS and not k.startswith(_GIT_PREFIXES)}


def nginx_workers(process: subprocess.Popen[bytes] | None) -> int:
    """Children of an nginx master: old workers linger after a reload until they quit, and
    one that still accepts a connection would route it with the old configuration."""
    if process is None:
        return 0
    pid = process.pid
    try:
        return len(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
    except OSError:
        return 0


def wait_for_nginx_generation(process: subprocess.Popen[bytes] | None, base_url: str,
                              generation: int, error_log: Callable[[], str],
                              timeout: float = 10.0, interval: float = 0.01) -> None:
    """Return once nginx answers ``generation`` at :data:`NGINX_GENERATION_PATH` and no old
    worker is left; a reload is only done when both hold (the deploy's Services and the
    promotion's traffic split both switch weights through this)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise UnreachableError(f"nginx exited: {error_log()[-1500:]}")
        try:
            answer = requests.get(base_url + NGINX_GENERATION_PATH, timeout=1)
            if answer.text == str(generation) and nginx_workers(process) <= 1:
                return
        except requests.RequestException:
            pass
        time.sleep(interval)
    raise UnreachableError(f"nginx did not apply generation {generation}: "
                           f"{error_log()[-1500:]}")
