"""Local traffic split over given servers: a real nginx with weighted upstreams.

nginx's weighted round robin is deterministic, so a weight of 10 sends exactly one
request in ten to the canary: what the analysis sees is what the stage says. The nginx
is the deploy's (:class:`~pipeline.deploy.services.ServiceProxy`, the one writer of
nginx configs): a weight change rewrites the config, reloads, and returns once the new
generation serves. Each response says which upstream served it (``X-Upstream``), so
tests can count the split. A failed request is not retried on the other side (a
failing canary's errors must reach its metrics). nginx listens on 127.0.0.1 only.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

from pipeline.deploy.services import GENERATION_PATH, ServiceProxy, Upstream, render_nginx_config
from pipeline.errors import InputError


def upstream_address(url: str) -> str:
    """``host:port`` of a loopback HTTP URL (the local target never leaves the machine)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost") \
            or not parts.port:
        raise InputError(f"{url!r}: the local target needs http://127.0.0.1:PORT URLs")
    return f"127.0.0.1:{parts.port}"


def split_upstream(listen_port: int, stable: str, canary: str, weight: int) -> Upstream:
    """The one upstream sending ``weight`` % to ``canary`` and the rest to ``stable``."""
    if not 0 <= weight <= 100:
        raise InputError(f"canary weight must be within 0..100, got {weight}")
    return Upstream("split", "local", "http", listen_port,
                    servers=[(upstream_address(stable), 100 - weight),
                             (upstream_address(canary), weight)], retry=False)


def render_config(prefix: Path, listen_port: int, stable: str, canary: str, weight: int,
                  generation: int) -> str:
    """nginx.conf for ``weight`` % to ``canary`` (what :class:`Nginx` writes)."""
    return render_nginx_config(prefix, [split_upstream(listen_port, stable, canary, weight)],
                               generation)


class Nginx:
    """An nginx master splitting one port between two servers (a context manager)."""

    def __init__(self, stable: str, canary: str, listen_port: int, weight: int = 0) -> None:
        self.stable, self.canary = stable, canary
        self.port = listen_port
        self.weight = weight
        split_upstream(listen_port, stable, canary, weight)  # refuse bad input up front
        self._dir = tempfile.TemporaryDirectory(prefix="pipeline-nginx-")
        self.prefix = Path(self._dir.name)
        self._proxy = ServiceProxy(self.prefix)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _apply(self) -> None:
        self._proxy.upstreams.clear()
        self._proxy.add(split_upstream(self.port, self.stable, self.canary, self.weight))
        self._proxy.apply()

    def start(self) -> Nginx:
        try:
            self._apply()
        except BaseException:
            self.stop()
            raise
        return self

    def set_weight(self, weight: int) -> None:
        """Rewrite the split and reload; returns once the new config serves."""
        self.weight = weight
        self._apply()

    def stop(self) -> None:
        self._proxy.stop()
        self._dir.cleanup()

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


__all__ = ["GENERATION_PATH", "Nginx", "render_config", "split_upstream", "upstream_address"]
