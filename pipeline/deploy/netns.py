"""Reaching into a pod's network namespace: sockets created there, and a relay to them.

Why: each local pod has its own network namespace (bubblewrap ``--unshare-net``), as a
pod has its own IP, so two replicas can both listen on ``containerPort``. Nothing is
added to the host's network: no veth, no address. Instead the deploy process creates a
socket *inside* the pod's namespace (``setns`` on the calling thread, then back; a socket
stays in the namespace it was created in) and connects to ``127.0.0.1:containerPort``
there. A relay listens on an ephemeral 127.0.0.1 port of the host and pipes each
connection to such a socket: nginx and Prometheus reach the pod through it. Probes use
the same in-namespace sockets, as the kubelet probes the pod's own address.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import threading
from collections.abc import Iterator

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def _in_namespace(netns: str) -> Iterator[None]:
    """This thread in the namespace at ``netns`` (/proc/PID/ns/net) for the block."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


def connect(netns: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to 127.0.0.1:``port`` inside the namespace ``netns``."""
    with _in_namespace(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", port))
        return sock
    except BaseException:
        sock.close()
        raise


def http_get(netns: str, port: int, path: str, timeout: float) -> int:
    """The status code of ``GET path`` on the pod's port (a kubelet httpGet probe)."""
    with connect(netns, port, timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n"
                     "User-Agent: kube-probe/local\r\n\r\n".encode())
        head = b""
        while b"\r\n" not in head and len(head) < 4096:
            chunk = sock.recv(1024)
            if not chunk:
                break
            head += chunk
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise OSError(f"not an HTTP answer: {head[:80]!r}")
    return int(parts[1])


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while True:
            data = source.recv(1 << 16)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


class _Pipe:
    """A loopback listener whose every connection is piped to ``_connect()``'s socket.

    One accept loop and one byte pump for both directions a pod needs (host -> pod:
    :class:`Relay`, pod -> host: :class:`Egress`); they differ only in where the listening
    socket lives and what it connects to.
    """

    def __init__(self, listener: socket.socket, port: int, name: str) -> None:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(128)
        self._listener = listener
        self.port: int = listener.getsockname()[1]
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True,
                                        name=f"{name}-{self.port}")
        self._thread.start()

    def _connect(self) -> socket.socket:
        raise NotImplementedError

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = self._connect()
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        back.start()
        _pump(client, upstream)
        back.join()
        client.close()
        upstream.close()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()


class Relay(_Pipe):
    """127.0.0.1:``port`` on the host piped to 127.0.0.1:``target`` inside a pod."""

    def __init__(self, netns: str, target: int) -> None:
        self.netns = netns
        self.target = target
        super().__init__(socket.socket(socket.AF_INET, socket.SOCK_STREAM), 0, "relay")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _connect(self) -> socket.socket:
        return connect(self.netns, self.target, 5.0)


class Egress(_Pipe):
    """127.0.0.1:``port`` inside a pod piped to 127.0.0.1:``port`` of the host.

    Why: a pod pulls its model from a registry the chart names; on one machine that
    registry listens on the host's loopback, which the pod's own loopback is not. The
    listening socket is created inside the pod's namespace (setns), so the pod reaches
    exactly the host ports it names and nothing else; no address is added anywhere.
    """

    def __init__(self, netns: str, port: int) -> None:
        with _in_namespace(netns):
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        super().__init__(listener, port, "egress")

    def _connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5.0)


__all__ = ["Egress", "Relay", "connect", "http_get"]
