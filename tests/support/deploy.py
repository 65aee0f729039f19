"""Fixtures of the local-deploy tests: the built tiny image in a loopback registry, a
sealed model, keys laid out as the chart mounts them, and ``pipeline deploy --local`` run
as a real foreground process that is stopped with SIGTERM.

The image cache (state dir) is shared by the session: unpacking once per digest is the
behaviour under test for the second start, and it keeps the suite from unpacking the
torch layer per test.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.build import Built
from tests.support.runtime import TINY, Workspace, make_workspace, runtime_env, seal

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "secure-runtime"
PODS_CHART = ROOT / "tests" / "fixtures" / "deploy" / "pods"
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
URL = re.compile(r"(\S+): port (\S+) serves at (http://127\.0\.0\.1:\d+)")


@dataclass(frozen=True)
class DeployImage:
    """The tiny image pushed to the session registry, by digest."""

    registry: str
    repository: str
    digest: str

    @property
    def ref(self) -> str:
        return f"{self.registry}/{self.repository}@{self.digest}"


@dataclass(frozen=True)
class DeployInputs:
    """Keys and a sealed model under a directory uid 65532 may traverse."""

    base: Path
    ws: Workspace
    models: Path
    keys: Path
    state: Path


def push_image(built: Built, registry: object, repository: str) -> DeployImage:
    from pipeline.oci.layout import OCILayout
    from pipeline.oci.reference import Reference
    from pipeline.oci.transfer import push_layout

    host = registry.host  # type: ignore[attr-defined]
    client = registry.client()  # type: ignore[attr-defined]
    try:
        digest = push_layout(OCILayout.open(built.layout), Reference.parse(
            f"{host}/{repository}:latest"), client)
    finally:
        client.close()
    return DeployImage(host, repository, digest)


@pytest.fixture(scope="session")
def deploy_image(built_tiny: Built, registry: object) -> DeployImage:  # noqa: F811
    return push_image(built_tiny, registry, "deploy/tiny")


@pytest.fixture(scope="session")
def deploy_inputs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployInputs]:
    ws = make_workspace(tmp_path_factory.mktemp("deploy-keys"))
    base = Path(tempfile.mkdtemp(prefix="deploy-", dir="/tmp"))
    try:
        base.chmod(0o755)
        models = base / "models"
        models.mkdir(mode=0o755)
        seal(ws, TINY, models / "tiny")
        keys = base / "keys"  # root-only: the deploy reads it, the pod gets a copy in tmpfs
        keys.mkdir(mode=0o700)
        shutil.copy(ws.keyring, keys / "kek")
        yield DeployInputs(base, ws, models, keys, base / "state")
    finally:
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class DeployRun:
    """A running ``pipeline deploy --local``; its stdout and stderr go to files."""

    process: subprocess.Popen[bytes]
    out: Path
    err: Path

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def errors(self) -> str:
        return self.err.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 300.0, stream: str = "out") -> re.Match[str]:
        """Poll the output until ``pattern`` appears (the deploy's own lines, no sleeps)."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern, re.M)
        while time.monotonic() < deadline:
            text = self.output() if stream == "out" else self.errors()
            found = regex.search(text)
            if found:
                return found
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not seen (exit {self.process.poll()}):\n"
                             f"--- stdout\n{self.output()[-4000:]}\n--- stderr\n"
                             f"{self.errors()[-4000:]}")

    def url(self, service: str, timeout: float = 300.0) -> str:
        return self.wait_for(rf"Service/\S+/{re.escape(service)}: port http serves at "
                             r"(http://127\.0\.0\.1:\d+)", timeout).group(1)

    def stop(self, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise


def start_deploy(args: Sequence[str], log_dir: Path) -> DeployRun:
    log_dir.mkdir(parents=True, exist_ok=True)
    out, err = log_dir / "deploy.out", log_dir / "deploy.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        process = subprocess.Popen(
            [PYTHON, "-m", "pipeline", "deploy", "--local", *args], stdout=stdout,
            stderr=stderr, env=runtime_env(), cwd=str(ROOT))
    return DeployRun(process, out, err)


@pytest.fixture
def deploys(tmp_path: Path) -> Iterator[list[DeployRun]]:
    """Started deploys are stopped at the end of the test, whatever happened."""
    runs: list[DeployRun] = []
    yield runs
    for run in runs:
        if run.process.poll() is None:
            run.process.send_signal(signal.SIGTERM)
            try:
                run.process.wait(60)
            except subprocess.TimeoutExpired:
                run.process.kill()


def pod_pids(hostname_prefix: str) -> list[int]:
    """Host PIDs of bubblewrap sandboxes whose ``--hostname`` (the pod name) starts with
    ``hostname_prefix``: none may be left once the deploy has stopped."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith("bwrap") and "--hostname" in cmd:
            name = cmd[cmd.index("--hostname") + 1]
            if name.startswith(hostname_prefix):
                found.append(int(entry.name))
    return found
