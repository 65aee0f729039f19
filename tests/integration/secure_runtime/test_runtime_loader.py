"""The loader's cold path: a fresh mapped buffer, faulted in by the decrypting threads.

Weight files big enough for the mapped buffer (>= MAPPED_BUFFER_MIN), with odd tensor
sizes so that chunk, segment, page and tensor boundaries all fall in different places;
every thread count and both segment sizes must give exactly the plaintext tensors.
A tag failure in the middle of a file must leave every byte of the buffer zeroed.
Real keys, a real signature, real files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pipeline.cli import run
from pipeline.errors import IntegrityError
from pipeline.sealing._segments import SEGMENT_SIZE_1MB, SEGMENT_SIZE_4KB, Layout
from pipeline.sealing.seal import seal_model
from pipeline.signing.model import Trust
from secure_runtime import load_sealed, load_sealed_model, loader
from tests.support.proc_maps import kib, maps_line, smaps_entry


@pytest.fixture()
def sealer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
           keys: Callable[[str], tuple[Path, Path]]) -> Callable[[Path, str], Path]:
    """``sealer(project, "1MB"|"4KB")`` -> a signed sealed copy; ``.trust`` for loading."""
    monkeypatch.setenv("PIPELINE_KEYRING", str(tmp_path / "keys" / "keyring.json"))
    monkeypatch.delenv("PIPELINE_TRUST", raising=False)
    assert run(["keys", "create", "kek"]) == 0
    private, public = keys("signer")

    def seal(project: Path, segment: str) -> Path:
        size = {"1MB": SEGMENT_SIZE_1MB, "4KB": SEGMENT_SIZE_4KB}[segment]
        out = tmp_path / f"{project.name}-{segment}.sealed"
        seal_model(project, out, key="kek", sign_key=private, segment_size=size)
        return out

    seal.trust = Trust(public_keys=(public,))  # type: ignore[attr-defined]
    return seal


def _odd_model(root: Path) -> Path:
    """~9 MiB in tensors of odd byte lengths and mixed dtypes (two weight files)."""
    project = root / "odd"
    project.mkdir()
    generator = torch.Generator().manual_seed(14)
    save_file({
        "a": torch.rand(1023, 2049, generator=generator),  # 8.4 MB: past MAPPED_BUFFER_MIN
        "b": torch.rand(4097, generator=generator).to(torch.bfloat16),
        "c": torch.randint(-128, 127, (13,), dtype=torch.int8, generator=generator),
        "d": torch.rand(3, generator=generator, dtype=torch.float64),
        "e": torch.rand(511, 7, generator=generator).to(torch.float16),
    }, str(project / "model.safetensors"))
    save_file({"extra": torch.rand(2_200_001, generator=generator)},  # 8.8 MB, odd length
              str(project / "extra.safetensors"))
    return project


def _expected(project: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for path in sorted(project.glob("*.safetensors")):
        tensors.update(load_file(str(path)))
    return tensors


@pytest.mark.parametrize("segment", ["1MB", "4KB"])
@pytest.mark.parametrize("threads", [1, 2, 3, 7])
def test_parallel_faulting_gives_exactly_the_plaintext(
    sealer: Callable[[Path, str], Path], tmp_path: Path, segment: str, threads: int
) -> None:
    project = _odd_model(tmp_path)
    sealed = sealer(project, segment)
    model = load_sealed_model(sealed, trust=sealer.trust, threads=threads)  # type: ignore[attr-defined]
    expected = _expected(project)
    assert model.tensors.keys() == expected.keys()
    for name, tensor in expected.items():
        assert model.tensors[name].dtype == tensor.dtype, name
        assert torch.equal(model.tensors[name], tensor), name
    # Each weight file got its own mapped buffer, aligned for huge pages, locked page by
    # page as decryption faulted it in (root has CAP_IPC_LOCK): every page is resident
    # and locked, no mlock pass needed after the load.
    assert len(model.host_buffers) == 2
    for buffer in model.host_buffers:
        assert buffer.numel() >= loader.MAPPED_BUFFER_MIN
        assert buffer.data_ptr() % (2 << 20) == 0
        smaps = smaps_entry(buffer.data_ptr())
        # lo locked, lf on fault (mlock2 MLOCK_ONFAULT), dd no dump
        assert {"lo", "lf", "dd"} <= set(smaps["VmFlags"].split()), smaps["VmFlags"]
        assert kib(smaps, "Locked") * 1024 >= buffer.numel() // 4096 * 4096


def test_load_sealed_interface_is_unchanged(
    sealer: Callable[[Path, str], Path], tmp_path: Path
) -> None:
    project = _odd_model(tmp_path)
    tensors = load_sealed(sealer(project, "1MB"), device="cpu", trust=sealer.trust)  # type: ignore[attr-defined]
    expected = _expected(project)
    assert all(torch.equal(tensors[n], t) for n, t in expected.items())


def _flip_segment(sealed_file: Path, segment: int, segment_size: int) -> None:
    layout = Layout.for_ciphertext(sealed_file.stat().st_size, segment_size)
    start, _ = layout.ciphertext_bounds(segment)
    data = bytearray(sealed_file.read_bytes())
    data[start + 5] ^= 0x40
    sealed_file.write_bytes(bytes(data))


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("where", ["middle", "last"])
def test_tag_failure_mid_file_leaves_the_buffer_zeroed(
    sealer: Callable[[Path, str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    threads: int, where: str,
) -> None:
    project = _odd_model(tmp_path)
    sealed = sealer(project, "1MB")
    target = sealed / "model.safetensors.sealed"
    count = Layout.for_ciphertext(target.stat().st_size, SEGMENT_SIZE_1MB).count
    bad = count // 2 if where == "middle" else count - 1
    _flip_segment(target, bad, SEGMENT_SIZE_1MB)

    made: list[torch.Tensor] = []
    real = loader.host_buffer

    def recording(size: int, *, pin: bool = False) -> torch.Tensor:
        buffer = real(size, pin=pin)
        made.append(buffer)
        return buffer

    monkeypatch.setattr(loader, "host_buffer", recording)
    with pytest.raises(IntegrityError, match=rf"model\.safetensors\.sealed: .*segment {bad} "):
        load_sealed_model(sealed, trust=sealer.trust, threads=threads)  # type: ignore[attr-defined]
    assert made, "the loader never allocated a buffer"
    # Segments before the bad one were decrypted (real plaintext was written) and
    # must all be gone again, as must anything faulted in past the failure.
    for buffer in made:
        assert int(torch.count_nonzero(buffer)) == 0


def test_plaintext_lives_only_in_anonymous_memory(
    sealer: Callable[[Path, str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing under $TMPDIR or in the sealed directory, and no file behind the buffers."""
    import tempfile

    project = _odd_model(tmp_path)
    sealed = sealer(project, "1MB")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", None)
    before = {p.name: p.stat().st_mtime_ns for p in sealed.iterdir()}
    model = load_sealed_model(sealed, trust=sealer.trust)  # type: ignore[attr-defined]
    assert list(scratch.iterdir()) == []
    assert {p.name: p.stat().st_mtime_ns for p in sealed.iterdir()} == before
    for buffer in model.host_buffers:
        fields = maps_line(buffer.data_ptr()).split()
        assert len(fields) == 5, f"plaintext buffer is backed by a file: {fields}"  # no path
        assert fields[1].startswith("rw") and fields[1].endswith("p")  # private
