"""Argo CD: the Application manifests that sync the GitOps repository, and the wait.

One ``Application`` per environment (``argocd/<env>.yaml`` in the GitOps repository),
with two sources as Argo CD's multi-source Applications take them: the secure-runtime
chart from the project's repository, rendered with ``$values/environments/<env>/
values.yaml`` from the GitOps repository (``ref: values``). Automated sync with prune
and self-heal, so what git says is what runs.

After each push, :class:`ArgoCD` waits through the Argo CD REST API
(``GET /api/v1/applications/{name}``, bearer token) until the Application reports the
pushed revision ``Synced`` and ``Healthy``; ``Degraded`` (an aborted rollout, a pod that
refused its model) fails instead of waiting out the timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from pipeline.config import EnvironmentSettings, ReleaseSettings
from pipeline.errors import AuthError, ConfigError, PolicyError, UnreachableError

API_VERSION = "argoproj.io/v1alpha1"


def application_name(env: str) -> str:
    return f"secure-runtime-{env}"


def application(env: EnvironmentSettings, settings: ReleaseSettings,
                values_path: str) -> dict[str, Any]:
    """The Application that deploys ``env`` from the GitOps repository's values."""
    if not settings.chart_repo_url or not settings.gitops_repo_url:
        raise ConfigError("Argo CD Applications need release.chart.repo_url (the chart's git "
                          "repository) and release.gitops.repo_url (this GitOps repository)")
    return {
        "apiVersion": API_VERSION,
        "kind": "Application",
        "metadata": {
            "name": application_name(env.name),
            "namespace": settings.argocd_namespace,
            "labels": {"app.kubernetes.io/part-of": "secure-model-pipeline",
                       "secure-model-pipeline/environment": env.name},
            "finalizers": ["resources-finalizer.argocd.argoproj.io"],
        },
        "spec": {
            "project": settings.argocd_project,
            "destination": {"server": env.cluster, "namespace": env.namespace},
            "sources": [
                {"repoURL": settings.chart_repo_url, "path": settings.chart_path,
                 "targetRevision": settings.chart_revision,
                 "helm": {"releaseName": "secure-runtime",
                          "valueFiles": [f"$values/{values_path}"]}},
                {"repoURL": settings.gitops_repo_url, "targetRevision": settings.branch,
                 "ref": "values"},
            ],
            "syncPolicy": {
                "automated": {"prune": True, "selfHeal": True},
                "syncOptions": ["CreateNamespace=true"],
                "retry": {"limit": 3, "backoff": {"duration": "10s", "factor": 2,
                                                  "maxDuration": "2m"}},
            },
            "revisionHistoryLimit": 20,
        },
    }


def _check_server(url: str) -> str:
    parts = urlsplit(url)
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme not in ("https", "http") or (parts.scheme == "http" and not loopback):
        raise ConfigError(f"Argo CD server {url!r}: https:// required (http only on loopback)")
    return url.rstrip("/")


class ArgoCD:
    """The two calls of the Argo CD REST API a promotion needs, nothing more."""

    def __init__(self, server: str, token: str | None, *, namespace: str = "argocd",
                 timeout: float = 10.0, verify: bool | str = True) -> None:
        if not token:
            raise ConfigError("Argo CD server configured but no token: set "
                              "PIPELINE_ARGOCD_TOKEN or release.argocd.token_file")
        self.server = _check_server(server)
        self.namespace = namespace
        self.timeout = timeout
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {token}"
        self._session.verify = verify

    def get(self, name: str) -> dict[str, Any]:
        """The Application object (``GET /api/v1/applications/{name}``)."""
        url = f"{self.server}/api/v1/applications/{quote(name, safe='')}"
        try:
            r = self._session.get(url, params={"appNamespace": self.namespace},
                                  timeout=self.timeout)
        except requests.RequestException as exc:
            raise UnreachableError(f"Argo CD at {self.server} is unreachable: "
                                   f"{exc.__class__.__name__}") from None
        if r.status_code in (401, 403):
            raise AuthError(f"Argo CD refused the token (HTTP {r.status_code})")
        if r.status_code == 404:
            raise ConfigError(f"Argo CD has no Application {name!r} (run `pipeline gitops "
                              "init` and apply argocd/*.yaml)")
        if r.status_code >= 400:
            raise UnreachableError(f"Argo CD answered HTTP {r.status_code} for {name}")
        try:
            body = r.json()
        except ValueError:
            raise UnreachableError(f"{self.server} did not answer like Argo CD") from None
        if not isinstance(body, dict) or body.get("kind", "Application") != "Application":
            raise UnreachableError(f"{self.server} did not answer with an Application")
        return body

    def refresh(self, name: str) -> None:
        """Ask Argo CD to look at git now (``?refresh=normal``) instead of polling later."""
        url = f"{self.server}/api/v1/applications/{quote(name, safe='')}"
        try:
            self._session.get(url, params={"appNamespace": self.namespace,
                                           "refresh": "normal"}, timeout=self.timeout)
        except requests.RequestException as exc:
            raise UnreachableError(f"Argo CD at {self.server} is unreachable: "
                                   f"{exc.__class__.__name__}") from None

    def wait(self, name: str, revision: str, *, timeout: float = 300.0, poll: float = 2.0,
             on_status: Callable[[str], None] | None = None,
             sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
        """Until ``name`` runs ``revision``: Synced and Healthy (returns the status)."""
        self.refresh(name)
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            status = self.get(name).get("status") or {}
            sync = status.get("sync") or {}
            health = (status.get("health") or {}).get("status", "Unknown")
            revisions: Sequence[str] = sync.get("revisions") or [sync.get("revision") or ""]
            at = revision in revisions
            now = f"{sync.get('status', 'Unknown')}/{health} at " \
                  f"{', '.join(r[:12] for r in revisions if r) or '?'}"
            if now != last and on_status:
                on_status(f"Argo CD {name}: {now}")
            last = now
            if at and sync.get("status") == "Synced":
                if health == "Healthy":
                    return status
                if health == "Degraded":
                    message = (status.get("health") or {}).get("message") or "no message"
                    raise PolicyError(f"Argo CD reports {name} Degraded at {revision[:12]}: "
                                      f"{message}")
            if time.monotonic() >= deadline:
                raise UnreachableError(f"Argo CD {name} did not reach Synced/Healthy at "
                                       f"{revision[:12]} within {timeout:.0f}s (last: {now})")
            sleep(poll)


__all__ = ["API_VERSION", "ArgoCD", "application", "application_name"]
