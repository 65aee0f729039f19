"""The daemonless build, end to end: real .debs, real pip, skopeo, umoci, bubblewrap, registry."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from pipeline.build.image import build_image
from pipeline.cli import run
from pipeline.errors import EXIT_BUILD, EXIT_UNREACHABLE
from tests.support.build import Built, copy_project, for_umoci

pytestmark = pytest.mark.integration


def test_cli_prints_digest_and_skopeo_accepts_the_layout(built: Built, capsys) -> None:
    assert run(["build", str(built.project), "--out", str(built.layout), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["digest"] == built.digest
    inspect = subprocess.run(
        ["skopeo", "inspect", f"oci:{built.layout}:latest"],
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(inspect.stdout)
    assert info["Digest"] == built.digest
    assert info["Labels"]["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"
    raw = subprocess.run(
        ["skopeo", "inspect", "--config", f"oci:{built.layout}:latest"],
        capture_output=True,
        text=True,
        check=True,
    )
    config = json.loads(raw.stdout)
    assert config["config"]["User"] == "65532:65532"
    assert [h["created_by"].split(":")[1].strip() for h in config["history"]] == [
        "base",
        "python dependencies",
        "app",
    ]


def test_same_inputs_same_digest_without_cache(built: Built, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PIPELINE_LAYER_CACHE", str(tmp_path / "fresh-cache"))
    again = build_image(copy_project(tmp_path / "p"), tmp_path / "out", no_cache=True)
    assert again.digest == built.digest
    assert not any(layer.cached for layer in again.layers)
    # Reproducible as zstd: every layer is tar+zstd, byte for byte the same twice.
    manifest = json.loads((tmp_path / "out" / "blobs" / "sha256" /
                           again.digest.split(":")[1]).read_bytes())
    assert {layer["mediaType"] for layer in manifest["layers"]} == {
        "application/vnd.oci.image.layer.v1.tar+zstd"}


def test_changing_app_code_rebuilds_only_the_app_layer(built: Built, tmp_path: Path) -> None:
    project = copy_project(tmp_path / "p")
    with (project / "server.py").open("a") as handle:
        handle.write("\n# changed\n")
    result = build_image(project, tmp_path / "out")
    assert [layer.cached for layer in result.layers] == [True, True, False]
    assert result.digest != built.digest
    assert [layer.digest for layer in result.layers[:2]] == [x.digest for x in built.layers[:2]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_image_runs_as_nonroot_on_a_read_only_root(built: Built, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    layout = for_umoci(built.layout, tmp_path / "layout-gzip")
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:latest", str(bundle)],
        check=True,
        capture_output=True,
    )
    rootfs = bundle / "rootfs"
    spec = json.loads((bundle / "config.json").read_text())["process"]
    assert spec["user"] == {"uid": 65532, "gid": 65532}
    for forbidden in ("bin/sh", "bin/bash", "usr/bin/dpkg", "usr/bin/apt-get"):
        assert not (rootfs / forbidden).exists()
    assert not list((rootfs / "app" / "model").glob("*.safetensors"))
    port = _free_port()
    env = [arg for item in spec["env"] for arg in ("--setenv", *item.split("=", 1))]
    cmd = [
        "bwrap",
        "--ro-bind",
        str(rootfs),
        "/",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--uid",
        "65532",
        "--gid",
        "65532",
        "--die-with-parent",
        "--clearenv",
        *env,
        "--setenv",
        "SERVER_PORT",
        str(port),
        "--chdir",
        spec["cwd"],
        *spec["args"],
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        body = None
        for _ in range(100):
            try:
                body = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).json()
                break
            except requests.ConnectionError:
                if proc.poll() is not None:
                    pytest.fail(f"entrypoint exited: {proc.stderr.read().decode()[-2000:]}")
                time.sleep(0.1)
        assert body == {"status": "ok", "uid": 65532, "idna": "xn--bcher-kva.example"}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_lint_refuses_a_secret_in_env_with_exit_13(build_env, tmp_path: Path, capsys) -> None:
    project = copy_project(tmp_path / "p")
    text = (
        (project / "pipeline.yaml")
        .read_text()
        .replace('SERVER_PORT: "8080"', 'SERVER_PORT: "8080"\n    API_TOKEN: "s3cr3t-value"')
    )
    (project / "pipeline.yaml").write_text(text)
    out = tmp_path / "out"
    assert run(["build", str(project), "--out", str(out)]) == EXIT_BUILD
    err = capsys.readouterr().err
    assert "secret-in-env" in err and "s3cr3t-value" not in err
    assert not (out / "index.json").exists()


def test_push_to_registry_and_pull_back(built: Built, registry, tmp_path: Path, capsys) -> None:
    from pipeline.oci.reference import Reference
    from pipeline.oci.transfer import pull_to_layout

    ref = registry.ref("models/buildtest", "v1")
    assert (
        run(
            [
                "build",
                str(built.project),
                "--out",
                str(built.layout),
                "--push",
                ref,
                "--insecure",
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["digest"] == built.digest
    client = registry.client()
    try:
        digest = pull_to_layout(Reference.parse(ref), str(tmp_path / "pulled"), client)
    finally:
        client.close()
    assert digest == built.digest


def test_docker_without_an_engine_is_a_clean_error(
    built: Built, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    code = run(["build", str(built.project), "--out", str(built.layout), "--docker", "buildtest"])
    assert code == EXIT_UNREACHABLE
    assert "no Docker engine" in capsys.readouterr().err
