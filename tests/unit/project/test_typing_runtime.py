"""``mypy --strict`` is green on ``secure_runtime`` (settings in pyproject's [tool.mypy]).

Why a test: the runtime is the code that holds keys and plaintext weights; a type
checker that nobody runs lets ``Any`` creep back in. The generated gRPC stubs are
excluded there; nothing else is (the loader's old exclusion is gone: it holds plaintext).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_mypy_strict_passes_on_secure_runtime() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(ROOT / ".mypy_cache" / "runtime"),
         "-p", "secure_runtime"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout


def test_the_strict_settings_are_the_ones_in_pyproject() -> None:
    """The run above is strict because the config says so, not by a flag only it passes."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mypy"]
    assert config["strict"] is True
    ignored = {m for o in config.get("overrides", []) if o.get("ignore_errors")
               for m in o["module"] if m.startswith("secure_runtime")}
    assert ignored <= {"secure_runtime.proto", "secure_runtime.proto.*"}
