"""Runs the atheris target tests/fuzz/fuzz_manifests.py for a bounded number of inputs.

libFuzzer exits the process when it is done, so the target runs in a subprocess; any
exception other than InputError (from the loader or the evaluator) makes libFuzzer exit
non-zero and write a crash file, which fails this test.
"""

from __future__ import annotations

from pathlib import Path

from tests.fuzz.runner import assert_clean_run, assert_harness_reports_a_crash


def test_fuzz_manifests_target_only_raises_input_error(tmp_path: Path) -> None:
    assert_clean_run("fuzz_manifests", tmp_path, 5000, seed=4242, max_len=1024)


def test_fuzz_manifests_harness_reports_a_failing_target(tmp_path: Path) -> None:
    assert_harness_reports_a_crash("fuzz_manifests", tmp_path, seed=4242, max_len=1024)
