"""``pipeline hooks install`` and what the hook queues for each pushed ref."""

from __future__ import annotations

import atexit
import json
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.cli import run
from pipeline.errors import EXIT_CONFIG, EXIT_CONFLICT
from pipeline.workflow.hooks import MARKER, install_hook, on_push, read_config, workflow_for
from pipeline.workflow.runs import RunStore


def _bare(tmp_path: Path) -> Path:
    bare = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    return bare


def test_install_writes_the_hook_its_config_and_local_secrets(tmp_path: Path) -> None:
    bare = _bare(tmp_path)
    done = install_hook(bare, parameters={"scan-env": "dev"})
    hook = bare / "hooks" / "post-receive"
    assert MARKER in hook.read_text() and hook.stat().st_mode & stat.S_IXUSR
    assert "-P -m pipeline hooks post-receive --repo" in hook.read_text()
    config = read_config(bare)
    assert config["main_branch"] == "main" and config["parameters"]["scan-env"] == "dev"
    signing = Path(config["parameters"]["signing-key-secret"])
    kek = Path(config["parameters"]["kek-secret"])
    assert (signing / "release.key").is_file() and (signing / "release.pub").is_file()
    assert json.loads((kek / "keyring.json").read_text())["keys"][0]["name"] == "release-kek"
    for directory in (signing, kek, RunStore(bare).root):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert set(done.created_secrets) == {"signing-key-secret", "kek-secret", "gitops-repo"}
    # The release's hand-off records into a bare GitOps repository beside the runs.
    gitops = Path(config["parameters"]["gitops-repo"])
    assert gitops == RunStore(bare).root / "gitops.git"
    assert subprocess.run(["git", "-C", str(gitops), "rev-parse", "--is-bare-repository"],
                          capture_output=True, text=True).stdout.strip() == "true"
    # Installing again keeps the keys (nothing created) and replaces our own hook.
    again = install_hook(bare)
    assert again.created_secrets == ()
    assert read_config(bare)["parameters"]["signing-key-secret"] == str(signing)


def test_install_refuses_what_would_not_work(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "work"
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    assert run(["hooks", "install", "--repo", str(work)]) == EXIT_CONFIG
    assert "not a bare git repository" in capsys.readouterr().err
    bare = _bare(tmp_path)
    assert run(["hooks", "install", "--repo", str(bare), "-p", "git-repo=x"]) == EXIT_CONFIG
    assert "the push sets git-repo" in capsys.readouterr().err
    assert run(["hooks", "install", "--repo", str(bare), "-p", "nope=1"]) == EXIT_CONFIG
    assert "no workflow has that parameter" in capsys.readouterr().err
    (bare / "hooks" / "post-receive").write_text("#!/bin/sh\necho mine\n")
    assert run(["hooks", "install", "--repo", str(bare)]) == EXIT_CONFLICT
    err = capsys.readouterr().err
    assert "not the pipeline's hook" in err and "Traceback" not in err
    assert (bare / "hooks" / "post-receive").read_text() == "#!/bin/sh\necho mine\n"
    assert run(["hooks", "install", "--repo", str(bare), "--force"]) == 0


@pytest.mark.parametrize(("ref", "workflow"), [
    ("refs/heads/main", "release"), ("refs/heads/feature/x", "pr-check"),
    ("refs/heads/mainline", "pr-check"), ("refs/tags/v1", None), ("refs/notes/x", None),
])
def test_main_runs_release_other_branches_pr_check(ref: str, workflow: str | None) -> None:
    assert workflow_for(ref, "main") == workflow


def test_a_push_queues_one_run_per_branch_deletions_and_tags_none(tmp_path: Path) -> None:
    bare = _bare(tmp_path)
    install_hook(bare, main_branch="trunk")
    zero, a, b = "0" * 40, "a" * 40, "b" * 40
    queued, ignored = on_push(bare, [f"{zero} {a} refs/heads/trunk",
                                     f"{a} {b} refs/heads/topic", f"{a} {zero} refs/heads/old",
                                     f"{zero} {a} refs/tags/v1", "garbage"], start_worker=False)
    assert [(r.workflow, r.revision, r.ref) for r in queued] == [
        ("release", a, "refs/heads/trunk"), ("pr-check", b, "refs/heads/topic")]
    assert ignored == ["refs/heads/old", "refs/tags/v1"]


@settings(deadline=None, max_examples=60)
@given(st.lists(st.one_of(
    st.text(max_size=120),
    st.tuples(st.sampled_from(["0" * 40, "a" * 40]), st.sampled_from(["0" * 40, "b" * 40]),
              st.text(max_size=30)).map(" ".join)), max_size=5))
def test_the_hook_input_parser_never_breaks(lines: list[str]) -> None:
    """Whatever stdin holds, only well-formed branch updates become runs."""
    store = RunStore(_PARSER_REPO)
    if not (store.root / "hooks.json").exists():
        store.root.mkdir(parents=True, exist_ok=True)
        (store.root / "hooks.json").write_text(json.dumps(
            {"version": 1, "main_branch": "main", "parameters": {}}))
    queued, ignored = on_push(_PARSER_REPO, lines, start_worker=False)
    for item in queued:
        assert item.ref.startswith("refs/heads/") and item.revision != "0" * 40
    assert len(queued) + len(ignored) <= len(lines)


_PARSER_REPO = Path(tempfile.mkdtemp(prefix="hook-parser-"))
atexit.register(shutil.rmtree, _PARSER_REPO, True)


def test_no_hook_no_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bare = _bare(tmp_path)
    assert run(["hooks", "work", "--repo", str(bare)]) == EXIT_CONFIG
    assert "no pipeline hook installed" in capsys.readouterr().err
    assert run(["runs", "list", "--repo", str(bare), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
