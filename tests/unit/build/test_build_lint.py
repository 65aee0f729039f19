"""Image lint: each rule refuses what it names, and a clean image passes."""

from __future__ import annotations

import pytest

from pipeline.build.lint import IndexEntry, enforce, lint_config, lint_image, merge_layers
from pipeline.errors import EXIT_BUILD, BuildError

GOOD_CONFIG = {
    "config": {
        "User": "65532:65532",
        "Env": ["PATH=/usr/bin", "KEY_FILE=/run/k"],
        "Labels": {"org.opencontainers.image.authors": "ml team"},
    }
}
BASE = [
    IndexEntry("usr/bin/python3.11", "file", 0o755),
    IndexEntry("tmp", "dir", 0o1777),
    IndexEntry("etc", "dir", 0o755),
]


def rules(layers, config=GOOD_CONFIG) -> set[str]:
    return {f.rule for f in lint_image(layers, config)}


def test_clean_image_passes() -> None:
    assert lint_image([BASE], GOOD_CONFIG) == []
    enforce([])


@pytest.mark.parametrize(
    ("entry", "rule"),
    [
        (IndexEntry("bin/sh", "symlink", 0o777), "shell"),
        (IndexEntry("usr/bin/bash", "file", 0o755), "shell"),
        (IndexEntry("usr/bin/apt-get", "file", 0o755), "package-manager"),
        (IndexEntry("usr/bin/dpkg", "file", 0o755), "package-manager"),
        (IndexEntry("usr/local/lib/python3.11/dist-packages/pip", "dir", 0o755), "package-manager"),
        (IndexEntry("usr/bin/passwd", "file", 0o4755), "setuid"),
        (IndexEntry("usr/bin/wall", "file", 0o2755), "setgid"),
        (IndexEntry("var/cache", "dir", 0o777), "world-writable"),
        (IndexEntry("usr/bin/ssh", "file", 0o755), "ssh"),
        (IndexEntry("usr/sbin/sshd", "file", 0o755), "ssh"),
    ],
)
def test_filesystem_rules(entry: IndexEntry, rule: str) -> None:
    assert rule in rules([BASE, [entry]])


@pytest.mark.parametrize(
    ("config", "rule"),
    [
        ({"config": {}}, "root-user"),
        ({"config": {"User": "0:0"}}, "root-user"),
        ({"config": {"User": "root"}}, "root-user"),
        ({"config": {"User": "1", "Env": ["DB_PASSWORD=hunter2"]}}, "secret-in-env"),
        ({"config": {"User": "1", "Env": ["X=AKIAIOSFODNN7EXAMPLE"]}}, "secret-in-env"),
        ({"config": {"User": "1", "Labels": {"api_token": "abc"}}}, "secret-in-label"),
        (
            {"config": {"User": "1", "Labels": {"note": "-----BEGIN RSA PRIVATE KEY-----"}}},
            "secret-in-label",
        ),
    ],
)
def test_config_rules(config: dict, rule: str) -> None:
    assert rule in {f.rule for f in lint_config(config)}


def test_secret_pointers_are_not_secrets() -> None:
    config = {"config": {"User": "65532", "Env": ["TOKEN_FILE=/var/run/token", "API_KEY_ID=k1"]}}
    assert lint_config(config) == []


def test_whiteout_removes_a_shell_from_the_view() -> None:
    layers = [BASE + [IndexEntry("bin/sh", "file", 0o755)], [IndexEntry("bin/.wh.sh", "file", 0)]]
    assert "bin/sh" not in merge_layers(layers)
    assert "shell" not in rules(layers)


def test_enforce_raises_build_error_exit_13() -> None:
    findings = lint_image([BASE, [IndexEntry("bin/bash", "file", 0o755)]], {"config": {}})
    with pytest.raises(BuildError) as info:
        enforce(findings)
    assert info.value.exit_code == EXIT_BUILD == 13
    assert "shell" in str(info.value) and "root-user" in str(info.value)
