"""Stopping the helper processes the pipeline starts (registry, nginx, Prometheus), and
the environment processes inherit from a git hook.

Each local service is a child process that must not outlive its owner: ask politely
(SIGTERM, so it can flush and remove its files), then insist (SIGKILL).
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping

__all__ = ["GIT_REPOSITORY_VARS", "stop_process", "without_git_repository_env"]


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
