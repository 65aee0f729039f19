"""Admission webhook: /validate decisions per second and latency, cold vs warm, in one run.

    .venv/bin/python -m bench.bench_admission [--requests 200]

Starts a loopback docker-registry, pushes a small image and signs it, starts the real
webhook (uvicorn, TLS) on 127.0.0.1 with the default CEL policies and an image policy
requiring that key, and posts the same digest-pinned, compliant Pod AdmissionReview
(tests/fixtures/admission/recorded-pod-signed-digest.json) over one HTTPS keep-alive
connection. Cold: the webhook's verdict cache is off and the signing module's caches are
cleared before every request (every signature is fetched and verified). Warm: the verdict
cache (TTL) answers. Prints decisions/s, p50 and p99 of each, and the ratio warm/cold.
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from pipeline.admission.cache import VerdictCache  # noqa: E402
from pipeline.admission.decide import Decider  # noqa: E402
from pipeline.admission.server import bind, build_server, create_app  # noqa: E402
from pipeline.oci import RegistryOptions  # noqa: E402
from pipeline.oci.reference import Reference  # noqa: E402
from pipeline.oci.transfer import push_layout  # noqa: E402
from pipeline.policy.check import DEFAULT_POLICY_DIR  # noqa: E402
from pipeline.policy.image_policy import ImagePolicy  # noqa: E402
from pipeline.policy.vap import load_policies  # noqa: E402
from pipeline.signing import image  # noqa: E402
from pipeline.signing.keypair import create_signing_keypair  # noqa: E402
from tests.fixtures_registry import (  # noqa: E402
    _write_certificates,
    start_registry,
    stop_registry,
    write_image,
)

FIXTURE = ROOT / "tests" / "fixtures" / "admission" / "recorded-pod-signed-digest.json"


def _run(url: str, ca: Path, body: bytes, count: int, cold: bool) -> list[float]:
    timings = []
    # TCP_NODELAY as the API server's Go client has it: without it, Nagle holds the body
    # back until the server ACKs the headers, and delayed ACK makes that ~40 ms.
    transport = httpx.HTTPTransport(
        verify=ssl.create_default_context(cafile=str(ca)),
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
    )
    with httpx.Client(transport=transport, timeout=30) as http:
        for _ in range(count):
            if cold:
                image.clear_cache()
            start = time.perf_counter()
            reply = http.post(url, content=body, headers={"content-type": "application/json"})
            timings.append(time.perf_counter() - start)
            assert reply.json()["response"]["allowed"] is True, reply.text
    return timings


def _summary(name: str, timings: list[float]) -> float:
    ordered = sorted(timings)
    rate = len(timings) / sum(timings)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    print(f"{name:5} {rate:8.1f} decisions/s  p50 {statistics.median(ordered) * 1e3:7.2f} ms"
          f"  p99 {p99 * 1e3:7.2f} ms")
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        registry = start_registry(work / "registry")
        try:
            key, pub = work / "release.key", work / "release.pub"
            create_signing_keypair(key, pub)
            layout, _ = write_image(work / "layout")
            ref = Reference.parse(f"{registry.host}/bench/app:v1")
            with registry.client() as client:
                digest = push_layout(layout, ref, client, tag="v1")
            image.sign_image(f"{registry.host}/bench/app@{digest}", key,
                             registry_options=RegistryOptions(insecure=True))
            policy = work / "image-policy.yaml"
            policy.write_text(f"version: 1\nrules:\n  - name: bench\n    images: "
                              f"['{registry.host}/bench/*']\n    authorities:\n"
                              "      - key: release.pub\n")
            body = FIXTURE.read_text().replace("{{REGISTRY}}/adm/app@{{DIGEST_APP}}",
                                               f"{registry.host}/bench/app@{digest}").encode()
            json.loads(body)
            ca, cert, tls_key = _write_certificates(work)
            rates = {}
            for name, ttl in (("cold", 0.0), ("warm", 300.0)):
                decider = Decider(load_policies(DEFAULT_POLICY_DIR), ImagePolicy.load(policy),
                                  RegistryOptions(insecure=True), VerdictCache(ttl=ttl))
                server = build_server(create_app(decider), cert, tls_key)
                sock = bind("127.0.0.1", 0)
                thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                                          daemon=True)
                thread.start()
                while not server.started:
                    time.sleep(0.01)
                url = f"https://127.0.0.1:{sock.getsockname()[1]}/validate"
                _run(url, ca, body, 5, cold=name == "cold")  # connection + JIT warm-up
                rates[name] = _summary(name, _run(url, ca, body, args.requests,
                                                  cold=name == "cold"))
                server.should_exit = True
                thread.join(10)
                sock.close()
            print(f"warm/cold decisions/s: {rates['warm'] / rates['cold']:.1f}x")
        finally:
            stop_registry(registry)
    return 0


if __name__ == "__main__":
    sys.exit(main())
