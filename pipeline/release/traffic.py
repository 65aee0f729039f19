"""Local traffic split: a real nginx with weighted upstreams between stable and canary.

nginx's weighted round robin is deterministic, so a weight of 10 sends exactly one
request in ten to the canary: what the analysis sees is what the stage says. A weight
change rewrites the config and runs ``nginx -s reload``; the config carries a
generation number served on ``/__pipeline/generation`` so the caller waits until the
new workers answer instead of sleeping. Each response says which upstream served it
(``X-Upstream``), so tests can count the split. nginx listens on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

from pipeline._fileio import write_atomic
from pipeline._process import NGINX_GENERATION_PATH, stop_process, wait_for_nginx_generation
from pipeline.errors import ConfigError, InputError

GENERATION_PATH = NGINX_GENERATION_PATH


def upstream_address(url: str) -> str:
    """``host:port`` of a loopback HTTP URL (the local target never leaves the machine)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost") \
            or not parts.port:
        raise InputError(f"{url!r}: the local target needs http://127.0.0.1:PORT URLs")
    return f"127.0.0.1:{parts.port}"


def render_config(prefix: Path, listen_port: int, stable: str, canary: str, weight: int,
                  generation: int) -> str:
    """nginx.conf for ``weight`` % to ``canary`` and the rest to ``stable``.

    nginx has no weight 0, so a side with no share is left out of the upstream.
    """
    if not 0 <= weight <= 100:
        raise InputError(f"canary weight must be within 0..100, got {weight}")
    servers = []
    if weight < 100:
        servers.append(f"server {upstream_address(stable)} weight={100 - weight};")
    if weight > 0:
        servers.append(f"server {upstream_address(canary)} weight={weight};")
    user = "user nobody nogroup;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(f"    {kind}_temp_path {prefix}/tmp/{kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""# Written by pipeline.release.traffic; generation {generation}.
{user}worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
{temp}
    upstream backend {{
        {' '.join(servers)}
    }}
    server {{
        listen 127.0.0.1:{listen_port};
        location = {GENERATION_PATH} {{ return 200 "{generation}"; }}
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream off;
            add_header X-Upstream $upstream_addr always;
        }}
    }}
}}
"""


class Nginx:
    """An nginx master process owned by this object (a context manager)."""

    def __init__(self, stable: str, canary: str, listen_port: int, weight: int = 0,
                 binary: str = "nginx") -> None:
        found = shutil.which(binary) or (f"/usr/sbin/{binary}"
                                         if Path(f"/usr/sbin/{binary}").exists() else None)
        if not found:
            raise ConfigError("nginx is not installed (apt-get install nginx-light)")
        self.binary = found
        self.stable, self.canary = stable, canary
        self.port = listen_port
        self.weight = weight
        self.generation = 0
        self._dir = tempfile.TemporaryDirectory(prefix="pipeline-nginx-")
        self.prefix = Path(self._dir.name)
        (self.prefix / "tmp").mkdir()
        # Workers run as nobody under root: they may need to reach the temp paths.
        self.prefix.chmod(0o711)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _args(self, *extra: str) -> list[str]:
        return [self.binary, "-p", str(self.prefix), "-c", "nginx.conf",
                "-e", str(self.prefix / "error.log"), *extra]

    def _write(self) -> None:
        # nginx re-reads this on reload: it must never see half a file.
        write_atomic(self.prefix / "nginx.conf", render_config(
            self.prefix, self.port, self.stable, self.canary, self.weight, self.generation),
            mode=0o644)

    def _wait_generation(self, timeout: float = 10.0) -> None:
        wait_for_nginx_generation(self.process, self.url, self.generation, self.error_log,
                                  timeout, interval=0.02)

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> Nginx:
        self._write()
        check = subprocess.run(self._args("-t", "-q"), capture_output=True, text=True)
        if check.returncode != 0:
            raise ConfigError(f"nginx rejected its config: {check.stderr.strip()}")
        self.process = subprocess.Popen(self._args(), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        try:
            self._wait_generation()
        except BaseException:
            self.stop()
            raise
        return self

    def set_weight(self, weight: int) -> None:
        """Rewrite the split and reload; returns once the new config serves."""
        self.weight = weight
        self.generation += 1
        self._write()
        done = subprocess.run(self._args("-s", "reload"), capture_output=True, text=True)
        if done.returncode != 0:
            raise ConfigError(f"nginx reload failed: {done.stderr.strip()}")
        self._wait_generation()

    def stop(self) -> None:
        stop_process(self.process)
        self._dir.cleanup()

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


__all__ = ["GENERATION_PATH", "Nginx", "render_config", "upstream_address"]
