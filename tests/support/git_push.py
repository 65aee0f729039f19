"""Projects pushed with real ``git push`` to a real bare repository with the pipeline hook.

``scaffold`` makes a project with ``pipeline init``; ``fast=True`` swaps the serving
project at its root for tests/fixtures/build_project (no torch: its image builds in
seconds) and keeps everything else of the scaffolded layout (model/, the chart, the image
policy, deploy/, the ``workflows`` parameters).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from pipeline.workflow.runs import Run, RunStore

ROOT = Path(__file__).resolve().parents[2]
BUILD_PROJECT = ROOT / "tests" / "fixtures" / "build_project"
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example", "-c", "init.defaultBranch=main"]


def git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GIT, "-C", str(repo), *args], check=check, capture_output=True,
                          text=True)


def scaffold(root: Path, registry: str = "127.0.0.1:5000", fast: bool = True) -> Path:
    """``pipeline init`` a project under ``root``, commit it on main; return its path."""
    from pipeline.cli import run

    project = root / "project"
    assert run(["init", str(project), "--registry", registry]) == 0
    if fast:
        data = yaml.safe_load((project / "pipeline.yaml").read_text())
        fixture = yaml.safe_load((BUILD_PROJECT / "pipeline.yaml").read_text())
        data.update({k: fixture[k] for k in ("model", "runtime")})
        for name in ("model.py", "config.json"):
            (project / name).unlink()
        for name in ("server.py", "requirements.lock"):
            shutil.copy2(BUILD_PROJECT / name, project / name)
        (project / "pipeline.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    git(project, "init", "-q", "-b", "main")
    commit(project, "first model")
    return project


def commit(project: Path, message: str) -> str:
    git(project, "add", "-A")
    git(project, "commit", "-q", "--allow-empty", "-m", message)
    return git(project, "rev-parse", "HEAD").stdout.strip()


def bare_with_hook(root: Path, project: Path, *params: str) -> Path:
    """A bare repository with the pipeline hook, the project's ``origin``."""
    from pipeline.cli import run

    bare = root / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    argv = ["hooks", "install", "--repo", str(bare)]
    for param in params:
        argv += ["-p", param]
    assert run(argv) == 0
    git(project, "remote", "add", "origin", str(bare))
    return bare


def push(project: Path, branch: str) -> str:
    """``git push origin HEAD:branch``; the hook's output (git's stderr) comes back."""
    done = git(project, "push", "origin", f"HEAD:refs/heads/{branch}")
    return done.stderr


def wait_for_runs(bare: Path, count: int, timeout: float = 900.0) -> list[Run]:
    """Every run of ``bare`` once ``count`` exist and none is queued or running (oldest
    first). The timeout only stops a hung test; nothing is asserted about time."""
    store = RunStore(bare)
    deadline = time.monotonic() + timeout
    while True:
        runs = store.all()
        if len(runs) >= count and all(r.state in ("succeeded", "failed") for r in runs):
            return sorted(runs, key=lambda r: r.seq)
        if time.monotonic() > deadline:
            raise AssertionError(f"runs did not finish: {[(r.id, r.state) for r in runs]}\n"
                                 + _logs(store))
        time.sleep(0.2)


def _logs(store: RunStore) -> str:
    parts = []
    for log in sorted(store.runs.glob("*/run.log")) + [store.root / "worker.log"]:
        if log.is_file():
            parts.append(f"== {log}\n{log.read_text(errors='replace')[-4000:]}")
    return "\n".join(parts)


def runs_json(bare: Path) -> list[dict[str, Any]]:
    """``pipeline runs list --repo BARE --json``, as a process (the CLI as users run it)."""
    import json
    import sys

    done = subprocess.run([sys.executable, "-m", "pipeline", "runs", "list", "--repo",
                           str(bare), "--json"], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)
