"""The real runtime image runs: ``examples/tiny`` built by ``pipeline build``, served.

What a Kubernetes node would do with the chart's pod, done with umoci and bubblewrap:
the image is unpacked (``umoci raw unpack``), its own ``Entrypoint``, ``Env``, ``User`` and
``WorkingDir`` are read from the OCI config, and the entrypoint argv runs directly (the
image has no shell) as a real host uid 65532 (``setpriv``) inside bubblewrap: root
filesystem read-only, an empty tmpfs on /tmp, the sealed model, the trust key and the
keyring bound read-only where the chart mounts them, the network shared for loopback.
It must become ready, describe the model, answer OIP v2 with the same numbers as the
plaintext model run in-process, and leave no plaintext weights in its tmpfs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from secure_runtime.proto import grpc_predict_v2_pb2 as pb
from secure_runtime.proto import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.support.build import Built, for_umoci
from tests.support.runtime import (
    TINY,
    as_user,
    bwrap_child_pid,
    free_port,
    make_workspace,
    runtime_env,
    seal,
    start_runtime,
)

pytestmark = pytest.mark.integration

NONROOT = 65532
#: Where the chart (helm/secure-runtime/values.yaml) mounts model, trust and keys.
MODEL_MOUNT = "/models"
TRUST_MOUNT = "/etc/secure-runtime/trust"
KEYS_MOUNT = "/var/run/secrets/secure-runtime/keys"
TINY_START_TIMEOUT = 90.0


@dataclass(frozen=True)
class Pod:
    """An unpacked image plus what the pod mounts, under a directory uid 65532 can reach."""

    base: Path
    rootfs: Path
    config: dict[str, Any]
    models: Path
    trust: Path
    keys: Path


def _blob(layout: Path, digest: str) -> dict[str, Any]:
    algorithm, hexdigest = digest.split(":", 1)
    return json.loads((layout / "blobs" / algorithm / hexdigest).read_bytes())


def image_config(layout: Path, tag: str = "latest") -> dict[str, Any]:
    """The ``config`` section of the tagged image's OCI config, read straight from the layout."""
    index = json.loads((layout / "index.json").read_bytes())
    (entry,) = [m for m in index["manifests"]
                if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
    manifest = _blob(layout, entry["digest"])
    return _blob(layout, manifest["config"]["digest"])["config"]


def _mountpoints(rootfs: Path) -> None:
    """Create the volume mountpoints in the unpacked rootfs, as runc does before it makes
    the root read-only (bubblewrap cannot create them on a read-only root)."""
    for mount in (MODEL_MOUNT, TRUST_MOUNT, KEYS_MOUNT):
        (rootfs / mount.lstrip("/")).mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="module")
def pod(built_tiny: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pod]:  # noqa: F811
    """Unpacked image, sealed tiny model, trust key and a keyring owned by 65532 (0600)."""
    ws = make_workspace(tmp_path_factory.mktemp("runtime-image-keys"))
    # pytest's tmp dirs are 0700 root: uid 65532 could not reach anything below them.
    base = Path(tempfile.mkdtemp(prefix="runtime-image-", dir="/tmp"))
    try:
        base.chmod(0o755)
        rootfs = base / "rootfs"
        layout = for_umoci(built_tiny.layout, base / "layout-gzip")
        subprocess.run(["umoci", "raw", "unpack", "--image", f"{layout}:latest",
                        str(rootfs)], check=True, capture_output=True, timeout=300)
        shutil.rmtree(layout)
        _mountpoints(rootfs)
        models = seal(ws, TINY, base / "models")
        trust = base / "trust"
        trust.mkdir(mode=0o755)
        shutil.copy(ws.public, trust / "trust.pub")
        keys = base / "keys"
        keys.mkdir(mode=0o700)
        shutil.copy(ws.keyring, keys / "kek")
        (keys / "kek").chmod(0o600)
        for path in (keys, keys / "kek"):
            os.chown(path, NONROOT, NONROOT)
        yield Pod(base, rootfs, image_config(built_tiny.layout), models, trust, keys)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _pod_argv(pod: Pod, port: int, grpc_port: int) -> list[str]:
    """setpriv to the image's user, then bubblewrap; the image's own entrypoint and env."""
    config = pod.config
    uid, gid = (int(x) for x in config["User"].split(":"))
    env = [arg for item in config["Env"] for arg in ("--setenv", *item.split("=", 1))]
    if shutil.which("bwrap") is None:
        pytest.fail("bwrap is needed (scripts/setup.sh installs bubblewrap)")
    return as_user(
        "bwrap", "--ro-bind", str(pod.rootfs), "/", "--proc", "/proc", "--dev", "/dev",
        "--tmpfs", "/tmp",
        "--ro-bind", str(pod.models), MODEL_MOUNT,
        "--ro-bind", str(pod.trust), TRUST_MOUNT,
        "--ro-bind", str(pod.keys), KEYS_MOUNT,
        "--unshare-user", "--uid", str(uid), "--gid", str(gid),
        "--unshare-pid", "--as-pid-1", "--unshare-ipc", "--unshare-uts",
        "--die-with-parent", "--clearenv", *env, "--chdir", config["WorkingDir"],
        "--", *config["Entrypoint"],
        "--model", MODEL_MOUNT, "--trust", f"{TRUST_MOUNT}/trust.pub",
        "--key-file", f"{KEYS_MOUNT}/kek", "--port", str(port), "--grpc-port", str(grpc_port),
        uid=uid, gid=gid, read_anything=False,  # the image's own interpreter: no extra cap
    )


def _in_process(batch: np.ndarray) -> np.ndarray:
    """The reference: tiny's model.py on its plaintext weights, in this process."""
    import torch
    from safetensors.torch import load_file

    spec = importlib.util.spec_from_file_location("tiny_reference_model", TINY / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.build_model(json.loads((TINY / "config.json").read_text()))
    model.load_state_dict(load_file(str(TINY / "model.safetensors")))
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(batch)).numpy()


def _plaintext_slices() -> list[bytes]:
    raw = (TINY / "model.safetensors").read_bytes()
    (header_len,) = struct.unpack_from("<Q", raw)
    data = raw[8 + header_len:]
    return [data[i:i + 32] for i in range(0, len(data) - 32, 64)]


def _mount(pid: int, target: str) -> list[str]:
    """The last /proc/PID/mounts line for ``target``: device, target, fstype, options..."""
    lines = [m.split() for m in Path(f"/proc/{pid}/mounts").read_text().splitlines()]
    found = [m for m in lines if m[1] == target]
    assert found, f"{target} is not a mount point"
    return found[-1]


def test_runtime_image_serves_the_sealed_model(pod: Pod, tmp_path: Path) -> None:
    config = pod.config
    assert config["User"] == f"{NONROOT}:{NONROOT}"
    assert config["Entrypoint"][:1] == ["/usr/bin/python3"]
    assert not (pod.rootfs / "bin" / "sh").exists()
    assert not list((pod.rootfs / "app" / "model").glob("*.safetensors"))

    port, grpc_port = free_port(), free_port()
    rt = start_runtime(_pod_argv(pod, port, grpc_port), tmp_path / "pod.log", port,
                       env=runtime_env(), cwd=tmp_path, grpc_port=grpc_port)
    try:
        rt.wait_ready(timeout=TINY_START_TIMEOUT)
        inner = bwrap_child_pid(rt)
        status = Path(f"/proc/{inner}/status").read_text()
        (uids,) = [line.split()[1:] for line in status.splitlines() if line.startswith("Uid:")]
        assert uids == [str(NONROOT)] * 4  # a real uid 65532 on the host, not mapped root
        assert "ro" in _mount(inner, "/")[3].split(",")
        assert _mount(inner, "/tmp")[2] == "tmpfs"

        meta = rt.get("/v2/models/tiny")
        assert meta.status_code == 200, meta.text
        assert meta.json()["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 16]}]
        assert meta.json()["outputs"] == [
            {"name": "output", "datatype": "FP32", "shape": [-1, 4]}]

        batch = np.random.default_rng(7).standard_normal((3, 16)).astype(np.float32)
        answer = rt.post("/v2/models/tiny/infer", json={"inputs": [
            {"name": "input", "datatype": "FP32", "shape": [3, 16],
             "data": batch.reshape(-1).tolist()}]})
        assert answer.status_code == 200, answer.text
        (output,) = answer.json()["outputs"]
        assert output["shape"] == [3, 4]
        served = np.asarray(output["data"], dtype=np.float32).reshape(3, 4)
        np.testing.assert_allclose(served, _in_process(batch), rtol=1e-6, atol=1e-7)

        # grpcio and protobuf in the image: the gRPC endpoint answers too.
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ModelReady(pb.ModelReadyRequest(name="tiny"), timeout=10).ready

        # The tmpfs, seen through the runtime's own mount namespace while it still runs.
        tmpfs = Path(f"/proc/{inner}/root/tmp")
        written = [p for p in tmpfs.rglob("*") if p.is_file()]
        slices = _plaintext_slices()
        for path in written:
            content = path.read_bytes()
            assert not any(s in content for s in slices), f"{path} holds plaintext weights"
        assert written == [], written

        os.kill(inner, signal.SIGTERM)
        assert rt.process.wait(30) == 0, rt.log()
    finally:
        rt.close()
    log = rt.log()
    assert "signature verified" in log, log
    assert "Traceback" not in log, log
