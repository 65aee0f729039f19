"""A keyring mounted read-only as a Kubernetes Secret volume gives a non-root pod.

kubelet writes Secret files owned by root with the pod's fsGroup and the chart's
``defaultMode: 0440``. The local key provider must accept exactly that shape for a
non-root process (uid 65532 here, as in the image) and refuse every looser one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import EXIT_INSECURE
from pipeline.sealing.keys.local import LocalKeyProvider
from tests.support.runtime import NONROOT, as_user

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def mounted(tmp_path: Path) -> Path:
    """A keyring with one key, laid out like a Secret volume: root-owned dir and file."""
    mount = tmp_path / "secret"
    mount.mkdir(mode=0o755)
    keyring = mount / "keyring.json"
    LocalKeyProvider(keyring).create_key("kek")
    os.chmod(mount, 0o755)
    os.chmod(tmp_path, 0o755)
    return keyring


def _listas_user(keyring: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "PIPELINE_KEYRING": str(keyring), "HOME": "/tmp",
           "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        as_user(sys.executable, "-m", "pipeline", "keys", "list", "--json"),
        env=env, cwd="/", capture_output=True, text=True, timeout=120, check=False)


def test_root_owned_0440_in_our_group_is_accepted(mounted: Path) -> None:
    os.chown(mounted, 0, NONROOT)
    os.chmod(mounted, 0o440)
    result = _listas_user(mounted)
    assert result.returncode == 0, result.stderr
    assert [k["name"] for k in json.loads(result.stdout)["keys"]] == ["kek"]


@pytest.mark.parametrize(
    ("gid", "mode", "reason"),
    [
        (NONROOT, 0o444, "accessible by others"),
        (NONROOT, 0o460, "writable by its group"),
        (0, 0o440, "not this process's group"),
    ],
)
def test_looser_mounts_are_refused(mounted: Path, gid: int, mode: int, reason: str) -> None:
    os.chown(mounted, 0, gid)
    os.chmod(mounted, mode)
    result = _listas_user(mounted)
    assert result.returncode == EXIT_INSECURE, result.stderr
    assert reason in result.stderr and "Traceback" not in result.stderr


def test_a_file_owned_by_another_user_is_refused(mounted: Path) -> None:
    os.chown(mounted, 1234, NONROOT)
    os.chmod(mounted, 0o400)
    result = _listas_user(mounted)
    assert result.returncode == EXIT_INSECURE
    assert "owned by uid 1234" in result.stderr
