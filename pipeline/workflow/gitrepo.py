"""The ``git-repo`` parameter on this machine: a URL as given, a local path made absolute.

Why: every step runs in its own working directory (the run's workspace), so a relative
``git-repo`` (``-p git-repo=.``) would be cloned relative to the workspace and fail with
git's exit 128. The local runner resolves it against the directory the command was
started in, to the repository's top level, and refuses a path that is no repository
with a message that names the fix.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from pipeline._process import without_git_repository_env
from pipeline.errors import ConfigError

#: ``scheme://...`` or scp-like ``user@host:path`` / ``host:path`` (no slash before ':').
_REMOTE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*://|[^/:]+:(?!$))")


def git_env() -> dict[str, str]:
    """This process's environment without the variables that pin a git repository."""
    return without_git_repository_env(os.environ)


def is_remote(value: str) -> bool:
    """Whether ``value`` is a git URL (cloned as given) rather than a local path."""
    return bool(_REMOTE.match(value)) and not Path(value).exists()


def _git(path: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(path), "rev-parse", *args], env=git_env(),
                              capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def resolve_git_repo(value: str, cwd: Path | None = None) -> str:
    """An absolute repository path (or the URL unchanged); ConfigError when not a repository.

    Empty means the current directory, as ``git`` itself would take it.
    """
    if value and is_remote(value):
        return value
    base = Path.cwd() if cwd is None else cwd
    path = (base / Path(value or ".").expanduser()).resolve()
    bare = _git(path, "--is-bare-repository")
    if bare == "true":
        found = _git(path, "--absolute-git-dir")
    elif bare == "false":
        found = _git(path, "--show-toplevel")
    else:
        found = None
    if not found:
        shown = f"{value!r} (resolved to {path})" if value else f"(empty: {path})"
        raise ConfigError(
            f"git-repo {shown} is not a git repository: run from inside the project's "
            "repository, or pass -p git-repo=PATH naming it (a relative PATH is resolved "
            "against the current directory) or a git URL")
    return found
