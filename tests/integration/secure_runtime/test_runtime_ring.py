"""The pipelined (ring) loader on the CPU: the same pipeline the CUDA load runs, with a memcpy.

Real keys, a real signature, real sealed files. Rings far smaller than the model, so
slots are reused many times and tensors straddle slots and groups; both segment
sizes; several files. What must hold: exactly the plaintext tensors, copies in file
order into one destination, every slot zeroed before reuse and after the last copy,
at most ``slots`` host buffers whatever the model's size, and on a failure mid-load
(tag failure in segment k, a file truncated after it was opened) the destination and
every slot zeroed and an error naming the file and the segment. The CUDA twin of
these tests is test_runtime_ring_cuda.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline.errors import InputError, IntegrityError
from pipeline.sealing._segments import SEGMENT_SIZE_4KB, Layout
from pipeline.sealing.open import open_sealed, unwrap_data_key
from pipeline.sealing.safetensors_buffer import parse_header
from secure_runtime import _ring, load_sealed_model, loader
from tests.support.ring_models import (
    SEGMENTS,
    expected_tensors,
    flip_segment,
    odd_project,
    seal,
    sharded_project,
    trust_of,
)

#: What a fresh slot is filled with before the loader sees it: stands for whatever the
#: allocator hands out (never zeroed by the loader: it never held our plaintext).
GARBAGE = 0xA5


def scrubbed(buffer: torch.Tensor) -> bool:
    """Every byte zero, or the allocator's garbage: nothing the load wrote is left."""
    return bool(((buffer == 0) | (buffer == GARBAGE)).all())


class RecordingCopier(_ring.HostCopier):
    """The real CPU copier, keeping every slot it handed out and checking each copy.

    At each copy the slot must hold exactly the group's plaintext (``expected`` bytes
    at that offset) and, after it, zeros or garbage: nothing left over from an
    earlier, longer group.
    """

    def __init__(self, size: int, expected: bytes | None = None) -> None:
        super().__init__(size, loader.host_buffer)
        self.kept = self.destination  # the loader drops it after a failure; we look at it
        self.slots: list[torch.Tensor] = []
        self.expected = expected
        self.checked = 0

    def new_slot(self, size: int) -> torch.Tensor:
        slot = super().new_slot(size)
        slot.fill_(GARBAGE)
        self.slots.append(slot)
        return slot

    def copy(self, slot: int, source: torch.Tensor, offset: int) -> None:
        if self.expected is not None:
            buffer = self.slots[slot]
            assert source.data_ptr() == buffer.data_ptr()
            n = source.numel()
            assert bytes(source.numpy()) == self.expected[offset : offset + n]
            assert scrubbed(buffer[n:]), "stale plaintext in the slot"
            self.checked += 1
        super().copy(slot, source, offset)


def _destination_image(project: Path, sealed: Path, ws: dict[str, Path]) -> bytes:
    """What the destination must hold: each file's bytes at its aligned offset."""
    opened = open_sealed(sealed, trust=trust_of(ws))
    offsets, total = _ring.layout(opened.manifest.sealed_files)
    image = bytearray(total)
    for entry, offset in zip(opened.manifest.sealed_files, offsets, strict=True):
        data = (project / entry.path).read_bytes()
        image[offset : offset + len(data)] = data
    return bytes(image)


def _run_ring(sealed: Path, ws: dict[str, Path], ring: _ring.RingConfig, threads: int,
              expected: bytes | None = None
              ) -> tuple[dict[str, torch.Tensor], RecordingCopier, _ring.RingStats]:
    opened = open_sealed(sealed, trust=trust_of(ws))
    key = unwrap_data_key(opened)
    _, total = _ring.layout(opened.manifest.sealed_files)
    copier = RecordingCopier(total, expected)
    stats = _ring.RingStats()
    tensors, _origins = _ring.decrypt_through_ring(opened, key, copier, ring=ring,
                                                   threads=threads, stats=stats)
    return tensors, copier, stats


@pytest.mark.parametrize(("segment", "slot_bytes"), [("4KB", 64 << 10), ("4KB", 200_000),
                                                     ("1MB", 1 << 20)])
@pytest.mark.parametrize("slots", [1, 2, 3])
@pytest.mark.parametrize("threads", [1, 3])
def test_ring_gives_exactly_the_plaintext_in_order(
    sealing_workspace: dict[str, Path], segment: str, slot_bytes: int, slots: int,
    threads: int,
) -> None:
    ws = sealing_workspace
    project = odd_project(ws["root"])
    sealed = seal(project, ws, segment)
    image = _destination_image(project, sealed, ws)
    ring = _ring.RingConfig(slots=slots, slot_bytes=slot_bytes)
    tensors, copier, stats = _run_ring(sealed, ws, ring, threads, expected=image)

    expected = expected_tensors(project)
    assert tensors.keys() == expected.keys()
    for name, tensor in expected.items():
        assert tensors[name].dtype == tensor.dtype, name
        assert torch.equal(tensors[name], tensor), name
        assert tensors[name].untyped_storage().data_ptr() == copier.destination.data_ptr()
    assert bytes(copier.destination.numpy()) == image
    # Copies ran in order, slot after slot, and tiled each file without gaps.
    assert copier.checked == stats.groups == len(stats.copies)
    assert [c[0] for c in stats.copies] == [g % slots for g in range(stats.groups)]
    assert stats.groups > slots, "the ring was never reused: the test proves nothing"
    covered = sorted((offset, offset + n) for _slot, offset, n in stats.copies)
    offsets, _ = _ring.layout(open_sealed(sealed, trust=trust_of(ws)).manifest.sealed_files)
    starts = [o for o, _ in covered]
    assert starts == sorted(starts) == [c[1] for c in stats.copies]
    for (_, end), (start, _) in zip(covered, covered[1:], strict=False):
        assert start == end or start in offsets  # contiguous within a file
    # Bounded host memory: never more than ``slots`` buffers, each one slot.
    assert stats.slots_allocated == len(copier.slots) == slots
    assert all(s.numel() == max(slot_bytes, SEGMENTS[segment] - 16) for s in copier.slots)
    # Zeroed after the last copy.
    assert all(scrubbed(slot) for slot in copier.slots)


def test_tensors_straddle_slots_and_groups(sealing_workspace: dict[str, Path]) -> None:
    """The small-slot case above really splits tensors across groups (and slots)."""
    ws = sealing_workspace
    project = odd_project(ws["root"])
    sealed = seal(project, ws, "4KB")
    tensors, _copier, stats = _run_ring(sealed, ws, _ring.RingConfig(2, 64 << 10), threads=2)
    header = parse_header((project / "model.safetensors").read_bytes())
    bounds = {offset for _slot, offset, _n in stats.copies}
    straddling = [t.name for t in header.tensors
                  if any(t.start < b < t.end for b in bounds)]
    assert "a" in straddling  # 2.1 MB over 64 KiB slots: dozens of groups
    assert torch.equal(tensors["a"], load_file(str(project / "model.safetensors"))["a"])


def test_through_load_sealed_model_on_cpu(sealing_workspace: dict[str, Path]) -> None:
    ws = sealing_workspace
    project = odd_project(ws["root"])
    sealed = seal(project, ws, "1MB")
    model = load_sealed_model(sealed, trust=trust_of(ws), strategy="ring",
                              ring=_ring.RingConfig(2, 1 << 20))
    expected = expected_tensors(project)
    assert all(torch.equal(model.tensors[n], t) for n, t in expected.items())
    assert len(model.host_buffers) == 1  # the one destination; the slots are gone
    assert model.device == "cpu"


def test_unknown_or_mismatched_strategy_is_a_config_error(
    sealing_workspace: dict[str, Path]
) -> None:
    from pipeline.errors import ConfigError

    ws = sealing_workspace
    sealed = seal(odd_project(ws["root"]), ws, "1MB")
    with pytest.raises(ConfigError, match="unknown load strategy"):
        load_sealed_model(sealed, trust=trust_of(ws), strategy="fast")


@pytest.mark.parametrize("which", ["model.safetensors", "extra.safetensors"])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_tag_failure_mid_load_zeroes_everything_and_names_file_and_segment(
    sealing_workspace: dict[str, Path], which: str, where: str,
) -> None:
    ws = sealing_workspace
    project = odd_project(ws["root"])
    sealed = seal(project, ws, "4KB")
    target = sealed / f"{which}.sealed"
    count = Layout.for_ciphertext(target.stat().st_size, SEGMENT_SIZE_4KB).count
    bad = {"first": 0, "middle": count // 2, "last": count - 1}[where]
    flip_segment(target, bad, SEGMENT_SIZE_4KB)

    opened = open_sealed(sealed, trust=trust_of(ws))
    key = unwrap_data_key(opened)
    _, total = _ring.layout(opened.manifest.sealed_files)
    copier = RecordingCopier(total)
    stats = _ring.RingStats()
    with pytest.raises(IntegrityError,
                       match=rf"^{which}\.sealed: sealed stream segment {bad} of {count} "):
        _ring.decrypt_through_ring(opened, key, copier, ring=_ring.RingConfig(3, 64 << 10),
                                   threads=3, stats=stats)
    order = [e.path for e in opened.manifest.sealed_files]  # sorted: extra, then model
    if order.index(which) > 0 or where != "first":
        assert stats.groups > 0, "nothing was decrypted before the failure"
    assert copier.slots
    assert all(scrubbed(slot) for slot in copier.slots)
    assert int(torch.count_nonzero(copier.kept)) == 0
    assert copier.destination.numel() == 0  # dropped


def test_file_truncated_after_open_is_refused_and_zeroed(
    sealing_workspace: dict[str, Path]
) -> None:
    ws = sealing_workspace
    project = odd_project(ws["root"])
    sealed = seal(project, ws, "4KB")
    opened = open_sealed(sealed, trust=trust_of(ws))  # sizes checked here ...
    key = unwrap_data_key(opened)
    target = sealed / "model.safetensors.sealed"  # ... then the second file shrinks
    size = target.stat().st_size
    os.truncate(target, size - SEGMENT_SIZE_4KB)
    _, total = _ring.layout(opened.manifest.sealed_files)
    copier = RecordingCopier(total)
    with pytest.raises(IntegrityError, match=r"^model\.safetensors\.sealed: .* truncated or "
                                             r"extended after it was opened \(from segment \d+"):
        _ring.decrypt_through_ring(opened, key, copier, ring=_ring.RingConfig(2, 64 << 10))
    assert copier.slots  # the first file went through the ring before the failure
    assert all(scrubbed(s) for s in copier.slots)
    assert int(torch.count_nonzero(copier.kept)) == 0
    assert copier.destination.numel() == 0  # dropped


@pytest.mark.parametrize("strategy", ["direct", "ring"])
def test_sharded_safetensors_load(sealing_workspace: dict[str, Path], strategy: str) -> None:
    ws = sealing_workspace
    project, expected = sharded_project(ws["root"])
    sealed = seal(project, ws, "4KB")
    assert len(list(sealed.glob("model-*-of-00003.safetensors.sealed"))) == 3
    model = load_sealed_model(sealed, trust=trust_of(ws), strategy=strategy,
                              ring=_ring.RingConfig(2, 8 << 10))
    assert model.tensors.keys() == expected.keys()
    assert all(torch.equal(model.tensors[n], t) for n, t in expected.items())


@pytest.mark.parametrize("strategy", ["direct", "ring"])
@pytest.mark.parametrize("damage", ["moved", "missing_tensor", "unlisted_tensor", "no_shard"])
def test_sharded_index_that_disagrees_with_the_shards_is_refused(
    sealing_workspace: dict[str, Path], strategy: str, damage: str,
) -> None:
    """Signed by its owner, yet inconsistent: refused, and no plaintext survives."""
    ws = sealing_workspace
    project, _ = sharded_project(ws["root"])
    index_path = project / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    weight_map = index["weight_map"]
    if damage == "moved":
        weight_map["layers.1.0.weight"] = "model-00002-of-00003.safetensors"
    elif damage == "missing_tensor":
        weight_map["layers.9.weight"] = "model-00001-of-00003.safetensors"
    elif damage == "unlisted_tensor":
        del weight_map["layers.3.norm"]
    else:
        weight_map["layers.1.0.weight"] = "model-00004-of-00003.safetensors"
    index_path.write_text(json.dumps(index))
    sealed = seal(project, ws, "4KB")

    made: list[torch.Tensor] = []
    real = loader.host_buffer

    def recording(size: int, *, pin: bool = False) -> torch.Tensor:
        buffer = real(size, pin=pin)
        made.append(buffer)
        return buffer

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loader, "host_buffer", recording)
        with pytest.raises(InputError, match=r"^model\.safetensors\.index\.json: "):
            load_sealed_model(sealed, trust=trust_of(ws), strategy=strategy)
    assert made
    assert all(int(torch.count_nonzero(b)) == 0 for b in made)


def test_a_cpu_load_never_initialises_cuda(sealing_workspace: dict[str, Path]) -> None:
    """In a fresh process: both CPU strategies, and ``torch.cuda`` is still uninitialised."""
    ws = sealing_workspace
    sealed = seal(odd_project(ws["root"]), ws, "1MB")
    code = (
        "import sys, torch\n"
        "from pipeline.signing.model import Trust\n"
        "from secure_runtime import load_sealed_model\n"
        "trust = Trust(public_keys=(sys.argv[2],))\n"
        "for strategy in ('auto', 'direct', 'ring'):\n"
        "    load_sealed_model(sys.argv[1], trust=trust, strategy=strategy)\n"
        "print('initialised', torch.cuda.is_initialized())\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(sealed), str(ws["public"])],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "initialised False"
