"""Environments (dev → staging → prod, from pipeline.yaml) and their GitOps repository.

``init_repository`` lays the repository out for Argo CD: one Application per declared
environment under ``argocd/``, each rendering the chart with that environment's
``environments/<env>/values.yaml``. ``Publisher`` is what happens after each commit of
a promotion when a remote is configured: push (a rejected, non-fast-forward push is a
ConflictError, never a force-push), then, with an Argo CD server, wait for that
environment's Application to run the pushed revision.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from pipeline.config import EnvironmentSettings, ReleaseSettings
from pipeline.errors import ConfigError
from pipeline.release.argocd import ArgoCD, application, application_name
from pipeline.release.gitops import GitOpsRepo


def merge_values(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` deep-merged with ``override`` (override wins; inputs untouched)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_values(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def environment_values(repo: GitOpsRepo, env: EnvironmentSettings) -> dict[str, Any]:
    """The chart values a commit of ``env`` starts from: what is committed, with the
    environment's values from pipeline.yaml over it (pipeline.yaml is where they are set)."""
    return merge_values(repo.values(env.name), env.values)


def init_repository(repo: GitOpsRepo, settings: ReleaseSettings) -> tuple[list[str], str | None]:
    """Write ``argocd/<env>.yaml`` for every environment and commit them (None: unchanged)."""
    if not settings.environments:
        raise ConfigError("no environments declared: add release.environments to pipeline.yaml")
    files: dict[str, str] = {}
    for env in settings.environments:
        app = application(env, settings, GitOpsRepo.values_relpath(env.name))
        files[f"argocd/{env.name}.yaml"] = (
            f"# Argo CD Application for {env.name}, written by `pipeline gitops init`.\n"
            + yaml.safe_dump(app, sort_keys=False))
    files["argocd/README.md"] = (
        "# Argo CD Applications\n\n"
        "Apply these once (`kubectl apply -n " + settings.argocd_namespace + " -f argocd/`).\n"
        "Order of promotion: " + " -> ".join(e.name for e in settings.environments) + ".\n"
        "Each renders helm/secure-runtime with environments/<env>/values.yaml; "
        "environments/<env>/release.yaml is the release record.\n")
    unchanged = all((repo.path / rel).is_file() and (repo.path / rel).read_text() == text
                    for rel, text in files.items())
    if unchanged and not repo.local_changes(*files):
        return sorted(files), None
    sha = repo.commit_files(files, "gitops: Argo CD Applications for "
                                   + ", ".join(e.name for e in settings.environments))
    return sorted(files), sha


@dataclass
class Publisher:
    """After each commit: push to the remote, then wait for Argo CD (when configured)."""

    repo: GitOpsRepo
    remote: str
    branch: str
    env: str
    argocd: ArgoCD | None = None
    timeout: float = 300.0
    poll: float = 2.0
    on_event: Callable[[str], None] | None = None

    def __call__(self, sha: str) -> None:
        self.repo.push(self.remote, self.branch)
        if self.on_event:
            self.on_event(f"pushed {sha[:12]} to {self.remote} {self.branch}")
        if self.argocd is not None:
            self.argocd.wait(application_name(self.env), sha, timeout=self.timeout,
                             poll=self.poll, on_status=self.on_event)


__all__ = ["Publisher", "environment_values", "init_repository", "merge_values"]
