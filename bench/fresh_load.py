"""One first load in a fresh process, timed; prints one JSON line (used by bench_sealed_load).

    python -m bench.fresh_load plain  WEIGHTS.safetensors
    python -m bench.fresh_load sealed SEALED_DIR --trust PUB [--hugepages never|free|always]
    python -m bench.fresh_load floor  SEALED_DIR --trust PUB

* ``plain``: ``safetensors.torch.load_file`` + ``clone`` of every tensor (private memory,
  as a server that must not keep the file mapped holds its weights);
* ``sealed``: ``secure_runtime.load_sealed`` (verify, unwrap, decrypt, views), with the
  loader's huge-page policy set to ``--hugepages`` (``never`` is the runtime's default);
* ``floor``: bare ``AESGCM.decrypt_into`` of the same ciphertext on all cores, into a
  buffer faulted in before the clock starts: the cost of the cryptography alone.

Imports and (for ``floor``) the key unwrap happen before the clock starts: the figure is
the load itself, the only one a runtime pod ever does. ``--digest`` adds the SHA-256 of
all tensor bytes (in name order) after the clock stops, to check sealed == plain.
The key comes from ``$PIPELINE_KEYRING``, never from the command line.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import mmap
import re
import resource
import sys
import time
from pathlib import Path


def _smaps_kib(field: str) -> int:
    text = Path("/proc/self/smaps_rollup").read_text()
    found = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) if found else 0


#: /proc/vmstat counters whose change during the load says what the kernel did
#: (node-wide: another process may move them too).
VMSTAT = ("compact_stall", "thp_fault_alloc", "thp_fault_fallback", "allocstall_normal",
          "allocstall_movable")


def _vmstat() -> dict[str, int]:
    values = dict(line.split() for line in Path("/proc/vmstat").read_text().splitlines())
    return {name: int(values.get(name, 0)) for name in VMSTAT}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _digest(tensors: dict) -> str:
    import torch

    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(name.encode())
        digest.update(memoryview(tensor.view(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["plain", "sealed", "floor"])
    parser.add_argument("path", type=Path)
    parser.add_argument("--trust", type=Path)
    parser.add_argument("--hugepages", choices=["never", "free", "always"], default="never")
    parser.add_argument("--digest", action="store_true")
    args = parser.parse_args(argv)

    import torch  # noqa: F401 - imported before the clock, as in both servers
    from safetensors.torch import load_file

    from pipeline.signing.model import Trust
    from secure_runtime import _hostmem, load_sealed
    from secure_runtime._hostmem import read_thp_state

    state = read_thp_state()
    result: dict[str, object] = {
        "mode": args.mode if args.mode != "sealed" else f"sealed-{args.hugepages}",
        "free_huge_pages": state.free_huge_pages if state else None,
    }
    trust = Trust(public_keys=(args.trust,)) if args.trust else None
    tensors = None
    vmstat, cpu = _vmstat(), _cpu_seconds()
    if args.mode == "plain":
        started = time.perf_counter()
        tensors = load_file(str(args.path))
        for name in tensors:
            tensors[name] = tensors[name].clone()
        seconds = time.perf_counter() - started
    elif args.mode == "sealed":
        _hostmem.MODE = args.hugepages
        started = time.perf_counter()
        tensors = load_sealed(args.path, trust=trust)
        seconds = time.perf_counter() - started
    else:
        seconds, cpu = _floor(args.path, trust)
    result["seconds"] = seconds
    result["cpu_seconds"] = _cpu_seconds() - cpu
    after = _vmstat()
    result["vmstat"] = {name: after[name] - vmstat[name] for name in VMSTAT}
    result["anon_huge_mib"] = _smaps_kib("AnonHugePages") >> 10
    result["rss_mib"] = _smaps_kib("Rss") >> 10
    if args.digest and tensors is not None:
        result["digest"] = _digest(tensors)
    print(json.dumps(result))
    return 0


def _floor(sealed: Path, trust: object) -> tuple[float, float]:
    """Bare AES-GCM over every segment of every sealed file, all cores, buffer pre-faulted.

    Returns the wall seconds of the decryption alone and the CPU clock at its start
    (the set-up before it is not part of the floor)."""
    import bench.bench_crypto as bench_crypto
    from pipeline.sealing import _streaming
    from pipeline.sealing.manifest import associated_data
    from pipeline.sealing.open import open_sealed, unwrap_data_key

    opened = open_sealed(sealed, trust=trust)  # type: ignore[arg-type]
    data_key = bytes(unwrap_data_key(opened))
    total = 0.0
    runs = []
    for entry in opened.manifest.sealed_files:
        with open(opened.path / entry.stored_path, "rb") as handle:
            mapped = mmap.mmap(handle.fileno(), 0, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE,
                               prot=mmap.PROT_READ)
        out = bytearray(entry.size)  # calloc'd, untouched: fault it in before the clock
        if entry.size:
            ctypes.memset(ctypes.addressof(ctypes.c_char.from_buffer(out)), 0, entry.size)
        runs.append((bench_crypto.floor_decrypt(
            data_key, mapped, memoryview(out), opened.manifest.segment_size,
            _streaming.default_threads(), associated_data=associated_data(entry.path)),
            mapped, out))
    cpu = _cpu_seconds()
    for run, _mapped, _out in runs:
        started = time.perf_counter()
        run()
        total += time.perf_counter() - started
    return total, cpu


if __name__ == "__main__":
    sys.exit(main())
