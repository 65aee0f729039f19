"""Which directory on the way to a bind source a pod's uid could not search."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.config import ROOT_DEPLOY_STATE, DeploySettings
from pipeline.deploy.reach import check_pod_reachable, unreachable_parent
from pipeline.errors import ConfigError
from tests.support.dirs import searchable_tmpdir


@pytest.fixture()
def open_dir() -> Iterator[Path]:
    with searchable_tmpdir("reach-") as made:
        yield made


def test_the_first_unsearchable_directory_is_named(open_dir: Path) -> None:
    closed = open_dir / "home"
    (closed / "cache" / "deploy").mkdir(parents=True)
    closed.chmod(0o700)
    assert unreachable_parent(closed / "cache" / "deploy") == closed
    assert unreachable_parent(closed / "cache" / "not-yet" / "made") == closed
    closed.chmod(0o711)  # searchable, not listable: enough to reach below it
    assert unreachable_parent(closed / "cache" / "deploy") is None
    assert unreachable_parent(open_dir / "missing" / "state") is None


def test_root_refuses_a_state_directory_below_a_closed_one(open_dir: Path) -> None:
    closed = open_dir / "root-home"
    closed.mkdir(mode=0o700)
    closed.chmod(0o700)
    if os.geteuid() == 0:  # pods run as their own uid: refused up front, named
        with pytest.raises(ConfigError, match=r"root-home is mode 0700.*others may not search"):
            check_pod_reachable(closed / "state", "the state directory")
        assert DeploySettings().state_dir == ROOT_DEPLOY_STATE
    else:  # pods run as our own uid: nothing to refuse
        check_pod_reachable(closed / "state", "the state directory")
        assert DeploySettings().state_dir != ROOT_DEPLOY_STATE
    assert unreachable_parent(ROOT_DEPLOY_STATE) is None or not ROOT_DEPLOY_STATE.exists()
