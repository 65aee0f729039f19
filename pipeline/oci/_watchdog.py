"""Shut a client's sockets when its deadline passes (the part a socket timeout cannot do).

``requests``' timeout is per socket operation: a server that sends one header byte
every second never trips it, so a deadline checked only between requests does not
bound a request in flight. A :class:`SocketWatch` remembers every connection its
client's pools open and, once armed with a deadline, shuts them all down when it
passes; the blocked read returns, the request fails, and the client reports the
deadline. Connections are per client (one session each), so nothing else is touched.
"""

from __future__ import annotations

import socket
import threading
import weakref
from typing import Any

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool


class SocketWatch:
    """Tracks a client's connections; :meth:`arm` shuts them down at a deadline."""

    def __init__(self) -> None:
        self._connections: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self.fired = False

    def add(self, connection: Any) -> None:
        with self._lock:
            self._connections.add(connection)
        if self.fired:  # connecting after the deadline: refuse at once
            raise OSError("the operation's deadline has passed")

    def arm(self, seconds: float) -> None:
        """Fire in ``seconds`` (once; later calls keep the first timer)."""
        with self._lock:
            if self._timer is not None or self.fired:
                return
            self._timer = threading.Timer(max(0.0, seconds), self.fire)
            self._timer.daemon = True
            self._timer.start()

    def fire(self) -> None:
        """Shut down every tracked socket (reads in flight return at once)."""
        with self._lock:
            self.fired = True
            connections = list(self._connections)
        for connection in connections:
            sock = getattr(connection, "sock", None)
            if sock is None:
                continue
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cancel(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()

    def pool_classes(self) -> dict[str, type[HTTPConnectionPool]]:
        """Pool classes whose connections report to this watch (for a PoolManager)."""
        watch = self

        class _Connection(HTTPConnection):
            def connect(self) -> None:
                watch.add(self)
                super().connect()

        class _TLSConnection(HTTPSConnection):
            def connect(self) -> None:
                watch.add(self)
                super().connect()

        class _Pool(HTTPConnectionPool):
            ConnectionCls = _Connection

        class _TLSPool(HTTPSConnectionPool):
            ConnectionCls = _TLSConnection

        return {"http": _Pool, "https": _TLSPool}


__all__ = ["SocketWatch"]
