"""Sealed load vs plain safetensors load: a fresh process's first load, then warm figures.

    .venv/bin/python -m bench.bench_sealed_load [--sizes 256,1024,4096] [--rounds 3]
        [--fill-gib 3] [--policies never,free] [--serve-gib 1] [--starts 3]
        [--warm-mib 1024] [--repeat 3] [--skip-tink] [--device cpu|cuda]

**Cold** (what a runtime pod does, once): every figure is its own fresh process
(``bench/fresh_load.py``) that loads once, after ``--fill-gib`` GiB of other files
have been re-read and half dropped from the page cache (``bench/_cold.py``: memory
fragmented by the cache, the model files themselves cached, checked with mincore).
Per model size and round, in rotating order:

  plain    ``safetensors.torch.load_file`` + clone of every tensor
  sealed   ``secure_runtime.load_sealed``: verify, unwrap, decrypt, views; once per
           huge-page policy in ``--policies`` (``never`` is the runtime's default,
           ``free`` advises only free huge pages, ``always`` the pre-issue-14 behaviour)
  floor    bare ``AESGCM.decrypt_into`` of the same ciphertext on all cores, into a
           buffer faulted in beforehand: the cryptography alone

Targets (issue 14), per round so that both sides saw the same machine:
sealed <= 1.3 x plain, and sealed <= plain + floor. Ranges are over rounds.

**Start to ready** (``--serve-gib``, 0 to skip): a synthetic MLP project of that many
GiB of fp32 weights; the plain server (``bench/baseline_server.py``, plaintext
weights) and ``python -m secure_runtime`` (the sealed copy), each started
``--starts`` times as a fresh process after the same churn, timed from spawn to the
first ``/v2/health/ready`` 200. Target <= 1.2 x. Both run with bytecode, as deployed: the
checkout's packages are compiled first (``bench/_bytecode.py``; the image ships ``.pyc``
files, and without them the runtime would compile ~150 ms of its own modules per start).

**Warm** (``--warm-mib``, 0 to skip): the in-process figures, best of ``--repeat``
(not what a pod sees): plain, floor, sealed, Tink's own streaming decrypt, and sealing
throughput against its baselines. On a CUDA machine (``--device cuda``) also plain vs
sealed onto the GPU.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from bench._cold import PageCacheChurn, cache_files, meminfo, run_fresh
from bench.bench_crypto import floor_decrypt, tink_primitive
from pipeline.sealing import _streaming
from pipeline.sealing.manifest import associated_data

WIDTH = 4096


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def two_hashes(data: memoryview) -> None:
    """The least work sealing must do: SHA-256 of the plaintext and of a same-size
    ciphertext (seal.json records both), on two threads as the sealer does."""
    from concurrent.futures import ThreadPoolExecutor

    step = 8 << 20

    def digest() -> None:
        h = hashlib.sha256()
        for i in range(0, len(data), step):
            h.update(data[i : i + step])

    with ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(digest), pool.submit(digest)]:
            future.result()


def make_model(path: Path, mib: int) -> None:
    """A transformer-shaped checkpoint of ``mib`` MiB: fp32 4096-wide matrices, one bf16 bias.

    Written a matrix at a time into a sparse-free file, so a 4 GiB model never needs
    4 GiB of tensors in memory at once (``save_file`` of the whole dict would).
    """
    generator = torch.Generator().manual_seed(0)
    shapes: list[tuple[str, int]] = []
    remaining = mib << 20
    while remaining > 0:
        rows = min(WIDTH, max(1, remaining // (WIDTH * 4)))
        shapes.append((f"layers.{len(shapes)}.weight", rows))
        remaining -= rows * WIDTH * 4
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, rows in shapes:
        header[name] = {"dtype": "F32", "shape": [rows, WIDTH],
                        "data_offsets": [offset, offset + rows * WIDTH * 4]}
        offset += rows * WIDTH * 4
    header["norm.bias"] = {"dtype": "BF16", "shape": [WIDTH],
                           "data_offsets": [offset, offset + WIDTH * 2]}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as handle:
        handle.write(len(raw).to_bytes(8, "little") + raw)
        for _name, rows in shapes:
            matrix = torch.rand(rows, WIDTH, generator=generator)
            handle.write(memoryview(matrix.numpy()).cast("B"))
        handle.write(bytes(WIDTH * 2))
    load_file(str(path))  # parse it back: a broken header fails here, not in a child


def make_serving_project(root: Path, gib: float) -> Path:
    """An MLP project of ``gib`` GiB of 4096 x 4096 fp32 layers that both servers can run."""
    project = root / "mlp"
    project.mkdir()
    layers = max(1, round(gib * (1 << 30) / (WIDTH * WIDTH * 4)))
    (project / "model.py").write_text(
        '"""A deep MLP of 4096-wide layers: weights big enough to time a cold start."""\n'
        "import torch\nfrom torch import nn\n\n\n"
        "class Layer(nn.Module):\n"
        "    def __init__(self, width: int) -> None:\n"
        "        super().__init__()\n"
        "        # Uninitialised: the loaded weights replace it (no random init, no\n"
        "        # skip_init, which costs ~0.7 s of imports on its first call).\n"
        "        self.weight = nn.Parameter(torch.empty(width, width))\n\n"
        "    def forward(self, input: torch.Tensor) -> torch.Tensor:\n"
        "        return torch.tanh(nn.functional.linear(input, self.weight))\n\n\n"
        "class Mlp(nn.Module):\n"
        "    def __init__(self, layers: int, width: int) -> None:\n"
        "        super().__init__()\n"
        "        self.layers = nn.Sequential(*(Layer(width) for _ in range(layers)))\n\n"
        "    def forward(self, input: torch.Tensor) -> torch.Tensor:\n"
        "        return self.layers(input)\n\n\n"
        "def build_model(config: dict) -> nn.Module:\n"
        "    return Mlp(config['layers'], config['width'])\n"
    )
    (project / "config.json").write_text(json.dumps({"layers": layers, "width": WIDTH}))
    (project / "pipeline.yaml").write_text(
        "name: mlp\nmodel:\n  module: model.py\n  factory: build_model\n  config: config.json\n"
        "  weights: [model.safetensors]\n  task: tensor\n"
        f"  inputs:\n    - {{name: input, datatype: FP32, shape: [-1, {WIDTH}]}}\n"
        f"  outputs:\n    - {{name: output, datatype: FP32, shape: [-1, {WIDTH}]}}\n"
    )
    generator = torch.Generator().manual_seed(1)
    save_file({f"layers.{i}.weight": torch.rand(WIDTH, WIDTH, generator=generator) * 0.01
               for i in range(layers)}, str(project / "model.safetensors"))
    return project


def _range(values: Sequence[float], unit: float = 1000.0, fmt: str = "{:.0f}") -> str:
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{fmt.format(mid * unit)} ({fmt.format(low * unit)}-{fmt.format(high * unit)})"


class Cold:
    """The fresh-process figures for one model: children, churn and the checks between."""

    def __init__(self, churn: PageCacheChurn, env: dict[str, str], trust: Path) -> None:
        self.churn, self.env, self.trust = churn, env, trust

    def measure(self, kind: str, weights: Path, sealed: Path, digest: bool) -> dict[str, object]:
        files = [weights] if kind == "plain" else sorted(sealed.glob("*.sealed"))
        self.churn.churn()
        cached = cache_files(files)
        free = meminfo().get("MemFree", 0)
        if kind == "plain":
            args = ["plain", str(weights)]
        elif kind == "floor":
            args = ["floor", str(sealed), "--trust", str(self.trust)]
        else:
            args = ["sealed", str(sealed), "--trust", str(self.trust),
                    "--hugepages", kind.split("-", 1)[1]]
        result = run_fresh([*args, *(["--digest"] if digest else [])], self.env)
        result.update(cached_before=cached, mem_free_mib=free)
        return result


def cold_section(args: argparse.Namespace, tmp: Path, env: dict[str, str], trust: Path,
                 churn: PageCacheChurn) -> list[str]:
    from pipeline.sealing.seal import seal_model

    policies = [p for p in args.policies.split(",") if p]
    kinds = ["plain", *[f"sealed-{p}" for p in policies], "floor"]
    cold = Cold(churn, env, trust)
    failures: list[str] = []
    for mib in [int(s) for s in args.sizes.split(",") if s]:
        project = tmp / f"cold-{mib}"
        project.mkdir()
        weights = project / "model.safetensors"
        make_model(weights, mib)
        sealed = tmp / f"cold-{mib}.sealed"
        seal_model(project, sealed, key="bench", sign_key=tmp / "bench.key")
        runs: dict[str, list[dict[str, object]]] = {k: [] for k in kinds}
        for round_ in range(args.rounds):
            order = kinds[round_ % len(kinds):] + kinds[: round_ % len(kinds)]
            for kind in order:
                runs[kind].append(cold.measure(kind, weights, sealed, digest=round_ == 0))
        digests = {k: r[0].get("digest") for k, r in runs.items() if r[0].get("digest")}
        exact = len(set(digests.values())) == 1
        if not exact:
            failures.append(f"{mib} MiB: tensors differ between plain and sealed: {digests}")
        size = weights.stat().st_size
        print(f"\ncold, fresh process, first load: {mib} MiB model ({size / 2**20:.0f} MiB file), "
              f"{args.rounds} rounds, median (min-max); tensors sealed == plain: {exact}")
        print(f"  {'':26}{'wall ms':>22}{'CPU ms':>22}{'GB/s':>7}{'AnonHuge MiB':>14}"
              f"{'free huge pg':>14}{'compact stalls':>16}")
        for kind in kinds:
            seconds = [float(r["seconds"]) for r in runs[kind]]  # type: ignore[arg-type]
            cpu = [float(r["cpu_seconds"]) for r in runs[kind]]  # type: ignore[arg-type]
            huge = sorted({int(r["anon_huge_mib"]) for r in runs[kind]})  # type: ignore[arg-type]
            free = [int(r["free_huge_pages"] or 0) for r in runs[kind]]  # type: ignore[arg-type]
            stalls = sum(int(r["vmstat"]["compact_stall"]) for r in runs[kind])  # type: ignore[index]
            print(f"  {kind:<26}{_range(seconds):>22}{_range(cpu):>22}"
                  f"{size / 1e9 / statistics.median(seconds):7.2f}"
                  f"{'/'.join(map(str, huge)):>14}{min(free):>7}-{max(free):<6}{stalls:>16}")
        cached = min(float(r["cached_before"]) for rs in runs.values() for r in rs)  # type: ignore[arg-type]
        print(f"  model files in the page cache before each child: >= {cached:.0%} "
              "(re-read where less)")
        plain = [float(r["seconds"]) for r in runs["plain"]]  # type: ignore[arg-type]
        floor = [float(r["seconds"]) for r in runs["floor"]]  # type: ignore[arg-type]
        for policy in policies:
            sealed_s = [float(r["seconds"]) for r in runs[f"sealed-{policy}"]]  # type: ignore[arg-type]
            vs_plain = [s / p for s, p in zip(sealed_s, plain, strict=True)]
            vs_sum = [s / (p + f) for s, p, f in zip(sealed_s, plain, floor, strict=True)]
            print(f"  ratios sealed-{policy}: sealed / plain = {_range(vs_plain, 1, '{:.2f}')} "
                  f"(target <= 1.3); sealed / (plain + floor) = {_range(vs_sum, 1, '{:.2f}')} "
                  "(target <= 1.0)")
        churn_size = sum(p.stat().st_size for p in churn.files) / 2**30
        print(f"  conditions: {churn_size:.1f} GiB of churn files; MemFree before each child "
              f"{min(int(r['mem_free_mib']) for rs in runs.values() for r in rs)}-"  # type: ignore[call-overload]
              f"{max(int(r['mem_free_mib']) for rs in runs.values() for r in rs)} MiB")  # type: ignore[call-overload]
        shutil.rmtree(project)
        shutil.rmtree(sealed)
    return failures


def serve_section(args: argparse.Namespace, tmp: Path, churn: PageCacheChurn) -> None:
    from bench._bytecode import compile_project
    from bench.bench_runtime import Server, _port, process_cpu_seconds, seal_project

    compile_project()  # the runtime as its image runs it: with bytecode (see _bytecode)
    project = make_serving_project(tmp, args.serve_gib)
    work = tmp / "serve"
    work.mkdir()
    sealed, public, keyring = seal_project(project, work)
    plain = Server("plain", lambda p: [sys.executable, "-m", "bench.baseline_server",
                                       str(project), "--port", str(p)], work / "plain.log")
    ours = Server("secure_runtime", lambda p: [
        sys.executable, "-m", "secure_runtime", "--model", str(sealed), "--trust", str(public),
        "--key-file", str(keyring), "--port", str(p), "--grpc-port", str(_port()),
        "--allow-root", "--log-level", "warning"], work / "ours.log")
    times: dict[str, list[float]] = {"plain": [], "secure_runtime": []}
    cpu: dict[str, list[float]] = {"plain": [], "secure_runtime": []}
    files = {"plain": [project / "model.safetensors"],
             "secure_runtime": sorted(sealed.glob("*.sealed"))}
    for start in range(args.starts):
        for server in (plain, ours) if start % 2 == 0 else (ours, plain):
            churn.churn()
            cache_files(files[server.name])
            times[server.name].append(server.start())
            assert server.process is not None
            cpu[server.name].append(process_cpu_seconds(server.process.pid))
            server.stop()
    size = (project / "model.safetensors").stat().st_size
    print(f"\nstart to ready (spawn -> /v2/health/ready 200), fresh processes, "
          f"{size / 2**30:.2f} GiB MLP, {args.starts} starts each, median (min-max) ms")
    print(f"  {'':16}{'wall to ready':>24}{'process CPU at ready':>26}")
    for name, values in times.items():
        print(f"  {name:<16}{_range(values):>24}{_range(cpu[name]):>26}")
    ratios = [o / p for o, p in zip(times["secure_runtime"], times["plain"], strict=True)]
    medians = statistics.median(times["secure_runtime"]) / statistics.median(times["plain"])
    print(f"  ratio secure_runtime / plain = {_range(ratios, 1, '{:.2f}')} (target <= 1.2); "
          f"of medians {medians:.2f}")


def warm_section(args: argparse.Namespace, tmp: Path, trust_path: Path) -> None:
    """The in-process, best-of-N figures: the steady state, not a pod's first load."""
    from pipeline.sealing.open import open_sealed, unwrap_data_key
    from pipeline.sealing.seal import seal_model
    from pipeline.signing.model import Trust
    from secure_runtime import load_sealed

    project = tmp / "warm"
    project.mkdir()
    weights = project / "model.safetensors"
    make_model(weights, args.warm_mib)
    size = weights.stat().st_size
    gb = size / 1e9
    trust = Trust(public_keys=(trust_path,))

    def seal_into(parent: Path, sign: bool) -> float:
        times = []
        for k in range(args.repeat):
            out = parent / f"sealed-{sign}-{k}"
            started = time.perf_counter()
            seal_model(project, out, key="bench", sign_key=tmp / "bench.key" if sign else None)
            times.append(time.perf_counter() - started)
            if k:
                shutil.rmtree(out)
        return min(times)

    def copy_baseline(parent: Path) -> float:
        times = []
        for k in range(args.repeat):
            target = parent / f"copy-{k}.safetensors"
            started = time.perf_counter()
            shutil.copyfile(weights, target)
            times.append(time.perf_counter() - started)
            target.unlink()
        return min(times)

    seal_s = seal_into(tmp, sign=True)
    sealed = tmp / "sealed-True-0"
    seal_unsigned_s = seal_into(tmp, sign=False)
    copy_s = copy_baseline(tmp)
    shm = Path("/dev/shm")
    seal_shm_s = copy_shm_s = None
    if shm.is_dir() and os.access(shm, os.W_OK):
        with tempfile.TemporaryDirectory(prefix="bench-seal-", dir=shm) as shm_name:
            seal_shm_s = seal_into(Path(shm_name), sign=True)
            copy_shm_s = copy_baseline(Path(shm_name))
    in_memory = memoryview(weights.read_bytes())
    hash_floor_s = best(lambda: two_hashes(in_memory), args.repeat)
    in_memory.release()

    def plain() -> None:
        tensors = load_file(str(weights))
        for name in tensors:
            tensors[name] = tensors[name].clone()

    ciphertext = (sealed / "model.safetensors.sealed").read_bytes()
    data_key = bytes(unwrap_data_key(open_sealed(sealed, trust=trust)))
    out = memoryview(bytearray(size))
    ad = associated_data("model.safetensors")
    floor = floor_decrypt(data_key, ciphertext, out, _streaming.SEGMENT_SIZE_1MB,
                          _streaming.default_threads(), associated_data=ad)
    a = best(plain, args.repeat)
    b = best(floor, args.repeat)
    c = best(lambda: load_sealed(sealed, trust=trust), args.repeat)
    rows = [("(a) plain load_file + clone", a), ("(b) floor: AESGCM.decrypt_into, all cores", b),
            ("(c) load_sealed (verify+unwrap+decrypt+views)", c)]
    d = None
    if not args.skip_tink:
        primitive = tink_primitive(data_key, _streaming.SEGMENT_SIZE_1MB)

        def tink() -> None:
            with primitive.new_decrypting_stream(io.BytesIO(ciphertext), ad) as stream:
                while stream.readinto(out):
                    pass

        d = best(tink, args.repeat)
        rows.append(("(d) tink streaming decrypt", d))
    print(f"\nwarm, in one process (not a pod's first load): model {size / 2**20:.0f} MiB, "
          f"{os.cpu_count()} cores, best of {args.repeat}")
    for name, seconds in rows:
        print(f"  {name:<48} {seconds * 1000:8.1f} ms  {gb / seconds:6.2f} GB/s")
    seal_rows = [("(e) seal_model + sign, to disk", seal_s),
                 ("(e) seal_model, unsigned, to disk", seal_unsigned_s),
                 ("    baseline: copyfile to the same disk", copy_s),
                 ("    floor: sha256 x2 (in memory, 2 threads)", hash_floor_s)]
    if seal_shm_s is not None and copy_shm_s is not None:
        seal_rows += [("(e) seal_model + sign, to tmpfs", seal_shm_s),
                      ("    baseline: copyfile to tmpfs", copy_shm_s)]
    for name, seconds in seal_rows:
        print(f"  {name:<48} {seconds * 1000:8.1f} ms  {gb / seconds:6.2f} GB/s")
    print(f"  warm ratios: c / a = {c / a:.2f}; c / (a + b) = {c / (a + b):.2f}"
          + (f"; d / c = {d / c:.1f} (the floor b is {d / b:.1f}x faster than tink)"
             if d is not None else ""))
    print(f"  seal / copy to disk = {seal_s / copy_s:.2f}; seal / sha256 floor = "
          f"{seal_s / hash_floor_s:.2f}")
    if args.device.startswith("cuda") and torch.cuda.is_available():

        def plain_gpu() -> None:
            load_file(str(weights), device=args.device)
            torch.cuda.synchronize()

        pg = best(plain_gpu, args.repeat)
        sg = best(lambda: load_sealed(sealed, trust=trust, device=args.device), args.repeat)
        print(f"  GPU: plain {pg * 1000:.1f} ms, sealed {sg * 1000:.1f} ms, ratio {sg / pg:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,1024,4096", help="cold model sizes, MiB")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fill-gib", type=float, default=3.0,
                        help="GiB of other files churned through the page cache before each "
                             "fresh process")
    parser.add_argument("--policies", default="never,free",
                        help="huge-page policies of the loader to measure (never, free, always)")
    parser.add_argument("--serve-gib", type=float, default=1.0)
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--warm-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-tink", action="store_true")
    parser.add_argument("--dir", type=Path, default=None,
                        help="work directory (default: the system temp dir); on disk, not tmpfs")
    args = parser.parse_args(argv)

    from pipeline.cli import run

    with tempfile.TemporaryDirectory(prefix="bench-sealed-", dir=args.dir) as tmp_name:
        tmp = Path(tmp_name)
        keyring = tmp / "keys" / "keyring.json"
        os.environ["PIPELINE_KEYRING"] = str(keyring)
        assert run(["keys", "create", "bench"]) == 0
        assert run(["keys", "create-signing", "bench", "--dir", str(tmp)]) == 0
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PIPELINE_", "SECURE_RUNTIME_"))}
        env.update(PIPELINE_KEYRING=str(keyring), PYTHONDONTWRITEBYTECODE="1")
        churn = PageCacheChurn(tmp / "churn", args.fill_gib)
        churn.create()
        thp = Path("/sys/kernel/mm/transparent_hugepage")
        modes = ", ".join(f"{n}: {(thp / n).read_text().strip()}"
                          for n in ("enabled", "defrag") if (thp / n).exists())
        print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start; "
              f"churn {args.fill_gib} GiB; THP {modes or 'absent'}")
        failures: list[str] = []
        try:
            if args.sizes:
                failures = cold_section(args, tmp, env, tmp / "bench.pub", churn)
            if args.serve_gib > 0 and args.starts > 0:
                serve_section(args, tmp, churn)
        finally:
            churn.remove()
        if args.warm_mib > 0:
            warm_section(args, tmp, tmp / "bench.pub")
        print(f"load average {os.getloadavg()[0]:.1f} at the end")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
