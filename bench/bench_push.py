"""Push throughput: ``pipeline push`` vs ``skopeo copy`` of the same OCI layout, same run.

One random layer of ``--mb`` MiB (default 500) in an OCI layout, pushed to a
fresh loopback docker-registry by each tool (a fresh registry each, so neither
benefits from blobs the other uploaded). Prints MiB/s of both and the ratio
ours/skopeo (target >= 0.8). Run: ``.venv/bin/python -m bench.bench_push --mb 100``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from pipeline.oci import media_types as mt
from pipeline.oci.layout import OCILayout
from pipeline.oci.reference import Reference
from pipeline.oci.transfer import push_layout
from tests.fixtures_registry import start_registry, stop_registry


def _make_layout(root: Path, mib: int) -> OCILayout:
    layout = OCILayout.create(root)
    with layout.blob_writer() as writer:
        for _ in range(mib):
            writer.write(os.urandom(1 << 20))
    layer = {"mediaType": mt.OCI_LAYER_GZIP, "digest": writer.digest, "size": writer.size}
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [writer.digest]},
        }
    ).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": layout.write_blob(config, mt.OCI_CONFIG),
        "layers": [layer],
    }
    layout.add_manifest(json.dumps(manifest).encode(), mt.OCI_MANIFEST, tag="bench")
    return layout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=500, help="layer size in MiB")
    args = parser.parse_args()
    skopeo = shutil.which("skopeo")
    if not skopeo:
        raise SystemExit("skopeo is not installed (scripts/setup.sh)")
    with tempfile.TemporaryDirectory(prefix="bench-push-") as tmp:
        root = Path(tmp)
        layout = _make_layout(root / "layout", args.mb)
        size = args.mb * (1 << 20)

        ours_registry = start_registry(root / "reg-ours")
        try:
            ref = Reference.parse(f"{ours_registry.host}/bench/ours:v1")
            client = ours_registry.client(retries=2)
            start = time.perf_counter()
            push_layout(layout, ref, client)
            ours = time.perf_counter() - start
        finally:
            stop_registry(ours_registry)

        skopeo_registry = start_registry(root / "reg-skopeo")
        try:
            start = time.perf_counter()
            subprocess.run(
                [
                    skopeo,
                    "--insecure-policy",
                    "copy",
                    "--quiet",
                    "--dest-tls-verify=false",
                    f"oci:{layout.path}:bench",
                    f"docker://{skopeo_registry.host}/bench/skopeo:v1",
                ],
                check=True,
            )
            theirs = time.perf_counter() - start
        finally:
            stop_registry(skopeo_registry)

    mib = size / (1 << 20)
    print(f"layer: {args.mb} MiB")
    print(f"pipeline push : {ours:7.2f} s  {mib / ours:8.1f} MiB/s")
    print(f"skopeo copy   : {theirs:7.2f} s  {mib / theirs:8.1f} MiB/s")
    print(f"ratio ours/skopeo throughput: {theirs / ours:.2f}x (target >= 0.8x)")


if __name__ == "__main__":
    main()
