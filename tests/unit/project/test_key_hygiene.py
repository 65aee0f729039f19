"""Private keys made by following the docs never show up in ``git status``."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("path", [".keys/release.key", ".keys/keyring.json",
                                  "examples/tiny/.keys/release.key", "release.key"])
def test_key_material_in_the_checkout_is_ignored_by_git(path: str) -> None:
    proc = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", "--no-index", path],
                          check=False, capture_output=True)
    assert proc.returncode == 0, f"{path} is not ignored: {proc.stderr.decode()}"


def test_the_quick_tour_keeps_keys_outside_the_checkout() -> None:
    tour = (ROOT / "README.md").read_text().split("## Quick tour", 1)[1].split("\n## ", 1)[0]
    assert "KEYS=$HOME/" in tour
    for line in tour.splitlines():
        assert not re.search(r"--dir\s+(\.|\.keys|\$PWD)", line), line
        assert "$PWD/.keys" not in line and ".keys/" not in line, line
