"""Serving: secure_runtime (sealed weights) vs a plain FastAPI + torch server, in one run.

    .venv/bin/python -m bench.bench_runtime [--project examples/tiny] [--requests 1500]
                                            [--concurrency 8] [--starts 3] [--rounds 3]
                                            [--device cpu|cuda] [--batch 1]

Both servers run as subprocesses on 127.0.0.1 with the same module and weights:
the plain one (bench/baseline_server.py) reads the plaintext safetensors; ours
starts with ``python -m secure_runtime`` on the sealed copy (signature verified,
data key unwrapped, decrypted in memory, hardened). Measured:

* cold start: process start -> ``/v2/health/ready`` 200 (median of ``--starts``);
* load: ``--concurrency`` client threads send ``--requests`` OIP v2 JSON requests
  in total (keep-alive), rounds alternating plain/ours; requests/s, p50 and p99
  latency, each the median over the rounds (shared machines are noisy);
* server CPU per request: the server process's user+system CPU time over a round
  divided by its requests (Linux ``/proc``), median over the rounds. The client
  shares the cores, so requests/s moves with whatever else runs; the server's
  own CPU cost per request is the steadier measure of serving overhead.

``--device cuda`` serves both on the GPU (the runtime's ``--device cuda``, the plain
server's ``--device cuda``); ``--batch N`` sends N inputs per request (N texts, or N
rows of the declared input). bench/gpu_check.sh runs it with MiniLM at batch 1 and 32.

Targets (docs/performance.md, "Runtime serving"): throughput and latency within
5% of plain; cold start <= 1.3x plain. The client shares the CPU with the server,
so absolute figures are loopback figures; the ratios are the point.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIPELINE_", "SECURE_RUNTIME_"))}
    env.update(PYTHONDONTWRITEBYTECODE="1", HF_HUB_OFFLINE="1", **extra)
    return env


def _pipeline(*args: str, keyring: Path) -> None:
    subprocess.run([sys.executable, "-m", "pipeline", *args], check=True, capture_output=True,
                   env=_env(PIPELINE_KEYRING=str(keyring)))


def seal_project(project: Path, work: Path) -> tuple[Path, Path, Path]:
    """Keys and a signed sealed copy of ``project``: (sealed dir, public key, keyring)."""
    keyring = work / "keys" / "keyring.json"
    _pipeline("keys", "create", "bench-kek", keyring=keyring)
    _pipeline("keys", "create-signing", "bench", "--dir", str(work), keyring=keyring)
    sealed = work / "sealed"
    _pipeline("seal", str(project), "--key", "bench-kek", "--out", str(sealed),
              "--sign-key", str(work / "bench.key"), keyring=keyring)
    return sealed, work / "bench.pub", keyring


class Server:
    """A server subprocess and its port; ``start`` returns seconds to ready."""

    def __init__(self, name: str, command: Callable[[int], list[str]], log: Path) -> None:
        self.name, self.command, self.log = name, command, log
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> float:
        self.port = _port()
        started = time.perf_counter()
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.command(self.port), stdout=log,
                                            stderr=subprocess.STDOUT, env=_env())
        url = f"http://127.0.0.1:{self.port}/v2/health/ready"
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited: see {self.log}")
            try:
                if requests.get(url, timeout=1).status_code == 200:
                    return time.perf_counter() - started
            except requests.RequestException:
                pass
            time.sleep(0.005)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads); NaN off Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(port: int, model: str, body: bytes, total: int, concurrency: int
         ) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) of ``total`` requests from ``concurrency`` threads."""
    url = f"http://127.0.0.1:{port}/v2/models/{model}/infer"
    latencies: list[float] = []
    lock = threading.Lock()
    remaining = [total]
    errors: list[str] = []

    def worker() -> None:
        session = requests.Session()
        mine: list[float] = []
        while True:
            with lock:
                if remaining[0] == 0:
                    break
                remaining[0] -= 1
            started = time.perf_counter()
            answer = session.post(url, data=body, headers={"Content-Type": "application/json"},
                                  timeout=60)
            mine.append(time.perf_counter() - started)
            if answer.status_code != 200:
                errors.append(answer.text[:200])
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise SystemExit(f"{len(errors)} failed requests, e.g. {errors[0]}")
    latencies.sort()
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return total / elapsed, p50 * 1000, p99 * 1000


def request_body(project: Path, batch: int = 1) -> tuple[str, bytes]:
    """A valid request for the project's declared input, ``batch`` inputs in one request."""
    import yaml

    spec = yaml.safe_load((project / "pipeline.yaml").read_text())
    name = spec.get("name", project.name)
    section = spec["model"]
    if section.get("task") in ("text-embedding", "text-classification", "text"):
        texts = [f"A sealed model is decrypted only in memory ({i})." for i in range(batch)]
        return name, json.dumps({"text": texts}).encode()
    spec_in = section["inputs"][0]
    shape = [1 if d == -1 else d for d in spec_in["shape"]]
    shape[0] = batch if spec_in["shape"][0] == -1 else shape[0]
    count = 1
    for dim in shape:
        count *= dim
    data = [((i * 37) % 17) / 17.0 - 0.5 for i in range(count)]
    return name, json.dumps({"inputs": [{"name": spec_in["name"], "datatype": "FP32",
                                         "shape": shape, "data": data}]}).encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=ROOT / "examples" / "tiny")
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu or cuda: both servers")
    parser.add_argument("--batch", type=int, default=1, help="inputs per request")
    parser.add_argument("--runtime-args", default="",
                        help="extra runtime flags, e.g. '--no-grpc' (space-separated)")
    args = parser.parse_args()
    project = args.project.resolve()
    work = Path(tempfile.mkdtemp(prefix="bench-runtime-"))
    try:
        sealed, public, keyring = seal_project(project, work)
        plain = Server("plain", lambda p: [sys.executable, "-m", "bench.baseline_server",
                                           str(project), "--port", str(p), "--device",
                                           args.device], work / "plain.log")
        ours = Server("secure_runtime", lambda p: [
            sys.executable, "-m", "secure_runtime", "--model", str(sealed), "--trust",
            str(public), "--key-file", str(keyring), "--port", str(p), "--grpc-port",
            str(_port()), "--allow-root", "--log-level", "warning", "--device", args.device,
            *args.runtime_args.split()],
            work / "ours.log")
        model, body = request_body(project, args.batch)
        cold: dict[str, list[float]] = {"plain": [], "secure_runtime": []}
        for _ in range(args.starts):
            for server in (plain, ours):
                cold[server.name].append(server.start())
                server.stop()
        results: dict[str, list[tuple[float, float, float]]] = {"plain": [], "secure_runtime": []}
        cpu: dict[str, list[float]] = {"plain": [], "secure_runtime": []}
        for server in (plain, ours):
            server.start()
        try:
            for server in (plain, ours):  # warm both (first-request costs, allocator)
                load(server.port, model, body, max(100, args.requests // 10), args.concurrency)
            for _ in range(args.rounds):
                for server in (plain, ours):
                    assert server.process is not None
                    before = process_cpu_seconds(server.process.pid)
                    results[server.name].append(
                        load(server.port, model, body, args.requests, args.concurrency))
                    used = process_cpu_seconds(server.process.pid) - before
                    cpu[server.name].append(used / args.requests * 1e6)
        finally:
            for server in (plain, ours):
                server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    best = {name: tuple(statistics.median(r[i] for r in rounds) for i in range(3))
            for name, rounds in results.items()}
    cold_med = {name: statistics.median(times) for name, times in cold.items()}
    p, o = best["plain"], best["secure_runtime"]
    print(f"project: {project.relative_to(ROOT) if project.is_relative_to(ROOT) else project}  "
          f"requests: {args.requests} x {args.rounds} rounds, concurrency {args.concurrency}, "
          f"batch {args.batch}, device {args.device}, cpu cores: {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("medians over rounds; cold start: median of starts")
    cpu_med = {name: statistics.median(values) for name, values in cpu.items()}
    print(f"{'':16}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'cold start s':>14}"
          f"{'server CPU us/req':>19}")
    for name, (rps, p50, p99) in best.items():
        print(f"{name:16}{rps:10.1f}{p50:10.2f}{p99:10.2f}{cold_med[name]:14.2f}"
              f"{cpu_med[name]:19.0f}")
    throughput, p50_ratio, p99_ratio = o[0] / p[0], o[1] / p[1], o[2] / p[2]
    cold_ratio = cold_med["secure_runtime"] / cold_med["plain"]
    print(f"ratios (ours / plain): throughput {throughput:.3f} (target >= 0.95), "
          f"p50 {p50_ratio:.3f}, p99 {p99_ratio:.3f} (target <= 1.05), "
          f"cold start {cold_ratio:.3f} (target <= 1.3), "
          f"server CPU per request {cpu_med['secure_runtime'] / cpu_med['plain']:.3f}")
    print("all rounds (req/s): " + "; ".join(
        f"{n}: " + ", ".join(f"{r[0]:.0f}" for r in rounds) for n, rounds in results.items()))
    print("cold starts (s): " + "; ".join(
        f"{n}: " + ", ".join(f"{t:.2f}" for t in times) for n, times in cold.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
