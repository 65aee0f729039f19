"""``--isolation image``: the bubblewrap command line a step gets, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError, InputError
from pipeline.workflow.isolation import SCRIPT_PATH, StepImage, pull_step_image, sandbox_argv

CONFIG = {"User": "65532:65532", "WorkingDir": "/workspace",
          "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/home/nonroot"]}


def _pairs(argv: list[str], flag: str) -> list[tuple[str, str]]:
    return [(argv[i + 1], argv[i + 2]) for i, a in enumerate(argv) if a == flag]


def test_a_step_gets_its_mounts_the_image_env_and_nothing_of_the_host(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_LAYER_CACHE", str(tmp_path / "no-cache-here"))
    monkeypatch.setenv("PIPELINE_DEB_CACHE", str(tmp_path / "no-debs-here"))
    monkeypatch.setenv("HOST_ONLY", "leak")
    image = StepImage("r@sha256:" + "a" * 64, "sha256:" + "a" * 64, tmp_path / "root", CONFIG)
    ws, secret = tmp_path / "ws", tmp_path / "secret"
    argv = sandbox_argv(image, mounts=[("/workspace", ws, False),
                                       ("/var/run/secrets/s", secret, True)],
                        script=tmp_path / "s.sh", command=["bash"],
                        env={"KEYRING": "/var/run/secrets/s/k"}, workdir="/workspace")
    assert argv[1:4] == ["--ro-bind", str(tmp_path / "root"), "/"]
    assert ("/workspace" not in dict(_pairs(argv, "--ro-bind")).values())
    assert (str(ws), "/workspace") in _pairs(argv, "--bind")
    assert (str(secret), "/var/run/secrets/s") in _pairs(argv, "--ro-bind")
    assert (str(tmp_path / "s.sh"), SCRIPT_PATH) in _pairs(argv, "--ro-bind")
    assert argv[argv.index("--uid") + 1] == "65532" and "--clearenv" in argv
    assert ["--cap-drop", "ALL"] == argv[argv.index("--cap-drop"):argv.index("--cap-drop") + 2]
    env = dict(_pairs(argv, "--setenv"))
    assert env == {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/home/nonroot",
                   "KEYRING": "/var/run/secrets/s/k"}
    assert argv[-3:] == ["--", "bash", SCRIPT_PATH]
    assert "--share-net" not in argv and "--unshare-net" not in argv  # loopback registry


def test_the_hosts_build_caches_are_shared_with_the_steps(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "layers").mkdir()
    monkeypatch.setenv("PIPELINE_LAYER_CACHE", str(tmp_path / "layers"))
    monkeypatch.setenv("PIPELINE_DEB_CACHE", str(tmp_path / "absent"))
    image = StepImage("r@sha256:" + "a" * 64, "sha256:" + "a" * 64, tmp_path, CONFIG)
    argv = sandbox_argv(image, mounts=[], script=tmp_path / "s", command=["bash"], env={},
                        workdir="/")
    assert (str(tmp_path / "layers"), "/home/nonroot/.cache/secure-model-pipeline/layers") \
        in _pairs(argv, "--bind")
    assert not any("debs" in dest for _, dest in _pairs(argv, "--bind"))


@pytest.mark.parametrize("user", ["", "0", "root", "0:0", "nonroot"])
def test_an_image_running_as_root_or_by_name_is_refused(user: str, tmp_path: Path) -> None:
    image = StepImage("r", "d", tmp_path, {**CONFIG, "User": user})
    with pytest.raises(ConfigError, match="non-root"):
        image.user  # noqa: B018


def test_a_tag_is_refused_before_anything_is_pulled(tmp_path: Path) -> None:
    from pipeline.oci.registry import RegistryOptions

    with pytest.raises(InputError, match="by digest"):
        pull_step_image("127.0.0.1:9/ml/pipeline:v1", tmp_path, RegistryOptions(insecure=True))
    assert not (tmp_path / "layout").exists()


def test_the_placeholder_image_is_refused_with_what_to_do(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import run
    from pipeline.errors import EXIT_CONFIG

    code = run(["workflow", "run", "release", "--isolation", "image",
                "--workdir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == EXIT_CONFIG, err
    assert "placeholder" in err and "pipeline build --pipeline-image" in err
    assert not (tmp_path / "run").exists()
