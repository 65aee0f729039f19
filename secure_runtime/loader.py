"""Load a sealed model into memory and onto its device; never touch disk with plaintext.

verify (signature, manifest) -> unwrap the data key -> decrypt -> safetensors tensors
as views over the plaintext, on their device. Two ways to decrypt (``strategy``):

* **direct** (the CPU default): each weight file straight into its own final buffer
  (fresh anonymous memory, locked page by page as the decrypting threads fault it in:
  swap, which is disk, never holds plaintext); one pass.
* **ring** (the CUDA default; also runs on the CPU): segment groups decrypt into a
  small ring of pinned host buffers while the previous group copies into one device
  allocation on a CUDA stream (``_ring``). Host plaintext never exceeds the ring.

Key material is zeroed as soon as decryption ends; on any failure every buffer that
held plaintext (host or device) is zeroed before the error leaves, and the error
names the file and segment. Sharded checkpoints (``model-0000k-of-0000N`` + the
``*.safetensors.index.json``) load as several weight files, checked against their
index. How host pages are chosen (no huge-page advice by default, so never a
compaction stall) is ``_hostmem``'s job. A CPU load never calls into ``torch.cuda``
beyond ``resolve_device``'s ``auto``.

The model's code (``model.py``) and configuration come from the same verified,
in-memory copy of the sealed directory: ``build_module`` executes those bytes, it
never re-reads the disk after verification.
"""

from __future__ import annotations

import json
import logging
import os
import time
import types
from collections.abc import Callable
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
from secure_runtime import _hostmem, _ring

#: Below this a weight file goes into an ordinary ``torch.empty`` buffer (malloc'd memory
#: that may already be faulted in); above it, into its own anonymous mapping.
MAPPED_BUFFER_MIN = 8 << 20

log = logging.getLogger("secure_runtime.loader")


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
    """An uninitialised uint8 buffer for plaintext weights; no page is faulted in yet.

    Pinned (page-locked) memory when the weights go to CUDA, so the host-to-device
    copy is a DMA. Otherwise a private anonymous mapping, aligned to a huge page, with
    the huge-page advice of :func:`secure_runtime._hostmem.plan_huge_pages`: by default
    none, since an advised fault with no free huge page compacts memory synchronously
    (seconds on a node whose page cache fills memory). Its pages are faulted in later,
    by the threads that decrypt into them (:func:`buffer_prefaulter`).
    """
    if pin or size < MAPPED_BUFFER_MIN:
        return torch.empty(size, dtype=torch.uint8, pin_memory=pin)
    state = _hostmem.read_thp_state()
    plan = _hostmem.plan_huge_pages(size, state, _hostmem.MODE)
    huge_page = state.huge_page_size if state is not None else 2 << 20
    mapped = _hostmem.anonymous_buffer(size, plan, huge_page)
    log.debug("host buffer of %d bytes: %d bytes advised huge pages (%s)",
              size, min(plan.huge_bytes, size), plan.reason)
    # frombuffer keeps a reference to the mapping for as long as the tensor lives.
    return torch.frombuffer(mapped.mapping, dtype=torch.uint8, count=size, offset=mapped.offset)


def buffer_prefaulter(buffer: torch.Tensor) -> Callable[[int, int], None] | None:
    """What the decrypting threads call to fault in the part of ``buffer`` they write next.

    For a buffer from :func:`host_buffer` without ``pin`` (pinned memory is faulted and
    locked by the CUDA allocator already: the caller passes none for it). None for small
    buffers (not worth a system call per chunk).
    """
    size = buffer.numel()
    if size < MAPPED_BUFFER_MIN:
        return None
    return _hostmem.prefaulter(buffer.data_ptr(), size)


def lock_as_faulted(buffer: torch.Tensor) -> tuple[int, int] | None:
    """Lock a fresh :func:`host_buffer`'s pages as they fault in; its range, or None.

    Only for the mapped buffers (small ones are malloc'd memory shared with other
    objects: the final ``lock_tensors`` locks them).
    """
    if buffer.device.type != "cpu" or buffer.numel() < MAPPED_BUFFER_MIN:
        return None
    return _hostmem.lock_as_faulted(buffer.data_ptr(), buffer.numel())


def _decrypt_weights(
    opened: OpenedModel, data_key: bytearray, threads: int | None
) -> tuple[dict[str, torch.Tensor], dict[str, str], list[torch.Tensor]]:
    """The direct CPU path: each file decrypted straight into its own final host buffer.

    Each buffer is locked before decryption faults it in (where the kernel permits).
    """
    tensors: dict[str, torch.Tensor] = {}
    origins: dict[str, str] = {}
    buffers: list[torch.Tensor] = []
    try:
        for entry in opened.manifest.sealed_files:
            buffer = host_buffer(entry.size)
            buffers.append(buffer)
            lock_as_faulted(buffer)
            view = _ring.byte_view(buffer) if entry.size else memoryview(bytearray())
            decrypt_file_into(opened, entry, data_key, view, threads=threads,
                              prefault=buffer_prefaulter(buffer))
            header = parse_header(view)
            for name, tensor in tensors_from_buffer(buffer, header).items():
                if name in tensors:
                    raise InputError(f"tensor {name!r} appears in more than one weight file")
                tensors[name] = tensor
                origins[name] = entry.path
    except BaseException:
        for buffer in buffers:
            buffer.zero_()
        raise
    return tensors, origins, buffers


def _decrypt_pipelined(
    opened: OpenedModel, data_key: bytearray, device: str, threads: int | None,
    ring: _ring.RingConfig | None,
) -> tuple[dict[str, torch.Tensor], dict[str, str], list[torch.Tensor]]:
    """The ring path (``_ring``): one destination on ``device``, host plaintext = the ring."""
    _, total = _ring.layout(opened.manifest.sealed_files)
    copier = _ring.new_copier(device, total, host_buffer)
    tensors, origins = _ring.decrypt_through_ring(opened, data_key, copier, ring=ring,
                                                  threads=threads)
    return tensors, origins, [copier.destination]


def check_shard_index(opened: OpenedModel, origins: dict[str, str]) -> None:
    """A sharded checkpoint's ``*.safetensors.index.json`` must describe the shards loaded.

    Hugging Face writes ``model.safetensors.index.json`` beside ``model-0000k-of-0000N``
    shards: ``weight_map`` names the shard of every tensor. The shards are what is
    loaded; the index (verified like every file) must agree with them exactly, so a
    model is never served with a tensor missing or taken from another shard than the
    one its index names. ``origins`` maps each loaded tensor to its weight file.
    """
    shards = {entry.path for entry in opened.manifest.sealed_files}
    for name, raw in sorted(opened.files.items()):
        if not name.endswith(".safetensors.index.json"):
            continue
        try:
            index = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise InputError(f"{name}: invalid JSON: {exc}") from None
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not all(
            isinstance(v, str) for v in weight_map.values()
        ):
            raise InputError(f"{name}: weight_map must map tensor names to shard files")
        folder = name.rsplit("/", 1)[0] + "/" if "/" in name else ""
        expected = {tensor: folder + shard for tensor, shard in weight_map.items()}
        absent = sorted(set(expected.values()) - shards)
        if absent:
            raise InputError(f"{name}: names shards not in the model: {', '.join(absent)}")
        wrong = sorted(t for t, shard in expected.items() if origins.get(t) != shard)
        if wrong:
            raise InputError(f"{name}: tensors not in the shard it names: {', '.join(wrong[:5])}")
        listed = set(expected.values())
        extra = sorted(t for t, origin in origins.items() if origin in listed and t not in expected)
        if extra:
            raise InputError(
                f"{name}: shards hold tensors it does not list: {', '.join(extra[:5])}")


#: How the weights get to their device (``load_sealed_model``'s ``strategy``).
STRATEGIES = ("auto", "direct", "ring")


def load_sealed_model(
    path: str | os.PathLike[str],
    *,
    device: str = "cpu",
    trust: Trust | None = None,
    allow_unsigned: bool = False,
    settings: Settings | None = None,
    threads: int | None = None,
    strategy: str = "auto",
    ring: _ring.RingConfig | None = None,
) -> LoadedModel:
    """Verify, unwrap, decrypt in memory and place every tensor of a sealed model on ``device``.

    ``strategy``: ``direct`` decrypts each file straight into its final host buffer
    (CPU only: the fastest CPU load, one pass); ``ring`` pipelines decryption into a
    small ring of host buffers with the copy into one ``device`` allocation (the CUDA
    path; on the CPU the same pipeline with a memcpy, for tests and the benchmark);
    ``auto`` is ``direct`` on the CPU and ``ring`` on CUDA. ``ring`` sizes the ring.
    """
    started = time.perf_counter()
    device = resolve_device(device)
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown load strategy {strategy!r} (use {', '.join(STRATEGIES)})")
    if strategy == "auto":
        strategy = "direct" if device == "cpu" else "ring"
    if strategy == "direct" and device != "cpu":
        raise ConfigError(f"load strategy 'direct' is for the CPU, not {device!r}")
    settings = settings or load_settings()
    opened = open_sealed(path, trust=trust, allow_unsigned=allow_unsigned, settings=settings)
    project = _project(opened)
    data_key = unwrap_data_key(opened, settings)
    decrypt_started = time.perf_counter()
    try:
        if strategy == "direct":
            tensors, origins, buffers = _decrypt_weights(opened, data_key, threads)
        else:
            tensors, origins, buffers = _decrypt_pipelined(opened, data_key, device, threads,
                                                           ring)
    finally:
        zero(data_key)
    decrypt_seconds = time.perf_counter() - decrypt_started
    try:
        check_shard_index(opened, origins)
    except BaseException:
        for buffer in buffers:  # host or device: a refused model leaves no plaintext
            buffer.zero_()
        tensors.clear()
        raise
    timings = dict(opened.timings)
    timings["decrypt"] = decrypt_seconds
    timings["to_device"] = 0.0  # the ring's copies overlap decryption (counted there)
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
        host_buffers=[b for b in buffers if b.device.type == "cpu"],
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
    module: torch.nn.Module = factory(config)
    load_weights = getattr(module, "load_weights", None)
    if callable(load_weights):
        load_weights(model.tensors)
    else:
        try:
            module.load_state_dict(model.tensors, strict=True, assign=True)
        except RuntimeError as exc:
            raise InputError(f"weights do not fit the model: {exc}") from None
    module.to(model.device)
    module.eval()
    return module

