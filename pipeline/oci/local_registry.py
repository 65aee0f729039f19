"""A registry on this machine: the Debian ``docker-registry`` (distribution 2.8) on loopback.

The local path of the pipeline is real, only smaller: where a team would push to its
registry, the demo, the benchmarks and the tests push to this one, started on
127.0.0.1 with its own storage directory and stopped afterwards. Plain HTTP is fine
there (loopback only); TLS and htpasswd are added by whoever needs them through
``config``.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from pipeline._process import stop_process
from pipeline.errors import ConfigError, UnreachableError

__all__ = ["LocalRegistry", "free_port", "start_local_registry"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalRegistry:
    """A running registry process; ``host`` (``127.0.0.1:PORT``) goes into references."""

    host: str
    url: str
    storage: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        """Terminate the registry (kill after 10 s); safe to call twice."""
        stop_process(self.process)

    def __enter__(self) -> LocalRegistry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_local_registry(
    directory: Path,
    *,
    port: int | None = None,
    config: dict[str, Any] | None = None,
    scheme: str = "http",
    verify: str | bool = True,
    timeout: float = 30.0,
) -> LocalRegistry:
    """Start ``docker-registry`` on 127.0.0.1 with storage under ``directory``.

    ``config`` is merged over the generated one (top-level keys replace, ``http`` is
    merged), e.g. ``{"http": {"tls": {...}}, "auth": {...}}``. Returns once ``/v2/``
    answers (200 or 401); a registry that exits or stays silent is an error that
    carries the end of its log.
    """
    binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    if not Path(binary).is_file():
        raise ConfigError("docker-registry is not installed (Debian package docker-registry)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    storage = directory / "storage"
    storage.mkdir(exist_ok=True)
    settings: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": "local-registry-only"},
    }
    for key, value in (config or {}).items():
        if key == "http":
            settings["http"].update(value)
        else:
            settings[key] = value
    config_path = directory / "config.yml"
    config_path.write_text(json.dumps(settings))  # JSON is YAML
    log_path = directory / "registry.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [binary, "serve", str(config_path)], stdout=log, stderr=subprocess.STDOUT
        )
    registry = LocalRegistry(
        host=f"127.0.0.1:{port}",
        url=f"{scheme}://127.0.0.1:{port}",
        storage=storage,
        process=process,
        log_path=log_path,
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = requests.get(registry.url + "/v2/", timeout=2, verify=verify)
            if answer.status_code in (200, 401):
                return registry
        except requests.RequestException:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            registry.stop()
            tail = log_path.read_text(errors="replace")[-2000:]
            raise UnreachableError(f"docker-registry did not start: {tail}")
        time.sleep(0.05)
