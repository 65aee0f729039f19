"""The sealing tests' workspace: a keyring with one KEK and two signing key pairs.

Registered in tests/conftest.py as ``sealing_workspace``; test_sealing_flow.py and
test_sealing_hostile.py use it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cli import run


@pytest.fixture()
def sealing_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A keyring with one KEK and a signing key pair, isolated per test."""
    monkeypatch.setenv("PIPELINE_KEYRING", str(tmp_path / "keys" / "keyring.json"))
    monkeypatch.delenv("PIPELINE_TRUST", raising=False)
    monkeypatch.chdir(tmp_path)
    assert run(["keys", "create", "kek"]) == 0
    assert run(["keys", "create-signing", "signer", "--dir", str(tmp_path)]) == 0
    assert run(["keys", "create-signing", "other", "--dir", str(tmp_path)]) == 0
    return {
        "root": tmp_path,
        "private": tmp_path / "signer.key",
        "public": tmp_path / "signer.pub",
        "other_private": tmp_path / "other.key",
        "other_public": tmp_path / "other.pub",
    }
