"""Load a sealed model into memory and onto its device; never touch disk with plaintext.

verify (signature, manifest) -> unwrap the data key -> decrypt each weight file
into one preallocated buffer (uninitialised ``torch.empty``; pinned when the
target is CUDA so the copy to the GPU is a DMA) -> safetensors tensors as views
over that buffer -> to the device. Key material is zeroed as soon as decryption
ends; host plaintext is zeroed once the tensors live on the GPU.

The model's code (``model.py``) and configuration come from the same verified,
in-memory copy of the sealed directory: ``build_module`` executes those bytes, it
never re-reads the disk after verification.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import time
import types
from dataclasses import dataclass, field
from typing import Any

import torch
import yaml

from pipeline.config import Settings, load_settings
from pipeline.errors import ConfigError, InputError
from pipeline.sealing.open import (
    OpenedModel,
    decrypt_file_into,
    open_sealed,
    unwrap_data_key,
    zero,
)
from pipeline.sealing.safetensors_buffer import parse_header, tensors_from_buffer
from pipeline.signing.model import Trust

HUGE_BUFFER_MIN = 8 << 20


@dataclass
class LoadedModel:
    """Weights on their device plus the verified project files to build the module."""

    name: str
    tensors: dict[str, torch.Tensor]
    project: dict[str, Any]
    files: dict[str, bytes]
    timings: dict[str, float]
    device: str
    manifest_sha256: str = ""
    signature_verified: bool = False
    host_buffers: list[torch.Tensor] = field(default_factory=list, repr=False)


def resolve_device(device: str) -> str:
    """``auto`` picks CUDA when present; asking for CUDA without it is a config error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"unknown device {device!r} (use cpu, cuda, cuda:N or auto)")
    return device


def _project(opened: OpenedModel) -> dict[str, Any]:
    raw = opened.files.get("pipeline.yaml")
    if raw is None:
        return {"name": opened.manifest.name}
    try:
        data = yaml.safe_load(raw.decode("utf-8")) or {}
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"pipeline.yaml in the sealed model is invalid: {exc}") from None
    if not isinstance(data, dict):
        raise InputError("pipeline.yaml in the sealed model must be a mapping")
    return data


def host_buffer(size: int, *, pin: bool = False) -> torch.Tensor:
    """An uninitialised uint8 buffer for plaintext weights, cheap to fault in.

    Page faults dominate filling fresh memory here (~0.5 ms per MiB with 4 KiB
    pages); an anonymous mapping advised ``MADV_HUGEPAGE`` faults in 2 MiB pages,
    4-5x faster. Pinned (page-locked) memory is used instead when the weights go to
    CUDA, so the host-to-device copy is a DMA.
    """
    if pin or size < HUGE_BUFFER_MIN:
        return torch.empty(size, dtype=torch.uint8, pin_memory=pin)
    mapped = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    with contextlib.suppress(AttributeError, OSError):
        mapped.madvise(mmap.MADV_HUGEPAGE)
    # frombuffer keeps a reference to the mapping for as long as the tensor lives.
    return torch.frombuffer(mapped, dtype=torch.uint8)


def _decrypt_weights(
    opened: OpenedModel, data_key: bytearray, device: str, threads: int | None
) -> tuple[dict[str, torch.Tensor], list[torch.Tensor], float]:
    pin = device.startswith("cuda")
    tensors: dict[str, torch.Tensor] = {}
    buffers: list[torch.Tensor] = []
    started = time.perf_counter()
    try:
        for entry in opened.manifest.sealed_files:
            buffer = host_buffer(entry.size, pin=pin)
            buffers.append(buffer)
            view = memoryview(buffer.numpy()) if entry.size else memoryview(bytearray())
            decrypt_file_into(opened, entry, data_key, view, threads=threads)
            header = parse_header(view)
            for name, tensor in tensors_from_buffer(buffer, header).items():
                if name in tensors:
                    raise InputError(f"tensor {name!r} appears in more than one weight file")
                tensors[name] = tensor
    except BaseException:
        for buffer in buffers:
            buffer.zero_()
        raise
    return tensors, buffers, time.perf_counter() - started


def load_sealed_model(
    path: str | os.PathLike[str],
    *,
    device: str = "cpu",
    trust: Trust | None = None,
    allow_unsigned: bool = False,
    settings: Settings | None = None,
    threads: int | None = None,
) -> LoadedModel:
    """Verify, unwrap, decrypt in memory and place every tensor of a sealed model on ``device``."""
    started = time.perf_counter()
    device = resolve_device(device)
    settings = settings or load_settings()
    opened = open_sealed(path, trust=trust, allow_unsigned=allow_unsigned, settings=settings)
    project = _project(opened)
    data_key = unwrap_data_key(opened, settings)
    try:
        tensors, buffers, decrypt_seconds = _decrypt_weights(opened, data_key, device, threads)
    finally:
        zero(data_key)
    to_device_started = time.perf_counter()
    if device != "cpu":
        tensors = {k: v.to(device, non_blocking=True) for k, v in tensors.items()}
        torch.cuda.synchronize()
        for buffer in buffers:
            buffer.zero_()
        buffers = []
    timings = dict(opened.timings)
    timings["decrypt"] = decrypt_seconds
    timings["to_device"] = time.perf_counter() - to_device_started
    timings["total"] = time.perf_counter() - started
    name = project.get("name") if isinstance(project.get("name"), str) else opened.manifest.name
    return LoadedModel(
        name=name or opened.manifest.name,
        tensors=tensors,
        project=project,
        files=opened.files,
        timings=timings,
        device=device,
        manifest_sha256=opened.manifest_sha256,
        signature_verified=opened.signature_verified,
        host_buffers=buffers,
    )


def load_sealed(
    path: str | os.PathLike[str],
    *,
    device: str = "cpu",
    trust: Trust | None = None,
    allow_unsigned: bool = False,
    settings: Settings | None = None,
) -> dict[str, torch.Tensor]:
    """The weights of a sealed model, verified and decrypted in memory, on ``device``.

    ``trust`` names the signers to accept; with ``None`` the configured trust
    (``$PIPELINE_TRUST`` or pipeline.yaml ``trust.public_keys``) applies, and with
    none configured the load is refused unless ``allow_unsigned=True``.
    """
    return load_sealed_model(
        path, device=device, trust=trust, allow_unsigned=allow_unsigned, settings=settings
    ).tensors


def _model_section(model: LoadedModel) -> dict[str, Any]:
    section = model.project.get("model")
    if not isinstance(section, dict):
        raise ConfigError("pipeline.yaml of the sealed model has no 'model' section")
    return section


def load_project_code(model: LoadedModel) -> types.ModuleType:
    """Execute the verified ``model.py`` bytes as a fresh module (never re-read from disk)."""
    section = _model_section(model)
    module_file = section.get("module", "model.py")
    source = model.files.get(module_file)
    if source is None:
        raise ConfigError(f"sealed model has no module file {module_file!r}")
    module = types.ModuleType(f"sealed_model_{model.name}")
    module.__file__ = f"<sealed:{model.name}/{module_file}>"
    exec(compile(source, module.__file__, "exec"), module.__dict__)  # noqa: S102 - signed code
    return module


def build_module(model: LoadedModel, code: types.ModuleType | None = None) -> torch.nn.Module:
    """Build the project's module from verified code and config, load weights, ``eval()``."""
    section = _model_section(model)
    code = code or load_project_code(model)
    factory = getattr(code, section.get("factory", "build_model"), None)
    if not callable(factory):
        raise ConfigError(f"model module has no factory {section.get('factory', 'build_model')!r}")
    config: dict[str, Any] = {}
    config_name = section.get("config")
    if config_name:
        raw = model.files.get(config_name)
        if raw is None:
            raise ConfigError(f"sealed model has no config file {config_name!r}")
        try:
            config = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, a 5000-digit integer
            raise InputError(f"{config_name}: invalid JSON: {exc}") from None
    module = factory(config)
    if hasattr(module, "load_weights"):
        module.load_weights(model.tensors)
    else:
        try:
            module.load_state_dict(model.tensors, strict=True, assign=True)
        except RuntimeError as exc:
            raise InputError(f"weights do not fit the model: {exc}") from None
    module.to(model.device)
    module.eval()
    return module

