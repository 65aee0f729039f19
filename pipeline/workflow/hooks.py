"""``git push`` runs the workflows on this machine: a ``post-receive`` hook and its queue.

What Argo Events does on a cluster (a push to main submits ``release``, any other branch
``pr-check``) a bare repository's ``post-receive`` hook does here. The hook only queues
(:mod:`pipeline.workflow.runs`) and starts a detached worker, so the push returns at
once; the worker runs the queue one run at a time through the local runner, with the
pushed revision. Everything a run gets is recorded at install time in
``REPO/pipeline-runs/hooks.json``: the main branch, parameters (``-p``), and the local
directories standing in for the Kubernetes Secrets (created here, 0700, when not given:
a release signing key pair and a KEK keyring), and the bare GitOps repository the
release records itself in and promotes through (``gitops-repo``, ``pipeline-runs/gitops.git``).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline._fileio import write_atomic
from pipeline.errors import ConfigError, ConflictError
from pipeline.workflow.runs import Run, RunStore, spawn_worker

MARKER = "# pipeline-hook: post-receive"
CONFIG = "hooks.json"
_ZERO = "0" * 40
#: Parameters the push itself sets: never from hooks.json or the project.
PUSH_PARAMETERS = ("git-repo", "git-revision")


@dataclass(frozen=True)
class HookInstall:
    """What ``install_hook`` did: the hook file, the config, the parameters recorded."""

    repo: Path
    hook: Path
    config: Path
    main_branch: str
    parameters: dict[str, str]
    created_secrets: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"repo": str(self.repo), "hook": str(self.hook), "config": str(self.config),
                "main_branch": self.main_branch, "parameters": self.parameters,
                "created_secrets": list(self.created_secrets)}


def _bare(repo: Path) -> Path:
    from pipeline.workflow.gitrepo import git_env

    done = subprocess.run(["git", "-C", str(repo), "rev-parse", "--is-bare-repository"],
                          env=git_env(), capture_output=True, text=True, check=False)
    if done.returncode != 0 or done.stdout.strip() != "true":
        raise ConfigError(f"{repo} is not a bare git repository: the hook goes in the "
                          "repository you push to (create one with 'git init --bare "
                          f"{repo}', then 'git remote add origin {repo}')")
    return repo.resolve()


def _secrets(root: Path, parameters: dict[str, str]) -> list[str]:
    """Create the local stand-ins of the release's Secrets that ``parameters`` lacks."""
    from pipeline.sealing.keys.local import LocalKeyProvider
    from pipeline.signing.keypair import create_signing_keypair

    created = []
    base = root / "secrets"
    if "signing-key-secret" not in parameters:
        signing = base / "signing"
        if not (signing / "release.key").exists():
            signing.mkdir(parents=True, mode=0o700, exist_ok=True)
            create_signing_keypair(signing / "release.key", signing / "release.pub")
            created.append("signing-key-secret")
        parameters["signing-key-secret"] = str(signing)
    if "kek-secret" not in parameters:
        kek = base / "kek"
        if not (kek / "keyring.json").exists():
            kek.mkdir(parents=True, mode=0o700, exist_ok=True)
            LocalKeyProvider(kek / "keyring.json").create_key(
                parameters.get("kek-name", "release-kek"))
            created.append("kek-secret")
        parameters["kek-secret"] = str(kek)
    if "gitops-repo" not in parameters:
        # The release records itself and promotes through a GitOps repository; on this
        # machine a bare one beside the runs stands in for the team's (a git URL with -p).
        gitops = root / "gitops.git"
        if not gitops.exists():
            from pipeline.workflow.gitrepo import git_env

            subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(gitops)],
                           env=git_env(), check=True, capture_output=True)
            created.append("gitops-repo")
        parameters["gitops-repo"] = str(gitops)
    return created


def install_hook(repo: Path, *, parameters: Mapping[str, str] | None = None,
                 main_branch: str = "main", python: str | None = None,
                 force: bool = False) -> HookInstall:
    """Install the ``post-receive`` hook of the bare repository ``repo``.

    Re-installing ours replaces it (parameters given now replace the recorded ones); a
    hook that is not ours is kept unless ``force``: ConflictError.
    """
    from pipeline.workflow.params import declared_everywhere

    repo = _bare(Path(repo))
    given = dict(parameters or {})
    known = declared_everywhere()
    for key in given:
        if key in PUSH_PARAMETERS:
            raise ConfigError(f"-p {key}: the push sets {', '.join(PUSH_PARAMETERS)}")
        if key not in known:
            raise ConfigError(f"-p {key}: no workflow has that parameter (known: "
                              f"{', '.join(sorted(known - set(PUSH_PARAMETERS)))})")
    if not main_branch or main_branch.startswith("refs/") or " " in main_branch:
        raise ConfigError(f"--main-branch {main_branch!r}: a branch name, like 'main'")
    hook = repo / "hooks" / "post-receive"
    if hook.exists() and MARKER not in hook.read_text(encoding="utf-8", errors="replace") \
            and not force:
        raise ConflictError(f"{hook} exists and is not the pipeline's hook: keep it and "
                            "call 'pipeline hooks post-receive' from it, or --force")
    store = RunStore(repo)
    store.runs.mkdir(parents=True, exist_ok=True)
    store.root.chmod(0o700)
    created = _secrets(store.root, given)
    python = python or sys.executable
    config = store.root / CONFIG
    write_atomic(config, json.dumps({"version": 1, "main_branch": main_branch,
                                     "python": python, "parameters": given},
                                    indent=2, sort_keys=True) + "\n")
    hook.parent.mkdir(exist_ok=True)
    write_atomic(hook, "\n".join([
        "#!/bin/sh",
        MARKER + " (pipeline hooks install; docs/workflows.md)",
        f"# A push to {main_branch} queues 'release', any other branch 'pr-check';",
        "# a detached worker runs them one at a time: pipeline runs list --repo "
        + shlex.quote(str(repo)),
        f"exec {shlex.quote(python)} -P -m pipeline hooks post-receive --repo "
        f"{shlex.quote(str(repo))}",
        "",
    ]), mode=0o755)
    return HookInstall(repo, hook, config, main_branch, given, tuple(created))


def read_config(repo: Path) -> dict[str, Any]:
    """``hooks.json`` of ``repo``; ConfigError when the hook was never installed."""
    path = RunStore(repo).root / CONFIG
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{repo}: no pipeline hook installed (pipeline hooks install "
                          f"--repo {repo})") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("parameters"), dict):
        raise ConfigError(f"{path}: not a pipeline hook configuration")
    return data


def workflow_for(ref: str, main_branch: str) -> str | None:
    """``release`` for the main branch, ``pr-check`` for any other branch, None else."""
    if ref == f"refs/heads/{main_branch}":
        return "release"
    if ref.startswith("refs/heads/"):
        return "pr-check"
    return None


def on_push(repo: Path, lines: Iterable[str], *, start_worker: bool = True
            ) -> tuple[list[Run], list[str]]:
    """Queue a run per updated branch of a push (``post-receive``'s stdin lines).

    Returns the runs queued and the refs left alone (deletions, tags), then starts a
    detached worker (one per push; it waits for the repository's worker lock).
    """
    repo = Path(repo).resolve()
    config = read_config(repo)
    store = RunStore(repo)
    queued, ignored = [], []
    for line in lines:
        parts = line.split()
        if len(parts) != 3:
            continue
        _old, new, ref = parts
        workflow = workflow_for(ref, str(config.get("main_branch", "main")))
        if new == _ZERO or workflow is None:
            ignored.append(ref)
            continue
        queued.append(store.enqueue(workflow, ref, new))
    if queued and start_worker:
        spawn_worker(repo, str(config.get("python") or sys.executable))
    return queued, ignored


def parameters_for(store: RunStore, run: Run, declared: set[str]) -> dict[str, str]:
    """A run's parameters: the project's (pipeline.yaml at the revision), then the hook's,
    then the push's own (``git-repo`` = this repository, ``git-revision`` = the commit)."""
    from pipeline.workflow.params import project_parameters, read_project_file

    config = read_config(store.repo)
    values = project_parameters(read_project_file(store.repo, run.revision), run.workflow,
                                declared)
    values.update({k: str(v) for k, v in config["parameters"].items() if k in declared})
    values.update({"git-repo": str(store.repo), "git-revision": run.revision})
    return values


def work(repo: Path) -> list[Run]:
    """The worker: run every queued run of ``repo`` in order (see RunStore.work)."""
    read_config(repo)
    return RunStore(repo).work(parameters_for)
