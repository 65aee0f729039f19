"""Helpers for the runtime's integration tests: keys, sealed models, runtime processes.

Everything is real: keys come from ``pipeline keys``, models from ``pipeline seal``,
and the runtime runs as ``python -m secure_runtime`` in a subprocess on 127.0.0.1.
Readiness is polled with short intervals, never slept for.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "examples" / "tiny"
MINILM = ROOT / "examples" / "minilm"
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
START_TIMEOUT = 60.0


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Workspace:
    """A keyring with one KEK, a trusted signer and an untrusted one."""

    root: Path
    keyring: Path
    private: Path
    public: Path
    other_private: Path
    other_public: Path


def make_workspace(root: Path) -> Workspace:
    """Create keys with the real CLI (in-process, keyring path via the environment)."""
    from pipeline.cli import run

    root.mkdir(parents=True, exist_ok=True)
    keyring = root / "keys" / "keyring.json"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIPELINE_KEYRING", str(keyring))
        patch.delenv("PIPELINE_TRUST", raising=False)
        assert run(["keys", "create", "kek"]) == 0
        assert run(["keys", "create-signing", "signer", "--dir", str(root)]) == 0
        assert run(["keys", "create-signing", "other", "--dir", str(root)]) == 0
    return Workspace(root, keyring, root / "signer.key", root / "signer.pub",
                     root / "other.key", root / "other.pub")


def seal(ws: Workspace, project: Path, out: Path, *, sign: bool = True) -> Path:
    """``pipeline seal PROJECT --key kek --out OUT [--sign-key signer.key]``."""
    from pipeline.cli import run

    args = ["seal", str(project), "--key", "kek", "--out", str(out)]
    if sign:
        args += ["--sign-key", str(ws.private)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIPELINE_KEYRING", str(ws.keyring))
        assert run(args) == 0
    return out


def write_broken_project(directory: Path) -> Path:
    """tiny, except that forward raises whenever the input is not all zeros (warm-up sends
    zeros, so it starts; real traffic gets HTTP 500: a canary that fails its analysis)."""
    shutil.copytree(TINY, directory)
    model = directory / "model.py"
    model.write_text(model.read_text() + (
        "\n\nclass Broken(TinyClassifier):\n"
        "    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002\n"
        "        if bool(input.abs().sum() > 0):\n"
        "            raise RuntimeError('canary bug')\n"
        "        return super().forward(input)\n\n\n"
        "def build_broken(config: dict) -> nn.Module:\n"
        "    return Broken(config['features'], config['hidden'], config['classes'])\n"
    ))
    spec = directory / "pipeline.yaml"
    spec.write_text(spec.read_text().replace("factory: build_model", "factory: build_broken"))
    return directory


def write_slow_project(directory: Path) -> Path:
    """A model whose forward sleeps ``input[0, 0]`` seconds (warm-up sends 0: no sleep)."""
    import torch
    from safetensors.torch import save_file

    directory.mkdir(parents=True)
    (directory / "model.py").write_text(
        "import time\n"
        "import torch\n"
        "from torch import nn\n\n\n"
        "class Slow(nn.Module):\n"
        "    def __init__(self) -> None:\n"
        "        super().__init__()\n"
        "        self.scale = nn.Parameter(torch.ones(2))\n\n"
        "    def forward(self, input: torch.Tensor) -> torch.Tensor:\n"
        "        time.sleep(float(input[0, 0]))\n"
        "        return input * self.scale\n\n\n"
        "def build_model(config: dict) -> nn.Module:\n"
        "    return Slow()\n"
    )
    (directory / "config.json").write_text("{}")
    (directory / "pipeline.yaml").write_text(
        "name: slow\n"
        "model:\n"
        "  module: model.py\n"
        "  factory: build_model\n"
        "  config: config.json\n"
        "  weights: [model.safetensors]\n"
        "  inputs:\n"
        "    - {name: input, datatype: FP32, shape: [-1, 2]}\n"
        "  outputs:\n"
        "    - {name: output, datatype: FP32, shape: [-1, 2]}\n"
    )
    save_file({"scale": torch.full((2,), 2.0)}, str(directory / "model.safetensors"))
    return directory


def runtime_env(**extra: str) -> dict[str, str]:
    """The test's environment without pipeline/runtime settings that would leak in."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIPELINE_", "SECURE_RUNTIME_", "PYTEST_"))
    }
    env.update(PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
    env.update(extra)
    return env


def runtime_args(ws: Workspace, model: str | Path, port: int, *extra: str,
                 grpc_port: int | None = None) -> list[str]:
    """``python -m secure_runtime --model M --trust signer.pub --key-file KEYRING --port P``."""
    args = [PYTHON, "-m", "secure_runtime", "--model", str(model), "--trust", str(ws.public),
            "--key-file", str(ws.keyring), "--port", str(port)]
    args += ["--grpc-port", str(grpc_port)] if grpc_port else ["--no-grpc"]
    return [*args, *extra]


@dataclass
class Runtime:
    """A runtime process; its stdout+stderr go to ``log_path``."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    grpc_port: int | None = None
    _closed: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=kwargs.pop("timeout", 10), **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.post(self.url + path, timeout=kwargs.pop("timeout", 10), **kwargs)

    def wait_for(self, path: str, status: int, timeout: float = START_TIMEOUT) -> list[int]:
        """Poll ``path`` until it answers ``status``; returns the statuses seen on the way."""
        seen: list[int] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"runtime exited with {self.process.returncode} before {path} gave "
                    f"{status}:\n{self.log()[-3000:]}"
                )
            try:
                code = requests.get(self.url + path, timeout=2).status_code
            except requests.RequestException:
                code = 0
            if not seen or seen[-1] != code:
                seen.append(code)
            if code == status:
                return seen
            time.sleep(0.02)
        raise AssertionError(f"{path} never gave {status} (saw {seen}):\n{self.log()[-3000:]}")

    def wait_ready(self, timeout: float = START_TIMEOUT) -> list[int]:
        return self.wait_for("/v2/health/ready", 200, timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Signal the process and wait for its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        finally:
            self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def start_runtime(
    args: Sequence[str],
    log_path: Path,
    port: int,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    grpc_port: int | None = None,
    **popen: Any,
) -> Runtime:
    """Start a runtime process (does not wait)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            list(args), stdout=log, stderr=subprocess.STDOUT, env=env or runtime_env(),
            cwd=str(cwd or log_path.parent), **popen,
        )
    return Runtime(process, port, log_path, grpc_port)


def run_to_exit(args: Sequence[str], *, timeout: float = START_TIMEOUT,
                env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[int, str]:
    """Run a runtime that is expected to stop by itself; returns (exit code, log)."""
    completed = subprocess.run(
        list(args), capture_output=True, text=True, timeout=timeout, env=env or runtime_env(),
        cwd=str(cwd) if cwd else None,
    )
    return completed.returncode, completed.stdout + completed.stderr


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` text -> {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def metric(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
           **labels: str) -> float | None:
    """One sample's value, or None when absent."""
    return samples.get((name, tuple(sorted(labels.items()))))


def copy_sealed(sealed: Path, dest: Path) -> Path:
    """A private copy of a sealed model, for tests that tamper with it."""
    shutil.copytree(sealed, dest)
    return dest


NONROOT = 65532


def as_user(*command: str, uid: int = NONROOT, gid: int = NONROOT,
            read_anything: bool = True) -> list[str]:
    """``command`` run as a real host uid/gid (no other groups) through ``setpriv``.

    ``read_anything`` adds CAP_DAC_READ_SEARCH, and only that: the interpreter lives
    under /root here (0700). It grants no CAP_IPC_LOCK and does not make the process
    non-dumpable by itself, so hardening checks still see an ordinary process.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("setpriv (util-linux) is needed to drop to an unprivileged uid")
    caps = (["--inh-caps", "+dac_read_search", "--ambient-caps", "+dac_read_search"]
            if read_anything else [])
    return [setpriv, "--reuid", str(uid), "--regid", str(gid), "--clear-groups", *caps,
            *command]


def bwrap_child_pid(rt: Runtime) -> int:
    """Host PID of the runtime under bwrap: bwrap's only child (PID 1 of its namespace)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        children = Path(f"/proc/{rt.pid}/task/{rt.pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.01)
    raise AssertionError("bwrap started no child")
