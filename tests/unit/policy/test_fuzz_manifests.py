"""Runs the atheris target tests/fuzz/fuzz_manifests.py for a bounded number of inputs.

libFuzzer exits the process when it is done, so the target runs in a subprocess; any
exception other than InputError (from the loader or the evaluator) makes libFuzzer exit
non-zero and write a crash file, which fails this test.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.fuzz.runner import run_target


def _run(tmp_path: Path, runs: int, **env: str) -> subprocess.CompletedProcess[str]:
    return run_target("fuzz_manifests", tmp_path, runs, seed=4242, max_len=1024, **env)


def test_fuzz_manifests_target_only_raises_input_error(tmp_path: Path) -> None:
    result = _run(tmp_path, 5000)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Done 5000 runs" in result.stderr
    assert not list(tmp_path.glob("crash-*"))


def test_fuzz_manifests_harness_reports_a_failing_target(tmp_path: Path) -> None:
    result = _run(tmp_path, 10, FUZZ_MANIFESTS_SELF_TEST="1")
    assert result.returncode != 0
    assert "self-test: the harness must report this" in result.stdout + result.stderr
    assert list(tmp_path.glob("crash-*"))
