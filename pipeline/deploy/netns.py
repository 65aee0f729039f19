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


class Relay:
    """127.0.0.1:``port`` on the host piped to 127.0.0.1:``target`` inside a pod."""

    def __init__(self, netns: str, target: int) -> None:
        self.netns = netns
        self.target = target
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port: int = self._listener.getsockname()[1]
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True,
                                        name=f"relay-{self.port}")
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = connect(self.netns, self.target, 5.0)
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


class Egress:
    """127.0.0.1:``port`` inside a pod piped to 127.0.0.1:``port`` of the host.

    Why: a pod pulls its model from a registry the chart names; on one machine that
    registry listens on the host's loopback, which the pod's own loopback is not. The
    listening socket is created inside the pod's namespace (setns), so the pod reaches
    exactly the host ports it names and nothing else; no address is added anywhere.
    """

    def __init__(self, netns: str, port: int) -> None:
        self.port = port
        with _in_namespace(netns):
            self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(128)
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name=f"egress-{port}").start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.port), timeout=5.0)
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


__all__ = ["Egress", "Relay", "connect", "http_get"]
