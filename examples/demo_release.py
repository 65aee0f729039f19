"""The release half of the demo: the Hera ``release`` workflow, run locally, then serving.

What Argo Workflows runs on a cluster for a ``git push`` runs here through the local
runner, from the same definitions (workflows/release.py): checkout of a git repository,
seal and sign the model, build the slim runtime image without a Docker daemon, SBOM,
scan, SLSA provenance, push image and sealed model to a registry (Debian's
docker-registry on 127.0.0.1), sign the image and attach the three attestations,
verify them, then render the runtime chart with the pushed digests and check it against
the admission policies and the image policy. Then the secure runtime starts on the
sealed model *pulled by digest*, answers one Open Inference Protocol request, and stops
on SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

#: The image policy the release's policy-check step applies to the rendered chart:
#: signed by the release key, with provenance, SBOM and scan attestations.
IMAGE_POLICY = """\
version: 1
default: deny
requireDigest: true
rules:
  - name: demo-release
    images: ["{registry}/demo/**"]
    authorities: [{{key: "${{PIPELINE_RELEASE_PUBLIC_KEY}}"}}]
    threshold: 1
    attestations: [{{type: slsaprovenance}}, {{type: cyclonedx}}, {{type: vuln}}]
"""


def _source_repo(work: Path, registry: str) -> tuple[Path, str]:
    """A git repository as a team would push it: the serving project (examples/tiny)
    at the root, the model under model/, the runtime chart and the image policy."""
    repo = work / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(EXAMPLES / "tiny", repo, ignore=ignore)
    shutil.copytree(EXAMPLES / "tiny", repo / "model", ignore=ignore)
    shutil.copytree(ROOT / "helm" / "secure-runtime", repo / "helm" / "secure-runtime")
    (repo / "policies").mkdir()
    (repo / "policies" / "image-policy.yaml").write_text(IMAGE_POLICY.format(registry=registry))
    git = ["git", "-C", str(repo), "-c", "user.name=demo", "-c", "user.email=demo@localhost"]
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "release tiny"]):
        subprocess.run([*git, *argv], check=True)
    revision = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True,
                              text=True).stdout.strip()
    return repo, revision


def _signing_secret(work: Path, private: Path, public: Path) -> Path:
    """The release signing key pair laid out as the Kubernetes Secret mounts it."""
    secret = work / "secrets" / "signing"
    secret.mkdir(parents=True, mode=0o700)
    for source, name in ((private, "release.key"), (public, "release.pub")):
        target = secret / name
        shutil.copyfile(source, target)
        target.chmod(0o600 if name.endswith(".key") else 0o644)
    return secret


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
        spec = requests.get(url + "/v2/models/tiny", timeout=5).json()["inputs"][0]
        features = spec["shape"][-1]
        request = {"inputs": [{"name": spec["name"], "datatype": spec["datatype"],
                               "shape": [2, features],
                               "data": [0.1 * (i % 7) for i in range(2 * features)]}]}
        answer = requests.post(url + "/v2/models/tiny/infer", json=request, timeout=10)
        answer.raise_for_status()
        output = answer.json()["outputs"][0]
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        code = process.wait(60)
    if code != 0:
        raise SystemExit(f"demo: the runtime exited with {code} after SIGTERM")
    return {"output": output, "exit_code": code}


def release(run: Callable[[list[str]], None], work: Path, private: Path, public: Path,
            kek_dir: Path, kek_name: str) -> dict[str, Any]:
    """The release workflow through the local runner, then serving what it pushed."""
    from pipeline.oci.local_registry import start_local_registry

    signing = _signing_secret(work, private, public)
    with start_local_registry(work / "registry") as registry:
        repo, revision = _source_repo(work, registry.host)
        runs = work / "workflow-run"
        # The release ends by recording itself in the GitOps repository (and promoting
        # from there when an analysis target is given): a bare repository of the demo's own.
        gitops = work / "gitops.git"
        if not gitops.exists():
            subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(gitops)],
                           check=True)
        started = time.perf_counter()
        run(["workflow", "run", "release",
             "-p", f"git-repo={repo}", "-p", f"git-revision={revision}",
             "-p", f"repository={registry.host}/demo/tiny-runtime",
             "-p", f"model-repository={registry.host}/demo/tiny-model",
             "-p", "registry-insecure=true", "-p", "scan-env=dev",
             "-p", f"kek-name={kek_name}", "-p", f"kek-secret={kek_dir}",
             "-p", f"signing-key-secret={signing}", "-p", f"gitops-repo={gitops}",
             "--workdir", str(runs)])
        release_s = time.perf_counter() - started
        steps = {s["name"]: s for s in json.loads((runs / "run.json").read_text())["steps"]}
        image = f"{registry.host}/demo/tiny-runtime@{steps['push-image']['outputs']['digest']}"
        model = f"{registry.host}/demo/tiny-model@{steps['push-model']['outputs']['digest']}"
        vuln = json.loads((runs / "workspace" / "vuln.json").read_text())
        served = _serve_and_infer(model, public, work)
    return {"image": image, "model": model, "steps": len(steps), "release_s": release_s,
            "vulnerabilities": vuln["scanner"]["result"]["vulnerabilities"], **served}
