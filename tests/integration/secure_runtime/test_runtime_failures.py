"""The runtime refuses to serve what it cannot verify, and says why in one line.

Each case runs ``python -m secure_runtime`` for real and asserts the documented exit
code (docs/exit-codes.md), the log line, that readiness never answered 200, and
that no traceback was printed.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import requests

from pipeline.errors import (
    EXIT_CONFIG,
    EXIT_INSECURE,
    EXIT_INTEGRITY,
    EXIT_USAGE,
    EXIT_VERIFICATION,
)
from tests.support.runtime import (
    PYTHON,
    TINY,
    Workspace,
    copy_sealed,
    free_port,
    make_workspace,
    run_to_exit,
    runtime_args,
    seal,
    start_runtime,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return make_workspace(tmp_path_factory.mktemp("runtime-failures"))


@pytest.fixture(scope="module")
def sealed(ws: Workspace) -> Path:
    return seal(ws, TINY, ws.root / "tiny.sealed")


def watch_until_exit(args: Sequence[str], log: Path, port: int) -> tuple[int, set[int], str]:
    """Run to exit while polling readiness; returns (exit code, statuses seen, log)."""
    rt = start_runtime(args, log, port)
    seen: set[int] = set()
    deadline = time.monotonic() + 60
    try:
        while rt.process.poll() is None and time.monotonic() < deadline:
            try:
                seen.add(requests.get(rt.url + "/v2/health/ready", timeout=1).status_code)
            except requests.RequestException:
                pass
            time.sleep(0.02)
        assert rt.process.poll() is not None, "runtime did not stop:\n" + rt.log()
        return rt.process.returncode, seen, rt.log()
    finally:
        rt.close()


def _assert_refused(code: int, seen: set[int], log: str, expected: int, needle: str) -> None:
    assert code == expected, log
    assert 200 not in seen, (seen, log)
    assert "Traceback" not in log, log
    failure = [line for line in log.splitlines() if "model load failed" in line]
    assert len(failure) == 1 and needle in failure[0], log
    assert "ready: model" not in log


def test_tampered_weights(ws: Workspace, sealed: Path, tmp_path: Path) -> None:
    bad = copy_sealed(sealed, tmp_path / "tampered")
    target = bad / "model.safetensors.sealed"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    port = free_port()
    code, seen, log = watch_until_exit(
        runtime_args(ws, bad, port, "--allow-root"), tmp_path / "log", port)
    _assert_refused(code, seen, log, EXIT_INTEGRITY,
                    "model.safetensors.sealed: sealed stream segment")


def test_untrusted_signer(ws: Workspace, sealed: Path, tmp_path: Path) -> None:
    port = free_port()
    args = runtime_args(ws, sealed, port, "--allow-root")
    args[args.index(str(ws.public))] = str(ws.other_public)
    code, seen, log = watch_until_exit(args, tmp_path / "log", port)
    _assert_refused(code, seen, log, EXIT_VERIFICATION, "signature")


def test_missing_signature(ws: Workspace, sealed: Path, tmp_path: Path) -> None:
    unsigned = seal(ws, TINY, tmp_path / "unsigned", sign=False)
    port = free_port()
    code, seen, log = watch_until_exit(
        runtime_args(ws, unsigned, port, "--allow-root"), tmp_path / "log", port)
    _assert_refused(code, seen, log, EXIT_VERIFICATION, "unsigned")


def test_no_trust_configured_is_refused(ws: Workspace, sealed: Path, tmp_path: Path) -> None:
    port = free_port()
    args = [PYTHON, "-m", "secure_runtime", "--model", str(sealed), "--key-file",
            str(ws.keyring), "--port", str(port), "--no-grpc", "--allow-root"]
    code, seen, log = watch_until_exit(args, tmp_path / "log", port)
    _assert_refused(code, seen, log, EXIT_VERIFICATION, "no trusted signer")


def test_wrong_key_file(ws: Workspace, sealed: Path, tmp_path: Path) -> None:
    other = make_workspace(tmp_path / "other")
    port = free_port()
    args = runtime_args(ws, sealed, port, "--allow-root")
    args[args.index(str(ws.keyring))] = str(other.keyring)
    code, seen, log = watch_until_exit(args, tmp_path / "log", port)
    assert code == 7, log
    assert 200 not in seen and "Traceback" not in log


def test_refuses_root_without_allow_root(ws: Workspace, sealed: Path) -> None:
    assert os.geteuid() == 0, "this test runs where the suite runs: as root"
    code, log = run_to_exit(runtime_args(ws, sealed, free_port()))
    assert code == EXIT_INSECURE, log
    assert "refusing to run as root" in log and "--allow-root" in log
    assert "Traceback" not in log and "Uvicorn running" not in log


def test_allow_root_false_in_env_overrides_the_file(ws: Workspace, sealed: Path,
                                                     tmp_path: Path) -> None:
    """Precedence: flag > env > file; the file says allow_root, env says no."""
    config = tmp_path / "runtime.yaml"
    config.write_text("allow_root: true\n")
    from tests.support.runtime import runtime_env

    code, log = run_to_exit(
        [*runtime_args(ws, sealed, free_port()), "--config", str(config)],
        env=runtime_env(SECURE_RUNTIME_ALLOW_ROOT="0"),
    )
    assert code == EXIT_INSECURE, log


def test_tag_reference_is_refused(ws: Workspace) -> None:
    code, log = run_to_exit(
        runtime_args(ws, "127.0.0.1:5999/models/tiny:latest", free_port(), "--allow-root"))
    assert code == EXIT_CONFIG, log
    assert "has no digest" in log and "--allow-tag" in log
    assert "Traceback" not in log


@pytest.mark.parametrize(
    ("extra", "expected", "needle"),
    [
        (["--port", "http"], EXIT_CONFIG, "invalid port"),
        (["--bogus"], EXIT_USAGE, "unrecognized arguments: --bogus"),
        (["--log-level", "loud"], EXIT_CONFIG, "invalid log_level"),
    ],
)
def test_bad_configuration(ws: Workspace, sealed: Path, extra: list[str], expected: int,
                           needle: str) -> None:
    code, log = run_to_exit([*runtime_args(ws, sealed, free_port(), "--allow-root"), *extra])
    assert code == expected, log
    (line,) = [x for x in log.splitlines() if x.strip()]
    assert "error:" in line and needle in line
    assert "Traceback" not in log


def test_port_in_use(ws: Workspace, sealed: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, log = run_to_exit(runtime_args(ws, sealed, port, "--allow-root"))
    assert code == EXIT_CONFIG, log
    assert f"cannot listen on 127.0.0.1:{port}" in log
    assert "Traceback" not in log
