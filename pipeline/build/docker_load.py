"""``pipeline build --docker NAME``: load a built image into a Docker engine, where one exists.

Why optional: the build never needs a daemon; this is only a convenience for people who
run images locally with Docker. The archive sent is the OCI layout itself plus a
``manifest.json`` (the ``docker save`` format), which every engine version can load.
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from pathlib import Path

from pipeline.errors import BuildError, UnreachableError
from pipeline.oci.layout import OCILayout


def _archive(layout: OCILayout, tag: str, name: str, dest: Path) -> None:
    descriptor = layout.resolve(tag)
    manifest = json.loads(layout.read_blob(descriptor["digest"]))
    blob = lambda digest: "blobs/" + digest.replace(":", "/")  # noqa: E731
    docker_manifest = [{
        "Config": blob(manifest["config"]["digest"]),
        "RepoTags": [name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"],
        "Layers": [blob(layer["digest"]) for layer in manifest["layers"]],
    }]
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in layout.path.rglob("*") if p.is_file()):
            rel = path.relative_to(layout.path).as_posix()
            if not rel.startswith(".") and "/." not in rel:
                tar.add(path, arcname=rel, recursive=False)
        data = json.dumps(docker_manifest).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def load_into_docker(out: Path, tag: str, name: str) -> dict[str, str]:
    """Load the layout's image ``tag`` into the engine as ``name``; UnreachableError if none."""
    try:
        import docker  # noqa: PLC0415 - optional dependency (extra "build")
        from docker.errors import DockerException  # noqa: PLC0415
    except ImportError:
        raise UnreachableError("no Docker engine: the docker SDK is not installed") from None
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except DockerException as exc:
        raise UnreachableError(f"no Docker engine reachable: {exc}") from None
    layout = OCILayout.open(out)
    try:
        with tempfile.TemporaryDirectory(prefix="pipeline-docker-") as tmp:
            archive = Path(tmp) / "image.tar"
            _archive(layout, tag, name, archive)
            with archive.open("rb") as handle:
                images = client.images.load(handle.read())
    except DockerException as exc:
        raise BuildError(f"docker load failed: {exc}") from None
    finally:
        client.close()
    return {"name": name, "id": images[0].id if images else ""}
