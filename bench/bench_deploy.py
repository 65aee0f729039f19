"""Start-to-ready of ``pipeline deploy --local`` against starting the runtime directly.

    .venv/bin/python -m bench.bench_deploy [--models tiny,minilm] [--runs 1] [--state-root DIR]

For each example (built with ``pipeline build``, pushed to a loopback registry, its
model sealed), in one run:

* **direct**: ``python -m secure_runtime --model DIR ...`` from the venv, time until
  ``/v2/health/ready`` answers 200 (polled every 20 ms);
* **deploy, first start**: ``pipeline deploy --local`` of helm/secure-runtime (1 replica,
  the same sealed model from ``--volume``, probes every 1 s: the kubelet's minimum)
  with an empty state directory, time until it prints the Service URL (the image is
  pulled by digest, unpacked, the pod started in its namespace, nginx reloaded);
* **deploy, second start**: the same with the state directory of the first (the
  unpacked image is reused by digest; so is the bytecode the first compiled after it was
  ready, for an image that does not ship its own).

The ratios deploy/direct are printed (medians over ``--runs``), and what creating a file
cost on the state directory's disk at the time (unpacking pays it once per file of the
image, and it moves with load from outside this machine); docs/performance.md has the
figures. ``--state-root`` puts the deploy's state directories (the unpacked images)
elsewhere, e.g. ``/dev/shm``: creating an inode on this machine's disk costs 0.5-1.7 ms,
on tmpfs 6 us, so the pair of runs separates the disk from the deploy's own work.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._disk import create_latency  # noqa: E402
from pipeline.oci.layout import OCILayout  # noqa: E402
from pipeline.oci.local_registry import free_port, start_local_registry  # noqa: E402
from pipeline.oci.reference import Reference  # noqa: E402
from pipeline.oci.registry import RegistryOptions  # noqa: E402
from pipeline.oci.transfer import push_layout  # noqa: E402

PYTHON = str(ROOT / ".venv" / "bin" / "python")
URL = re.compile(r"serves at (http://127\.0\.0\.1:\d+)")


def _run(args: list[str], env: dict[str, str] | None = None) -> None:
    subprocess.run(args, check=True, capture_output=True, cwd=ROOT, env=env)


def _env(keyring: Path) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "PYTEST"))}
    env.update(PIPELINE_KEYRING=str(keyring), PYTHONDONTWRITEBYTECODE="1",
               PYTHONUNBUFFERED="1")
    return env


def _direct(model: Path, trust: Path, keyring: Path, env: dict[str, str]) -> float:
    port = free_port()
    start = time.monotonic()
    process = subprocess.Popen(
        [PYTHON, "-m", "secure_runtime", "--model", str(model), "--trust", str(trust),
         "--key-file", str(keyring), "--port", str(port), "--no-grpc", "--allow-root"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"runtime exited with {process.returncode}")
            try:
                if requests.get(f"http://127.0.0.1:{port}/v2/health/ready",
                                timeout=2).status_code == 200:
                    return time.monotonic() - start
            except requests.RequestException:
                pass
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def _deploy(values: Path, keys: Path, models: Path, state: Path, env: dict[str, str],
            log: Path, linger: tuple[str, ...] = ()) -> tuple[float, str]:
    """Seconds to the Service URL line; with ``linger``, stays up until one of those too."""
    start = time.monotonic()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [PYTHON, "-m", "pipeline", "deploy", "--local", "--chart", "helm/secure-runtime",
             "-f", str(values), "--release-name", "bench", "--secret",
             f"bench-secure-runtime-kek={keys}", "--volume", f"models={models}",
             "--state-dir", str(state), "--insecure"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        while True:
            text = log.read_text(errors="replace")
            if URL.search(text):
                ready = time.monotonic() - start
                while linger and not any(w in log.read_text(errors="replace") for w in linger) \
                        and process.poll() is None and time.monotonic() - start < 900:
                    time.sleep(0.5)
                return ready, text
            if process.poll() is not None:
                raise RuntimeError(f"deploy exited with {process.returncode}:\n{text}")
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(120)


def bench(example: str, work: Path, registry: str, runs: int,
          state_root: Path | None = None) -> dict[str, float]:
    project = Path(shutil.copytree(ROOT / "examples" / example, work / example))
    layout = work / f"{example}-layout"
    _run([PYTHON, "-m", "pipeline", "build", str(project), "--out", str(layout)])
    options = RegistryOptions(insecure=True)
    client = options.client(registry)
    try:
        digest = push_layout(OCILayout.open(layout), Reference.parse(
            f"{registry}/bench/{example}:latest"), client)
    finally:
        client.close()
    keys_dir = work / f"{example}-ws"
    keys_dir.mkdir()
    keyring = keys_dir / "keyring.json"
    env = _env(keyring)
    _run([PYTHON, "-m", "pipeline", "keys", "create", "kek"], env)
    _run([PYTHON, "-m", "pipeline", "keys", "create-signing", "signer", "--dir",
          str(keys_dir)], env)
    base = Path(tempfile.mkdtemp(prefix=f"bench-deploy-{example}-", dir="/tmp"))
    base.chmod(0o755)
    models = base / "models"
    models.mkdir(mode=0o755)
    _run([PYTHON, "-m", "pipeline", "seal", str(project), "--key", "kek", "--out",
          str(models / example), "--sign-key", str(keys_dir / "signer.key")], env)
    keys = base / "keys"
    keys.mkdir(mode=0o700)
    shutil.copy(keyring, keys / "kek")
    values = base / "values.yaml"
    values.write_text(json.dumps({
        "image": {"repository": f"{registry}/bench/{example}", "digest": digest},
        "model": {"volume": {"enabled": True, "claimName": "models", "subPath": example}},
        "trust": {"publicKey": (keys_dir / "signer.pub").read_text()},
        "autoscaling": {"enabled": False}, "replicaCount": 1,
        "runtime": {"extraArgs": ["--no-grpc"]}, "serviceMonitor": {"enabled": False},
        "probes": {"startup": {"periodSeconds": 1}, "readiness": {"periodSeconds": 1}},
    }))
    out: dict[str, list[float]] = {"direct": [], "first": [], "second": [], "create_us": []}
    try:
        for run in range(runs):
            out["direct"].append(_direct(models / example, keys_dir / "signer.pub", keyring,
                                         env))
            state = base / f"state-{run}"
            if state_root:  # mkdtemp makes it 0700: the pods' uid must reach below it
                state = Path(tempfile.mkdtemp(prefix="bench-state-", dir=state_root))
                state.chmod(0o755)
            # The first deploy stays up until it has compiled the image's bytecode (in the
            # background, after its pod is ready), as a deploy that runs for a while does;
            # an image that ships its bytecode (pipeline build's) has nothing to compile.
            first, _ = _deploy(values, keys, models, state, env, base / f"first-{run}.log",
                               linger=("compiled for the next starts",
                                       "ships its bytecode"))
            out["first"].append(first)
            second, _ = _deploy(values, keys, models, state, env, base / f"second-{run}.log")
            out["second"].append(second)
            out["create_us"].append(create_latency(state_root or base))
            if state_root:
                shutil.rmtree(state, ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return {k: statistics.median(v) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,minilm")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--state-root", type=Path, default=None,
                        help="where the deploy's state directories go (default: beside "
                             "the bench's other files, on disk)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-deploy-"))
    try:
        with start_local_registry(work / "registry") as registry:
            for example in args.models.split(","):
                result = bench(example, work, registry.host, args.runs, args.state_root)
                direct = result["direct"]
                print(f"{example:7s} direct {direct:6.2f} s | deploy first start "
                      f"{result['first']:6.2f} s ({result['first'] / direct:4.2f}x, target "
                      f"<= 1.5x) | second start {result['second']:6.2f} s "
                      f"({result['second'] / direct:4.2f}x, target <= 1.1x) | creating a file "
                      f"on the state's disk {result['create_us']:.0f} us", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
