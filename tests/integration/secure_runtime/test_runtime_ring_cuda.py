"""The pipelined loader on CUDA: pinned ring, one device allocation, copies on a stream.

Skipped only where ``torch.cuda.is_available()`` is False (no GPU, or a CPU-only torch):
the CPU twin (test_runtime_ring.py) runs everywhere and covers the same pipeline's
logic. On a GPU these are what bench/gpu_check.sh runs first: exact tensors on the
device, straddling tensors, zeroing of every slot and of the device allocation on a
tag failure mid-load, sharded checkpoints, and the host memory bound (peak RSS of a
fresh process loading a model eight times the ring).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pipeline.errors import IntegrityError
from pipeline.sealing._segments import SEGMENT_SIZE_4KB, Layout
from pipeline.sealing.open import open_sealed, unwrap_data_key
from secure_runtime import _ring, load_sealed, load_sealed_model
from tests.support.ring_models import (
    expected_tensors,
    flip_segment,
    odd_project,
    seal,
    sharded_project,
    trust_of,
)

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA GPU (torch.cuda.is_available() is False); the CPU twin is "
           "test_runtime_ring.py",
)

ROOT = Path(__file__).resolve().parents[3]


class RecordingCudaCopier(_ring.CudaCopier):
    """The real CUDA copier, keeping the pinned slots it handed out."""

    def __init__(self, size: int, device: str) -> None:
        super().__init__(size, device)
        self.kept = self.destination  # the loader drops it after a failure; we look at it
        self.slots: list[torch.Tensor] = []

    def new_slot(self, size: int) -> torch.Tensor:
        slot = super().new_slot(size)
        assert slot.is_pinned()
        self.slots.append(slot)
        return slot


@pytest.mark.parametrize("segment", ["1MB", "4KB"])
def test_cuda_load_is_exact_and_on_one_allocation(
    sealing_workspace: dict[str, Path], segment: str
) -> None:
    ws = sealing_workspace
    project = odd_project(ws["root"])
    sealed = seal(project, ws, segment)
    model = load_sealed_model(sealed, device="cuda", trust=trust_of(ws),
                              ring=_ring.RingConfig(2, 1 << 20))
    expected = expected_tensors(project)
    assert model.tensors.keys() == expected.keys()
    storages = set()
    for name, tensor in expected.items():
        on_gpu = model.tensors[name]
        assert on_gpu.device.type == "cuda", name
        assert on_gpu.dtype == tensor.dtype, name
        assert torch.equal(on_gpu.cpu(), tensor), name
        storages.add(on_gpu.untyped_storage().data_ptr())
    assert len(storages) == 1  # views over the one device allocation (no clone needed)
    assert model.host_buffers == []  # no host plaintext kept


def test_load_sealed_cuda_interface(sealing_workspace: dict[str, Path]) -> None:
    ws = sealing_workspace
    project = odd_project(ws["root"])
    tensors = load_sealed(seal(project, ws, "1MB"), device="cuda", trust=trust_of(ws))
    assert all(torch.equal(tensors[n].cpu(), t) for n, t in expected_tensors(project).items())


def test_cuda_ring_straddles_and_reuses_slots(sealing_workspace: dict[str, Path]) -> None:
    ws = sealing_workspace
    project = odd_project(ws["root"])
    sealed = seal(project, ws, "4KB")
    opened = open_sealed(sealed, trust=trust_of(ws))
    _, total = _ring.layout(opened.manifest.sealed_files)
    copier = RecordingCudaCopier(total, "cuda")
    stats = _ring.RingStats()
    tensors, _ = _ring.decrypt_through_ring(opened, unwrap_data_key(opened), copier,
                                            ring=_ring.RingConfig(3, 64 << 10), stats=stats)
    assert stats.groups > 3 and stats.slots_allocated == 3
    assert all(torch.equal(tensors[n].cpu(), t) for n, t in expected_tensors(project).items())
    assert all(int(torch.count_nonzero(s)) == 0 for s in copier.slots)


def test_cuda_tag_failure_zeroes_slots_and_device_memory(
    sealing_workspace: dict[str, Path]
) -> None:
    ws = sealing_workspace
    project = odd_project(ws["root"])
    sealed = seal(project, ws, "4KB")
    target = sealed / "extra.safetensors.sealed"
    count = Layout.for_ciphertext(target.stat().st_size, SEGMENT_SIZE_4KB).count
    flip_segment(target, count // 2, SEGMENT_SIZE_4KB)
    opened = open_sealed(sealed, trust=trust_of(ws))
    _, total = _ring.layout(opened.manifest.sealed_files)
    copier = RecordingCudaCopier(total, "cuda")
    with pytest.raises(IntegrityError, match=rf"^extra\.safetensors\.sealed: sealed stream "
                                             rf"segment {count // 2} of {count} "):
        _ring.decrypt_through_ring(opened, unwrap_data_key(opened), copier,
                                   ring=_ring.RingConfig(2, 64 << 10))
    torch.cuda.synchronize()
    assert int(torch.count_nonzero(copier.kept)) == 0
    assert copier.destination.numel() == 0  # dropped
    assert all(int(torch.count_nonzero(s)) == 0 for s in copier.slots)


def test_cuda_sharded_safetensors(sealing_workspace: dict[str, Path]) -> None:
    ws = sealing_workspace
    project, expected = sharded_project(ws["root"])
    model = load_sealed_model(seal(project, ws, "4KB"), device="cuda", trust=trust_of(ws))
    assert all(torch.equal(model.tensors[n].cpu(), t) for n, t in expected.items())


def test_cuda_peak_host_memory_is_the_ring(sealing_workspace: dict[str, Path]) -> None:
    """A fresh process loads 1 GiB onto the GPU; its peak RSS grows by about the ring."""
    ws = sealing_workspace
    project = ws["root"] / "big"
    project.mkdir()
    generator = torch.Generator().manual_seed(0)
    save_file({f"w{i}": torch.rand(4096, 4096, generator=generator) for i in range(16)},
              str(project / "model.safetensors"))
    sealed = seal(project, ws, "1MB")
    code = (
        "import re, sys, torch\n"
        "from pathlib import Path\n"
        "from pipeline.signing.model import Trust\n"
        "from secure_runtime import load_sealed\n"
        "def hwm():\n"
        "    text = Path('/proc/self/status').read_text()\n"
        "    return int(re.search(r'VmHWM:\\s+(\\d+)', text).group(1)) << 10\n"
        "torch.zeros(1, device='cuda'); torch.cuda.synchronize()\n"  # CUDA context first
        "pinned = torch.empty(1, pin_memory=True)\n"
        "before = hwm()\n"
        "tensors = load_sealed(sys.argv[1], device='cuda', "
        "trust=Trust(public_keys=(sys.argv[2],)))\n"
        "torch.cuda.synchronize()\n"
        "print(hwm() - before, sum(t.numel() * t.element_size() for t in tensors.values()))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(sealed), str(ws["public"])],
                          capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    grown, loaded = (int(x) for x in done.stdout.split()[-2:])
    ring = _ring.RingConfig()
    assert loaded == 1 << 30
    # The ring, the per-thread ciphertext copies and the allocator's slack; not the model.
    assert grown < ring.slots * ring.slot_bytes + (256 << 20), json.dumps(
        {"grown_mib": grown >> 20, "ring_mib": ring.slots * ring.slot_bytes >> 20})
