"""A project's own workflow parameters: the ``workflows`` section of its pipeline.yaml.

Why from the revision being run: the parameters a project needs (its registry, its scan
environment) travel with the project, so a push of a new layout brings its parameters
along. They are read with ``git show REV:pipeline.yaml`` from the repository the run
clones, never from a working tree that may have moved on. Secrets never come from the
repository: a ``*-secret`` parameter there is refused (they name local directories
on this machine, set by ``pipeline hooks install -p`` or ``-p`` on the command line).

Shape (every key optional)::

    workflows:
      parameters: {repository: 127.0.0.1:5000/ml/tiny, registry-insecure: "true"}
      release: {scan-env: dev}          # one workflow's, over the common ones
      pr-check: {chart-set: "..."}
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ConfigError

PROJECT_FILE = "pipeline.yaml"


def declared_everywhere() -> set[str]:
    """Every parameter name some workflow declares."""
    from pipeline.workflow.runner import load_plan
    from pipeline.workflows.catalog import WORKFLOWS

    names: set[str] = set()
    for name in WORKFLOWS:
        names |= set(load_plan(name).parameters)
    return names


def read_project_file(repo: Path, revision: str) -> dict[str, Any]:
    """pipeline.yaml at ``revision`` of the local repository ``repo`` ({} when absent)."""
    from pipeline.workflow.gitrepo import git_env

    done = subprocess.run(["git", "-C", str(repo), "show", f"{revision}:{PROJECT_FILE}"],
                          env=git_env(), capture_output=True, check=False, timeout=60)
    if done.returncode != 0:
        return {}
    try:
        data = yaml.safe_load(done.stdout.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{PROJECT_FILE} at {revision[:12]}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{PROJECT_FILE} at {revision[:12]}: expected a mapping")
    return data


def _scalars(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a mapping of parameter names to values")
    out = {}
    for key, raw in value.items():
        if not isinstance(key, str) or isinstance(raw, (dict, list)) or raw is None:
            raise ConfigError(f"{where}.{key}: a parameter value is a string or a number")
        out[key] = str(raw).lower() if isinstance(raw, bool) else str(raw)
    return out


def project_parameters(data: Mapping[str, Any], workflow: str,
                       declared: set[str]) -> dict[str, str]:
    """The parameters ``data`` (a pipeline.yaml) gives ``workflow`` (declaring ``declared``).

    Common ones apply where the workflow declares them; a name no workflow declares, a
    ``*-secret`` or ``git-repo``/``git-revision`` is a ConfigError naming the key.
    """
    section = data.get("workflows")
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"{PROJECT_FILE}: workflows must be a mapping")
    known = declared_everywhere()
    common = _scalars(section.get("parameters"), "workflows.parameters")
    own = _scalars(section.get(workflow), f"workflows.{workflow}")
    for where, values in (("workflows.parameters", common), (f"workflows.{workflow}", own)):
        for key in values:
            if key not in known:
                raise ConfigError(f"{PROJECT_FILE}: {where}.{key}: no workflow has a "
                                  f"parameter {key!r} (known: {', '.join(sorted(known))})")
            if key.endswith("-secret") or key in ("git-repo", "git-revision"):
                raise ConfigError(
                    f"{PROJECT_FILE}: {where}.{key} may not come from the repository "
                    "(secrets name directories of this machine; the push sets git-repo "
                    "and git-revision): set it with 'pipeline hooks install -p "
                    f"{key}=...' or '-p {key}=...'")
    merged = {k: v for k, v in common.items() if k in declared}
    merged.update({k: v for k, v in own.items() if k in declared})
    return merged
