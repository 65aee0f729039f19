"""Slowloris-style clients for server tests: part of a request, slowly, then gone.

Real sockets against a real server (plain TCP, or TLS when a context is given); each
client sends the request head with a Content-Length larger than what follows, trickles
a few chunks of body and closes the connection.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Sequence


def disconnect_mid_body(port: int, path: str, chunks: Sequence[bytes], *, clients: int = 5,
                        context: ssl.SSLContext | None = None, length: int = 20000,
                        pause: float = 0.05) -> None:
    """Send ``clients`` requests to 127.0.0.1:``port`` that stop mid-body and disconnect."""
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()
    for _ in range(clients):
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock = context.wrap_socket(raw, server_hostname="127.0.0.1") if context else raw
        with sock:
            sock.sendall(head)
            for chunk in chunks:
                time.sleep(pause)
                sock.sendall(chunk)


def wait_until(count: Callable[[], float], target: float, timeout: float = 20) -> float:
    """Poll ``count()`` until it reaches ``target`` (or the timeout); returns the last value."""
    deadline = time.monotonic() + timeout
    value = count()
    while value < target and time.monotonic() < deadline:
        time.sleep(0.05)
        value = count()
    return value
