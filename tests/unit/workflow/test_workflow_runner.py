"""The local runner: DAG order, parameter substitution, outputs, concurrency, failure.

Small workflows are built with the same Hera helpers as workflows/ and run for real
(bash subprocesses), so every behaviour here is the runner's, not a mock's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hera.workflows import DAG, Parameter, WorkflowTemplate
from pipeline.workflows.common import WORKSPACE, signing_volume, step, workspace_claim

from pipeline.errors import ConfigError
from pipeline.workflow.plan import Task, plan_from_dict, topological_order
from pipeline.workflow.runner import Runner, load_plan
from pipeline.workflow.substitute import substitute


def _plan(fail: str | None = None, slow: float = 0.0):
    with WorkflowTemplate(name="t", entrypoint="main",
                          arguments=[Parameter(name="greeting", value="hello"),
                                     Parameter(name="signing-key-secret", value="")],
                          volume_claim_templates=[workspace_claim()]) as wt:
        first = step("first", f"""
mkdir -p {WORKSPACE}/out
printf '%s' "{{{{workflow.parameters.greeting}}}}-1" > {WORKSPACE}/out/first
""", outputs={"value": f"{WORKSPACE}/out/first"})
        left = step("left", f"sleep {slow}; echo left >> {WORKSPACE}/order"
                    + ("; exit 7" if fail == "left" else ""))
        right = step("right", f"sleep {slow}; echo right >> {WORKSPACE}/order")
        last = step("last", f"""
echo "{{{{inputs.parameters.got}}}}" > {WORKSPACE}/last
cat /var/run/secrets/pipeline/signing/token >> {WORKSPACE}/last
""", inputs=("got",), secrets=(signing_volume(),))
        with DAG(name="main"):
            a = first(name="first")
            b, c = left(name="left"), right(name="right")
            d = last(name="last",
                     arguments={"got": "{{tasks.first.outputs.parameters.value}}"})
            a >> [b, c] >> d
    return plan_from_dict(wt.to_dict())


def test_topological_order_and_cycles() -> None:
    t = lambda n, *d: Task(n, {}, d)  # noqa: E731
    order = [x.name for x in topological_order([t("c", "b"), t("b", "a"), t("a")])]
    assert order == ["a", "b", "c"]
    with pytest.raises(ConfigError, match="cycle"):
        topological_order([t("a", "b"), t("b", "a")])
    with pytest.raises(ConfigError, match="unknown task"):
        topological_order([t("a", "zz")])


def test_release_plan_order_respects_every_dependency() -> None:
    plan = load_plan("release")
    seen: set[str] = set()
    for task in plan.tasks:
        assert set(task.depends) <= seen, task.name
        seen.add(task.name)
    assert plan.tasks[0].name == "checkout"
    assert [t.name for t in plan.tasks[-3:]] == ["policy-check", "record-release", "promote"]


def test_substitution() -> None:
    values = {"workflow.parameters.a": "x", "tasks.t.outputs.parameters.d": "sha256:1"}
    assert substitute("{{workflow.parameters.a}}@{{ tasks.t.outputs.parameters.d }}",
                      values, where="s") == "x@sha256:1"
    assert substitute("{{inputs.parameters.z}}", values, where="s") == "{{inputs.parameters.z}}"
    with pytest.raises(ConfigError, match="unknown parameter"):
        substitute("{{workflow.parameters.nope}}", values, where="s")


def test_runs_with_parameters_outputs_and_secret_dir(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "token").write_text("s3cr3t\n")
    result = Runner(_plan(), {"greeting": "hi", "signing-key-secret": str(secret)},
                    tmp_path / "run").run()
    assert result.status == "succeeded" and result.exit_code == 0
    assert (tmp_path / "run" / "workspace" / "last").read_text() == "hi-1\ns3cr3t\n"
    record = json.loads(result.record.read_text())
    assert [s["name"] for s in record["steps"]] == ["first", "left", "right", "last"]
    assert record["steps"][0]["outputs"] == {"value": "hi-1"}
    assert "s3cr3t" not in result.record.read_text()


def test_independent_tasks_run_concurrently(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "token").write_text("t")
    result = Runner(_plan(slow=0.6), {"signing-key-secret": str(secret)}, tmp_path / "run",
                    max_parallel=2).run()
    steps = {s.name: s for s in result.steps}
    assert steps["left"].started < steps["right"].finished
    assert steps["right"].started < steps["left"].finished


def test_failure_stops_the_run_with_the_step_exit_code(tmp_path: Path) -> None:
    result = Runner(_plan(fail="left", slow=0.3), {"signing-key-secret": str(tmp_path)},
                    tmp_path / "run", max_parallel=1).run()
    assert result.status == "failed" and result.exit_code == 7 and result.failed_step == "left"
    statuses = {s.name: s.status for s in result.steps}
    assert statuses == {"first": "succeeded", "left": "failed", "right": "skipped",
                        "last": "skipped"}
    assert json.loads(result.record.read_text())["exit_code"] == 7


def test_missing_secret_directory_and_unknown_parameter_are_config_errors(
        tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown parameter"):
        Runner(_plan(), {"nope": "1"}, tmp_path / "a")
    with pytest.raises(ConfigError, match="not a directory"):
        Runner(_plan(), {"signing-key-secret": str(tmp_path / "missing")}, tmp_path / "b").run()
    record = json.loads((tmp_path / "b" / "run.json").read_text())
    assert record["status"] == "error"


def test_a_git_hooks_git_dir_does_not_reach_the_steps(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The known bug: from a post-receive hook (GIT_DIR=.), the checkout step's clone failed
    with ``fatal: not a git repository: '.'``. The runner drops GIT_DIR & co."""
    import subprocess

    from pipeline.workflows.common import CHECKOUT_SOURCE

    repo = tmp_path / "project"
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@e"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "one"], check=True)
    bare = tmp_path / "origin.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(bare)], check=True)
    with WorkflowTemplate(name="c", entrypoint="main",
                          arguments=[Parameter(name="git-repo", value=str(bare)),
                                     Parameter(name="git-revision", value="HEAD")],
                          volume_claim_templates=[workspace_claim()]) as wt:
        checkout = step("checkout", CHECKOUT_SOURCE)
        with DAG(name="main"):
            checkout(name="checkout")
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout
    monkeypatch.chdir(bare)  # where git runs a hook, with the hook's own variables
    monkeypatch.setenv("GIT_DIR", ".")
    monkeypatch.setenv("GIT_QUARANTINE_PATH", str(bare / "objects" / "incoming"))
    # What the steps saw before: git under the hook's environment acts on '.', not on -C.
    leaked = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"],
                            capture_output=True, text=True)
    assert leaked.returncode != 0 or leaked.stdout != head
    result = Runner(plan_from_dict(wt.to_dict()), {}, tmp_path / "run").run()
    log = (tmp_path / "run" / "logs" / "checkout.log").read_text()
    assert result.status == "succeeded", log
    assert (tmp_path / "run" / "workspace" / "revision").read_text() == head
