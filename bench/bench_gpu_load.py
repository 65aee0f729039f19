"""Sealed weights onto the GPU against the plain paths, each row a fresh process.

    .venv/bin/python -m bench.bench_gpu_load [--gib 1,4,16] [--dtypes fp32,bf16]
        [--device cuda|cpu] [--json OUT.json] [--dir WORKDIR]

Per model (``--gib`` GiB of 4096-wide matrices in ``--dtypes``, sealed with 1 MiB
segments), each row is its own fresh process (imports and CUDA context before the
clock), first load, model files in the page cache:

CUDA rows (``--device cuda``, need a GPU):
  (a) ``safetensors.torch.load_file(device="cuda")``
  (b) plain safetensors to the CPU, then a pinned async copy: one pinned staging
      buffer, each tensor memcpy'd in and copied to one device allocation on a side
      stream as the next is staged (the fast plain path)
  (c) ``secure_runtime.load_sealed(device="cuda")``: the ring pipeline
  (d) bare host-to-device bandwidth: one pinned 1 GiB ``cudaMemcpyAsync``, as GB/s
      applied to the model's bytes
CPU rows (always):
  plain   ``load_file`` + clone
  sealed  ``load_sealed(device="cpu")`` (the direct path, the CPU default)
  ring    the same through the ring pipeline with a memcpy (``strategy="ring"``)
  floor   bare ``AESGCM.decrypt_into`` of the ciphertext on all cores (the crypto alone)

Each row reports wall seconds, peak host RSS beyond the process's own baseline
(``VmHWM`` at the end less ``VmRSS`` just before the clock) and, on CUDA, peak device
memory (``torch.cuda.max_memory_allocated``). Targets (issue 15): c <= 1.1 x b;
c <= 1.25 x max(floor, d); peak host RSS of c below 1.5 GiB beyond baseline at 16 GiB.
Without a GPU it prints the CPU rows and says that the CUDA rows need one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 4096
CUDA_ROWS = ("a", "b", "c", "d")
CPU_ROWS = ("plain", "sealed", "ring", "floor")
LABELS = {
    "a": "(a) load_file(device=cuda)",
    "b": "(b) load_file cpu + pinned async copy",
    "c": "(c) load_sealed(device=cuda)",
    "d": "(d) bare H2D, pinned 1 GiB memcpyAsync",
    "plain": "plain load_file + clone (cpu)",
    "sealed": "load_sealed(device=cpu), direct",
    "ring": "load_sealed(device=cpu), ring pipeline",
    "floor": "floor: AESGCM.decrypt_into, all cores",
}


def _status_bytes(field: str) -> int:
    found = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(),
                      re.MULTILINE)
    return int(found.group(1)) << 10 if found else 0


def make_model(path: Path, gib: float, dtype: str) -> int:
    """``gib`` GiB of 4096-wide matrices, written a matrix at a time (never all in memory)."""
    import torch

    element = 4 if dtype == "fp32" else 2
    name = "F32" if dtype == "fp32" else "BF16"
    rows_total = int(gib * (1 << 30)) // (WIDTH * element)
    shapes: list[int] = []
    while rows_total > 0:
        shapes.append(min(WIDTH, rows_total))
        rows_total -= shapes[-1]
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for i, rows in enumerate(shapes):
        size = rows * WIDTH * element
        header[f"layers.{i}.weight"] = {"dtype": name, "shape": [rows, WIDTH],
                                        "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    generator = torch.Generator().manual_seed(0)
    with open(path, "wb") as handle:
        handle.write(len(raw).to_bytes(8, "little") + raw)
        for rows in shapes:
            matrix = torch.rand(rows, WIDTH, generator=generator)
            if dtype == "bf16":
                matrix = matrix.to(torch.bfloat16)
            handle.write(memoryview(matrix.view(torch.uint8).numpy()).cast("B"))
    return offset


# --------------------------------------------------------------------------- children


def child(row: str, path: Path, trust: Path | None, device: str) -> dict[str, object]:
    """One row, in this (fresh) process: set-up first, then the clock around the load."""
    import torch
    from safetensors.torch import load_file

    from pipeline.signing.model import Trust
    from secure_runtime import load_sealed_model

    cuda = device.startswith("cuda")
    if cuda:
        torch.zeros(1, device=device)
        torch.empty(1, pin_memory=True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    trust_obj = Trust(public_keys=(trust,)) if trust else None
    baseline = _status_bytes("VmRSS")
    nbytes = 0
    started = time.perf_counter()
    if row == "a":
        tensors = load_file(str(path), device=device)
        torch.cuda.synchronize()
    elif row == "b":
        tensors = _plain_pinned(path, device)
    elif row == "c":
        tensors = load_sealed_model(path, device=device, trust=trust_obj).tensors
        torch.cuda.synchronize()
    elif row == "d":
        nbytes = 1 << 30
        host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
        host.fill_(1)
        target = torch.empty(nbytes, dtype=torch.uint8, device=device)
        target.copy_(host, non_blocking=True)  # once untimed: first-touch costs
        torch.cuda.synchronize()
        started = time.perf_counter()
        target.copy_(host, non_blocking=True)
        torch.cuda.synchronize()
        tensors = {}
    elif row == "plain":
        tensors = {k: v.clone() for k, v in load_file(str(path)).items()}
    elif row in ("sealed", "ring"):
        tensors = load_sealed_model(path, device="cpu", trust=trust_obj,
                                    strategy="direct" if row == "sealed" else "ring").tensors
    else:
        raise SystemExit(f"unknown row {row}")
    seconds = time.perf_counter() - started
    nbytes = nbytes or sum(t.numel() * t.element_size() for t in tensors.values())
    result: dict[str, object] = {
        "row": row, "seconds": seconds, "bytes": nbytes,
        "peak_rss_beyond_baseline": _status_bytes("VmHWM") - baseline,
    }
    if cuda:
        result["peak_device_bytes"] = torch.cuda.max_memory_allocated()
    return result


def _plain_pinned(path: Path, device: str) -> dict[str, object]:
    """(b): safetensors to the CPU, one pinned staging buffer, async copies on a stream."""
    import torch
    from safetensors.torch import load_file

    cpu = load_file(str(path))
    total = sum(t.numel() * t.element_size() for t in cpu.values())
    staging = torch.empty(total, dtype=torch.uint8, pin_memory=True)
    target = torch.empty(total, dtype=torch.uint8, device=device)
    stream = torch.cuda.Stream()
    tensors: dict[str, object] = {}
    offset = 0
    with torch.cuda.stream(stream):
        for name, tensor in cpu.items():
            size = tensor.numel() * tensor.element_size()
            flat = tensor.reshape(-1).view(torch.uint8)
            staging[offset : offset + size].copy_(flat)
            target[offset : offset + size].copy_(staging[offset : offset + size],
                                                 non_blocking=True)
            tensors[name] = target[offset : offset + size].view(tensor.dtype).view(tensor.shape)
            offset += size
    stream.synchronize()
    return tensors


def _run_child(args: list[str], env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-m", "bench.bench_gpu_load", "--child", *args],
                          env=env, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"child {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --------------------------------------------------------------------------- parent


def _fmt_row(label: str, result: dict[str, object], nbytes: int) -> str:
    seconds = float(result["seconds"])  # type: ignore[arg-type]
    if result["row"] == "d":  # the bandwidth applied to the model's bytes
        seconds = seconds * nbytes / float(result["bytes"])  # type: ignore[arg-type]
    def mib(key: str, width: int) -> str:
        value = result.get(key)
        return f"{int(value) / 2**20:{width}.0f}" if value is not None else f"{'-':>{width}}"  # type: ignore[call-overload]

    return (f"  {label:<42}{seconds * 1000:10.1f}{nbytes / 1e9 / seconds:8.2f}"
            f"{mib('peak_rss_beyond_baseline', 12)}{mib('peak_device_bytes', 10)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", default="1,4,16", help="model sizes, GiB (comma-separated)")
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--device", default="cuda", help="cuda (all rows) or cpu (CPU rows)")
    parser.add_argument("--json", type=Path, help="also write every row here")
    parser.add_argument("--dir", type=Path, help="work directory (default: system temp)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        row, path, trust, device = args.child
        print(json.dumps(child(row, Path(path), Path(trust) if trust != "-" else None, device)))
        return 0

    import torch

    from bench._cold import cache_files, run_fresh
    from pipeline.cli import run
    from pipeline.sealing.seal import seal_model

    cuda = args.device.startswith("cuda") and torch.cuda.is_available()
    gpu_name = torch.cuda.get_device_name(0) if cuda else None
    rows = (*CUDA_ROWS, *CPU_ROWS) if cuda else CPU_ROWS
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"GPU: {gpu_name or 'none'}")
    if not cuda:
        why = ("torch.cuda.is_available() is False" if args.device.startswith("cuda") or
               not torch.cuda.is_available() else "--device cpu")
        print(f"CUDA rows (a) load_file(device=cuda), (b) pinned async copy, (c) "
              f"load_sealed(device=cuda), (d) bare H2D need a GPU: not measured ({why}).")
    everything: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-gpu-", dir=args.dir) as tmp_name:
        tmp = Path(tmp_name)
        keyring = tmp / "keys" / "keyring.json"
        os.environ["PIPELINE_KEYRING"] = str(keyring)
        assert run(["keys", "create", "bench"]) == 0
        assert run(["keys", "create-signing", "bench", "--dir", str(tmp)]) == 0
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PIPELINE_", "SECURE_RUNTIME_"))}
        env.update(PIPELINE_KEYRING=str(keyring), PYTHONDONTWRITEBYTECODE="1")
        trust = tmp / "bench.pub"
        for gib in [float(g) for g in args.gib.split(",") if g]:
            for dtype in [d for d in args.dtypes.split(",") if d]:
                project = tmp / "model"
                project.mkdir()
                weights = project / "model.safetensors"
                nbytes = make_model(weights, gib, dtype)
                sealed = tmp / "sealed"
                seal_model(project, sealed, key="bench", sign_key=tmp / "bench.key")
                print(f"\n{gib:g} GiB {dtype} ({nbytes / 2**30:.2f} GiB of tensors), fresh "
                      f"process per row, first load, files cached")
                print(f"  {'':<42}{'ms':>10}{'GB/s':>8}{'RSS+ MiB':>12}{'dev MiB':>10}")
                results: dict[str, dict[str, object]] = {}
                for row in rows:
                    cache_files([weights, *sealed.glob("*.sealed")])
                    if row == "floor":
                        result = run_fresh(["floor", str(sealed), "--trust", str(trust)], env)
                        result["row"] = "floor"
                    else:
                        source = weights if row in ("a", "b", "plain") else sealed
                        result = _run_child([row, str(source), str(trust),
                                             args.device if cuda else "cpu"], env)
                    result.update(gib=gib, dtype=dtype, model_bytes=nbytes, gpu=gpu_name)
                    results[row] = result
                    everything.append(result)
                    print(_fmt_row(LABELS[row], result, nbytes), flush=True)
                _ratios(results, nbytes, gib)
                shutil.rmtree(project)
                shutil.rmtree(sealed)
                if args.json:
                    args.json.write_text(json.dumps(everything, indent=1))
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


def _ratios(results: dict[str, dict[str, object]], nbytes: int, gib: float) -> None:
    def seconds(row: str) -> float:
        value = float(results[row]["seconds"])  # type: ignore[arg-type]
        if row == "d":
            value *= nbytes / float(results[row]["bytes"])  # type: ignore[arg-type]
        return value

    if "c" in results:
        c, b = seconds("c"), seconds("b")
        bound = max(seconds("floor"), seconds("d"))
        rss = int(results["c"]["peak_rss_beyond_baseline"]) / 2**30  # type: ignore[call-overload]
        print(f"  c / b = {c / b:.2f} (target <= 1.1); c / max(floor, d) = {c / bound:.2f} "
              f"(target <= 1.25); peak RSS of c beyond baseline {rss:.2f} GiB"
              + (" (target < 1.5 at 16 GiB)" if gib >= 16 else ""))
    s, p, r = seconds("sealed"), seconds("plain"), seconds("ring")
    print(f"  cpu: sealed / plain = {s / p:.2f}; ring / sealed = {r / s:.2f} (the ring's "
          "extra memcpy, which only the CUDA path needs)")


if __name__ == "__main__":
    sys.exit(main())
