"""Signing key pairs for tests, made by the project's own key generator."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.signing.keypair import PASSWORD_ENV, create_signing_keypair


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], tuple[Path, Path]]:
    """Factory: ``keys("alice")`` -> (private PEM, public PEM) of a fresh P-256 pair."""
    monkeypatch.delenv(PASSWORD_ENV, raising=False)

    def make(name: str) -> tuple[Path, Path]:
        private, public = tmp_path / f"{name}.key", tmp_path / f"{name}.pub"
        create_signing_keypair(private, public)
        return private, public

    return make
