"""The image's source label never carries the credentials of the git remote."""

from __future__ import annotations

import pytest

from pipeline.build.image import _source_url


@pytest.mark.parametrize(
    ("remote", "label"),
    [
        ("https://github.com/org/repo.git", "https://github.com/org/repo.git"),
        ("https://x-access-token:ghs_abc123@github.com/org/repo",
         "https://github.com/org/repo"),
        # a password with an unescaped '@': nothing of it may remain
        ("https://user:p@ss@host.example/x", "https://host.example/x"),
        ("HTTPS://token@host.example/x", "HTTPS://host.example/x"),
        ("ssh://git@host.example/org/repo", "ssh://host.example/org/repo"),
        ("https://host.example/path@v1", "https://host.example/path@v1"),
    ],
)
def test_source_url_drops_userinfo(remote: str, label: str) -> None:
    assert _source_url(remote) == label
