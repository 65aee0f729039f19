"""Crash safety: SIGKILL at every step boundary, then ``--resume``; two promotions of one
environment at once. Real git, a real Prometheus scraping the runtime's metrics (served
by prometheus-client), real processes killed with SIGKILL.

The promotion runs in a child process whose ``publish`` hook (called right after each
commit, where a push would go) kills the child after its k-th commit: exactly at a step
boundary, never by a timing guess.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.errors import ConflictError
from pipeline.release.gitops import GitOpsRepo, Release, ReleaseState
from pipeline.release.promote import promote
from tests.support.prometheus import canary_prometheus

pytestmark = pytest.mark.timeout(240)

OLD = "registry.local/app@sha256:" + "a" * 64
NEW = "registry.local/app@sha256:" + "b" * 64
MODEL = "registry.local/model@sha256:" + "1" * 64
ROOT = Path(__file__).resolve().parents[3]
CHILD = """
import os, signal, sys, time
from pathlib import Path
from pipeline.release.analysis import Prometheus
from pipeline.release.executor import StepExecutor
from pipeline.release.gitops import GitOpsRepo
from pipeline.release.promote import promote
from tests.support.canary import definition, fast_values

gitops, url, kill_after, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
_rendered, canary = definition("prod", fast_values(weights=[10, 50, 100], pauseDuration="0s",
                                                   analysis={"count": 1}))

class Weights:
    def set_weight(self, weight):
        pass

commits = 0

def publish(sha):
    global commits
    commits += 1
    if commits == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)
    if kill_after < 0:
        print("holding", flush=True)
        time.sleep(60)

resume = mode == "resume"
promote(GitOpsRepo(Path(gitops), create=False), "prod", None if resume else sys.argv[5],
        None if resume else sys.argv[6], executor=StepExecutor(canary, Weights(), Prometheus(url)),
        stages=canary.weights, publish=publish, resume=resume)
print("done", flush=True)
"""


@pytest.fixture(scope="module")
def prometheus() -> Iterator[str]:
    with canary_prometheus() as url:
        yield url


def _child(gitops: Path, url: str, kill_after: int, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(gitops), url, str(kill_after),
                             mode, NEW, MODEL], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _seed(path: Path) -> GitOpsRepo:
    repo = GitOpsRepo(path)
    repo.commit(ReleaseState("prod", OLD, MODEL, 100, "1/1", "promoted", Release(OLD, MODEL)),
                "prod: promote old")
    return repo


def _consistent(repo: GitOpsRepo) -> ReleaseState:
    """HEAD is a complete step: record and chart values agree, nothing left uncommitted."""
    state = repo.current("prod")
    assert state is not None
    values = repo.values("prod")
    assert f"{values['image']['repository']}@{values['image']['digest']}" == state.image
    assert f"{values['model']['repository']}@{values['model']['digest']}" == state.model
    assert repo.local_changes() == []
    subprocess.run(["git", "-C", str(repo.path), "fsck", "--strict", "--no-progress"],
                   capture_output=True, check=True)
    return state


@pytest.mark.parametrize("kill_after", [1, 2, 3, 4, 5])
def test_sigkill_at_every_step_boundary_then_resume(prometheus: str, tmp_path: Path,
                                                     kill_after: int) -> None:
    repo = _seed(tmp_path / "gitops")
    child = _child(repo.path, prometheus, kill_after, "start")
    _out, err = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, err
    assert len(repo.history("prod")) == 1 + kill_after
    state = _consistent(repo)
    assert state.status == "progressing" and state.release == Release(NEW, MODEL)
    resumed = _child(repo.path, prometheus, 0, "resume")
    out, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0 and out.strip() == "done", err
    final = _consistent(repo)
    assert (final.status, final.weight, final.image) == ("promoted", 100, NEW)
    subjects = [c.message.split(" (")[0].split(" for ")[0] for c in reversed(repo.history("prod"))]
    label = "app@sha256:bbbbbbbbbbbb + model@sha256:111111111111"
    # Each step exactly once, whatever the boundary the crash hit.
    assert subjects == ["prod: promote old",
                        f"prod: canary {label} at 10%", "prod: analysis passed at 10%",
                        f"prod: canary {label} at 50%", "prod: analysis passed at 50%",
                        f"prod: canary {label} at 100%", f"prod: promote {label}"]


def test_two_promotions_of_one_environment(prometheus: str, tmp_path: Path) -> None:
    repo = _seed(tmp_path / "gitops")
    child = _child(repo.path, prometheus, -1, "start")  # holds after its first commit
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "holding"
        before = len(repo.history("prod"))
        with pytest.raises(ConflictError, match=f"another promotion of 'prod' is running "
                                                f"\\(pid {child.pid}"):
            promote(repo, "prod", NEW, MODEL, analyse=lambda w: pytest.fail("ran"))
        assert len(repo.history("prod")) == before
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    resumed = _child(repo.path, prometheus, 0, "resume")
    out, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0 and out.strip() == "done", err
    assert _consistent(repo).status == "promoted"
