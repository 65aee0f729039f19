"""``pause: {}`` waits for ``pipeline promote --continue``; a stray --continue is refused.

Real processes' view through real files: the waiting executor runs in a thread, the
``--continue`` is the CLI, as a second terminal would run it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from pipeline.cli import run
from pipeline.release.executor import StepExecutor
from pipeline.release.gitops import GitOpsRepo
from pipeline.release.pauses import wait_for_continue
from pipeline.release.promote import Stage
from tests.support.canary import definition, fast_values


class _Weights:
    def set_weight(self, weight: int) -> None:
        return None


class _NoQueries:
    def result(self, promql: str) -> list[float]:
        raise AssertionError(f"no analysis in these steps, yet asked {promql}")


def test_pause_without_duration_waits_for_continue(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    repo = GitOpsRepo(tmp_path / "g")
    _rendered, canary = definition("prod", fast_values(
        steps=[{"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]))
    executor = StepExecutor(canary, _Weights(), _NoQueries(),
                            wait_continue=lambda what: wait_for_continue(repo.git_dir, "prod",
                                                                         what, poll=0.02))
    # Nothing waits yet: refused, and it leaves nothing that would skip the pause later.
    assert run(["promote", "--continue", "--gitops", str(repo.path), "--env", "prod"]) == 16
    assert "no promotion of 'prod' is waiting at a pause" in capsys.readouterr().err
    done = threading.Event()
    thread = threading.Thread(target=lambda: (executor.analyse(Stage(1, 2, 50)), done.set()))
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not (repo.git_dir / "pipeline-paused-prod").exists():
            assert time.monotonic() < deadline, "the executor never paused"
            time.sleep(0.02)
        assert not done.wait(0.3)  # it really waits
        assert run(["promote", "--continue", "--gitops", str(repo.path), "--env", "prod"]) == 0
        assert "prod: continued (stage 1/2)" in capsys.readouterr().out
        assert done.wait(10)
    finally:
        if not done.is_set():
            (repo.git_dir / "pipeline-continue-prod").write_text("x")
        thread.join(10)
    assert executor.log == [{"pause": None}]
    assert not (repo.git_dir / "pipeline-paused-prod").exists()
