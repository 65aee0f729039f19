"""The runtime image runs the way the chart deploys it: pulled by digest, or from a volume.

What a cluster would run, done here: ``examples/tiny`` is built by ``pipeline build``, the
image is unpacked (``umoci raw unpack``) and ``helm/secure-runtime`` is rendered through
``pipeline.charts`` (the one render path); the pod's container then runs exactly as the
kubelet would start it: the container's ``command`` and ``args`` (not the test's), the
image's ``Env`` overlaid with the container's ``env``, the pod's ``runAsUser``/``runAsGroup``
as a real host uid (``setpriv``), the image's own interpreter inside bubblewrap with a
read-only root, a tmpfs on ``/tmp`` and the chart's mounts bound read-only where the chart
mounts them. Two pods: (a) the chart's default, a model reference BY DIGEST pulled from the
real loopback registry (through a proxy that logs what was asked), and (b) a sealed model
on a volume (``model.volume``). Both must answer OIP v2 inference.

Why this test exists: every other test ran the runtime from the venv, or the image with a
mounted model, so an image that lacked ``pipeline._fileio`` (needed to pull) and a chart
whose ``command`` named a ``python`` the image does not have both passed everything.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.charts import render
from pipeline.cli import run
from pipeline.oci.media_types import LABEL_BYTECODE
from tests.fixtures_registry import FlakyProxy
from tests.support.build import Built, for_umoci
from tests.support.runtime import (
    TINY,
    as_user,
    bwrap_child_pid,
    free_port,
    make_workspace,
    metric,
    metric_samples,
    runtime_env,
    seal,
    start_runtime,
)

# Building the image (a fresh layer cache per session: the python layer is installed and
# compiled) and two cold starts of torch on a shared 2-core machine take minutes.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]

CHART = Path(__file__).resolve().parents[3] / "helm" / "secure-runtime"
START_TIMEOUT = 300.0
#: What the runtime image must never carry (docs/image-build.md, "The app layer").
NOT_RUNTIME = ("pipeline/cli.py", "pipeline/__main__.py", "pipeline/_cli", "pipeline/build",
               "pipeline/release", "pipeline/policy", "pipeline/admission", "pipeline/scan",
               "pipeline/workflow", "pipeline/deploy", "pipeline/charts",
               "pipeline/distribution")


@dataclass(frozen=True)
class Image:
    """An unpacked image and its OCI config, under a directory uid 65532 can reach."""

    base: Path
    rootfs: Path
    config: dict[str, Any]
    digest: str


def _blob(layout: Path, digest: str) -> dict[str, Any]:
    algorithm, hexdigest = digest.split(":", 1)
    return json.loads((layout / "blobs" / algorithm / hexdigest).read_bytes())


def _config(layout: Path, digest: str) -> dict[str, Any]:
    return _blob(layout, _blob(layout, digest)["config"]["digest"])["config"]


@pytest.fixture(scope="module")
def image(built_tiny: Built) -> Iterator[Image]:
    # pytest's tmp dirs are 0700 root: uid 65532 could not reach anything below them.
    base = Path(tempfile.mkdtemp(prefix="runtime-as-deployed-", dir="/tmp"))
    try:
        base.chmod(0o755)
        rootfs = base / "rootfs"
        layout = for_umoci(built_tiny.layout, base / "layout-gzip")
        subprocess.run(["umoci", "raw", "unpack", "--image", f"{layout}:latest",
                        str(rootfs)], check=True, capture_output=True, timeout=600)
        shutil.rmtree(layout)
        yield Image(base, rootfs, _config(built_tiny.layout, built_tiny.digest),
                    built_tiny.digest)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def pod_files(image: Image, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A sealed, signed tiny model, its trust key and the keyring, readable by 65532."""
    ws = make_workspace(tmp_path_factory.mktemp("as-deployed-keys"))
    models = image.base / "models"
    models.mkdir(mode=0o755)
    seal(ws, TINY, models / "tiny")
    trust = image.base / "trust"
    trust.mkdir(mode=0o755)
    shutil.copy(ws.public, trust / "trust.pub")
    secret = image.base / "kek"
    secret.mkdir(mode=0o700)
    shutil.copy(ws.keyring, secret / "kek")
    (secret / "kek").chmod(0o600)
    for path in (secret, secret / "kek"):
        os.chown(path, 65532, 65532)
    return {"models": models, "trust": trust, "kek": secret, "sealed": models / "tiny"}


def _container(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The chart's pod spec and its one container, rendered through pipeline.charts."""
    chart = render(CHART, values=values)
    (workload,) = [o.obj for o in chart.objects if o.obj["kind"] in ("Deployment", "Rollout")]
    spec = workload["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    return spec, container


def _in_rootfs(rootfs: Path, path: str) -> Path:
    """``path`` as the container sees it: symlinks resolved inside the rootfs, not the host."""
    current = rootfs
    for part in Path(path).relative_to("/").parts:
        candidate = current / part
        if candidate.is_symlink():
            target = os.readlink(candidate)
            base = rootfs if target.startswith("/") else current
            candidate = _in_rootfs(rootfs, "/" + str((base / target).relative_to(rootfs)))
        current = candidate
    return current


def _bwrap(image: Image, spec: dict[str, Any], container: dict[str, Any],
           binds: dict[str, Path]) -> list[str]:
    """The container as the kubelet starts it: command + args, image Env + container env."""
    if shutil.which("bwrap") is None:
        pytest.fail("bwrap is needed (scripts/setup.sh installs bubblewrap)")
    env = dict(item.split("=", 1) for item in image.config["Env"])
    env.update({e["name"]: e["value"] for e in container.get("env", [])})
    uid = int(container["securityContext"].get("runAsUser", spec["securityContext"]["runAsUser"]))
    gid = int(container["securityContext"].get("runAsGroup",
                                               spec["securityContext"]["runAsGroup"]))
    argv = [*container.get("command", image.config["Entrypoint"]), *container["args"]]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes: list[str] = []
    for target, source in binds.items():
        assert target in mounts and mounts[target].get("readOnly"), (target, mounts)
        (image.rootfs / target.lstrip("/")).mkdir(parents=True, exist_ok=True)
        volumes += ["--ro-bind", str(source), target]
    assert mounts["/tmp"]["name"] == "tmp"
    return as_user(
        "bwrap", "--ro-bind", str(image.rootfs), "/", "--proc", "/proc", "--dev", "/dev",
        "--tmpfs", "/tmp", *volumes,
        "--unshare-user", "--uid", str(uid), "--gid", str(gid),
        "--unshare-pid", "--as-pid-1", "--unshare-ipc", "--unshare-uts",
        "--die-with-parent", "--clearenv",
        *[a for k, v in env.items() for a in ("--setenv", k, v)],
        "--chdir", container.get("workingDir", image.config["WorkingDir"]),
        "--", *argv,
        uid=uid, gid=gid, read_anything=False,  # the image's own interpreter: no extra cap
    )


def _values(image: Image, port: int, grpc_port: int, **extra: Any) -> dict[str, Any]:
    # Loopback only on this machine (the chart's 0.0.0.0 is for the pod's own network).
    return {"image": {"repository": "127.0.0.1/secure-runtime", "digest": image.digest},
            "runtime": {"host": "127.0.0.1", "httpPort": port, "grpcPort": grpc_port,
                        **extra.pop("runtime", {})},
            **extra}


def _serve_and_infer(image: Image, values: dict[str, Any], binds: dict[str, Path],
                     log: Path, port: int) -> str:
    spec, container = _container(values)
    command = container["command"][0]
    assert _in_rootfs(image.rootfs, command).is_file(), f"the image has no {command}"
    rt = start_runtime(_bwrap(image, spec, container, binds), log, port, env=runtime_env(),
                       cwd=log.parent)
    try:
        rt.wait_ready(timeout=START_TIMEOUT)
        inner = bwrap_child_pid(rt)
        status = Path(f"/proc/{inner}/status").read_text()
        (uids,) = [line.split()[1:] for line in status.splitlines() if line.startswith("Uid:")]
        assert uids == ["65532"] * 4
        # The weights are locked from inside the image, with no capability (the chart
        # drops ALL): the tiny model fits the inherited RLIMIT_MEMLOCK, and the lock is
        # the image's own libc's mlock2 (MLOCK_ONFAULT: VmFlags "lf"), not a fallback.
        samples = metric_samples(rt.get("/metrics").text)
        assert metric(samples, "secure_runtime_weights_mlock_complete") == 1.0, rt.log()
        assert metric(samples, "secure_runtime_weights_mlocked_bytes") > 0
        flags = [line.split()[1:] for line in Path(f"/proc/{inner}/smaps").read_text()
                 .splitlines() if line.startswith("VmFlags:")]
        assert any({"lo", "lf", "dd"} <= set(f) for f in flags), flags
        answer = rt.post("/v2/models/tiny/infer", json={"inputs": [
            {"name": "input", "datatype": "FP32", "shape": [2, 16], "data": [0.25] * 32}]})
        assert answer.status_code == 200, answer.text
        (output,) = answer.json()["outputs"]
        assert output["name"] == "output" and output["shape"] == [2, 4]
        os.kill(inner, signal.SIGTERM)  # what the kubelet signals: the container's process
        assert rt.process.wait(30) == 0, rt.log()
    finally:
        rt.close()
    text = rt.log()
    assert "signature verified" in text and "Traceback" not in text, text
    return text


def test_the_image_carries_the_runtime_closure_and_its_bytecode(image: Image) -> None:
    lib = image.rootfs / "app" / "lib"
    assert (lib / "pipeline" / "_fileio.py").is_file()  # the pull needs it
    assert (lib / "pipeline" / "sealing" / "artifact.py").is_file()
    carried = [p for p in NOT_RUNTIME if (lib / p).exists()]
    assert carried == [], f"the runtime image carries {carried}"
    # Reproducible bytecode beside the sources: imports on a read-only root do not compile.
    site = image.rootfs / "usr" / "local" / "lib" / "python3.11" / "dist-packages"
    stdlib = image.rootfs / "usr" / "lib" / "python3.11"
    for source in (site / "torch" / "__init__.py", lib / "secure_runtime" / "__main__.py",
                   lib / "pipeline" / "sealing" / "artifact.py", stdlib / "json" / "__init__.py",
                   stdlib / "asyncio" / "base_events.py"):
        assert (source.parent / "__pycache__" / f"{source.stem}.cpython-311.pyc").is_file()
    # ... and says so, so a local deploy compiles nothing for it.
    assert image.config["Labels"][LABEL_BYTECODE].startswith("bytecode-")
    # What only building against torch reads is not carried (no compiler in the image).
    assert (site / "torch" / "lib").is_dir()
    assert not (site / "torch" / "include").exists() and not (site / "torch" / "test").exists()


def test_pulled_by_digest_from_the_registry_as_the_chart_passes_it(
    image: Image, pod_files: dict[str, Path], flaky_proxy: FlakyProxy, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    capsys.readouterr()
    target = f"{flaky_proxy.upstream.host}/models/tiny:v1"
    assert run(["push-model", str(pod_files["sealed"]), target, "--insecure", "--json"]) == 0
    digest = json.loads(capsys.readouterr().out)["digest"]
    port, grpc_port = free_port(), free_port()
    values = _values(image, port, grpc_port,
                     model={"repository": f"{flaky_proxy.host}/models/tiny", "digest": digest},
                     trust={"publicKey": (pod_files["trust"] / "trust.pub").read_text()},
                     runtime={"extraArgs": ["--registry-insecure"]})
    spec, container = _container(values)
    assert container["args"][:2] == ["--model", f"{flaky_proxy.host}/models/tiny@{digest}"]
    _serve_and_infer(image, values, {"/etc/secure-runtime/trust": pod_files["trust"],
                                     "/var/run/secrets/secure-runtime/keys": pod_files["kek"]},
                     tmp_path / "pod.log", port)
    manifests = [p for _, p, _ in flaky_proxy.log if "/manifests/" in p]
    assert manifests and all(p.endswith(digest) for p in manifests), manifests


def test_mounted_from_a_volume_as_the_chart_passes_it(
    image: Image, pod_files: dict[str, Path], tmp_path: Path,
) -> None:
    port, grpc_port = free_port(), free_port()
    values = _values(image, port, grpc_port,
                     model={"digest": "", "volume": {"enabled": True, "claimName": "sealed",
                                                     "subPath": "tiny"}},
                     trust={"publicKey": (pod_files["trust"] / "trust.pub").read_text()})
    spec, container = _container(values)
    assert container["args"][:2] == ["--model", "/models/tiny"]
    _serve_and_infer(image, values, {"/models": pod_files["models"],
                                     "/etc/secure-runtime/trust": pod_files["trust"],
                                     "/var/run/secrets/secure-runtime/keys": pod_files["kek"]},
                     tmp_path / "pod.log", port)
