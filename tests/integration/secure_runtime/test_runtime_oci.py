"""The runtime pulls its sealed model from a registry by digest, then verifies and serves it.

``pipeline push-model`` puts the sealed tiny model into the real loopback registry;
the runtime gets ``127.0.0.1:PORT/models/tiny@sha256:...`` through a proxy that
holds the manifest back until the test releases it, which pins down the readiness
contract: live at once, ready 503 while the model is not loaded, 200 after.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from pipeline.cli import run
from pipeline.errors import EXIT_NOT_FOUND
from tests.fixtures_registry import FlakyProxy, RegistryServer
from tests.support.runtime import (
    TINY,
    free_port,
    make_workspace,
    metric,
    metric_samples,
    run_to_exit,
    runtime_args,
    runtime_env,
    seal,
    start_runtime,
)

pytestmark = pytest.mark.integration


def test_pull_by_digest_then_serve(
    registry: RegistryServer,
    flaky_proxy: FlakyProxy,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ws = make_workspace(tmp_path / "ws")
    sealed = seal(ws, TINY, tmp_path / "tiny.sealed")
    capsys.readouterr()
    assert run(["push-model", str(sealed), f"{registry.host}/models/tiny:v1",
                "--insecure", "--json"]) == 0
    digest = json.loads(capsys.readouterr().out)["digest"]
    assert digest.startswith("sha256:")

    release = threading.Event()

    def hold_manifest(method: str, path: str, body: bytes) -> bytes:
        if "/manifests/" in path:
            release.wait(30)
        return body

    flaky_proxy.tamper = hold_manifest
    port = free_port()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    args = runtime_args(ws, f"{flaky_proxy.host}/models/tiny@{digest}", port,
                        "--registry-insecure")
    env = runtime_env(SECURE_RUNTIME_ALLOW_ROOT="1", TMPDIR=str(scratch))
    rt = start_runtime(args, tmp_path / "runtime.log", port, env=env)
    try:
        rt.wait_for("/v2/health/live", 200)
        assert rt.get("/v2/health/ready").status_code == 503
        assert rt.get("/v2/models/tiny").status_code == 503
        assert rt.post("/v2/models/tiny/infer", json={}).status_code == 503
        release.set()
        rt.wait_ready()
        answer = rt.post("/v2/models/tiny/infer", json={"inputs": [
            {"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [0.25] * 16}]})
        assert answer.status_code == 200, answer.text
        samples = metric_samples(rt.get("/metrics").text)
        assert metric(samples, "secure_runtime_model_signature_verified") == 1.0
        pulled = [p for _, p, _ in flaky_proxy.log if "/manifests/" in p]
        assert pulled and all(p.endswith(digest) for p in pulled), pulled
        # the pulled ciphertext was a temporary copy: gone once loaded
        assert list(scratch.iterdir()) == []
        assert rt.stop() == 0
    finally:
        release.set()
        rt.close()
    assert f"pulling sealed model {flaky_proxy.host}/models/tiny@{digest}" in rt.log()


def test_unknown_digest_fails_closed(registry: RegistryServer, tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    missing = "sha256:" + "0" * 64
    code, log = run_to_exit(runtime_args(ws, f"{registry.host}/models/none@{missing}",
                                         free_port(), "--allow-root", "--registry-insecure"))
    assert code == EXIT_NOT_FOUND, log
    assert "model load failed" in log and "Traceback" not in log
