"""Argo CD in tests: its Application CRD schema, and a recorded REST exchange on 127.0.0.1.

No Argo CD runs here, so (house rule) the API is a *recorded, schema-valid exchange*:
``tests/fixtures/argocd/recorded-application-exchange.json`` holds the Application
objects Argo CD answers with, poll after poll; each is validated against the CRD's
``openAPIV3Schema`` (``application-crd.schema.json``, fetched from argoproj/argo-cd, see
the README there) before it is served.

The schema is closed for validation the way the API server's strict field validation
closes it: an object with ``properties`` and neither ``additionalProperties`` nor
``x-kubernetes-preserve-unknown-fields`` admits no other field.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "argocd"


def _closed(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _closed(v) for k, v in schema.items()}
    if "properties" in out and "additionalProperties" not in out \
            and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def application_schema() -> dict[str, Any]:
    data = json.loads((FIXTURES / "application-crd.schema.json").read_text())
    return _closed(data["openAPIV3Schema"])


def validate_application(obj: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError unless ``obj`` is a valid Application."""
    schema = application_schema()
    jsonschema.validate(obj, schema, cls=jsonschema.Draft7Validator)
    if obj.get("apiVersion") != "argoproj.io/v1alpha1" or obj.get("kind") != "Application":
        raise jsonschema.ValidationError("not an argoproj.io/v1alpha1 Application")


def recording(name: str) -> list[dict[str, Any]]:
    data = json.loads((FIXTURES / "recorded-application-exchange.json").read_text())
    return list(data[name])


class RecordedArgoCD:
    """Serves one recording: each non-refresh GET answers the next recorded Application."""

    def __init__(self, responses: list[dict[str, Any]], revision: str, token: str) -> None:
        self.responses = responses
        self.revision = revision
        self.token = token
        self.requests: list[tuple[str, dict[str, list[str]], str]] = []
        self._index = 0
        self._lock = threading.Lock()

    def answer(self, path: str, query: dict[str, list[str]], auth: str) -> tuple[int, Any]:
        with self._lock:
            self.requests.append((path, query, auth))
            if auth != f"Bearer {self.token}":
                return 401, {"error": "invalid session", "code": 16}
            if path != "/api/v1/applications/secure-runtime-staging":
                return 404, {"error": "not found", "code": 5}
            body = self.responses[min(self._index, len(self.responses) - 1)]
            if "refresh" not in query:
                self._index += 1
            text = json.dumps(body).replace("{{REVISION}}", self.revision)
            served = json.loads(text)
            validate_application(served)
            return 200, served


@contextmanager
def serve_recorded(responses: list[dict[str, Any]], revision: str, token: str
                   ) -> Iterator[tuple[str, RecordedArgoCD]]:
    recorded = RecordedArgoCD(copy.deepcopy(responses), revision, token)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            parts = urlsplit(self.path)
            status, body = recorded.answer(parts.path, parse_qs(parts.query),
                                           self.headers.get("Authorization", ""))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", recorded
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
