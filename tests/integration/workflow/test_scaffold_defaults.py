"""A project made by `pipeline init` runs its workflows with no flags (the defaults fit).

``pipeline workflow run pr-check`` from inside the project: ``git-repo`` is the current
directory's repository (resolved, not cloned relative to the workspace: git's exit 128
before), and the project's own parameters come from its pipeline.yaml.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli import run
from pipeline.errors import EXIT_CONFIG
from tests.support.git_push import scaffold

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_pr_check_runs_in_a_scaffolded_project_with_no_parameters(
        build_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    project = scaffold(tmp_path)
    (project / "sub").mkdir()
    monkeypatch.chdir(project / "sub")
    workdir = tmp_path / "run"
    code = run(["workflow", "run", "pr-check", "--workdir", str(workdir)])
    err = capsys.readouterr().err
    assert code == 0, err
    record = json.loads((workdir / "run.json").read_text())
    assert record["parameters"]["git-repo"] == str(project.resolve())
    assert record["parameters"]["chart-set"].startswith("image.digest=sha256:")
    assert all(s["status"] == "succeeded" for s in record["steps"])


def test_a_relative_git_repo_that_is_no_repository_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    code = run(["workflow", "run", "release", "-p", "git-repo=.", "--workdir",
                str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == EXIT_CONFIG and "is not a git repository" in err
    assert "pass -p git-repo=PATH" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
