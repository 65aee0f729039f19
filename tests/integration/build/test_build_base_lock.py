"""``pipeline build --base-lock FILE`` really builds the base from FILE (real .debs)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipeline.build.debian import DebianLock, load_lock, write_lock
from pipeline.cli import run
from tests.support.build import Built

pytestmark = pytest.mark.integration


def _manifest(layout: Path, digest: str) -> dict:
    return json.loads((layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes())


def test_base_lock_flag_selects_the_lock(built: Built, tmp_path: Path, capsys) -> None:
    session = load_lock(Path(os.environ["PIPELINE_BASE_LOCK"]))
    # Same packages (their .debs are cached), other roots line: another lock digest.
    other = DebianLock(session.packages, (*session.roots, "zlib1g"))
    assert other.digest() != session.digest()
    override = tmp_path / "other.lock"
    write_lock(other, override)
    out = tmp_path / "out"
    args = ["build", str(built.project), "--out", str(out), "--base-lock", str(override)]
    assert run([*args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [layer["cached"] for layer in data["layers"]] == [False, True, True]
    annotations = _manifest(out, data["digest"])["annotations"]
    assert annotations["io.secure-model-pipeline.base-lock"] == other.digest()
    assert data["digest"] != built.digest
