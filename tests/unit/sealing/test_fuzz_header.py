"""Runs the atheris target tests/fuzz/fuzz_header.py for a bounded number of inputs.

libFuzzer exits the process when it is done, so the target runs in a subprocess; any
exception other than IntegrityError inside it makes libFuzzer exit non-zero and write
a crash file, which fails this test.
"""

from __future__ import annotations

from pathlib import Path

from tests.fuzz.runner import assert_clean_run, assert_harness_reports_a_crash


def test_fuzz_header_target_only_raises_integrity_error(tmp_path: Path) -> None:
    assert_clean_run("fuzz_header", tmp_path, 3000, seed=12345, max_len=512)


def test_fuzz_header_harness_reports_a_failing_target(tmp_path: Path) -> None:
    assert_harness_reports_a_crash("fuzz_header", tmp_path, seed=12345, max_len=512)
