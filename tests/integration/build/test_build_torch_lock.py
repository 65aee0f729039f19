"""``runtime.torch: cuda`` resolves CUDA wheels; a CUDA runtime on a CPU lock is refused.

The real pip resolves against a local PEP 503 index written by the test: small wheels
named like the real ones (a CUDA ``torch`` that requires ``nvidia-cublas-cu12``, a
``+cpu`` build that requires nothing), each listed with its ``#sha256=`` and its PEP 658
metadata file. The CUDA wheels' files are then *deleted*: the resolution must still pin
them, which proves the lock is made from metadata and hashes alone (the real CUDA torch
and its libraries are several GB; nothing is downloaded to lock them).
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest
import yaml

from pipeline.build import wheels
from pipeline.build.image import build_image
from pipeline.cli import run
from pipeline.errors import EXIT_BUILD, BuildError

pytestmark = pytest.mark.integration

CUDA_LIB = "nvidia-cublas-cu12==12.8.4.1"


def _metadata(name: str, version: str, requires: tuple[str, ...]) -> str:
    return (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
            + "".join(f"Requires-Dist: {r}\n" for r in requires))


def _wheel(index: Path, name: str, version: str, *requires: str) -> Path:
    """A py3-none-any wheel in ``index/<name>/``, with its PEP 658 ``.metadata`` beside it."""
    dist = f"{name.replace('-', '_')}-{version}"
    directory = index / name
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{dist}-py3-none-any.whl"
    meta = _metadata(name, version, requires)
    files = {f"{dist}.dist-info/METADATA": meta,
             f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\n"
                                         "Root-Is-Purelib: true\nTag: py3-none-any\n",
             f"{dist}.dist-info/RECORD": ""}
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            archive.writestr(zipfile.ZipInfo(member, (1980, 1, 1, 0, 0, 0)), text)
    Path(f"{path}.metadata").write_text(meta)
    return path


def _index(root: Path, wheels_by_project: dict[str, list[Path]]) -> str:
    """PEP 503 pages with the sha256 of every file and of its metadata (PEP 658/714)."""
    for project, files in wheels_by_project.items():
        links = []
        for path in files:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            meta = hashlib.sha256(Path(f"{path}.metadata").read_bytes()).hexdigest()
            links.append(f'<a href="{path.name}#sha256={digest}" '
                         f'data-core-metadata="sha256={meta}" '
                         f'data-dist-info-metadata="sha256={meta}">{path.name}</a>')
        (root / project / "index.html").write_text(
            "<!DOCTYPE html><html><body>\n" + "\n".join(links) + "\n</body></html>\n")
    return (root).as_uri()


@pytest.fixture
def index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Make pip see only the test's index (no config files, no find-links)."""
    def use(files: dict[str, list[Path]]) -> None:
        monkeypatch.setenv("PIP_INDEX_URL", _index(tmp_path / "simple", files))
        monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
        monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
        monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    return tmp_path / "simple", use


def test_cuda_torch_resolves_its_cuda_libraries_without_downloading(index) -> None:
    root, use = index
    torch = _wheel(root, "torch", "2.13.0", CUDA_LIB)
    cublas = _wheel(root, "nvidia-cublas-cu12", "12.8.4.1")
    use({"torch": [torch], "nvidia-cublas-cu12": [cublas]})
    expected = {"torch": hashlib.sha256(torch.read_bytes()).hexdigest(),
                "nvidia-cublas-cu12": hashlib.sha256(cublas.read_bytes()).hexdigest()}
    torch.unlink()  # only metadata and hashes remain: a download would fail
    cublas.unlink()
    pinned = wheels.resolve(["torch==2.13.0"], "cuda")
    assert {w.name: w.sha256 for w in pinned} == expected
    assert {w.name: w.version for w in pinned} == {"torch": "2.13.0",
                                                   "nvidia-cublas-cu12": "12.8.4.1"}


def test_cuda_mode_refuses_a_cpu_torch(index) -> None:
    root, use = index
    use({"torch": [_wheel(root, "torch", "2.13.0+cpu")]})
    with pytest.raises(BuildError, match=r"'cuda' but it pins torch 2\.13\.0\+cpu, a CPU build"):
        wheels.resolve(["torch==2.13.0"], "cuda")


def test_cpu_mode_refuses_cuda_wheels(index) -> None:
    root, use = index
    use({"torch": [_wheel(root, "torch", "2.13.0", CUDA_LIB)],
         "nvidia-cublas-cu12": [_wheel(root, "nvidia-cublas-cu12", "12.8.4.1")]})
    with pytest.raises(BuildError, match="'cpu' but it pulls CUDA wheels: nvidia-cublas-cu12"):
        wheels.resolve(["torch==2.13.0"], "cpu")


def _cuda_project(tmp_path: Path) -> Path:
    """A project asking for a CUDA runtime whose lock still pins the CPU torch it had."""
    project = tmp_path / "gpu-model"
    project.mkdir()
    (project / "pipeline.yaml").write_text(yaml.safe_dump({
        "name": "gpu-model",
        "runtime": {"torch": "cuda", "python_packages": ["torch==2.13.0"],
                    "entrypoint": ["python3", "serve.py"]}}))
    (project / "serve.py").write_text("import torch\n")
    cpu = wheels.PinnedWheel("torch", "2.13.0+cpu", "ab" * 32)
    (project / "requirements.lock").write_text(
        wheels.format_python_lock([cpu], ["torch==2.13.0"]))
    return project


def test_a_frozen_build_refuses_a_cuda_runtime_on_a_cpu_lock(tmp_path: Path) -> None:
    project = _cuda_project(tmp_path)
    with pytest.raises(BuildError, match=r"requirements\.lock: runtime\.torch is 'cuda' but "
                                         r"it pins torch 2\.13\.0\+cpu, a CPU build"):
        build_image(project, tmp_path / "out", frozen=True)
    assert not (tmp_path / "out").exists()


def test_pipeline_build_exits_13_when_only_a_cpu_torch_resolves(
    index, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not frozen, the CPU lock is stale and re-resolved; a CPU-only index is refused."""
    root, use = index
    use({"torch": [_wheel(root, "torch", "2.13.0+cpu")]})
    project = _cuda_project(tmp_path)
    lock = (project / "requirements.lock").read_bytes()
    assert run(["build", str(project), "--out", str(tmp_path / "out")]) == EXIT_BUILD
    err = capsys.readouterr().err
    assert "runtime.torch is 'cuda' but it pins torch 2.13.0+cpu, a CPU build" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
    assert (project / "requirements.lock").read_bytes() == lock  # nothing rewritten


def test_lock_deps_relocks_a_cpu_lock_with_cuda_wheels(index, tmp_path: Path) -> None:
    root, use = index
    use({"torch": [_wheel(root, "torch", "2.13.0", CUDA_LIB)],
         "nvidia-cublas-cu12": [_wheel(root, "nvidia-cublas-cu12", "12.8.4.1")]})
    project = _cuda_project(tmp_path)
    assert run(["lock", "deps", str(project)]) == 0
    pinned = wheels.parse_python_lock((project / "requirements.lock").read_text())
    assert {w.name: w.version for w in pinned} == {"torch": "2.13.0",
                                                   "nvidia-cublas-cu12": "12.8.4.1"}
