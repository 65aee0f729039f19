"""Unpacking the runtime image's layers: ``tarfile``'s stream reader against ours.

    .venv/bin/python -m bench.bench_unpack [--model tiny] [--runs 5] [--dirs /dev/shm,DIR]

``pipeline build`` makes the example's image; each run unpacks all its layers into an
empty tree with the deploy's member rules (``pipeline.deploy.image._Unpack``), once read
by ``tarfile.open(mode="r|")`` (the baseline: what the deploy used before) and once by
``pipeline.oci.tar_members`` (``_apply_layer``), alternating, each in a fresh process,
on each directory of ``--dirs`` (default: tmpfs, where the cost is the reader's CPU, and
the disk under /tmp, where creating inodes adds its own; the order alternates run by
run, and each deletion is synced before the next unpack). Medians of wall and CPU
seconds (CPU of the unpacking process, the inflating thread included), the ratio
ours/baseline, and what creating a file cost on that directory at the time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = str(ROOT / ".venv" / "bin" / "python")
sys.path.insert(0, str(ROOT))

from bench._disk import create_latency  # noqa: E402

_CHILD = """
import json, os, sys, tarfile, time
from pathlib import Path
from pipeline.deploy.image import _Inflater, _Unpack, _apply_layer
from pipeline.oci.layer_codec import compression_of
layout, tree, reader = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]

def tarfile_layer(blob, media_type, tree, where):
    # The baseline: the same member rules (_Unpack), tarfile's stream reader (as before).
    with _Inflater(blob, compression_of(media_type, where)) as stream, \\
            tarfile.open(fileobj=stream, mode="r|") as archive:
        unpack = _Unpack(tree, where)
        for member in archive:
            def copy(fd, member=member):
                source = archive.extractfile(member)
                while chunk := source.read(1 << 20):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
            unpack.member(member, copy)

apply = tarfile_layer if reader == "tarfile" else _apply_layer
index = json.loads((layout / "index.json").read_text())
blob = lambda d: layout / "blobs" / "sha256" / d.split(":")[1]
manifest = json.loads(blob(index["manifests"][0]["digest"]).read_text())
tree.mkdir()
start, cpu = time.monotonic(), time.process_time()
for layer in manifest["layers"]:
    apply(blob(layer["digest"]), layer["mediaType"], tree, "bench")
print(json.dumps({"wall": time.monotonic() - start, "cpu": time.process_time() - cpu,
                  "files": sum(len(f) for _, _, f in os.walk(tree))}))
"""


def unpack_once(layout: Path, directory: Path, reader: str) -> dict[str, float]:
    tree = Path(tempfile.mkdtemp(prefix="bench-unpack-", dir=directory)) / "rootfs"
    try:
        done = subprocess.run([PYTHON, "-c", _CHILD, str(layout), str(tree), reader],
                              check=True, capture_output=True, text=True, cwd=ROOT)
        return json.loads(done.stdout)
    finally:
        shutil.rmtree(tree.parent, ignore_errors=True)
        os.sync()  # the deletion's writes are not left to the next unpack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dirs", default="/dev/shm,/tmp")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-unpack-"))
    try:
        project = Path(shutil.copytree(ROOT / "examples" / args.model, work / args.model))
        layout = work / "layout"
        subprocess.run([PYTHON, "-m", "pipeline", "build", str(project), "--out", str(layout)],
                       check=True, capture_output=True, cwd=ROOT)
        for directory in (Path(d) for d in args.dirs.split(",")):
            runs: dict[str, list[dict[str, float]]] = {"tarfile": [], "members": []}
            latency = []
            for run in range(args.runs):
                # ABBA: whichever goes second runs right after the other's tree is
                # deleted (the disk's discards of ~1 GB), so the order alternates.
                for reader in (("tarfile", "members") if run % 2 == 0
                               else ("members", "tarfile")):
                    runs[reader].append(unpack_once(layout, directory, reader))
                latency.append(create_latency(directory))
            med = {r: {k: statistics.median(x[k] for x in v) for k in ("wall", "cpu")}
                   for r, v in runs.items()}
            files = int(runs["members"][0]["files"])
            print(f"{args.model} on {directory} ({files} files, creating one "
                  f"{statistics.median(latency):.0f} us): tarfile {med['tarfile']['wall']:.2f} s "
                  f"wall / {med['tarfile']['cpu']:.2f} s CPU | ours {med['members']['wall']:.2f}"
                  f" s / {med['members']['cpu']:.2f} s | ours/tarfile wall "
                  f"{med['members']['wall'] / med['tarfile']['wall']:.2f}x, CPU "
                  f"{med['members']['cpu'] / med['tarfile']['cpu']:.2f}x", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
