"""The image's source label never carries the credentials of the git remote, nor a local path."""

from __future__ import annotations

import pytest

from pipeline.build.source import network_remote, strip_userinfo


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
    assert strip_userinfo(remote) == label
    assert network_remote(remote) == label


@pytest.mark.parametrize(
    ("remote", "label"),
    [
        ("git@github.com:org/repo.git", "ssh://github.com/org/repo.git"),
        ("github.com:org/repo", "ssh://github.com/org/repo"),
        ("/home/builder/src/model.git", None),
        ("../origin", None),
        ("file:///srv/git/model.git", None),
        ("FILE:///srv/git/model.git", None),
        ("ext::sh -c evil", None),
        ("/tmp/a:b/repo", None),
        ("", None),
    ],
)
def test_only_network_remotes_are_a_source(remote: str, label: str | None) -> None:
    assert network_remote(remote) == label
