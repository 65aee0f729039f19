"""The release half of the demo: image, attestations, registry, policy, serving.

What the release workflow does on a cluster, done here on one machine with the same
commands: build the slim runtime image of ``examples/tiny`` without a Docker daemon,
write its SBOM, scan it, derive its SLSA provenance, push image and sealed model to a
registry (Debian's docker-registry on 127.0.0.1), sign the image and attach the three
attestations, verify them and evaluate the image policy against the pinned digest,
then start the secure runtime on the sealed model *pulled by digest*, ask it for one
inference over the Open Inference Protocol, and stop it with SIGTERM.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

EXAMPLES = Path(__file__).resolve().parent


def run_json(argv: list[str]) -> dict[str, Any]:
    """Run one CLI command with ``--json``, echoing it like the others; return its result."""
    from pipeline.cli import run

    print(f"$ pipeline {' '.join(argv)}", flush=True)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = run([*argv, "--json"])
    if code != 0:
        raise SystemExit(f"demo: 'pipeline {' '.join(argv)}' failed with exit code {code}")
    return json.loads(buffer.getvalue())


def _policy_check(host: str, pinned: str, public: Path) -> list[str]:
    """The admission decision for the pinned image: signed by us, all three attestations,
    provenance from this builder."""
    from pipeline.build.provenance import BUILD_TYPE
    from pipeline.signing.policy import ImagePolicy

    policy = ImagePolicy.from_mapping({
        "version": 1,
        "default": "deny",
        "requireDigest": True,
        "rules": [{
            "name": "demo-release",
            "images": [f"{host}/demo/**"],
            "authorities": [{"key": str(public)}],
            "threshold": 1,
            "attestations": [
                {"type": "slsaprovenance", "conditions": [
                    {"path": "predicate.buildDefinition.buildType", "equals": BUILD_TYPE}]},
                {"type": "cyclonedx"},
                {"type": "vuln"},
            ],
        }],
    })
    decision = policy.evaluate(pinned, {"insecure": True})
    if not decision.allowed:
        raise SystemExit("demo: policy refused the image: " + "; ".join(decision.reasons))
    tag_only = policy.evaluate(pinned.split("@")[0] + ":v1", {"insecure": True})
    if tag_only.allowed:
        raise SystemExit("demo: a tag-only reference must be refused")
    return decision.reasons


def _serve_and_infer(model_ref: str, public: Path, work: Path) -> dict[str, Any]:
    """Start the runtime on the pulled model; one OIP v2 inference; SIGTERM; exit code."""
    from pipeline.oci.local_registry import free_port

    port = free_port()
    argv = [sys.executable, "-m", "secure_runtime", "--model", model_ref, "--trust", str(public),
            "--port", str(port), "--no-grpc", "--registry-insecure"]
    if os.geteuid() == 0:
        argv.append("--allow-root")  # a development machine that only has root
    print("$ " + " ".join(["python", *argv[1:]]), flush=True)
    log_path = work / "runtime.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(requests.RequestException):
                if requests.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("demo: the runtime did not become ready:\n"
                                 + log_path.read_text(errors="replace")[-3000:])
            time.sleep(0.1)
        described = requests.get(url + "/v2/models/tiny", timeout=5).json()
        spec = described["inputs"][0]
        features = spec["shape"][-1]
        request = {"inputs": [{"name": spec["name"], "datatype": spec["datatype"],
                               "shape": [2, features],
                               "data": [0.1 * (i % 7) for i in range(2 * features)]}]}
        answer = requests.post(url + "/v2/models/tiny/infer", json=request, timeout=10)
        answer.raise_for_status()
        output = answer.json()["outputs"][0]
        metrics = requests.get(url + "/metrics", timeout=5).text
        load_lines = [line for line in metrics.splitlines()
                      if line.startswith("secure_runtime_model_load") and "seconds" in line]
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        code = process.wait(60)
    if code != 0:
        raise SystemExit(f"demo: the runtime exited with {code} after SIGTERM")
    return {"output": output, "load_metrics": load_lines[:6], "exit_code": code}


def release(run: Callable[[list[str]], None], work: Path, private: Path, public: Path,
            sealed: Path) -> dict[str, Any]:
    """Build → SBOM/scan/provenance → push → sign/attest → verify/policy → serve."""
    from pipeline.oci.layout import OCILayout
    from pipeline.oci.local_registry import start_local_registry

    layout = work / "tiny-image"
    started = time.perf_counter()
    run(["build", str(EXAMPLES / "tiny"), "--out", str(layout)])
    build_s = time.perf_counter() - started
    digest = OCILayout.open(layout).resolve("latest")["digest"]
    run(["sbom", str(layout), "-o", str(work / "sbom.json")])
    # dev gate: without a vulnerability DB the image is "not scanned" (a warning in dev,
    # a refusal in prod), never "clean".
    run(["scan", str(layout), "--env", "dev", "--format", "cosign-vuln",
         "-o", str(work / "vuln.json")])
    vulnerabilities = json.loads((work / "vuln.json").read_text())[
        "scanner"]["result"]["vulnerabilities"]
    run(["provenance", str(layout), "-o", str(work / "provenance.json")])

    with start_local_registry(work / "registry") as registry:
        image = f"{registry.host}/demo/tiny-runtime"
        run(["push", str(layout), f"{image}:v1", "--insecure"])
        pinned = f"{image}@{digest}"
        run(["sign", pinned, "--key", str(private), "--insecure"])
        for kind, predicate in (("slsaprovenance", "provenance.json"),
                                ("cyclonedx", "sbom.json"), ("vuln", "vuln.json")):
            run(["attest", pinned, "--type", kind, "--predicate", str(work / predicate),
                 "--key", str(private), "--insecure"])
        run(["verify", pinned, "--key", str(public), "--insecure"])
        for kind in ("slsaprovenance", "cyclonedx", "vuln"):
            run(["verify-attestation", pinned, "--type", kind, "--key", str(public),
                 "--insecure"])
        reasons = _policy_check(registry.host, pinned, public)
        print(f"policy: {pinned} allowed ({len(reasons)} checks)", flush=True)

        model = f"{registry.host}/demo/tiny-model"
        pushed = run_json(["push-model", str(sealed), f"{model}:v1", "--insecure"])
        model_ref = f"{model}@{pushed['digest']}"
        print(pushed["digest"], flush=True)
        served = _serve_and_infer(model_ref, public, work)

    size = sum(layer["size"] for layer in
               json.loads(OCILayout.open(layout).read_blob(digest))["layers"])
    return {"image": pinned, "build_s": build_s, "image_mib": size / 2**20,
            "vulnerabilities": vulnerabilities, "model": model_ref, **served}
