"""How long the runtime image's interpreter takes to import what the runtime needs before
it loads a model, with the image's bytecode (ours) and without it (baseline), in one run.

Why it matters: the root filesystem is read-only and ``PYTHONDONTWRITEBYTECODE=1``, so an
image without ``.pyc`` files compiles torch, FastAPI, gRPC, ... from source at every pod
start. ``examples/tiny`` is built (the layer cache is reused) and unpacked twice with
``umoci``; the baseline copy has every ``__pycache__`` removed, which is the image as it
was before :mod:`pipeline.build.bytecode`. Each run starts the image's own
``/usr/bin/python3`` under bubblewrap as uid 65532 (read-only root, tmpfs on /tmp, the
image's ``Env``), baseline and ours alternating, and times the whole process. The page
cache is warm for both (this machine is shared: nothing drops other processes' cache), so
the difference is compiling, not reading the disk. Also prints the image's size and file
count.

    .venv/bin/python -m bench.bench_image_start [--runs 3] [--layout DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "examples" / "tiny"
#: What ``python -m secure_runtime`` imports before it starts loading the model.
IMPORTS = ("secure_runtime.__main__", "secure_runtime.startup", "secure_runtime.rest",
           "secure_runtime.grpc_service", "secure_runtime.loader", "secure_runtime.inference",
           "pipeline.sealing.artifact", "pipeline.signing.model", "torch", "fastapi",
           "uvicorn", "grpc", "safetensors")


def _blob(layout: Path, digest: str) -> dict:
    algorithm, hexdigest = digest.split(":", 1)
    return json.loads((layout / "blobs" / algorithm / hexdigest).read_bytes())


def _image(layout: Path) -> tuple[dict, dict]:
    index = json.loads((layout / "index.json").read_bytes())
    manifest = _blob(layout, index["manifests"][-1]["digest"])
    return manifest, _blob(layout, manifest["config"]["digest"])["config"]


def _count(rootfs: Path) -> tuple[int, int]:
    files = [p for p in rootfs.rglob("*") if p.is_file() and not p.is_symlink()]
    return len(files), sum(p.stat().st_size for p in files)


def _start(rootfs: Path, config: dict) -> float:
    env = [a for item in config["Env"] for a in ("--setenv", *item.split("=", 1))]
    code = "import " + ", ".join(IMPORTS)
    argv = ["setpriv", "--reuid", "65532", "--regid", "65532", "--clear-groups",
            "bwrap", "--ro-bind", str(rootfs), "/", "--proc", "/proc", "--dev", "/dev",
            "--tmpfs", "/tmp", "--unshare-user", "--uid", "65532", "--gid", "65532",
            "--unshare-pid", "--die-with-parent", "--clearenv", *env,
            "--chdir", config["WorkingDir"], "--", "/usr/bin/python3", "-c", code]
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"the image's interpreter failed: {proc.stderr[-2000:]}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--layout", type=Path, help="an already built examples/tiny layout")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-image-start-", dir="/tmp"))
    try:
        work.chmod(0o755)
        layout = args.layout
        if layout is None:
            from pipeline.build.image import build_image

            project = Path(shutil.copytree(TINY, work / "tiny"))
            layout = work / "layout"
            build_image(project, layout)
        manifest, config = _image(layout)
        ours, baseline = work / "ours", work / "baseline"
        # umoci 0.4.7 reads no zstd layers: skopeo writes a gzip copy for it first.
        gzipped = work / "layout-gzip"
        subprocess.run(["skopeo", "copy", "--dest-compress", "--dest-compress-format", "gzip",
                        "--dest-compress-level", "1", f"oci:{layout}:latest",
                        f"oci:{gzipped}:latest"], check=True, capture_output=True, timeout=900)
        for rootfs in (ours, baseline):
            subprocess.run(["umoci", "raw", "unpack", "--image", f"{gzipped}:latest",
                            str(rootfs)], check=True, capture_output=True, timeout=900)
        for cache in sorted(baseline.rglob("__pycache__"), reverse=True):
            shutil.rmtree(cache)
        compressed = sum(layer["size"] for layer in manifest["layers"])
        for name, rootfs in (("ours (with bytecode)", ours), ("baseline (no bytecode)", baseline)):
            files, size = _count(rootfs)
            print(f"{name}: {files} files, {size / 1e6:.1f} MB unpacked")
        print(f"image layers, compressed: {compressed / 1e6:.1f} MB")
        times: dict[str, list[float]] = {"baseline": [], "ours": []}
        _start(ours, config)  # the page cache holds the files for both from here on
        _start(baseline, config)
        for run in range(args.runs):
            order = (("baseline", baseline), ("ours", ours))
            for name, rootfs in order if run % 2 == 0 else order[::-1]:
                times[name].append(_start(rootfs, config))
        for name, values in times.items():
            print(f"{name}: imports before load " + ", ".join(f"{v:.2f} s" for v in values)
                  + f" (median {statistics.median(values):.2f} s)")
        ratio = statistics.median(times["ours"]) / statistics.median(times["baseline"])
        print(f"ours / baseline: {ratio:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
