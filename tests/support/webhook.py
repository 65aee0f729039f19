"""The real admission webhook on 127.0.0.1 for tests: uvicorn with TLS in a thread.

Shared by the admission integration tests that need a webhook of their own policy.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "admission"


class WebhookClient:
    """POSTs recorded reviews (placeholders filled) to a running webhook."""

    def __init__(self, url: str, ca: Path, subs: dict[str, str]) -> None:
        self.url, self.subs = url, subs
        self.http = httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), timeout=60)

    def review(self, name: str, **subs: str) -> dict[str, Any]:
        text = (FIXTURES / name).read_text()
        for key, value in {**self.subs, **subs}.items():
            text = text.replace("{{" + key + "}}", value)
        return json.loads(text)

    def decide(self, path: str, review: dict[str, Any]) -> dict[str, Any]:
        reply = self.http.post(self.url + path, content=json.dumps(review).encode(),
                               headers={"content-type": "application/json"})
        assert reply.status_code == 200, reply.text
        answer: dict[str, Any] = reply.json()["response"]
        assert answer["uid"] == review["request"]["uid"]
        return answer

    def metrics(self) -> str:
        return self.http.get(self.url + "/metrics").text


@contextmanager
def serve(decider: Any, work: Path, subs: dict[str, str]) -> Iterator[WebhookClient]:
    """Serve ``decider`` over HTTPS on a free loopback port until the block ends."""
    from pipeline.admission.server import bind, build_server, create_app
    from tests.fixtures_registry import _write_certificates

    ca, cert, key = _write_certificates(work)
    server = build_server(create_app(decider), cert, key)
    sock = bind("127.0.0.1", 0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    client = WebhookClient(f"https://127.0.0.1:{sock.getsockname()[1]}", ca, subs)
    try:
        yield client
    finally:
        client.http.close()
        server.should_exit = True
        thread.join(10)
        sock.close()
