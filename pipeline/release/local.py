"""The local deploy target: nginx split + a real Prometheus, started and stopped here.

On a cluster Argo Rollouts moves traffic and the cluster's Prometheus scrapes the
pods. Locally the same roles are played by real processes on 127.0.0.1: two OIP
servers (stable, canary: any URLs, e.g. two ``python -m secure_runtime`` processes),
nginx weighting between them (:mod:`pipeline.release.traffic`) and the Debian
``prometheus`` binary scraping both every second, with the jobs named ``stable`` and
``canary`` so the analysis queries select the canary by ``job``. Everything lives in
temporary directories and dies with the context manager.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from pipeline.deploy.services import Monitoring
from pipeline.errors import UnreachableError
from pipeline.oci.local_registry import free_port
from pipeline.release.traffic import Nginx, upstream_address


class PrometheusServer:
    """A Prometheus scraping fixed ``job: URL`` targets, in a temporary directory.

    The process is the deploy's :class:`~pipeline.deploy.services.Monitoring` (the one
    Prometheus owner: file_sd targets, 127.0.0.1 only). ``labels`` (per job) are attached
    to the target as prometheus-operator attaches a ServiceMonitor's (namespace, service,
    endpoint, pod, ...); with ``honor_labels`` false, the operator's default, a scraped
    label of the same name is renamed ``exported_<name>``, so queries written for the
    cluster select the same series here. :meth:`start` returns once every target has
    been scraped.
    """

    def __init__(self, targets: dict[str, str], port: int | None = None, *,
                 scrape_interval: str = "1s",
                 labels: Mapping[str, Mapping[str, str]] | None = None,
                 metrics_path: str = "/metrics") -> None:
        self.targets = targets
        self._dir = tempfile.TemporaryDirectory(prefix="pipeline-prometheus-")
        self.dir = Path(self._dir.name)
        self._monitoring = Monitoring(self.dir, port or 0)
        for job, url in targets.items():
            self._monitoring.add_job(job, scrape_interval, scrape_interval, metrics_path)
            own = {k: v for k, v in (labels or {}).get(job, {}).items() if k != "job"}
            self._monitoring.set_targets(job, [(upstream_address(url), own)])

    @property
    def url(self) -> str:
        return self._monitoring.url

    def log(self) -> str:
        path = self.dir / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        self._monitoring.start()
        process = self._monitoring.process
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if process is not None and process.poll() is not None:
                    raise UnreachableError(f"prometheus exited: {self.log()[-1500:]}")
                if self._scraped_all():
                    return self
                time.sleep(0.1)
            raise UnreachableError(f"prometheus did not scrape {sorted(self.targets)} within "
                                   f"{timeout:.0f}s")
        except BaseException:
            self.stop()
            raise

    def _scraped_all(self) -> bool:
        """True once every job has been scraped successfully at least once.

        Prometheus applies new targets only every few seconds after start; measuring
        before that would see no data and fail the first stage for no reason. A target
        that answers with an error fails fast: the canary is not there to analyse.
        """
        try:
            data = requests.get(self.url + "/api/v1/targets", timeout=1).json()["data"]
        except (requests.RequestException, ValueError, KeyError):
            return False
        health = {t["labels"]["job"]: t for t in data.get("activeTargets", [])}
        for job, target in health.items():
            if target.get("health") == "down":
                raise UnreachableError(f"prometheus cannot scrape {job} "
                                       f"({self.targets.get(job)}): {target.get('lastError')}")
        return all(health.get(job, {}).get("health") == "up" for job in self.targets)

    def stop(self) -> None:
        self._monitoring.stop()
        self._dir.cleanup()

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class LocalTarget:
    """nginx + Prometheus in front of a stable and a canary OIP server.

    ``scrape`` (:func:`pipeline.release.canary.scrape_labels`) names the jobs after the
    chart's stable and canary Services and labels them as its ServiceMonitor would;
    without it the jobs are plainly ``stable`` and ``canary``. It is the
    :class:`~pipeline.release.executor.Traffic` of the local executor.
    """

    def __init__(self, stable_url: str, canary_url: str, *, listen_port: int | None = None,
                 prometheus_port: int | None = None,
                 scrape: Mapping[str, Any] | None = None) -> None:
        self.stable_url, self.canary_url = stable_url, canary_url
        self.nginx = Nginx(stable_url, canary_url, listen_port or free_port(), weight=0)
        if scrape:
            roles = scrape["roles"]
            urls = {"stable": stable_url, "canary": canary_url}
            targets = {roles[r]["job"]: urls[r] for r in ("stable", "canary")}
            labels = {roles[r]["job"]: roles[r] for r in ("stable", "canary")}
            self.prometheus = PrometheusServer(targets, prometheus_port,
                                               scrape_interval=str(scrape["interval"]),
                                               labels=labels,
                                               metrics_path=str(scrape["path"]))
        else:
            self.prometheus = PrometheusServer({"stable": stable_url, "canary": canary_url},
                                               prometheus_port)

    @property
    def url(self) -> str:
        """Where clients send traffic (nginx)."""
        return self.nginx.url

    def set_weight(self, weight: int) -> None:
        self.nginx.set_weight(weight)

    def __enter__(self) -> LocalTarget:
        try:
            self.prometheus.start()
            self.nginx.start()
        except BaseException:
            self.nginx.stop()
            self.prometheus.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.nginx.stop()
        finally:
            self.prometheus.stop()


class TrafficLoop:
    """Bounded background requests through the split (a stand-in for users).

    At most ``max_requests`` requests, ``pause`` seconds apart; stops on exit. It counts
    responses by upstream and status so a caller can see the split it produced.
    """

    def __init__(self, url: str, path: str, body: Any, *, max_requests: int = 5000,
                 pause: float = 0.01) -> None:
        self.url, self.path, self.body = url.rstrip("/"), path, body
        self.max_requests, self.pause = max_requests, pause
        self.by_upstream: Counter[str] = Counter()
        self.by_status: Counter[int] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def _run(self) -> None:
        with requests.Session() as session:
            for _ in range(self.max_requests):
                if self._stop.is_set():
                    return
                try:
                    r = session.post(self.url + self.path, json=self.body, timeout=5)
                    self.by_status[r.status_code] += 1
                    self.by_upstream[r.headers.get("X-Upstream", "?")] += 1
                except requests.RequestException:
                    self.by_status[0] += 1
                self._stop.wait(self.pause)

    def __enter__(self) -> TrafficLoop:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(10)


__all__ = ["LocalTarget", "PrometheusServer", "TrafficLoop", "free_port"]
