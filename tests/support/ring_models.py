"""Sealed models for the ring loader's tests (CPU and CUDA): odd tensors, shards, damage.

Everything real: ``safetensors`` files, ``seal_model`` with the workspace's KEK and
signer (the ``sealing_workspace`` fixture).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pipeline.sealing._segments import SEGMENT_SIZE_1MB, SEGMENT_SIZE_4KB, Layout
from pipeline.sealing.seal import seal_model
from pipeline.signing.model import Trust

SEGMENTS = {"1MB": SEGMENT_SIZE_1MB, "4KB": SEGMENT_SIZE_4KB}


def odd_project(root: Path) -> Path:
    """~3 MiB in two files, tensors of odd byte lengths and mixed dtypes."""
    project = root / "odd"
    project.mkdir()
    generator = torch.Generator().manual_seed(15)
    save_file({
        "a": torch.rand(517, 1031, generator=generator),  # 2.1 MB: straddles small slots
        "b": torch.rand(4097, generator=generator).to(torch.bfloat16),
        "c": torch.randint(-128, 127, (13,), dtype=torch.int8, generator=generator),
        "d": torch.rand(3, generator=generator, dtype=torch.float64),
        "e": torch.rand(511, 7, generator=generator).to(torch.float16),
    }, str(project / "model.safetensors"))
    save_file({"extra": torch.rand(300_001, generator=generator)},  # 1.2 MB, odd length
              str(project / "extra.safetensors"))
    return project


def seal(project: Path, ws: dict[str, Path], segment: str) -> Path:
    out = ws["root"] / f"{project.name}-{segment}.sealed"
    seal_model(project, out, key="kek", sign_key=ws["private"], segment_size=SEGMENTS[segment])
    return out


def expected_tensors(project: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for path in sorted(project.glob("*.safetensors")):
        tensors.update(load_file(str(path)))
    return tensors


def trust_of(ws: dict[str, Path]) -> Trust:
    return Trust(public_keys=(ws["public"],))


def flip_segment(sealed_file: Path, segment: int, segment_size: int) -> None:
    layout = Layout.for_ciphertext(sealed_file.stat().st_size, segment_size)
    start, _ = layout.ciphertext_bounds(segment)
    data = bytearray(sealed_file.read_bytes())
    data[start + 5] ^= 0x40
    sealed_file.write_bytes(bytes(data))


def sharded_project(root: Path, shards: int = 3) -> tuple[Path, dict[str, torch.Tensor]]:
    """A Hugging Face style sharded checkpoint: model-0000k-of-0000N + the index."""
    project = root / "sharded"
    project.mkdir()
    generator = torch.Generator().manual_seed(3)
    weight_map: dict[str, str] = {}
    everything: dict[str, torch.Tensor] = {}
    for k in range(1, shards + 1):
        name = f"model-{k:05d}-of-{shards:05d}.safetensors"
        tensors = {f"layers.{k}.{j}.weight": torch.rand(97 + j, 33, generator=generator)
                   for j in range(3)}
        tensors[f"layers.{k}.norm"] = torch.rand(33, generator=generator).to(torch.bfloat16)
        save_file(tensors, str(project / name))
        weight_map.update(dict.fromkeys(tensors, name))
        everything.update(tensors)
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size()
                                            for t in everything.values())},
             "weight_map": weight_map}
    (project / "model.safetensors.index.json").write_text(json.dumps(index))
    return project, everything
