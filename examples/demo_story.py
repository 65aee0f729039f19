"""The git-push half of the demo: a scaffolded project pushed three times, then a rollback.

Everything a team does on the embedded default, as a team does it: ``pipeline init`` a
model repository, ``pipeline hooks install`` on its bare repository, ``git push``. Each
push to main runs the ``release`` workflow through the local runner (detached, queued);
its hand-off records the release in the GitOps repository and promotes it to ``dev``,
the first environment, on the chart's pods started here from the pushed image
(``promote-local``, what ``pipeline init`` sets for a loopback registry). v2 is a good
change (retrained weights), v3 a regression (its forward fails on real requests): its
canary analysis fails and the promotion rolls back, in git. Then the ``rollback``
workflow (``pipeline rollback``) returns dev to v1, as a commit.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GIT = ["git", "-c", "user.name=demo", "-c", "user.email=demo@localhost",
       "-c", "init.defaultBranch=main"]
#: A run that takes longer than this is stuck: the demo stops with its logs.
RUN_TIMEOUT = 900.0

#: v3's regression: the forward pass fails on every real request (the runtime's warm-up
#: sends zeros, so the pod starts and becomes ready; its canary then answers HTTP 500).
REGRESSION = '''

_forward = TinyClassifier.forward


def _forward_v3(self: TinyClassifier, input: torch.Tensor) -> torch.Tensor:  # noqa: A002
    if bool(input.abs().sum() > 0):
        raise RuntimeError("v3 regression: the new feature scaling divides by zero")
    return _forward(self, input)


TinyClassifier.forward = _forward_v3  # type: ignore[method-assign]
'''


@dataclass
class Push:
    """One ``git push`` and the release run it started."""

    version: str
    revision: str
    run: dict[str, Any]
    record: dict[str, Any]
    pushed_s: float
    wall_s: float
    log: str

    @property
    def steps(self) -> dict[str, dict[str, Any]]:
        return {s["name"]: s for s in self.record.get("steps", [])}


@dataclass
class Story:
    """What the pushes and the rollback left behind, for the checks and the summary."""

    work: Path
    registry: str
    project: Path
    bare: Path
    gitops: Path
    pushes: list[Push] = field(default_factory=list)
    rollback: dict[str, Any] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def secrets(self) -> Path:
        return self.bare / "pipeline-runs" / "secrets"


def git(repo: Path, *args: str) -> str:
    done = subprocess.run([*GIT, "-C", str(repo), *args], check=False, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise SystemExit(f"demo: git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip() + done.stderr.strip()


def scaffold(run: Callable[[list[str]], None], work: Path, registry: str) -> Story:
    """``pipeline init``, ``git init``, a bare repository with the hook as ``origin``."""
    project, bare = work / "fraud-model", work / "fraud-model.git"
    run(["init", str(project), "--registry", registry])
    git(project, "init", "-q", "-b", "main")
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    run(["hooks", "install", "--repo", str(bare)])
    git(project, "remote", "add", "origin", str(bare))
    return Story(work, registry, project, bare, bare / "pipeline-runs" / "gitops.git")


def retrain(project: Path) -> None:
    """v2, a good change: the same classifier retrained (new weights, same interface)."""
    import importlib.util

    import torch
    from safetensors.torch import save_file

    spec = importlib.util.spec_from_file_location("demo_model", project / "model" / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(2)
    config = json.loads((project / "model" / "config.json").read_text())
    state = {k: v.contiguous() for k, v in module.build_model(config).state_dict().items()}
    save_file(state, str(project / "model" / "model.safetensors"), metadata={"format": "pt"})


def regress(project: Path) -> None:
    """v3, a regression in the model code the sealed model carries."""
    model = project / "model" / "model.py"
    model.write_text(model.read_text() + REGRESSION)


def _wait(story: Story, count: int) -> dict[str, Any]:
    """The ``count``-th run once it finished (``pipeline runs list --json``), then the
    worker lock: the detached worker has left its loop, nothing of the run still runs."""
    from pipeline.workflow.runs import RunStore

    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        runs = _runs(story.bare)
        if len(runs) >= count and runs[0]["state"] in ("succeeded", "failed"):
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: run {count} did not finish in {RUN_TIMEOUT:.0f} s")
        time.sleep(0.25)
    with RunStore(story.bare).worker_lock():
        pass
    return runs[0]


def _runs(bare: Path) -> list[dict[str, Any]]:
    done = subprocess.run([sys.executable, "-m", "pipeline", "runs", "list", "--repo",
                           str(bare), "--json"], capture_output=True, text=True, check=True)
    result: list[dict[str, Any]] = json.loads(done.stdout)
    return result


def push(story: Story, version: str, message: str, say: Callable[[str], None]) -> Push:
    """Commit, ``git push origin main``, wait for the release run the hook queued."""
    git(story.project, "add", "-A")
    git(story.project, "commit", "-q", "-m", message)
    revision = git(story.project, "rev-parse", "HEAD")
    say(f"$ git push origin main    # {message}")
    started = time.perf_counter()
    hook = git(story.project, "push", "-q", "origin", "main")
    pushed = time.perf_counter() - started
    for line in hook.splitlines():
        if "pipeline:" in line:
            say("  " + line.replace("remote: ", "remote: ", 1).strip())
    run = _wait(story, len(story.pushes) + 1)
    wall = time.perf_counter() - started
    directory = Path(run["directory"])
    record = json.loads((directory / "run.json").read_text())
    done = Push(version, revision, run, record, pushed, wall,
                (directory / "logs" / "promote.log").read_text(errors="replace"))
    story.pushes.append(done)
    return done


def rollback(story: Story, run: Callable[[list[str]], None], to: str) -> dict[str, Any]:
    """The ``rollback`` workflow (``pipeline rollback`` against the GitOps repository)."""
    workdir = story.work / "rollback-run"
    run(["workflow", "run", "rollback", "-p", f"gitops-repo={story.gitops}",
         "-p", "environment=dev", "-p", f"to={to}",
         "-p", "reason=demo: back to v1 after the v3 incident", "--workdir", str(workdir)])
    return {"record": json.loads((workdir / "run.json").read_text())}


def state(story: Story) -> tuple[Any, list[Any]]:
    """dev's current state and its history, read from a fresh clone of the GitOps repo."""
    from pipeline.release.gitops import GitOpsRepo

    clone = story.work / "gitops-view"
    if clone.exists():
        git(clone, "pull", "-q", "--ff-only")
    else:
        subprocess.run([*GIT, "clone", "-q", str(story.gitops), str(clone)], check=True)
    repo = GitOpsRepo(clone, create=False)
    return repo.current("dev"), repo.history("dev")


def analysis_summaries(history: list[Any], model: str) -> list[str]:
    """The canary analysis of ``model``'s first analysed stage, one line per metric (the
    last measurement of each, as the executor summarised it: value against threshold)."""
    for commit in reversed(history):  # oldest first: the first stage analysed
        st = commit.state
        if st.model == model and st.evidence and (st.failed is None
                                                  or st.failed.model != model):
            by_metric: dict[str, str] = {}
            for measurement in st.evidence:
                if measurement.get("summary"):
                    by_metric[str(measurement.get("metric"))] = str(measurement["summary"])
            return list(by_metric.values())
    return []
