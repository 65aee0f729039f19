"""``git push`` to a bare repository with the pipeline hook runs the workflows.

Real bare repositories, real ``git push``, the real hook and its detached worker, the
workflows through the local runner. The PR path (pr-check on a branch) proves queueing
and ordering; it builds the fast project of tests/support/git_push.py. The release
path is exercised by a push whose model does not seal (it fails fast, before any build
finishes) and by one full release from a push against the loopback registry.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pipeline.workflow.runs import RunStore
from tests.support.git_push import (
    bare_with_hook,
    commit,
    push,
    runs_json,
    scaffold,
    wait_for_runs,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BAD_POD = """apiVersion: v1
kind: Pod
metadata: {name: bad, namespace: ns}
spec:
  hostNetwork: true
  containers:
  - {name: app, image: "nginx:latest"}
"""


def test_pushes_queue_while_a_run_holds_the_repository_and_run_in_order(
        build_env, tmp_path: Path) -> None:
    project = scaffold(tmp_path)
    bare = bare_with_hook(tmp_path, project)
    store = RunStore(bare)
    # A run in progress holds the repository's worker lock; hold it as one would.
    with store.worker_lock():
        first = push(project, "feature-a")
        revision_b = commit(project, "second change")
        second = push(project, "feature-b")
        # The pushes returned with the runs queued; nothing runs while the lock is held.
        assert "queued run 000001: pr-check" in first, first
        assert "queued run 000002: pr-check" in second, second
        listed = runs_json(bare)
        assert [(r["id"], r["state"]) for r in listed] == [("000002", "queued"),
                                                           ("000001", "queued")]
    runs = wait_for_runs(bare, 2)
    assert [(r.id, r.workflow, r.ref, r.state) for r in runs] == [
        ("000001", "pr-check", "refs/heads/feature-a", "succeeded"),
        ("000002", "pr-check", "refs/heads/feature-b", "succeeded"),
    ], [r.reason for r in runs]
    assert runs[1].revision == revision_b
    # In order, and never at the same time: the second started after the first finished.
    assert runs[0].started and runs[0].finished and runs[1].started
    assert runs[1].started >= runs[0].finished
    # Each run has its own log and the runner's record, with the pushed revision.
    for run in runs:
        directory = store.directory(run.id)
        assert run.parameters["git-revision"] == run.revision
        assert run.parameters["git-repo"] == str(bare.resolve())
        assert "succeeded scan" in (directory / "run.log").read_text()
        src = directory / "workspace" / "revision"
        assert src.read_text().strip() == run.revision


def test_a_failing_push_is_reported_and_the_next_push_still_runs(
        build_env, tmp_path: Path) -> None:
    project = scaffold(tmp_path)
    bare = bare_with_hook(tmp_path, project)
    (project / "deploy" / "bad.yaml").write_text(BAD_POD)
    commit(project, "a privileged pod")
    push(project, "bad")
    (project / "deploy" / "bad.yaml").unlink()
    good = commit(project, "fixed")
    push(project, "good")
    runs = wait_for_runs(bare, 2)
    bad, fixed = runs
    assert bad.state == "failed" and bad.failed_step == "policy-check"
    assert bad.reason == "step 'policy-check' failed with exit code 1"
    assert fixed.state == "succeeded" and fixed.revision == good
    # `pipeline runs show` says why: the step, its exit code, the policy that refused.
    shown = subprocess.run([sys.executable, "-m", "pipeline", "runs", "show", bad.id,
                            "--repo", str(bare)], capture_output=True, text=True,
                           check=True).stdout
    assert "run 000001: failed" in shown and "reason: step 'policy-check' failed" in shown
    assert "hostNetwork" in shown or "host-namespaces" in shown, shown
    steps = {s["name"]: s["status"] for s in runs_json(bare)[1]["steps"]}
    assert steps["policy-check"] == "failed" and steps["build"] == "skipped"


def test_a_push_to_main_runs_release_and_a_model_that_does_not_seal_fails_it(
        build_env, tmp_path: Path) -> None:
    project = scaffold(tmp_path)
    bare = bare_with_hook(tmp_path, project)
    (project / "model" / "model.safetensors").unlink()  # pipeline.yaml still names it
    revision = commit(project, "weights lost")
    out = push(project, "main")
    assert "queued run 000001: release" in out, out
    [run] = wait_for_runs(bare, 1)
    assert (run.workflow, run.revision, run.state) == ("release", revision, "failed")
    assert run.failed_step == "seal-model"
    assert run.outputs == {}  # nothing pushed
    listed = runs_json(bare)[0]
    steps = {s["name"]: s["status"] for s in listed["steps"]}
    assert steps["push-image"] in ("skipped", "cancelled")
    assert steps["policy-check"] == "skipped"
    log = (RunStore(bare).directory(run.id) / "run.log").read_text()
    assert "model.safetensors" in log, log


def test_a_full_release_from_a_push(build_env, registry, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The scaffold as `pipeline init` makes it (examples/tiny, torch), pushed to main:
    released, and promoted to dev on this machine's pods with no other flag."""
    # The pods' state directory: open to the pod's uid all the way up (tmp_path is not).
    state = Path(tempfile.mkdtemp(prefix="push-state-", dir="/tmp"))
    state.chmod(0o755)
    monkeypatch.setenv("PIPELINE_DEPLOY_STATE", str(state))
    try:
        _full_release(registry, tmp_path)
    finally:
        shutil.rmtree(state, ignore_errors=True)


def _full_release(registry, tmp_path: Path) -> None:
    project = scaffold(tmp_path, registry=registry.host, fast=False)
    bare = bare_with_hook(tmp_path, project)
    revision = subprocess.run(["git", "-C", str(project), "rev-parse", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()
    push(project, "main")
    [run] = wait_for_runs(bare, 1, timeout=1800)
    assert run.state == "succeeded", run.reason
    [listed] = runs_json(bare)
    assert listed["workflow"] == "release" and listed["revision"] == revision
    image, model = listed["outputs"]["image"], listed["outputs"]["model"]
    assert image.startswith("sha256:") and model.startswith("sha256:")
    assert listed["outputs"]["image_ref"] == f"{registry.host}/project/runtime@{image}"
    from pipeline.cli import run as cli

    signing = bare / "pipeline-runs" / "secrets" / "signing" / "release.pub"
    assert cli(["verify", listed["outputs"]["image_ref"], "--key", str(signing),
                "--insecure"]) == 0
    # The hand-off recorded the release in the hook's GitOps repository and promoted it
    # to dev, the first environment, on pods started here from the pushed image.
    from pipeline.report import collect

    gitops = bare / "pipeline-runs" / "gitops.git"
    evidence = collect(gitops, "dev", listed["outputs"]["image_ref"])
    assert evidence["record"]["source"]["revision"] == revision
    assert evidence["record"]["image"]["signature"]["verified"] is True
    assert evidence["runs"] is True and evidence["state"]["status"] == "promoted"
    log = (RunStore(bare).directory(run.id) / "logs" / "promote.log").read_text()
    assert "the embedded default: the chart's pods on this machine" in log, log
    assert f"pod(s) from {listed['outputs']['image_ref']}" in log, log
