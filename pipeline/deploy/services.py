"""Services and ServiceMonitors, locally: one nginx and one Prometheus for the deploy.

Why one process each: a reload is cheap and atomic for nginx (new workers take the new
upstreams, old ones finish), and Prometheus re-reads ``file_sd`` target files by itself,
so pods coming and going never restart either. nginx listens on 127.0.0.1 only, one
server per Service port, its upstream the ready pods' relays (weighted per pod set when a
canary split is set); Prometheus scrapes each ServiceMonitor endpoint's pods with the
target labels the Prometheus operator sets (``namespace``, ``service``, ``pod``,
``container``, ``endpoint``, ``job`` = the Service's name), so a chart's PromQL runs
unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import requests

from pipeline._fileio import write_atomic
from pipeline._process import NGINX_GENERATION_PATH, stop_process, wait_for_nginx_generation
from pipeline.errors import ConfigError, ConflictError

GENERATION_PATH = NGINX_GENERATION_PATH


@dataclass
class Upstream:
    """One Service port: where nginx listens and which pod addresses it weighs."""

    service: str
    namespace: str
    port_name: str
    listen: int
    #: ``(address, weight)`` of each ready pod; empty means 503 for now.
    servers: list[tuple[str, int]] = field(default_factory=list)
    #: The servers nginx serves now (``servers`` once a reload has applied them).
    applied: list[tuple[str, int]] = field(default_factory=list)

    #: False: a request that fails on one server is not retried on another
    #: (``proxy_next_upstream off``), so a failing canary's errors reach its metrics.
    retry: bool = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listen}"


def render_nginx_config(prefix: Path, upstreams: list[Upstream], generation: int) -> str:
    """nginx.conf serving each upstream on its own 127.0.0.1 port, answering
    ``generation`` on :data:`GENERATION_PATH` (how a reload is known to be done).

    The one nginx writer: the deploy's Services and the promotion's split over given
    servers (:mod:`pipeline.release.traffic`) both write through here. nginx has no weight
    0, so a server with no share is left out; an upstream with none gets a closed port
    marked down (502 until a pod is ready).
    """
    user = "user nobody nogroup;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(f"    {kind}_temp_path {prefix}/tmp/{kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    blocks = []
    for index, up in enumerate(upstreams):
        servers = " ".join(f"server {addr} weight={w};" for addr, w in up.servers if w > 0)
        servers = servers or "server 127.0.0.1:9 down;"
        retry = "" if up.retry else "\n            proxy_next_upstream off;"
        blocks.append(f"""    upstream u{index} {{ {servers} }}
    server {{
        listen 127.0.0.1:{up.listen};
        location = {GENERATION_PATH} {{ return 200 "{generation}"; }}
        location / {{
            proxy_pass http://u{index};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_read_timeout 300s;{retry}
            add_header X-Upstream $upstream_addr always;
        }}
    }}""")
    return f"""# Written by pipeline.deploy.services; generation {generation}.
{user}worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
{temp}
{chr(10).join(blocks)}
}}
"""


def reserve_port(port: int, what: str) -> int:
    """``port`` if it is free on 127.0.0.1 (0: any), else ConflictError naming ``what``."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise ConflictError(f"{what}: 127.0.0.1:{port} is taken ({exc.strerror})") from None
        return int(sock.getsockname()[1])


def _binary(name: str, package: str) -> str:
    found = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists()
                                   else None)
    if not found:
        raise ConfigError(f"{name} is not installed (apt-get install {package})")
    return found


class ServiceProxy:
    """The nginx master serving every Service port of the deploy."""

    def __init__(self, directory: Path) -> None:
        self.binary = _binary("nginx", "nginx-light")
        self.dir = directory
        (self.dir / "tmp").mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o711)
        self.upstreams: dict[tuple[str, str, str], Upstream] = {}
        self.generation = 0
        self.process: subprocess.Popen[bytes] | None = None

    def _args(self, *extra: str) -> list[str]:
        return [self.binary, "-p", str(self.dir), "-c", "nginx.conf",
                "-e", str(self.dir / "error.log"), *extra]

    def config(self) -> str:
        return render_nginx_config(self.dir, list(self.upstreams.values()), self.generation)

    def add(self, upstream: Upstream) -> None:
        self.upstreams[(upstream.namespace, upstream.service, upstream.port_name)] = upstream

    def apply(self) -> None:
        """Write the config and start nginx, or reload it; returns once it serves."""
        self.generation += 1
        write_atomic(self.dir / "nginx.conf", self.config(), mode=0o644)
        if self.process is None:
            check = subprocess.run(self._args("-t", "-q"), capture_output=True, text=True)
            if check.returncode != 0:
                raise ConfigError(f"nginx rejected its config: {check.stderr.strip()}")
            self.process = subprocess.Popen(self._args(), stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)
        else:
            done = subprocess.run(self._args("-s", "reload"), capture_output=True, text=True)
            if done.returncode != 0:
                raise ConfigError(f"nginx reload failed: {done.stderr.strip()}")
        self._wait()
        for upstream in self.upstreams.values():
            upstream.applied = list(upstream.servers)

    def _wait(self, timeout: float = 10.0) -> None:
        if self.upstreams:
            wait_for_nginx_generation(self.process, next(iter(self.upstreams.values())).url,
                                      self.generation, self.error_log, timeout)

    def error_log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        stop_process(self.process)


class Monitoring:
    """A Prometheus scraping the ServiceMonitors' targets, listed in file_sd files."""

    def __init__(self, directory: Path, port: int = 0) -> None:
        self.binary = _binary("prometheus", "prometheus")
        self.dir = directory
        (self.dir / "sd").mkdir(parents=True, exist_ok=True)
        self.port = reserve_port(port, "Prometheus") if port == 0 else port
        self.jobs: dict[str, dict[str, str]] = {}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_job(self, name: str, interval: str, timeout: str, path: str) -> None:
        self.jobs[name] = {"interval": interval, "timeout": timeout, "path": path}
        self.set_targets(name, [])

    def _sd(self, job: str) -> Path:
        return self.dir / "sd" / (job.replace("/", "_") + ".json")

    def set_targets(self, job: str, targets: list[tuple[str, dict[str, str]]]) -> None:
        """Rewrite ``job``'s targets (address, labels); Prometheus picks the file up."""
        write_atomic(self._sd(job), json.dumps(
            [{"targets": [address], "labels": labels} for address, labels in targets]),
            mode=0o644)

    def start(self) -> None:
        scrape = [{"job_name": job, "scrape_interval": spec["interval"],
                   "scrape_timeout": spec["timeout"], "metrics_path": spec["path"],
                   "file_sd_configs": [{"files": [str(self._sd(job))], "refresh_interval": "1s"}]}
                  for job, spec in self.jobs.items()]
        config = self.dir / "prometheus.yml"
        write_atomic(config, json.dumps({"scrape_configs": scrape}, indent=2), mode=0o644)
        with open(self.dir / "prometheus.log", "wb") as log:
            self.process = subprocess.Popen(
                [self.binary, f"--config.file={config}",
                 f"--storage.tsdb.path={self.dir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)

    def ready(self) -> bool:
        try:
            return requests.get(self.url + "/-/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        stop_process(self.process, grace=15)


__all__ = ["GENERATION_PATH", "Monitoring", "ServiceProxy", "Upstream", "render_nginx_config",
           "reserve_port"]
