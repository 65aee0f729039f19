"""Sealed-weights crypto throughput: our Tink-format reader/writer against its baselines.

    .venv/bin/python -m bench.bench_crypto --mib 256 [--segment-size 1048576] [--threads N]

Decryption (the model-loading hot path) is compared with
  * the floor: bare ``AESGCM.decrypt_into`` over the same segments on the same threads,
    with nonces and slices precomputed (what any implementation on ``cryptography`` costs);
  * Tink's own Python streaming decrypt (the reference implementation).
Sealing (``encrypt_file``: read + SHA-256(plaintext) + encrypt + SHA-256(ciphertext) +
write) is compared with Tink's streaming encrypt (which hashes nothing) and with the same
work done sequentially on one thread. Everything is measured in one run; each figure is
the best of ``--repeat`` runs. The data is random bytes, not model weights.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import tempfile
import threading
import time
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pipeline.sealing import _streaming as sa
from pipeline.sealing._segments import Layout
from tests.support.tink_reference import tink_primitive

AD = b"bench/model.safetensors"


def best(fn: Callable[[], object], repeat: int) -> float:
    """Fastest wall time of ``repeat`` calls (the least disturbed by other processes)."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def floor_decrypt(
    key: bytes,
    ciphertext: bytes,
    out: memoryview,
    segment_size: int,
    threads: int,
    *,
    associated_data: bytes = AD,
) -> Callable[[], None]:
    """Bare decrypt_into over precomputed (nonce, in, out) triples, split over threads."""
    header = sa.parse_header(ciphertext)
    derived = HKDF(hashes.SHA256(), 32, header.salt, associated_data).derive(key)
    aead = AESGCM(derived)
    layout = Layout.for_ciphertext(len(ciphertext), segment_size)
    view = memoryview(ciphertext)
    jobs = []
    for i in range(layout.count):
        c0, c1 = layout.ciphertext_bounds(i)
        p0, p1 = layout.plaintext_bounds(i)
        last = b"\x01" if i == layout.count - 1 else b"\x00"
        jobs.append((header.nonce_prefix + i.to_bytes(4, "big") + last, view[c0:c1], out[p0:p1]))
    per = -(-len(jobs) // threads)
    parts = [jobs[k : k + per] for k in range(0, len(jobs), per)]

    def part(items: list) -> None:
        for nonce, src, dst in items:
            aead.decrypt_into(nonce, src, None, dst)

    def run() -> None:
        workers = [threading.Thread(target=part, args=(p,)) for p in parts[1:]]
        for worker in workers:
            worker.start()
        part(parts[0])
        for worker in workers:
            worker.join()

    return run


class _Sink(io.RawIOBase):
    """A writable that counts bytes (Tink's encrypt speed without a second copy)."""

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # noqa: ANN001
        return len(data)


def sequential_seal(key: bytes, src: str, dst: str, segment_size: int) -> None:
    """The same work as encrypt_file on one thread, no pipelining: the naive baseline."""
    layout = Layout.for_plaintext(os.path.getsize(src), segment_size)
    salt, prefix = os.urandom(32), os.urandom(7)
    aead = AESGCM(HKDF(hashes.SHA256(), 32, salt, AD).derive(key))
    pt_hash, ct_hash = hashlib.sha256(), hashlib.sha256()
    header = bytes([sa.HEADER_SIZE]) + salt + prefix
    ct_hash.update(header)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fout.write(header)
        for i in range(layout.count):
            p0, p1 = layout.plaintext_bounds(i)
            chunk = fin.read(p1 - p0)
            pt_hash.update(chunk)
            last = b"\x01" if i == layout.count - 1 else b"\x00"
            sealed = aead.encrypt(prefix + i.to_bytes(4, "big") + last, chunk, None)
            ct_hash.update(sealed)
            fout.write(sealed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=256, help="plaintext size in MiB")
    parser.add_argument("--segment-size", type=int, default=sa.SEGMENT_SIZE_1MB)
    parser.add_argument("--threads", type=int, default=sa.default_threads())
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-tink", action="store_true")
    parser.add_argument(
        "--dir",
        default=None,
        help="where the seal benchmark reads and writes (default: the system temp dir)",
    )
    args = parser.parse_args(argv)

    n = args.mib << 20
    seg, threads, repeat = args.segment_size, args.threads, args.repeat
    key = os.urandom(32)
    print(
        f"plaintext {args.mib} MiB, segment {seg} B, {threads} threads, best of {repeat}, "
        f"seal output in {args.dir or tempfile.gettempdir()}"
    )
    plaintext = os.urandom(n)
    ciphertext = sa.encrypt_bytes(key, plaintext, AD, segment_size=seg)
    out = bytearray(n)
    out_view = memoryview(out)
    gb = n / 1e9
    rows: dict[str, float] = {}

    rows["decrypt floor (bare AESGCM.decrypt_into)"] = gb / best(
        floor_decrypt(key, ciphertext, out_view, seg, threads), repeat
    )
    rows["decrypt ours (decrypt_into)"] = gb / best(
        lambda: sa.decrypt_into(key, ciphertext, out_view, AD, segment_size=seg, threads=threads),
        repeat,
    )
    if out != plaintext:
        raise SystemExit("decrypt_into produced wrong plaintext")
    rows["decrypt ours, 1 thread"] = gb / best(
        lambda: sa.decrypt_into(key, ciphertext, out_view, AD, segment_size=seg, threads=1), repeat
    )
    if not args.skip_tink:
        primitive = tink_primitive(key, seg)

        def tink_decrypt() -> None:
            with primitive.new_decrypting_stream(io.BytesIO(ciphertext), AD) as stream:
                while stream.readinto(out_view):
                    pass

        rows["decrypt tink (streaming, 1 thread)"] = gb / best(tink_decrypt, 1)

    with tempfile.TemporaryDirectory(prefix="bench-crypto-", dir=args.dir) as tmp:
        src, dst = os.path.join(tmp, "plain.bin"), os.path.join(tmp, "sealed.bin")
        with open(src, "wb") as handle:
            handle.write(plaintext)

        def ours_seal() -> None:
            if os.path.exists(dst):
                os.unlink(dst)
            with open(dst, "wb") as handle:
                sa.encrypt_file(key, src, handle, AD, segment_size=seg, threads=threads)

        ours_seal()  # warm the destination's page cache allocation once
        rows["seal ours (encrypt_file: read+2xSHA256+AEAD+write)"] = gb / best(ours_seal, repeat)
        rows["seal sequential baseline (same work, 1 thread)"] = gb / best(
            lambda: sequential_seal(key, src, dst, seg), repeat
        )
        rows["sha256 alone (1 thread)"] = gb / best(
            lambda: hashlib.sha256().update(plaintext), repeat
        )
        if not args.skip_tink:

            def tink_seal() -> None:
                with open(src, "rb") as fin, primitive.new_encrypting_stream(_Sink(), AD) as s:
                    while chunk := fin.read(8 << 20):
                        s.write(chunk)

            rows["seal tink (encrypt only, no hashing, 1 thread)"] = gb / best(tink_seal, 1)

    width = max(map(len, rows))
    for name, rate in rows.items():
        print(f"  {name:<{width}}  {rate:6.2f} GB/s")
    ours = rows["decrypt ours (decrypt_into)"]
    print(
        f"ratio decrypt ours/floor: {ours / rows['decrypt floor (bare AESGCM.decrypt_into)']:.2f}"
    )
    seal = rows["seal ours (encrypt_file: read+2xSHA256+AEAD+write)"]
    print(
        f"ratio seal ours/sequential: "
        f"{seal / rows['seal sequential baseline (same work, 1 thread)']:.2f}"
    )
    if not args.skip_tink:
        print(f"ratio decrypt ours/tink: {ours / rows['decrypt tink (streaming, 1 thread)']:.2f}")
        print(
            f"ratio seal ours/tink: "
            f"{seal / rows['seal tink (encrypt only, no hashing, 1 thread)']:.2f}"
        )


if __name__ == "__main__":
    main()
