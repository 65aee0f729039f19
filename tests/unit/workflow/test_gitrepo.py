"""``git-repo`` on this machine: relative paths resolved, non-repositories refused."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.workflow.gitrepo import is_remote, resolve_git_repo
from pipeline.workflow.runner import load_plan, resolve_parameters


def _repo(path: Path, bare: bool = False) -> Path:
    subprocess.run(["git", "init", "-q", *(["--bare"] if bare else []), str(path)], check=True)
    return path


def test_dot_is_the_current_directorys_repository(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    repo = _repo(tmp_path / "project")
    (repo / "sub").mkdir()
    monkeypatch.chdir(repo / "sub")
    assert resolve_git_repo(".") == str(repo.resolve())
    assert resolve_git_repo("") == str(repo.resolve())
    assert resolve_git_repo("..", cwd=repo / "sub") == str(repo.resolve())


def test_a_bare_repository_is_its_own_directory(tmp_path: Path) -> None:
    bare = _repo(tmp_path / "origin.git", bare=True)
    assert resolve_git_repo("origin.git", cwd=tmp_path) == str(bare.resolve())


def test_a_directory_that_is_no_repository_is_refused_naming_the_fix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    with pytest.raises(ConfigError) as info:
        resolve_git_repo(".", cwd=tmp_path)
    message = str(info.value)
    assert "is not a git repository" in message and "-p git-repo=PATH" in message
    assert str(tmp_path) in message


def test_a_hooks_git_dir_does_not_decide_which_repository(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside a hook GIT_DIR=. points at the bare repository; '.' here is another one."""
    bare = _repo(tmp_path / "origin.git", bare=True)
    repo = _repo(tmp_path / "project")
    monkeypatch.chdir(bare)
    monkeypatch.setenv("GIT_DIR", ".")
    assert resolve_git_repo(str(repo)) == str(repo.resolve())


@pytest.mark.parametrize(("value", "remote"), [
    ("https://git.example/ml/model.git", True), ("ssh://git@host/x.git", True),
    ("git@github.com:ml/model.git", True), ("file:///srv/x.git", True),
    (".", False), ("../x", False), ("/srv/x.git", False), ("", False),
])
def test_urls_are_cloned_as_given(value: str, remote: bool) -> None:
    assert is_remote(value) is remote
    if remote:
        assert resolve_git_repo(value) == value


def test_the_runner_resolves_git_repo_before_any_step(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    repo = _repo(tmp_path / "project")
    monkeypatch.chdir(repo)
    values = resolve_parameters(load_plan("pr-check"), {"git-repo": "."})
    assert values["git-repo"] == str(repo.resolve())
    assert resolve_parameters(load_plan("pr-check"), {})["git-repo"] == str(repo.resolve())
