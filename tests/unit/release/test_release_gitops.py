"""GitOps release state: one commit per stage change, roll-back found in git history.

The repositories are real git repositories in tmp_path; the analysis is passed in as
a function returning verdicts, which is how promote() is meant to be composed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.cli import run
from pipeline.errors import InputError, NotFoundError, PolicyError
from pipeline.release.analysis import AnalysisResult, Measurement
from pipeline.release.gitops import GitOpsRepo, Release, ReleaseState, pinned
from pipeline.release.promote import parse_stages, promote, rollback

IMG = "registry.local/app@sha256:" + "a" * 64
IMG2 = "registry.local/app@sha256:" + "b" * 64
IMG3 = "registry.local/app@sha256:" + "c" * 64
MODEL = "registry.local/model@sha256:" + "1" * 64
GOOD = AnalysisResult(True, (Measurement(100, 1.0, 0.01),))
BAD = AnalysisResult(False, (Measurement(100, 0.5, 0.01, ("success rate 0.5000 below 0.99",)),))


def _messages(repo: GitOpsRepo) -> list[str]:
    return [c.message for c in reversed(repo.history("prod"))]


def _file(repo: GitOpsRepo) -> dict:
    return yaml.safe_load((repo.path / "environments/prod/release.yaml").read_text())


def test_promotion_commits_each_stage_and_result(tmp_path: Path) -> None:
    repo = GitOpsRepo(tmp_path / "gitops")
    applied: list[int] = []
    result = promote(repo, "prod", IMG, MODEL, analyse=lambda w: GOOD,
                     apply_weight=applied.append)
    assert result.status == "promoted" and applied == [10, 50, 100]
    assert _messages(repo) == [
        "prod: canary app@sha256:aaaaaaaaaaaa at 10% (stage 1/3)",
        "prod: analysis passed at 10% (stage 1/3)",
        "prod: canary app@sha256:aaaaaaaaaaaa at 50% (stage 2/3)",
        "prod: analysis passed at 50% (stage 2/3)",
        "prod: canary app@sha256:aaaaaaaaaaaa at 100% (stage 3/3)",
        "prod: promote app@sha256:aaaaaaaaaaaa (100%, analysis passed)",
    ]
    assert [c.state.weight for c in reversed(repo.history("prod"))] == [10, 10, 50, 50, 100, 100]
    log = subprocess.run(["git", "-C", str(repo.path), "log", "--format=%H"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert log[::-1] == result.commits  # one git commit per recorded change, nothing else
    state = _file(repo)
    assert state == {"environment": "prod", "image": IMG, "model": MODEL, "weight": 100,
                     "stage": "3/3", "status": "promoted",
                     "stable": {"image": IMG, "model": MODEL},
                     "analysis": "passed (1 measurement(s))"}


def test_failed_analysis_rolls_back_to_last_good(tmp_path: Path) -> None:
    repo = GitOpsRepo(tmp_path / "gitops")
    promote(repo, "prod", IMG, MODEL, analyse=lambda w: GOOD, stages=[100])
    applied: list[int] = []
    verdicts = iter([GOOD, BAD])
    with pytest.raises(PolicyError, match="analysis failed at 50%.*success rate 0.5000"):
        promote(repo, "prod", IMG2, MODEL, analyse=lambda w: next(verdicts),
                apply_weight=applied.append)
    assert applied == [10, 50, 0]
    state = _file(repo)
    assert (state["status"], state["weight"], state["image"]) == ("rolled-back", 0, IMG)
    assert state["failed"] == {"image": IMG2, "model": MODEL}
    assert state["reasons"] == ["success rate 0.5000 below 0.99"]
    assert _messages(repo)[-1] == ("prod: roll back app@sha256:bbbbbbbbbbbb at 50% (stage 2/3): "
                                   "success rate 0.5000 below 0.99")


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
    assert repo.history("prod")[0].message.startswith(
        "prod: roll back to app@sha256:bbbbbbbbbbbb (last promoted, ")
    # Again: stays on IMG2, never returns to the release it refused.
    state, _ = rollback(repo, "prod")
    assert state.image == IMG2


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
    assert run(["--json", "release", "status", "--gitops", str(repo.path), "--env", "prod",
                "--history"]) == 0
    import json

    out = json.loads(capsys.readouterr().out)
    assert (out["image"], out["status"], out["weight"]) == (IMG, "rolled-back", 0)
    assert len(out["history"]) == 5
    assert run(["release", "status", "--gitops", str(repo.path), "--env", "dev"]) == 10


def test_cli_image_policy_denial_is_exit_11_before_any_commit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "image-policy.yaml"
    policy.write_text("version: 1\ndefault: deny\nrules: []\n")
    code = run(["promote", "--gitops", str(tmp_path / "g"), "--env", "prod", "--image", IMG,
                "--model", MODEL, "--prometheus", "http://127.0.0.1:9",
                "--image-policy", str(policy)])
    assert code == 11
    assert "image policy denies" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()
