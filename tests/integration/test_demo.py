"""The README's first command runs the main job end to end: keep it working.

``python -m examples.demo --only tiny`` seals, signs, verifies and loads the model,
builds its runtime image, attests it, pushes everything to a loopback registry,
applies the image policy and serves the model pulled by digest. The image build
shares the session's layer cache (``built_tiny`` builds the same project first), so
this costs seconds, not a cold build.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.build import Built

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT / "examples" / "tiny" / "model.safetensors"


def _plaintext_found(root: Path) -> list[Path]:
    """Files under ``root`` that contain a recognisable slice of tiny's plaintext weights."""
    raw = WEIGHTS.read_bytes()
    slices = [raw[i : i + 64] for i in range(len(raw) // 2, len(raw) - 64, 256)]
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if any(piece in data for piece in slices):
                hits.append(path)
    return hits


def test_demo_runs_the_release_end_to_end(built_tiny: Built, tmp_path: Path) -> None:
    work = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "examples.demo", "--only", "tiny", "--keep", str(work)],
        cwd=ROOT, env={**os.environ}, capture_output=True, text=True, timeout=600, check=False)
    out = result.stdout
    assert result.returncode == 0, (out + result.stderr)[-4000:]
    for expected in ("signature and all files valid", "chart policy-checked",
                     "3 attestations verified", "OIP v2 infer -> output [2, 4]",
                     "SIGTERM -> exit 0", "pulled by digest"):
        assert expected in out, out[-3000:]
    assert "Traceback" not in result.stderr
    # The plaintext weights are where a team keeps them, in its source repository (and
    # the workflow's checkout of it); everything the pipeline produced from them (sealed
    # model, image, registry storage, predicates, run records) holds none of them.
    assert (work / "tiny.sealed" / "model.safetensors.sealed").is_file()
    sources = (work / "source", work / "workflow-run" / "workspace" / "src")
    leaked = [p for p in _plaintext_found(work) if not any(p.is_relative_to(s) for s in sources)]
    assert leaked == []
    assert _plaintext_found(work / "registry") == []
