"""Credentials go only to the registry's own origin.

A registry (misconfigured behind a TLS proxy, or hostile) chooses the upload
``Location`` and the pagination ``Link``. Those URLs may name another host or
plain HTTP; the client must not send the registry's credentials (Basic, or a
bearer token) there. Two tiny loopback servers play the registry and the other
origin: the point is what the *client* sends, which a real registry cannot be
made to provoke.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

USER, PASSWORD = "alice", "s3cret-password"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


class _Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str | None]] = []  # (method, path, Authorization)


def _serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


@pytest.fixture
def hostile_registry() -> Iterator[tuple[str, _Recorder, _Recorder]]:
    """(registry host, what the registry saw, what the other origin saw)."""
    registry_seen, other_seen = _Recorder(), _Recorder()
    other_port: dict[str, int] = {}

    class Other(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            other_seen.seen.append((self.command, self.path, self.headers.get("Authorization")))
            self.send_response(201 if self.command == "PUT" else 200)
            if self.command == "PUT":
                digest = "sha256:" + hashlib.sha256(body).hexdigest()
                self.send_header("Docker-Content-Digest", digest)
            payload = b'{"tags":["b"]}' if self.command == "GET" else b""
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_PUT = do_PATCH = _any

    class Registry(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            auth = self.headers.get("Authorization")
            registry_seen.seen.append((self.command, self.path, auth))
            if auth != BASIC:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="test"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            other = f"http://localhost:{other_port['port']}"
            payload = b""
            if self.command == "HEAD":
                self.send_response(404)
            elif self.command == "POST":
                self.send_response(202)
                self.send_header("Location", f"{other}/v2/team/app/blobs/uploads/u1?state=x")
            elif self.path.startswith("/v2/team/app/tags/list"):
                self.send_response(200)
                self.send_header("Link", f'<{other}/v2/team/app/tags/list?last=a>; rel="next"')
                payload = b'{"tags":["a"]}'
            else:
                self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _any

    other_server, port = _serve(Other)
    other_port["port"] = port
    registry_server, registry_port = _serve(Registry)
    yield f"127.0.0.1:{registry_port}", registry_seen, other_seen
    for server in (registry_server, other_server):
        server.shutdown()
        server.server_close()


def _client(host: str):
    from pipeline.oci.client import RegistryClient

    return RegistryClient(
        host, insecure=True, username=USER, password=PASSWORD, retries=0, backoff=0.01
    )


def test_upload_location_on_another_origin_gets_no_credentials(hostile_registry) -> None:
    host, registry_seen, other_seen = hostile_registry
    blob = b"layer bytes"
    with _client(host) as client:
        client.push_blob("team/app", blob)
    # the registry itself did get the credentials (it asked for them) ...
    assert any(auth == BASIC for _, _, auth in registry_seen.seen)
    # ... the other origin got the blob, but never an Authorization header
    assert other_seen.seen, "the upload never reached the Location"
    assert all(auth is None for _, _, auth in other_seen.seen), other_seen.seen


def test_pagination_link_on_another_origin_gets_no_credentials(hostile_registry) -> None:
    host, _, other_seen = hostile_registry
    with _client(host) as client:
        assert client.list_tags("team/app") == ["a", "b"]
    assert other_seen.seen
    assert all(auth is None for _, _, auth in other_seen.seen), other_seen.seen
