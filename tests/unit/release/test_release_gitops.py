"""GitOps release state: one commit per stage change, roll-back found in git history.

The repositories are real git repositories in tmp_path; the analysis is passed in as
a function returning verdicts, which is how promote() is meant to be composed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.cli import run
from pipeline.errors import (
    ConfigError,
    ConflictError,
    InputError,
    NotFoundError,
    PolicyError,
    UnreachableError,
)
from pipeline.release.analysis import AnalysisResult
from pipeline.release.executor import MetricMeasurement
from pipeline.release.gitops import GitOpsRepo, Release, ReleaseState, pinned
from pipeline.release.lock import EnvironmentLock
from pipeline.release.promote import parse_stages, promote, rollback
from tests.support.canary import write_values

IMG = "registry.local/app@sha256:" + "a" * 64
IMG2 = "registry.local/app@sha256:" + "b" * 64
IMG3 = "registry.local/app@sha256:" + "c" * 64
MODEL = "registry.local/model@sha256:" + "1" * 64
MODEL2 = "registry.local/model@sha256:" + "2" * 64
A = "app@sha256:aaaaaaaaaaaa + model@sha256:111111111111"
B = "app@sha256:bbbbbbbbbbbb + model@sha256:111111111111"
GOOD = AnalysisResult(True, (MetricMeasurement("t", "canary-requests", "q", [100.0], "Successful",
                                               "requests 100 >= 20"),))
BAD = AnalysisResult(False, (MetricMeasurement("t", "success-rate", "q", [0.5], "Failed",
                                               "success rate 0.500 < 0.990",
                                               failures=("success rate 0.500 < 0.990",)),))


def _messages(repo: GitOpsRepo, env: str = "prod") -> list[str]:
    return [c.message for c in reversed(repo.history(env))]


def _file(repo: GitOpsRepo, name: str = "release.yaml") -> dict:
    return yaml.safe_load((repo.path / "environments/prod" / name).read_text())


def _count(repo: GitOpsRepo) -> int:
    out = subprocess.run(["git", "-C", str(repo.path), "rev-list", "--count", "--all"],
                         capture_output=True, text=True)
    return int(out.stdout.strip() or 0)


def test_promotion_commits_each_stage_and_result(tmp_path: Path) -> None:
    repo = GitOpsRepo(tmp_path / "gitops")
    applied: list[int] = []
    result = promote(repo, "prod", IMG, MODEL, analyse=lambda w: GOOD,
                     apply_weight=applied.append)
    assert result.status == "promoted" and applied == [10, 50, 100]
    assert [m.split("\n")[0] for m in _messages(repo)] == [
        f"prod: canary {A} at 10% (stage 1/3)",
        f"prod: analysis passed at 10% (stage 1/3) for {A}",
        f"prod: canary {A} at 50% (stage 2/3)",
        f"prod: analysis passed at 50% (stage 2/3) for {A}",
        f"prod: canary {A} at 100% (stage 3/3)",
        f"prod: promote {A} (100%, analysis passed)",
    ]
    assert [c.state.weight for c in reversed(repo.history("prod"))] == [10, 10, 50, 50, 100, 100]
    log = subprocess.run(["git", "-C", str(repo.path), "log", "--format=%H"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert log[::-1] == result.commits  # one git commit per recorded change, nothing else
    state = _file(repo)
    assert {k: state[k] for k in ("image", "model", "weight", "stage", "status", "stable",
                                  "analysis", "stages")} == {
        "image": IMG, "model": MODEL, "weight": 100, "stage": "3/3", "status": "promoted",
        "stable": {"image": IMG, "model": MODEL}, "analysis": "passed (1 measurement(s))",
        "stages": [10, 50, 100]}
    assert state["who"] and state["when"].endswith("+00:00")
    assert state["evidence"][0]["value"] == [100.0] and state["evidence"][0]["ok"] is True
    # The chart values pin both digests, in the chart's own shape.
    values = _file(repo, "values.yaml")
    assert values == {"image": {"repository": "registry.local/app", "digest": "sha256:" + "a" * 64},
                      "model": {"repository": "registry.local/model",
                                "digest": "sha256:" + "1" * 64}}


def test_model_only_release_names_the_model(tmp_path: Path) -> None:
    repo = GitOpsRepo(tmp_path / "gitops")
    promote(repo, "prod", IMG, MODEL, analyse=lambda w: GOOD, stages=[100])
    promote(repo, "prod", IMG, MODEL2, analyse=lambda w: GOOD, stages=[100])
    assert _messages(repo)[-1] == (
        "prod: promote app@sha256:aaaaaaaaaaaa + model@sha256:222222222222 (100%, analysis "
        "passed)")
    body = subprocess.run(["git", "-C", str(repo.path), "log", "-1", "--format=%b"],
                          capture_output=True, text=True, check=True).stdout
    assert body.strip() == "measurement 1: requests 100 >= 20"
    assert _file(repo, "values.yaml")["model"]["digest"] == "sha256:" + "2" * 64


def test_failed_analysis_rolls_back_to_last_good(tmp_path: Path) -> None:
    repo = GitOpsRepo(tmp_path / "gitops")
    promote(repo, "prod", IMG, MODEL, analyse=lambda w: GOOD, stages=[100])
    applied: list[int] = []
    verdicts = iter([GOOD, BAD])
    with pytest.raises(PolicyError, match="analysis failed at 50%.*success rate 0.500 < 0.990"):
        promote(repo, "prod", IMG2, MODEL, analyse=lambda w: next(verdicts),
                apply_weight=applied.append)
    assert applied == [10, 50, 0]
    state = _file(repo)
    assert (state["status"], state["weight"], state["image"]) == ("rolled-back", 0, IMG)
    assert state["failed"] == {"image": IMG2, "model": MODEL}
    assert state["reasons"] == ["success rate 0.500 < 0.990"]
    assert _messages(repo)[-1] == (f"prod: roll back {B} at 50% (stage 2/3): "
                                   "success rate 0.500 < 0.990")
    body = subprocess.run(["git", "-C", str(repo.path), "log", "-1", "--format=%b"],
                          capture_output=True, text=True, check=True).stdout
    assert body.startswith("reason: success rate 0.500 < 0.990\nmeasurement 1:")
    assert _file(repo, "values.yaml")["image"]["digest"] == "sha256:" + "a" * 64


def test_rollback_finds_last_promoted_in_history(tmp_path: Path) -> None:
    repo = GitOpsRepo(tmp_path / "gitops")
    promote(repo, "prod", IMG, MODEL, analyse=lambda w: GOOD, stages=[50, 100])
    promote(repo, "prod", IMG2, MODEL, analyse=lambda w: GOOD, stages=[100])
    # A third release stuck half-way (e.g. the job died): rollback goes to IMG2.
    repo.commit(ReleaseState("prod", IMG3, MODEL, 10, "1/3", "progressing",
                             Release(IMG2, MODEL)), "prod: canary c")
    state, _ = rollback(repo, "prod")
    assert (state.image, state.status, state.weight) == (IMG2, "rolled-back", 0)
    # Rolling back a promoted release goes to the one before it.
    promote(repo, "prod", IMG3, MODEL, analyse=lambda w: GOOD, stages=[100])
    state, sha = rollback(repo, "prod", reason="bad outputs")
    assert state.image == IMG2 and state.failed == Release(IMG3, MODEL)
    assert repo.history("prod")[0].sha == sha
    message = repo.history("prod")[0].message
    assert message.startswith(f"prod: roll back to {B} (last promoted, ")
    body = subprocess.run(["git", "-C", str(repo.path), "log", "-1", "--format=%b"],
                          capture_output=True, text=True, check=True).stdout
    assert "reason: bad outputs" in body and "analysis passed (1 measurement(s))" in body
    assert "leaves: app@sha256:cccccccccccc + model@sha256:111111111111" in body


def test_noop_rollback_is_refused_and_commits_nothing(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    repo = GitOpsRepo(tmp_path / "gitops")
    promote(repo, "prod", IMG, MODEL, analyse=lambda w: GOOD, stages=[100])
    promote(repo, "prod", IMG2, MODEL, analyse=lambda w: GOOD, stages=[100])
    rollback(repo, "prod")
    before = _count(repo)
    with pytest.raises(ConflictError, match="nothing to roll back: prod already runs "
                                            "app@sha256:aaaaaaaaaaaa"):
        rollback(repo, "prod")
    # --to the release that runs is the same no-op; through the CLI it is exit 16.
    assert run(["rollback", "--gitops", str(repo.path), "--env", "prod", "--to", IMG]) == 16
    assert "nothing to roll back" in capsys.readouterr().err
    assert _count(repo) == before
    # --to an older promoted release by commit works.
    target = next(c for c in repo.history("prod") if c.state.status == "promoted"
                  and c.state.image == IMG2)
    state, _ = rollback(repo, "prod", to=target.sha[:10])
    assert state.image == IMG2
    with pytest.raises(NotFoundError, match="no promoted release"):
        rollback(repo, "prod", to=IMG3)


def test_rollback_without_a_promoted_release_is_not_found(tmp_path: Path) -> None:
    repo = GitOpsRepo(tmp_path / "gitops")
    with pytest.raises(NotFoundError):
        rollback(repo, "prod")
    repo.commit(ReleaseState("prod", IMG, MODEL, 10, "1/3", "progressing"), "prod: canary")
    with pytest.raises(NotFoundError, match="no earlier promoted release"):
        rollback(repo, "prod")


def test_references_must_be_digest_pinned() -> None:
    assert pinned(IMG, "image") == IMG
    with pytest.raises(InputError, match="not pinned by digest"):
        pinned("registry.local/app:v1", "image")


def test_stages_are_validated() -> None:
    assert parse_stages("10,50,100") == (10, 50, 100)
    for bad in ("10,50", "50,10,100", "0,100", "a,100", ""):
        with pytest.raises(InputError):
            parse_stages(bad)


def test_cli_refuses_tag_only_image_and_writes_nothing(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    code = run(["promote", "--gitops", str(tmp_path / "g"), "--env", "prod",
                "--image", "registry.local/app:latest", "--model", MODEL,
                "--prometheus", "http://127.0.0.1:9"])
    assert code == 4
    assert "not pinned by digest" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()


def test_cli_status_and_rollback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = GitOpsRepo(tmp_path / "g")
    promote(repo, "prod", IMG, MODEL, analyse=lambda w: GOOD, stages=[100])
    promote(repo, "prod", IMG2, MODEL, analyse=lambda w: GOOD, stages=[100])
    assert run(["rollback", "--gitops", str(repo.path), "--env", "prod"]) == 0
    capsys.readouterr()
    assert run(["release", "status", "--gitops", str(repo.path), "--env", "prod", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["image"], out["model"], out["status"], out["weight"]) == (
        IMG, MODEL, "rolled-back", 0)
    assert [h["status"] for h in out["history"]] == [
        "rolled-back", "promoted", "progressing", "promoted", "progressing"]
    assert out["history"][0]["reasons"] == ["manual roll-back"] and out["history"][0]["who"]
    assert out["history"][1]["evidence"][0]["value"] == [100.0]
    assert run(["release", "status", "--gitops", str(repo.path), "--env", "dev"]) == 10


@pytest.mark.parametrize("command", [["rollback"], ["release", "status"]])
def test_missing_gitops_directory_is_not_found_and_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    missing = tmp_path / "nowhere"
    assert run([*command, "--gitops", str(missing), "--env", "prod"]) == 10
    assert f"no GitOps repository at {missing}" in capsys.readouterr().err
    assert not missing.exists()


def test_cli_image_policy_denial_is_exit_11_before_any_commit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "image-policy.yaml"
    policy.write_text("version: 1\ndefault: deny\nrules: []\n")
    values = write_values(tmp_path / "values.yaml")
    code = run(["promote", "--gitops", str(tmp_path / "g"), "--env", "prod", "--image", IMG,
                "--model", MODEL, "--prometheus", "http://127.0.0.1:9",
                "--image-policy", str(policy), "-f", str(values)])
    assert code == 11
    assert "image policy denies" in capsys.readouterr().err
    assert _count(GitOpsRepo(tmp_path / "g")) == 0


def test_gates_run_before_every_step(tmp_path: Path) -> None:
    repo = GitOpsRepo(tmp_path / "gitops")
    seen: list[str] = []
    promote(repo, "prod", IMG, MODEL, analyse=lambda w: GOOD, gate=seen.append)
    assert seen == ["stage 1/3", "stage 2/3", "stage 3/3"]

    def refuse(moment: str) -> None:
        raise PolicyError(f"signature revoked ({moment})")

    before = _count(repo)
    with pytest.raises(PolicyError, match="signature revoked"):
        promote(repo, "prod", IMG2, MODEL, analyse=lambda w: GOOD, gate=refuse)
    assert _count(repo) == before  # refused before the first step: nothing committed

    def refuse_later(moment: str) -> None:
        if moment == "stage 2/3":
            raise PolicyError("signature revoked")

    applied: list[int] = []
    with pytest.raises(PolicyError, match="gate refused before stage 2/3.*rolled back"):
        promote(repo, "prod", IMG2, MODEL, analyse=lambda w: GOOD, gate=refuse_later,
                apply_weight=applied.append)
    assert applied == [10, 0] and _file(repo)["status"] == "rolled-back"


def test_environment_order_and_forced_skip(tmp_path: Path) -> None:
    repo = GitOpsRepo(tmp_path / "gitops")
    with pytest.raises(PolicyError, match="was not promoted in 'staging'"):
        promote(repo, "prod", IMG, MODEL, analyse=lambda w: GOOD, predecessor="staging")
    assert _count(repo) == 0
    promote(repo, "staging", IMG, MODEL, analyse=lambda w: GOOD, stages=[100])
    promote(repo, "prod", IMG, MODEL, analyse=lambda w: GOOD, stages=[100],
            predecessor="staging")
    # A release staging never saw needs --force --reason, and the reason is recorded.
    with pytest.raises(InputError, match="non-empty"):
        promote(repo, "prod", IMG2, MODEL, analyse=lambda w: GOOD, predecessor="staging",
                force_reason="  ")
    promote(repo, "prod", IMG2, MODEL, analyse=lambda w: GOOD, stages=[100],
            predecessor="staging", force_reason="hotfix CVE-2026-1")
    assert _file(repo)["forced"] == "skipped staging: hotfix CVE-2026-1"


def test_manual_approval_is_required_and_recorded(tmp_path: Path) -> None:
    repo = GitOpsRepo(tmp_path / "gitops")
    with pytest.raises(PolicyError, match="needs a manual approval"):
        promote(repo, "prod", IMG, MODEL, analyse=lambda w: GOOD, require_approval=True)
    promote(repo, "prod", IMG, MODEL, analyse=lambda w: GOOD, stages=[100],
            require_approval=True, approved_by="alice")
    assert _file(repo)["approved_by"] == "alice"


def test_local_changes_are_refused(tmp_path: Path) -> None:
    repo = GitOpsRepo(tmp_path / "gitops")
    promote(repo, "prod", IMG, MODEL, analyse=lambda w: GOOD, stages=[100])
    (repo.path / "environments/prod/values.yaml").write_text("replicaCount: 9\n")
    with pytest.raises(ConflictError, match="local changes.*values.yaml"):
        promote(repo, "prod", IMG2, MODEL, analyse=lambda w: GOOD)


def test_unreachable_prometheus_holds_then_recovers_or_rolls_back(tmp_path: Path) -> None:
    repo = GitOpsRepo(tmp_path / "gitops")
    promote(repo, "prod", IMG, MODEL, analyse=lambda w: GOOD, stages=[100])
    answers = iter([UnreachableError("Prometheus down"), UnreachableError("Prometheus down"),
                    GOOD])

    def flaky(_weight: int) -> AnalysisResult:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    promote(repo, "prod", IMG2, MODEL, analyse=flaky, stages=[100], hold_seconds=60,
            hold_poll=0, sleep=lambda _s: None)
    assert [m.split(":")[1].split()[0] for m in _messages(repo)[-3:]] == [
        "canary", "hold", "promote"]

    def down(_weight: int) -> AnalysisResult:
        raise UnreachableError("Prometheus down")

    with pytest.raises(UnreachableError, match="held 0s, then rolled back"):
        promote(repo, "prod", IMG3, MODEL, analyse=down, stages=[100], hold_seconds=0)
    assert [m.split(":")[1].split()[0] for m in _messages(repo)[-3:]] == [
        "canary", "hold", "roll"]
    assert _file(repo)["image"] == IMG2 and _file(repo)["reasons"][0].startswith(
        "analysis impossible: Prometheus down")


def test_lock_refuses_a_live_holder_and_is_released_by_its_death(tmp_path: Path) -> None:
    repo = GitOpsRepo(tmp_path / "gitops")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path\n"
        "from pipeline.release.lock import EnvironmentLock\n"
        f"lock = EnvironmentLock(Path({str(repo.git_dir)!r}), 'prod').acquire()\n"
        "print('held', flush=True); time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(ConflictError, match=f"another promotion of 'prod' is running "
                                                f"\\(pid {holder.pid}"):
            promote(repo, "prod", IMG, MODEL, analyse=lambda w: GOOD)
        assert _count(repo) == 0
        EnvironmentLock(repo.git_dir, "dev").acquire().release()  # other envs are free
    finally:
        holder.kill()
        holder.wait()
    # SIGKILL released it: the next promotion takes the lock.
    assert promote(repo, "prod", IMG, MODEL, analyse=lambda w: GOOD).status == "promoted"


def test_resume_continues_from_the_last_committed_step(tmp_path: Path) -> None:
    repo = GitOpsRepo(tmp_path / "gitops")
    promote(repo, "prod", IMG, MODEL, analyse=lambda w: GOOD, stages=[100])
    # Interrupted after "analysis passed at 10%" and a half-done write of the next step.
    calls: list[int] = []

    def crash(weight: int) -> AnalysisResult:
        calls.append(weight)
        if weight == 50:
            raise KeyboardInterrupt  # stands in for the process dying mid-analysis
        return GOOD

    with pytest.raises(KeyboardInterrupt):
        promote(repo, "prod", IMG2, MODEL, analyse=crash)
    (repo.path / "environments/prod/release.yaml").write_text("torn")
    with pytest.raises(ConflictError, match="nothing to resume"):
        promote(repo, "dev", resume=True, analyse=lambda w: GOOD)
    applied: list[int] = []
    result = promote(repo, "prod", resume=True, analyse=lambda w: GOOD,
                     apply_weight=applied.append)
    assert result.status == "promoted" and result.resumed_from == "2/3"
    assert applied == [50, 100]  # the 50% step is redone (its analysis never passed)
    assert [m.split("\n")[0] for m in _messages(repo)[-5:]] == [
        f"prod: analysis passed at 10% (stage 1/3) for {B}",
        f"prod: canary {B} at 50% (stage 2/3)",  # committed once, before the crash
        f"prod: analysis passed at 50% (stage 2/3) for {B}",
        f"prod: canary {B} at 100% (stage 3/3)",
        f"prod: promote {B} (100%, analysis passed)",
    ]
    assert repo.local_changes() == []


def test_an_analysis_that_cannot_run_rolls_back(tmp_path: Path) -> None:
    repo = GitOpsRepo(tmp_path / "g")
    promote(repo, "prod", IMG, MODEL, analyse=lambda w: GOOD, stages=[100])
    weights: list[int] = []

    def broken(_weight: int) -> AnalysisResult:
        raise ConfigError("the rendered Rollout pauses until resumed, and nothing can")

    with pytest.raises(ConfigError, match="nothing can"):
        promote(repo, "prod", IMG2, MODEL, analyse=broken, apply_weight=weights.append,
                stages=[50, 100])
    state = repo.current("prod")
    assert state is not None and (state.status, state.image, state.weight) == (
        "rolled-back", IMG, 0)
    assert state.reasons[0].startswith("analysis could not run: ")
    assert weights == [50, 0]
