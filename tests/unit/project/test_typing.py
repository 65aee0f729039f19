"""``mypy --strict`` passes on the typed core (configuration: ``[tool.mypy]`` in pyproject.toml).

Why in the suite: a typing error in the core is a bug waiting for a caller (a ``None``
that reaches a digest comparison, a dict where RegistryOptions belongs); running the
checker here means CI (``make test``) refuses it like any failing test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
#: The packages held to ``--strict``; add a package here once it passes.
STRICT = ("pipeline/oci", "pipeline/sealing", "pipeline/signing")


@pytest.mark.slow
def test_mypy_strict_on_the_core() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", *STRICT],
        cwd=ROOT, capture_output=True, text=True, timeout=540, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout


def test_the_package_says_it_is_typed() -> None:
    assert (ROOT / "pipeline" / "py.typed").is_file()
