"""The README's first command runs the whole story: keep it working.

``python -m examples.demo`` scaffolds a model repository, installs the hook and pushes
three versions (v1 and v2 promoted to dev on pods from the pushed image, v3 a
regression rolled back by its failed canary analysis), rolls dev back to v1, asks the
admission webhook about dev's manifests, an unsigned and a privileged pod, starts the
runtime on a tampered sealed model, and writes the evidence report. This test runs it as
``make demo`` does and checks every outcome where it is recorded: the GitOps repository,
the run records, the report, and the summary. The image build shares the session's layer
cache (``built_tiny`` builds the same project first). Slow (minutes), never timed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.release.gitops import GitOpsRepo
from tests.support.build import Built

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT / "examples" / "tiny" / "model.safetensors"


def _plaintext_found(root: Path) -> list[Path]:
    """Files under ``root`` that contain a recognisable slice of tiny's plaintext weights."""
    raw = WEIGHTS.read_bytes()
    slices = [raw[i : i + 64] for i in range(len(raw) // 2, len(raw) - 64, 256)]
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()
            and any(piece in p.read_bytes() for piece in slices)]


@pytest.fixture
def out_dir() -> Iterator[Path]:
    """The demo's --out: its pods' state directory is below it, so every directory above
    must be open to the pod's uid (pytest's tmp_path is below a 0700 directory)."""
    out = Path(tempfile.mkdtemp(prefix="demo-out-", dir="/tmp"))
    try:
        out.chmod(0o755)
        yield out
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_demo_tells_the_whole_story(built_tiny: Built, tmp_path: Path, out_dir: Path) -> None:
    work, out = tmp_path / "work", out_dir
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "PYTEST_"))}
    done = subprocess.run([sys.executable, "-m", "examples.demo", "--keep", str(work),
                           "--out", str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1400, check=False)
    text = done.stdout
    assert done.returncode == 0, (text + done.stderr)[-6000:]
    assert "Traceback" not in done.stderr and "Traceback" not in text

    # The runs the pushes started: v1 and v2 succeeded (released and promoted), v3's
    # promote step failed with the failed analysis' exit code (11) after rolling back.
    bare = work / "fraud-model.git"
    runs = json.loads(subprocess.run(
        [sys.executable, "-m", "pipeline", "runs", "list", "--repo", str(bare), "--json"],
        capture_output=True, text=True, check=True).stdout)
    assert [(r["id"], r["state"]) for r in reversed(runs)] == [
        ("000001", "succeeded"), ("000002", "succeeded"), ("000003", "failed")]
    assert runs[0]["failed_step"] == "promote" and runs[0]["exit_code"] == 11
    v1, v2, v3 = (r["outputs"]["model_ref"] for r in reversed(runs))
    images = {r["outputs"]["image_ref"] for r in runs}

    # Git says what happened, step by step: every promotion, the automatic roll-back of
    # v3 (to v2, with its reason), and the manual roll-back to v1 as the last commit.
    clone = tmp_path / "gitops"
    subprocess.run(["git", "clone", "-q", str(bare / "pipeline-runs" / "gitops.git"),
                    str(clone)], check=True)
    repo = GitOpsRepo(clone, create=False)
    history = repo.history("dev")  # newest first
    states = [c.state for c in reversed(history)]
    promoted = [s.model for s in states if s.status == "promoted"]
    assert promoted[:2] == [v1, v2], [(s.status, s.model) for s in states]
    auto = next(s for s in states if s.status == "rolled-back" and s.failed is not None
                and s.failed.model == v3)
    assert auto.stable is not None and auto.stable.model == v2 and auto.weight == 0
    # The regression answers errors: the canary's success rate is below the threshold.
    assert any(r.startswith("success rate ") and "< 0.990" in r for r in auto.reasons), \
        auto.reasons
    # v2 walked dev's canary: 50 % then 100 %.
    assert any(s.model == v2 and s.weight == 50 for s in states)
    last = history[0]
    current = repo.current("dev")
    assert current is not None and current.model == v1 and current.image in images
    assert "back to v1 after the v3 incident" in last.message + " ".join(current.reasons)

    # The guards, as the summary reports them.
    assert re.search(r"admission: (\d+) of \1 rendered workloads admitted; unsigned-image "
                     r"pod denied, privileged pod denied", text), text[-3000:]
    assert re.search(r"tampered sealed model .*runtime refused it, exit 5", text), text
    assert "failed authentication (tampered" in text
    assert "{'" not in text and "Release(" not in text  # no Python reprs

    # The evidence report: its path printed, the release's digests on the page.
    # (`pipeline report` prints it, and the summary's last line repeats it)
    paths = re.findall(r"^report: (.+)$", text, flags=re.M)
    path = paths[-1]
    assert set(paths) == {path} and text.rstrip().endswith(f"report: {path}")
    page = Path(path).read_text()
    assert Path(path) == out / "report.html"
    for ref in (current.image, current.model):
        assert ref.partition("@")[2] in page
    timings = json.loads((out / "timings.json").read_text())
    assert list(timings["phases"]) == ["scaffold", "push-v1", "push-v2", "push-v3",
                                       "rollback", "admission", "report"]

    # Nothing the pipeline produced holds plaintext weights (the project's source and
    # the runs' checkouts of it are where a team keeps them).
    assert _plaintext_found(work / "registry") == []
    assert _plaintext_found(out / "state") == []
