"""The ``workflows`` section of a project's pipeline.yaml: what a run of it is given."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import ConfigError
from pipeline.workflow.params import project_parameters, read_project_file
from pipeline.workflow.runner import load_plan

RELEASE = set(load_plan("release").parameters)
PR_CHECK = set(load_plan("pr-check").parameters)


def test_common_parameters_apply_where_declared_own_ones_win() -> None:
    data = {"workflows": {"parameters": {"repository": "r/x", "scan-env": "dev",
                                         "registry-insecure": True},
                          "release": {"scan-env": "staging"}}}
    assert project_parameters(data, "release", RELEASE) == {
        "repository": "r/x", "scan-env": "staging", "registry-insecure": "true"}
    # pr-check declares scan-env but not repository: only what it declares.
    assert project_parameters(data, "pr-check", PR_CHECK) == {"scan-env": "dev"}
    assert project_parameters({}, "release", RELEASE) == {}


@pytest.mark.parametrize("key", ["signing-key-secret", "kek-secret", "git-repo",
                                 "git-revision"])
def test_secrets_and_the_push_parameters_never_come_from_the_repository(key: str) -> None:
    with pytest.raises(ConfigError, match=f"workflows.parameters.{key} may not come from"):
        project_parameters({"workflows": {"parameters": {key: "/tmp/x"}}}, "release", RELEASE)


def test_an_unknown_parameter_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="workflows.release.registry: no workflow"):
        project_parameters({"workflows": {"release": {"registry": "x"}}}, "release", RELEASE)


@given(st.one_of(st.lists(st.integers()), st.text(), st.integers(),
                 st.dictionaries(st.text(), st.lists(st.text()), min_size=1)))
def test_malformed_sections_are_config_errors(section: object) -> None:
    """Never an exception other than ConfigError, whatever the YAML holds."""
    try:
        project_parameters({"workflows": {"parameters": section}}, "release", RELEASE)
    except ConfigError:
        pass


def test_read_at_the_pushed_revision_not_the_working_tree(tmp_path: Path) -> None:
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@e"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "pipeline.yaml").write_text("workflows: {parameters: {scan-env: dev}}\n")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "a"], check=True)
    (tmp_path / "pipeline.yaml").write_text("workflows: {parameters: {scan-env: prod}}\n")
    data = read_project_file(tmp_path, "HEAD")
    assert data["workflows"]["parameters"]["scan-env"] == "dev"
    (tmp_path / "pipeline.yaml").write_text(": : not yaml [\n")
    subprocess.run([*git, "commit", "-qam", "b"], check=True)
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_project_file(tmp_path, "HEAD")
    assert read_project_file(tmp_path, "HEAD~1:nothing") == {}
