"""A pod template's container as a bubblewrap command line (Kubernetes semantics)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.deploy.podspec import Sources, build_launch
from pipeline.errors import ConfigError, InputError

IMAGE = {"Entrypoint": ["/usr/bin/python3", "-m", "app"], "Cmd": ["--default"],
         "Env": ["PATH=/usr/bin", "A=image"], "User": "65532:65532", "WorkingDir": "/app"}
META = {"name": "p-0", "namespace": "default", "labels": {"app": "a"}, "annotations": {}}


def _spec(**container: object) -> dict:
    base = {"name": "main", "image": "r/x@sha256:" + "a" * 64,
            "securityContext": {"readOnlyRootFilesystem": True}}
    return {"containers": [{**base, **container}]}


def _launch(tmp_path: Path, spec: dict, **sources: object):
    src = Sources(sources.get("config_maps", {}), sources.get("secrets", {}),
                  sources.get("secret_dirs", {}), sources.get("claim_dirs", {}))
    launch = build_launch("p-0", META, spec, IMAGE, tmp_path, src)
    launch.close()
    return launch


def _after_dashdash(argv: list[str]) -> list[str]:
    return argv[argv.index("--") + 1:]


def test_args_replace_cmd_and_command_replaces_entrypoint(tmp_path: Path) -> None:
    assert _after_dashdash(_launch(tmp_path, _spec()).argv) == [
        "/usr/bin/python3", "-m", "app", "--default"]
    assert _after_dashdash(_launch(tmp_path, _spec(args=["--x"])).argv) == [
        "/usr/bin/python3", "-m", "app", "--x"]
    assert _after_dashdash(_launch(tmp_path, _spec(command=["/bin/t"])).argv) == ["/bin/t"]


def test_identity_env_and_isolation(tmp_path: Path) -> None:
    argv = _launch(tmp_path, _spec(env=[{"name": "A", "value": "pod"}, {
        "name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        workingDir="/w")).argv
    assert argv[1:5] == ["--reuid", "65532", "--regid", "65532"]
    for flag in ("--unshare-net", "--unshare-pid", "--unshare-user", "--clearenv"):
        assert flag in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    joined = " ".join(argv)
    assert "--setenv A pod" in joined and "--setenv N p-0" in joined
    assert argv[argv.index("--chdir") + 1] == "/w"


@pytest.mark.parametrize(("change", "message"), [
    ({"securityContext": {"readOnlyRootFilesystem": False}}, "readOnlyRootFilesystem"),
    ({"securityContext": {"readOnlyRootFilesystem": True, "runAsUser": 0}}, "root"),
    ({"securityContext": {"readOnlyRootFilesystem": True,
                          "capabilities": {"add": ["NET_ADMIN"]}}}, "capabilities.add"),
])
def test_what_cannot_run_locally_is_refused(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        _launch(tmp_path, _spec(**change))


def test_a_missing_secret_names_the_flag(tmp_path: Path) -> None:
    spec = _spec(volumeMounts=[{"name": "k", "mountPath": "/keys"}])
    spec["volumes"] = [{"name": "k", "secret": {"secretName": "kek"}}]
    with pytest.raises(ConfigError, match=r"pod default/p-0 container main: secret 'kek' is "
                                          r"not given: pass --secret kek=DIR"):
        _launch(tmp_path, spec)


def test_volume_data_goes_through_memfds_onto_tmpfs(tmp_path: Path) -> None:
    keys = tmp_path / "keys-src"
    keys.mkdir()
    (keys / "kek").write_bytes(b"secret")
    spec = _spec(volumeMounts=[{"name": "k", "mountPath": "/keys"},
                               {"name": "c", "mountPath": "/etc/c"},
                               {"name": "t", "mountPath": "/tmp"}])
    spec["volumes"] = [{"name": "k", "secret": {"secretName": "kek", "defaultMode": 0o440}},
                       {"name": "c", "configMap": {"name": "cm"}},
                       {"name": "t", "emptyDir": {"sizeLimit": "1Mi"}}]
    src = Sources({"cm": {"a.txt": b"1"}}, {}, {"kek": keys}, {})
    (tmp_path / "root").mkdir()
    launch = build_launch("p-0", META, spec, IMAGE, tmp_path / "root", src)
    try:
        argv = launch.argv
        data = [argv[i + 1:i + 3] for i, a in enumerate(argv) if a == "--ro-bind-data"]
        assert [d[1] for d in data] == ["/keys/kek", "/etc/c/a.txt"]
        fd = int(data[0][0])
        assert os.pread(fd, 100, 0) == b"secret"  # from memory, not a file on disk
        # 0440 root:fsGroup on a node = owner-only for the pod's own uid here.
        perms = [argv[i + 1] for i, a in enumerate(argv) if a == "--perms"]
        assert perms[:2] == ["0755", "0400"]
        assert argv[argv.index("--size") + 1] == str(1 << 20)
        assert (tmp_path / "root" / "keys").is_dir()  # the mountpoint, as runc makes it
    finally:
        launch.close()
