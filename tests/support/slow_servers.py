"""Servers that hold a client hostage, for deadline tests: real sockets on 127.0.0.1.

* :func:`silent` accepts every connection and never sends a byte.
* :func:`trickling` answers each request with a status line, then one header byte every
  ``pause`` seconds: every read gets data, so a per-read timeout never fires.
* :func:`slow` answers a complete (404, or a registry's 401 token challenge) response
  after ``delay`` seconds: slow, but an answer.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator


@contextlib.contextmanager
def _serve(handle) -> Iterator[str]:  # type: ignore[no-untyped-def]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    stop = threading.Event()
    held: list[socket.socket] = []

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)
            threading.Thread(target=handle, args=(conn, stop), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()
        for conn in held:
            with contextlib.suppress(OSError):
                conn.close()


def _read_head(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


@contextlib.contextmanager
def silent() -> Iterator[str]:
    """``host:port`` of a server that accepts and never answers."""
    def handle(conn: socket.socket, stop: threading.Event) -> None:
        stop.wait()

    with _serve(handle) as host:
        yield host


@contextlib.contextmanager
def trickling(pause: float = 0.2) -> Iterator[str]:
    """``host:port`` of a server sending its response headers one byte per ``pause``."""
    def handle(conn: socket.socket, stop: threading.Event) -> None:
        _read_head(conn)
        try:
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            while not stop.is_set():
                conn.sendall(b"X")
                time.sleep(pause)
        except OSError:
            return

    with _serve(handle) as host:
        yield host


@contextlib.contextmanager
def slow(delay: float, challenge: str | None = None) -> Iterator[str]:
    """``host:port`` answering every request after ``delay`` s: 404, or 401 + ``challenge``."""
    def handle(conn: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            if not _read_head(conn):
                return
            time.sleep(delay)
            body = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}'
            status = "404 Not Found"
            extra = ""
            if challenge is not None:
                status, extra = "401 Unauthorized", f"WWW-Authenticate: {challenge}\r\n"
            try:
                conn.sendall(f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}"
                             f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            except OSError:
                return

    with _serve(handle) as host:
        yield host
