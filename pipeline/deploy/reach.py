"""Can a pod's uid reach a host directory the deploy binds into it?

Why a check of its own: pods run as their own uid (65532 for the chart's runtime) after
``setpriv``, and bubblewrap resolves every bind source, ``--ro-bind-fd`` too, by its
path (``/proc/self/fd/N`` names the path, and the kernel walks it as the pod's uid). A
directory below one that others may not search (``/root`` is 0700) then fails deep in
the pod's start with ``bwrap: Can't find source path /proc/self/fd/N: Permission
denied``. Checked up front, it is one clear error naming the directory to change.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pipeline.config import ROOT_DEPLOY_STATE
from pipeline.errors import ConfigError


def unreachable_parent(directory: Path) -> Path | None:
    """The first directory on the way to ``directory`` (itself included, as far as it
    exists) that others may not search, or None when the whole path is searchable."""
    path = Path(os.path.abspath(directory))
    for part in [*reversed(path.parents), path]:
        try:
            mode = part.stat().st_mode
        except FileNotFoundError:
            return None  # created later by the deploy, with a searchable mode
        if not mode & stat.S_IXOTH:
            return part
    return None


def check_pod_reachable(directory: Path, what: str) -> None:
    """ConfigError when pods (another uid than ours, as when we run as root) could not
    reach ``directory``; nothing to check when pods run as our own uid."""
    if os.geteuid() != 0:
        return
    blocked = unreachable_parent(directory)
    if blocked is not None:
        mode = stat.S_IMODE(blocked.stat().st_mode)
        raise ConfigError(
            f"{what} {directory} is not reachable by the pods' uid: {blocked} is mode "
            f"{mode:04o} (others may not search it); use a directory others may search, "
            f"e.g. {ROOT_DEPLOY_STATE} (the default state directory for root)")


__all__ = ["check_pod_reachable", "unreachable_parent"]
