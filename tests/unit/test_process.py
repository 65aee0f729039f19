"""pipeline/_process.py: what a git hook's environment may pass on to the processes it starts."""

from __future__ import annotations

import subprocess

from hypothesis import given
from hypothesis import strategies as st

from pipeline._process import GIT_REPOSITORY_VARS, without_git_repository_env


def test_every_variable_git_calls_repository_local_is_dropped() -> None:
    """git's own list (``rev-parse --local-env-vars``) is a subset of ours."""
    local = subprocess.run(["git", "rev-parse", "--local-env-vars"], capture_output=True,
                           text=True, check=True).stdout.split()
    assert local and set(local) <= GIT_REPOSITORY_VARS


def test_a_receive_hooks_environment_is_scrubbed_identity_kept() -> None:
    hook = {"GIT_DIR": ".", "GIT_QUARANTINE_PATH": "/r/objects/tmp", "GIT_PUSH_OPTION_COUNT": "1",
            "GIT_PUSH_OPTION_0": "ci.skip", "GIT_CONFIG_KEY_0": "core.bare",
            "GIT_CONFIG_VALUE_0": "true", "GIT_AUTHOR_NAME": "Ada", "GIT_SSH_COMMAND": "ssh",
            "GIT_CONFIG_GLOBAL": "/h/.gitconfig", "PATH": "/bin", "HOME": "/h"}
    assert without_git_repository_env(hook) == {
        "GIT_AUTHOR_NAME": "Ada", "GIT_SSH_COMMAND": "ssh", "GIT_CONFIG_GLOBAL": "/h/.gitconfig",
        "PATH": "/bin", "HOME": "/h"}


@given(st.dictionaries(st.text(min_size=1, max_size=20).filter(lambda k: "\0" not in k),
                       st.text(max_size=10)))
def test_nothing_but_repository_variables_is_ever_dropped(env: dict[str, str]) -> None:
    kept = without_git_repository_env(env)
    assert set(kept) <= set(env)
    assert all(k.startswith("GIT_") for k in set(env) - set(kept))
    assert not set(kept) & GIT_REPOSITORY_VARS
