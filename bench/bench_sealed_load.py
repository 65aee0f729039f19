"""Sealed load vs plain safetensors load, the crypto floor and Tink, in one run.

    .venv/bin/python -m bench.bench_sealed_load [--mib 1024] [--repeat 3] [--device cpu|cuda]

(a) plain:  ``safetensors.torch.load_file`` with every tensor cloned into private memory
            (mmap alone defers all the work to first touch, so it is not comparable)
(b) floor:  bare ``AESGCM.decrypt_into`` of the same ciphertext on all cores
(c) ours:   ``secure_runtime.load_sealed`` on CPU: signature verification, key unwrap,
            parallel decryption into one buffer, tensors as views
(d) tink:   the ``tink`` package's own streaming decrypt of the same file
(e) seal:   ``pipeline.sealing.seal.seal_model`` throughput (encrypt + both digests)
On a CUDA machine (``--device cuda``) also plain vs sealed load onto the GPU.

Targets (docs/performance.md): c <= 1.15 x (a + b); c <= 1.6 x a; d >= 5 x c; seal >= 2 GB/s.
Every figure is the best of ``--repeat`` runs, with the files in the page cache.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from bench.bench_crypto import floor_decrypt, tink_primitive
from pipeline.sealing import _streaming
from pipeline.sealing.manifest import associated_data


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
    """A transformer-shaped checkpoint of ``mib`` MiB: many fp32/bf16 matrices."""
    generator = torch.Generator().manual_seed(0)
    tensors: dict[str, torch.Tensor] = {}
    remaining = mib << 20
    i = 0
    while remaining > 0:
        rows = min(4096, max(1, remaining // (4096 * 4)))
        tensors[f"layers.{i}.weight"] = torch.rand(rows, 4096, generator=generator)
        remaining -= rows * 4096 * 4
        i += 1
    tensors["norm.bias"] = torch.zeros(4096, dtype=torch.bfloat16)
    save_file(tensors, str(path), metadata={"format": "pt"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-tink", action="store_true")
    args = parser.parse_args(argv)

    from pipeline.cli import run
    from pipeline.sealing.seal import seal_model
    from pipeline.signing.model import Trust
    from secure_runtime import load_sealed

    with tempfile.TemporaryDirectory(prefix="bench-sealed-") as tmp_name:
        tmp = Path(tmp_name)
        os.environ["PIPELINE_KEYRING"] = str(tmp / "keys" / "keyring.json")
        assert run(["keys", "create", "bench"]) == 0
        assert run(["keys", "create-signing", "bench", "--dir", str(tmp)]) == 0
        project = tmp / "model"
        project.mkdir()
        weights = project / "model.safetensors"
        make_model(weights, args.mib)
        size = weights.stat().st_size
        gb = size / 1e9
        trust = Trust(public_keys=(tmp / "bench.pub",))

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
        from pipeline.sealing.open import open_sealed, unwrap_data_key

        data_key = bytes(unwrap_data_key(open_sealed(sealed, trust=trust)))
        out = memoryview(bytearray(size))
        # The floor decrypts with the real file's associated data (bench_crypto's AD).
        import bench.bench_crypto as bench_crypto

        bench_crypto.AD = associated_data("model.safetensors")
        floor = floor_decrypt(
            data_key, ciphertext, out, _streaming.SEGMENT_SIZE_1MB, _streaming.default_threads()
        )

        a = best(plain, args.repeat)
        b = best(floor, args.repeat)
        c = best(lambda: load_sealed(sealed, trust=trust), args.repeat)
        rows = [
            ("(a) plain load_file + clone", a),
            ("(b) floor: AESGCM.decrypt_into, all cores", b),
            ("(c) load_sealed (verify+unwrap+decrypt+views)", c),
        ]
        d = None
        if not args.skip_tink:
            primitive = tink_primitive(data_key, _streaming.SEGMENT_SIZE_1MB)

            def tink() -> None:
                with primitive.new_decrypting_stream(
                    io.BytesIO(ciphertext), associated_data("model.safetensors")
                ) as stream:
                    while stream.readinto(out):
                        pass

            d = best(tink, args.repeat)
            rows.append(("(d) tink streaming decrypt", d))
        print(f"model {size / 2**20:.0f} MiB, {os.cpu_count()} cores, best of {args.repeat}")
        for name, seconds in rows:
            print(f"  {name:<48} {seconds * 1000:8.1f} ms  {gb / seconds:6.2f} GB/s")
        seal_rows = [
            ("(e) seal_model + sign, to disk", seal_s),
            ("(e) seal_model, unsigned, to disk", seal_unsigned_s),
            ("    baseline: copyfile to the same disk", copy_s),
            ("    floor: sha256 x2 (in memory, 2 threads)", hash_floor_s),
        ]
        if seal_shm_s is not None and copy_shm_s is not None:
            seal_rows += [
                ("(e) seal_model + sign, to tmpfs", seal_shm_s),
                ("    baseline: copyfile to tmpfs", copy_shm_s),
            ]
        for name, seconds in seal_rows:
            print(f"  {name:<48} {seconds * 1000:8.1f} ms  {gb / seconds:6.2f} GB/s")
        print("ratios")
        print(f"  c / (a + b) = {c / (a + b):.2f}   (target <= 1.15)")
        print(f"  c / a       = {c / a:.2f}   (target <= 1.60)")
        if d is not None:
            print(f"  d / c       = {d / c:.1f}    (target >= 5; the floor b itself is "
                  f"{d / b:.1f}x faster than tink)")
        print(f"  seal / copy to disk = {seal_s / copy_s:.2f}; seal / sha256 floor = "
              f"{seal_s / hash_floor_s:.2f}")
        if seal_shm_s is not None and copy_shm_s is not None:
            print(f"  seal / copy on tmpfs = {seal_shm_s / copy_shm_s:.2f}; "
                  f"seal on tmpfs / sha256 floor = {seal_shm_s / hash_floor_s:.2f}")
        if args.device.startswith("cuda") and torch.cuda.is_available():

            def plain_gpu() -> None:
                load_file(str(weights), device=args.device)
                torch.cuda.synchronize()

            pg = best(plain_gpu, args.repeat)
            sg = best(lambda: load_sealed(sealed, trust=trust, device=args.device), args.repeat)
            print(f"  GPU: plain {pg * 1000:.1f} ms, sealed {sg * 1000:.1f} ms, "
                  f"ratio {sg / pg:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
