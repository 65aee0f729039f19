"""Runs the atheris target tests/fuzz/fuzz_untrusted_json.py for a bounded number of inputs.

libFuzzer exits the process when it is done, so the target runs in a subprocess; any
exception other than InputError from the seal.json, AdmissionReview or safetensors-header
parser (or the image extraction after a review) makes libFuzzer exit non-zero and write a
crash file, which fails this test.
"""

from __future__ import annotations

from pathlib import Path

from tests.fuzz.runner import assert_clean_run, assert_harness_reports_a_crash


def test_fuzz_untrusted_json_target_only_raises_input_error(tmp_path: Path) -> None:
    assert_clean_run("fuzz_untrusted_json", tmp_path, 5000, seed=1010, max_len=1024)


def test_fuzz_untrusted_json_harness_reports_a_failing_target(tmp_path: Path) -> None:
    assert_harness_reports_a_crash("fuzz_untrusted_json", tmp_path, seed=1010, max_len=1024)
