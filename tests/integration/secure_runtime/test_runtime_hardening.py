"""Process hardening of the runtime, each measure observed from outside the process.

* as an unprivileged user (uid 65532, what the chart runs as): not dumpable (its
  /proc files turn root-owned), RLIMIT_CORE 0, mlock refused and *reported*, the
  PKCS#11 PIN gone from /proc/PID/environ after load;
* under bubblewrap with a read-only root and an empty /tmp, as uid 65532: it
  serves, and afterwards /tmp holds nothing of the plaintext weights;
* SIGTERM with slow REST and gRPC requests in flight: both complete, exit 0 - as a
  normal process and as PID 1 of a PID namespace (``bwrap --as-pid-1``).
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests

from secure_runtime.proto import grpc_predict_v2_pb2 as pb
from secure_runtime.proto import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.support.runtime import (
    NONROOT,
    PYTHON,
    ROOT,
    TINY,
    Runtime,
    Workspace,
    as_user,
    bwrap_child_pid,
    free_port,
    make_workspace,
    metric,
    metric_samples,
    runtime_args,
    runtime_env,
    seal,
    start_runtime,
    write_slow_project,
)

pytestmark = pytest.mark.integration
NOBODY = NONROOT
BWRAP = shutil.which("bwrap")
PIN = "pin-" + os.urandom(8).hex()


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return make_workspace(tmp_path_factory.mktemp("runtime-hardening"))


@pytest.fixture(scope="module")
def sealed(ws: Workspace) -> Path:
    return seal(ws, TINY, ws.root / "tiny.sealed")


@pytest.fixture(scope="module")
def slow_sealed(ws: Workspace) -> Path:
    return seal(ws, write_slow_project(ws.root / "slow"), ws.root / "slow.sealed")


def _status(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return {k: v.strip() for k, v in (line.split(":", 1) for line in text.splitlines())}


def _core_limit(pid: int) -> list[str]:
    (line,) = [x for x in Path(f"/proc/{pid}/limits").read_text().splitlines()
               if x.startswith("Max core file size")]
    return line.split()[4:6]


# --------------------------------------------------------------------------- unprivileged


@pytest.fixture()
def unprivileged_copy(ws: Workspace, sealed: Path) -> Iterator[Path]:
    """Model, trust and a keyring owned by uid 65532 in a directory that user can reach."""
    base = Path(tempfile.mkdtemp(prefix="runtime-nonroot-", dir="/tmp"))
    try:
        base.chmod(0o755)
        shutil.copytree(sealed, base / "tiny.sealed")
        shutil.copy(ws.public, base / "signer.pub")
        keys = base / "keys"
        keys.mkdir(mode=0o700)
        shutil.copy(ws.keyring, keys / "keyring.json")
        (keys / "keyring.json").chmod(0o600)
        for path in (keys, keys / "keyring.json"):
            os.chown(path, NOBODY, NOBODY)
        home = base / "home"
        home.mkdir()
        os.chown(home, NOBODY, NOBODY)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _no_memlock() -> None:
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (0, 0))


def test_unprivileged_process_is_hardened(unprivileged_copy: Path) -> None:
    base = unprivileged_copy
    port = free_port()
    args = as_user(PYTHON, "-m", "secure_runtime", "--model", str(base / "tiny.sealed"),
            "--trust", str(base / "signer.pub"), "--key-file", str(base / "keys/keyring.json"),
            "--port", str(port), "--no-grpc")
    env = runtime_env(HOME=str(base / "home"), PIPELINE_PKCS11_PIN=PIN)
    log = base / "home" / "runtime.log"
    rt = start_runtime(args, log, port, env=env, cwd=base / "home", preexec_fn=_no_memlock)
    control = subprocess.Popen(as_user("sleep", "30"), preexec_fn=_no_memlock)
    try:
        rt.wait_ready()
        status = _status(rt.pid)
        assert status["Uid"].split()[0] == str(NOBODY)
        # A dumpable process of uid 65532 owns its /proc files (the control shows it);
        # PR_SET_DUMPABLE 0 makes them root's, and a core dump impossible.
        assert os.stat(f"/proc/{control.pid}/environ").st_uid == NOBODY
        assert os.stat(f"/proc/{rt.pid}/environ").st_uid == 0
        assert _core_limit(rt.pid) == ["0", "0"]
        # RLIMIT_MEMLOCK 0 and no CAP_IPC_LOCK: mlock fails, and says so.
        assert int(status["VmLck"].split()[0]) == 0
        samples = metric_samples(rt.get("/metrics").text)
        assert metric(samples, "secure_runtime_weights_mlock_complete") == 0.0
        assert metric(samples, "secure_runtime_weights_mlocked_bytes") == 0.0
        assert "weights are NOT locked in memory" in rt.log()
        # The PIN was in the initial environment; after load the kernel's copy is wiped.
        environ = Path(f"/proc/{rt.pid}/environ").read_bytes()
        assert PIN.encode() not in environ and b"PIPELINE_PKCS11_PIN" not in environ
        assert b"HOME=" in environ  # the rest of the environment is intact
        assert "removed key material from the environment: PIPELINE_PKCS11_PIN" in rt.log()
        assert PIN not in rt.log()
        answer = rt.post("/v2/models/tiny/infer", json={"inputs": [
            {"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [0.0] * 16}]})
        assert answer.status_code == 200
        assert rt.stop() == 0
    finally:
        control.kill()
        control.wait()
        rt.close()


# --------------------------------------------------------------------------- bubblewrap


def _keep_checkout_visible() -> list[str]:
    """Bind the checkout (and its .venv) back when it lives under /tmp, as a CI clone may:
    the /tmp stand-in would hide the interpreter otherwise."""
    checkout = ROOT.resolve()
    if checkout.is_relative_to("/tmp"):
        return ["--ro-bind", str(checkout), str(checkout)]
    return []


def _bwrap(host_tmp: Path, model: Path, ws: Workspace, port: int, *extra: str,
           grpc_port: int | None = None) -> list[str]:
    """Read-only root, ``host_tmp`` as /tmp, model and keys read-only under a fresh /run."""
    if BWRAP is None:
        pytest.fail("bubblewrap is not installed (scripts/setup.sh installs it)")
    return [
        BWRAP, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
        "--bind", str(host_tmp), "/tmp", *_keep_checkout_visible(), "--tmpfs", "/run",
        "--ro-bind", str(model), "/run/model", "--ro-bind", str(ws.keyring.parent), "/run/keys",
        "--ro-bind", str(ws.public), "/run/trust.pub",
        "--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY),
        "--unshare-pid", "--as-pid-1", "--die-with-parent", "--chdir", "/tmp",
        "--setenv", "HOME", "/tmp",
        "--", PYTHON, "-m", "secure_runtime", "--model", "/run/model",
        "--trust", "/run/trust.pub", "--key-file", "/run/keys/keyring.json",
        "--port", str(port), *(["--grpc-port", str(grpc_port)] if grpc_port else ["--no-grpc"]),
        *extra,
    ]


def _plaintext_slices() -> list[bytes]:
    raw = (TINY / "model.safetensors").read_bytes()
    (header_len,) = struct.unpack_from("<Q", raw)
    data = raw[8 + header_len:]
    assert len(data) >= 2048
    return [data[i:i + 32] for i in range(0, len(data) - 32, 64)]


def test_read_only_root_and_tmpfs_never_see_plaintext(ws: Workspace, sealed: Path,
                                                      tmp_path: Path) -> None:
    host_tmp = tmp_path / "tmpfs"
    host_tmp.mkdir()
    port = free_port()
    rt = start_runtime(_bwrap(host_tmp, sealed, ws, port), tmp_path / "bwrap.log", port)
    try:
        rt.wait_ready()
        inner = bwrap_child_pid(rt)
        assert _status(inner)["Uid"].split()[0] == "0"  # 65532 inside maps to us outside
        mounts = Path(f"/proc/{inner}/mounts").read_text().splitlines()
        root_mount = [m.split() for m in mounts if m.split()[1] == "/"]
        assert root_mount and "ro" in root_mount[-1][3].split(","), mounts
        batch = np.linspace(-1, 1, 32, dtype=np.float32).reshape(2, 16)
        answer = rt.post("/v2/models/tiny/infer", json={"inputs": [
            {"name": "input", "datatype": "FP32", "shape": [2, 16],
             "data": batch.reshape(-1).tolist()}]})
        assert answer.status_code == 200, answer.text
        os.kill(inner, signal.SIGTERM)
        assert rt.process.wait(30) == 0, rt.log()
    finally:
        rt.close()
    assert "signature verified" in rt.log()
    slices = _plaintext_slices()
    written = [p for p in host_tmp.rglob("*") if p.is_file()]
    for path in written:
        content = path.read_bytes()
        leaked = [i for i, s in enumerate(slices) if s in content]
        assert not leaked, f"{path} holds plaintext weights"
    # nothing at all is expected there; list it if something ever appears
    assert written == [], written


def _slow_rest(rt: Runtime, seconds: float, results: dict[str, object]) -> None:
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 2],
                        "data": [seconds, 1.0]}]}
    try:
        answer = requests.post(rt.url + "/v2/models/slow/infer", json=body, timeout=30)
        results["rest"] = (answer.status_code, answer.json())
    except requests.RequestException as exc:  # recorded, asserted on below
        results["rest"] = exc


def _slow_grpc(port: int, seconds: float, results: dict[str, object]) -> None:
    request = pb.ModelInferRequest(model_name="slow")
    request.inputs.add(name="input", datatype="FP32", shape=[1, 2]).contents.fp32_contents \
        .extend([seconds, 3.0])
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            answer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
            results["grpc"] = list(answer.outputs[0].contents.fp32_contents)
        except grpc.RpcError as exc:
            results["grpc"] = exc


def _drain_on_sigterm(rt: Runtime, target_pid: int, seconds: float = 1.5) -> None:
    """Two slow requests (REST, gRPC) in flight, then SIGTERM: both answer, exit 0."""
    rt.wait_ready()
    results: dict[str, object] = {}
    threads = [threading.Thread(target=_slow_rest, args=(rt, seconds, results)),
               threading.Thread(target=_slow_grpc, args=(rt.grpc_port, seconds, results))]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while True:  # both requests are inside the server (not merely sent) before SIGTERM
        samples = metric_samples(rt.get("/metrics").text)
        http = metric(samples, "secure_runtime_in_flight_requests", protocol="http") or 0
        grpc_now = metric(samples, "secure_runtime_in_flight_requests", protocol="grpc") or 0
        if http >= 2 and grpc_now >= 1:
            break
        assert time.monotonic() < deadline, "slow requests never became in-flight"
        time.sleep(0.02)
    os.kill(target_pid, signal.SIGTERM)
    started = time.monotonic()
    code = rt.process.wait(30)
    for thread in threads:
        thread.join(30)
    assert code == 0, rt.log()
    assert results["rest"] == (200, {"model_name": "slow", "id": "", "outputs": [
        {"name": "output", "datatype": "FP32", "shape": [1, 2], "data": [seconds * 2, 2.0]}]}), \
        results
    assert results["grpc"] == [seconds * 2, 6.0], results
    assert time.monotonic() - started < seconds + 10
    log = rt.log()
    assert "draining in-flight requests" in log and "stopped cleanly" in log
    assert "Traceback" not in log


def test_sigterm_drains_in_flight_requests(ws: Workspace, slow_sealed: Path,
                                           tmp_path: Path) -> None:
    port, grpc_port = free_port(), free_port()
    rt = start_runtime(runtime_args(ws, slow_sealed, port, "--allow-root", grpc_port=grpc_port),
                       tmp_path / "runtime.log", port, grpc_port=grpc_port)
    try:
        _drain_on_sigterm(rt, rt.pid)
    finally:
        rt.close()


def test_sigterm_drains_as_pid_1(ws: Workspace, slow_sealed: Path, tmp_path: Path) -> None:
    host_tmp = tmp_path / "tmpfs"
    host_tmp.mkdir()
    port, grpc_port = free_port(), free_port()
    rt = start_runtime(_bwrap(host_tmp, slow_sealed, ws, port, grpc_port=grpc_port),
                       tmp_path / "bwrap.log", port, grpc_port=grpc_port)
    try:
        rt.wait_ready()
        inner = bwrap_child_pid(rt)
        ns_pid = _status(inner)["NSpid"].split()
        assert ns_pid[-1] == "1", ns_pid  # PID 1 in its namespace: no default SIGTERM action
        _drain_on_sigterm(rt, inner)
    finally:
        rt.close()
