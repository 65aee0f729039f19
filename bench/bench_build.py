"""Benchmark the daemonless build against a debootstrap "slim" baseline, in one run.

Prints: cold build time, warm rebuild after an app-code change (target <= 5 s without
torch), reproducibility (two cold builds, same digest), and compressed size of our
base layer vs ``debootstrap --variant=minbase bookworm`` + python3 packed the same way
(target >= 60 % smaller). ``--torch`` also builds examples/tiny (torch CPU wheel).

    .venv/bin/python -m bench.bench_build [--torch] [--skip-baseline]

The .deb cache (~/.cache/secure-model-pipeline/debs) is kept: "cold" means an empty
layer cache, not an empty download cache (downloads measure the mirror, not us).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline.build._tarlayer import DIR, REG, SYMLINK, Entry, write_layer
from pipeline.build.image import build_image

ROOT = Path(__file__).resolve().parents[1]
TEST_PROJECT = ROOT / "tests" / "integration" / "build_project"
TINY = ROOT / "examples" / "tiny"


def _timed_build(project: Path, out: Path, cache: Path) -> tuple[float, object]:
    os.environ["PIPELINE_LAYER_CACHE"] = str(cache)
    start = time.perf_counter()
    result = build_image(project, out)
    return time.perf_counter() - start, result


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def bench_project(project: Path, work: Path, label: str) -> dict:
    """Cold build, cold build again (reproducibility), warm rebuild after an app change."""
    copy = work / f"{label}-project"
    shutil.copytree(project, copy)
    cold1, r1 = _timed_build(copy, work / f"{label}-out1", work / f"{label}-cache1")
    cold2, r2 = _timed_build(copy, work / f"{label}-out2", work / f"{label}-cache2")
    model_py = next(copy.glob("*.py"))
    with model_py.open("a") as handle:
        handle.write("\n# app-code change for the benchmark\n")
    warm, r3 = _timed_build(copy, work / f"{label}-out3", work / f"{label}-cache1")
    rebuilt = [layer.name for layer in r3.layers if not layer.cached]
    print(f"[{label}] cold build: {cold1:.2f} s (second cold build {cold2:.2f} s)")
    print(f"[{label}] warm rebuild after app change: {warm:.2f} s, rebuilt layers: {rebuilt}")
    print(f"[{label}] reproducible: {r1.digest == r2.digest} ({r1.digest})")
    print(f"[{label}] image size (compressed): {_mib(r1.size)}; cold/warm = {cold1 / warm:.1f}x")
    return {"cold": cold1, "warm": warm, "result": r1, "same": r1.digest == r2.digest}


def _tree_entries(root: Path) -> list[Entry]:
    entries = []
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            mode = st.st_mode & 0o7777
            if path.is_symlink():
                entries.append(Entry(rel, SYMLINK, 0o777, target=os.readlink(path)))
            elif path.is_dir():
                entries.append(Entry(rel, DIR, mode))
            elif path.is_file():
                entries.append(Entry(rel, REG, mode, source=path))
    return entries


def baseline_size(work: Path) -> int | None:
    """debootstrap minbase + python3, packed with our own deterministic layer writer (zstd)."""
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        print("[baseline] skipped: needs root and debootstrap (apt-get install debootstrap)")
        return None
    target = work / "debootstrap"
    start = time.perf_counter()
    proc = subprocess.run(
        ["debootstrap", "--variant=minbase", "--include=python3", "bookworm", str(target),
         "http://deb.debian.org/debian"],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        print(f"[baseline] debootstrap failed: {proc.stderr[-400:]}")
        return None
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        shutil.rmtree(target / junk, ignore_errors=True)
    blob = write_layer(_tree_entries(target), work / "baseline.tar.zst")
    print(f"[baseline] debootstrap minbase + python3: {_mib(blob.uncompressed_size)} rootfs, "
          f"{_mib(blob.size)} compressed ({time.perf_counter() - start:.0f} s to make)")
    return blob.size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch", action="store_true", help="also build examples/tiny (torch)")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("SOURCE_DATE_EPOCH", "1700000000")
    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp:
        work = Path(tmp)
        small = bench_project(TEST_PROJECT, work, "no-torch")
        base = small["result"].layers[0]
        print(f"[ours] base layer: {_mib(base.size)} compressed (zstd)")
        print(f"[no-torch] warm rebuild target <= 5 s: {'met' if small['warm'] <= 5 else 'MISSED'}")
        if not args.skip_baseline:
            slim = baseline_size(work)
            if slim:
                saving = 1 - base.size / slim
                verdict = "met" if saving >= 0.6 else "MISSED"
                print(f"[ratio] our base / debootstrap slim = {base.size / slim:.2f} "
                      f"({saving:.0%} smaller; target >= 60%: {verdict})")
        if args.torch:
            bench_project(TINY, work, "torch")
        ok = small["same"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
