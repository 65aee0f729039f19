"""A tiny health-checked HTTP server: the entrypoint of the build test image.

It imports the locked dependency (idna) so a broken dependency layer fails the test,
and reports its uid so the test can check the image runs as nonroot.
"""

from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

import idna


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server API
        if self.path != "/healthz":
            self.send_error(404)
            return
        body = json.dumps(
            {"status": "ok", "uid": os.getuid(), "idna": idna.encode("bücher.example").decode()}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    HTTPServer(("127.0.0.1", int(os.environ.get("SERVER_PORT", "8080"))), Handler).serve_forever()
