"""A state directory the pods' uid cannot reach is refused up front, not deep in bwrap.

The premise, with the real bubblewrap: a bind source passed as an open fd is still
resolved by its path as the pod's uid, so a directory below a 0700 one (``/root``) fails
as ``Can't find source path /proc/self/fd/N: Permission denied``; below a searchable one
it works. Hence the check (pipeline/deploy/reach.py) and root's default state directory
under /var/lib.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.deploy import PYTHON, ROOT
from tests.support.dirs import searchable_tmpdir

pytestmark = pytest.mark.integration

CHART = ROOT / "helm" / "secure-runtime"
DIGEST = "sha256:" + "a" * 64


@pytest.fixture()
def base() -> Iterator[Path]:
    with searchable_tmpdir("reach-") as made:
        yield made


def _bind_as_pod_uid(source: Path) -> subprocess.CompletedProcess[str]:
    fd = os.open(source, os.O_PATH | os.O_DIRECTORY)
    try:
        return subprocess.run(
            [shutil.which("setpriv") or "/usr/bin/setpriv", "--reuid", "65532",
             "--regid", "65532", "--clear-groups", shutil.which("bwrap") or "/usr/bin/bwrap",
             "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib",
             "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
             "--ro-bind-fd", str(fd), "/mnt", "--unshare-user", "--uid", "65532",
             "--unshare-net", "--die-with-parent", "--", "/bin/ls", "/mnt"],
            pass_fds=(fd,), capture_output=True, text=True, timeout=30)
    finally:
        os.close(fd)


@pytest.mark.skipif(os.geteuid() != 0, reason="pods run as another uid only under root")
def test_bwrap_resolves_a_bind_fd_by_path_and_the_deploy_refuses_first(base: Path) -> None:
    closed = base / "home"
    (closed / "state").mkdir(parents=True)
    (closed / "state" / "marker").write_text("x")
    closed.chmod(0o700)
    refused = _bind_as_pod_uid(closed / "state")
    assert refused.returncode != 0 and "Permission denied" in refused.stderr
    closed.chmod(0o711)
    assert _bind_as_pod_uid(closed / "state").stdout.split() == ["marker"]
    closed.chmod(0o700)

    done = subprocess.run(
        [PYTHON, "-m", "pipeline", "deploy", "--local", "--chart", str(CHART),
         "--set", f"model.digest={DIGEST}", "--set", f"image.digest={DIGEST}",
         "--state-dir", str(closed / "new-state")],
        capture_output=True, text=True, timeout=120, cwd=str(ROOT))
    assert done.returncode == 3, done.stderr
    assert f"{closed} is mode 0700" in done.stderr and "Traceback" not in done.stderr
    assert "/var/lib/secure-model-pipeline/deploy" in done.stderr
    assert not (closed / "new-state").exists()  # nothing made, nothing pulled
