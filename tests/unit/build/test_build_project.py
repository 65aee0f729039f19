"""pipeline.yaml's runtime section: what the builder accepts and what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.build.app import MODEL_DIR, app_entries, runtime_requirements
from pipeline.build.project import load_project
from pipeline.errors import BuildError, ConfigError

GOOD = """
name: demo
model: {weights: [w.bin]}
runtime:
  torch: none
  python_packages: ["idna==3.20"]
  entrypoint: ["python3", "-m", "server"]
"""


def project(tmp_path: Path, text: str = GOOD) -> Path:
    (tmp_path / "pipeline.yaml").write_text(text)
    (tmp_path / "server.py").write_text("print('hi')\n")
    (tmp_path / "w.bin").write_bytes(b"weights")
    (tmp_path / "extra.safetensors").write_bytes(b"weights")
    (tmp_path / ".env").write_text("TOKEN=x\n")
    return tmp_path


def test_good_project(tmp_path: Path) -> None:
    spec = load_project(project(tmp_path))
    assert spec.name == "demo" and spec.entrypoint == ("python3", "-m", "server")
    assert not spec.uses_secure_runtime
    assert runtime_requirements(spec) == ("idna==3.20",)


def test_app_layer_never_carries_weights_or_hidden_files(tmp_path: Path) -> None:
    paths = {e.path for e in app_entries(load_project(project(tmp_path)))}
    assert f"{MODEL_DIR}/server.py" in paths and f"{MODEL_DIR}/pipeline.yaml" in paths
    assert not any(p.endswith(("w.bin", ".safetensors", ".env")) for p in paths)


@pytest.mark.parametrize(
    ("link", "target"),
    [
        ("notes.txt", "extra.safetensors"),   # weight suffix
        ("data.txt", "w.bin"),                # declared model.weights
        ("settings.txt", ".env"),             # hidden file
        ("sub/cfg.txt", "../.git/config"),    # inside a hidden directory
    ],
)
def test_app_layer_refuses_symlinks_to_files_it_would_leave_out(
    tmp_path: Path, link: str, target: str
) -> None:
    # An innocent name must not smuggle weights or secrets in: the target is what is packed.
    root = project(tmp_path)
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[remote]\n url = https://user:token@host/x\n")
    (root / link).parent.mkdir(parents=True, exist_ok=True)
    (root / link).symlink_to(target)
    with pytest.raises(BuildError, match="symlink"):
        app_entries(load_project(root))


def test_app_layer_keeps_symlinks_to_files_it_packs(tmp_path: Path) -> None:
    root = project(tmp_path)
    (root / "alias.py").symlink_to("server.py")
    entries = {e.path: e for e in app_entries(load_project(root))}
    assert entries[f"{MODEL_DIR}/alias.py"].data == b"print('hi')\n"


def test_secure_runtime_entrypoint_adds_runtime_code_and_requirements(tmp_path: Path) -> None:
    text = GOOD.replace('["python3", "-m", "server"]', '["python3", "-m", "secure_runtime"]')
    spec = load_project(project(tmp_path, text))
    assert spec.uses_secure_runtime
    assert len(runtime_requirements(spec)) > 1
    assert any(e.path.startswith("app/lib/secure_runtime/") for e in app_entries(spec))


@pytest.mark.parametrize(
    "text",
    [
        "name: demo\n",  # no runtime
        "name: Demo Project\nruntime: {entrypoint: [x]}\n",  # bad name
        "name: demo\nruntime: {entrypoint: []}\n",
        "name: demo\nruntime: {entrypoint: [x], torch: rocm}\n",
        "name: demo\nruntime: {entrypoint: [x], python_packages: idna}\n",
        "name: demo\nruntime: {entrypoint: [x], env: {'1BAD': v}}\n",
        "name: demo\nruntime: {entrypoint: [x], lock: ../../etc/lock}\n",
        "- not a mapping\n",
    ],
)
def test_bad_projects(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        load_project(project(tmp_path, text))


def test_missing_project_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_project(tmp_path)
