"""Run an atheris target for a bounded number of inputs (how the unit tests drive fuzzing).

Each target is a script under tests/fuzz/ taking libFuzzer flags; a run that finds a
crash exits non-zero and leaves ``crash-*`` files under ``artifacts``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

FUZZ_DIR = Path(__file__).resolve().parent
ROOT = FUZZ_DIR.parents[1]


def run_target(
    name: str, artifacts: Path, runs: int, *, seed: int, max_len: int, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``tests/fuzz/<name>.py`` for ``runs`` inputs from ``seed``; returns the result."""
    return subprocess.run(
        [
            sys.executable,
            str(FUZZ_DIR / f"{name}.py"),
            f"-runs={runs}",
            f"-seed={seed}",
            f"-max_len={max_len}",
            f"-artifact_prefix={artifacts}/",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_clean_run(name: str, artifacts: Path, runs: int, *, seed: int, max_len: int) -> None:
    """``runs`` inputs raise nothing but the errors the target allows: no crash file."""
    result = run_target(name, artifacts, runs, seed=seed, max_len=max_len)
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"Done {runs} runs" in result.stderr
    assert not list(artifacts.glob("crash-*"))


def assert_harness_reports_a_crash(name: str, artifacts: Path, *, seed: int, max_len: int) -> None:
    """Proves :func:`assert_clean_run` can fail: a target that raises is reported as a crash."""
    result = run_target(name, artifacts, 10, seed=seed, max_len=max_len, FUZZ_SELF_TEST="1")
    assert result.returncode != 0
    assert "self-test: the harness must report this" in result.stdout + result.stderr
    assert list(artifacts.glob("crash-*"))
