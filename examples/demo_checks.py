"""The guards of the demo: the admission webhook and the runtime's refusal of a tampered model.

The webhook is ``pipeline admission serve`` (HTTPS on 127.0.0.1, a throwaway self-signed
pair) with the repository's admission policies and the project's image policy. It is
asked, as the API server would ask it (AdmissionReview v1), about every workload of dev's
chart rendered with the release dev runs (admitted), a pod whose image was pushed but
never signed, and a privileged pod of the signed image (both denied). The runtime is
``python -m secure_runtime`` on a copy of the sealed model with one ciphertext byte
flipped: it must refuse to start, before it serves anything.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 60.0


def _stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then wait (SIGKILL after 20 s): no process of the demo outlives it."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def _tls_pair(directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "tls.crt", directory / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    key.chmod(0o600)
    return cert, key


@contextlib.contextmanager
def webhook(work: Path, image_policy: Path, release_key: Path) -> Iterator[httpx.Client]:
    """``pipeline admission serve`` on a free loopback port until the block ends."""
    cert, key = _tls_pair(work / "admission")
    log_path = work / "admission" / "webhook.log"
    env = {**os.environ, "PIPELINE_RELEASE_PUBLIC_KEY": str(release_key)}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "admission", "serve", "--policies",
             str(ROOT / "policies"), "--image-policy", str(image_policy), "--tls-cert",
             str(cert), "--tls-key", str(key), "--host", "127.0.0.1", "--port", "0",
             "--insecure-registry", "--log-level", "warning"],
            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        trusted = ssl.create_default_context(cafile=str(cert))
        url = _listening(process, log_path, trusted)
        with httpx.Client(base_url=url, timeout=60, verify=trusted) as client:
            yield client
    finally:
        _stop(process)


def _listening(process: subprocess.Popen[bytes], log_path: Path,
               trusted: ssl.SSLContext) -> str:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        found = re.search(r"https://127\.0\.0\.1:(\d+)", log_path.read_text(errors="replace"))
        if found:
            url = f"https://127.0.0.1:{found.group(1)}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/readyz", verify=trusted, timeout=2).status_code == 200:
                    return url
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise SystemExit("demo: the admission webhook did not start:\n"
                     + log_path.read_text(errors="replace")[-3000:])


def review(obj: dict[str, Any]) -> dict[str, Any]:
    """An AdmissionReview v1 CREATE of ``obj``, as the API server sends it."""
    from pipeline.policy.workloads import workload_kind

    kind = workload_kind(obj)
    assert kind is not None, obj.get("kind")
    meta = obj.get("metadata", {})
    gvk = {"group": kind.group, "version": kind.version, "kind": kind.kind}
    gvr = {"group": kind.group, "version": kind.version, "resource": kind.resource}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": str(uuid.uuid4()), "kind": gvk, "resource": gvr,
                        "requestKind": gvk, "requestResource": gvr,
                        "name": meta.get("name", ""), "namespace": meta.get("namespace", ""),
                        "operation": "CREATE",
                        "userInfo": {"username": "system:serviceaccount:argocd:"
                                                 "argocd-application-controller"},
                        "object": obj, "dryRun": False}}


def decide(client: httpx.Client, obj: dict[str, Any]) -> dict[str, Any]:
    """POST /validate; the webhook's answer (allowed, and the message when denied)."""
    reply = client.post("/validate", content=json.dumps(review(obj)).encode(),
                        headers={"content-type": "application/json"})
    reply.raise_for_status()
    answer = reply.json()["response"]
    return {"kind": obj["kind"], "name": obj.get("metadata", {}).get("name", ""),
            "allowed": bool(answer["allowed"]),
            "message": (answer.get("status") or {}).get("message", "")}


def rendered_workloads(chart: Path, values: dict[str, Any], image: str, model: str,
                       namespace: str) -> list[dict[str, Any]]:
    """dev's chart rendered as the promotion renders it (``image``/``model`` pinned):
    every object the webhook judges (the ones that run containers)."""
    from pipeline.policy.workloads import workload_kind
    from pipeline.release.canary import render_definition
    from pipeline.release.gitops import Release

    rendered, _ = render_definition(chart, values, Release(image, model), namespace)
    return [copy.deepcopy(o.obj) for o in rendered.objects if workload_kind(o.obj) is not None]


def pod_of(workload: dict[str, Any], name: str, image: str | None = None,
           privileged: bool = False) -> dict[str, Any]:
    """A bare Pod from a rendered workload's pod template (another image, or privileged)."""
    template = copy.deepcopy(workload["spec"]["template"])
    meta = {**template.get("metadata", {}), "name": name,
            "namespace": workload["metadata"].get("namespace", "")}
    spec = template["spec"]
    for container in spec["containers"]:
        if image is not None:
            container["image"] = image
        if privileged:
            container.setdefault("securityContext", {})["privileged"] = True
            container["securityContext"]["allowPrivilegeEscalation"] = True
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def dev_values(project: Path, release_key: Path) -> dict[str, Any]:
    """dev's chart values from the project's pipeline.yaml, with the trust root the
    promotion adds (the release key)."""
    data = yaml.safe_load((project / "pipeline.yaml").read_text())
    (dev,) = [e for e in data["release"]["environments"] if e["name"] == "dev"]
    values: dict[str, Any] = copy.deepcopy(dev.get("values", {}))
    values["trust"] = {"publicKey": release_key.read_text()}
    values["keys"] = {"secretName": "pipeline-kek", "key": "keyring.json"}
    return values


def tampered_model_refused(work: Path, model_ref: str, trust: Path, keyring: Path
                           ) -> dict[str, Any]:
    """Pull the sealed model, flip one ciphertext byte, start the runtime on it."""
    from pipeline.cli import run
    from pipeline.oci.local_registry import free_port

    pulled = work / "tampered-model"
    if run(["model", "pull", model_ref, str(pulled), "--insecure", "--trust", str(trust)]) != 0:
        raise SystemExit(f"demo: could not pull {model_ref}")
    target = max(pulled.rglob("*.sealed"), key=lambda p: p.stat().st_size)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    argv = [sys.executable, "-m", "secure_runtime", "--model", str(pulled), "--trust",
            str(trust), "--key-file", str(keyring), "--port", str(free_port()), "--no-grpc"]
    if os.geteuid() == 0:
        argv.append("--allow-root")  # a development machine that only has root
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = process.communicate(timeout=120)
    finally:
        _stop(process)
    lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.strip()]
    # The runtime's own ERROR line ("model load failed: ..."), without its log prefix.
    reason = next((ln.split(" ERROR ", 1)[1] for ln in lines if " ERROR " in ln), "")
    return {"file": target.name, "exit_code": process.returncode,
            "reason": reason.partition(": ")[2] or reason}
