"""Loading the one model the data plane serves: source → verified engine, warm.

The model source is a local sealed directory or an OCI reference (pulled to a temporary
directory as ciphertext, removed after the load). The order inside :func:`load_engine`
is part of the security argument: verify → unwrap → decrypt → device, then scrub key
material from the environment, build the module from the verified code, zero the
decrypted host buffers the module copied, mlock what stays, warm up once. Nothing here
knows about HTTP or gRPC; start-up (:mod:`secure_runtime.startup`) runs it in the
background and registers the result with the data plane.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import ConfigError
from secure_runtime.config import RuntimeConfig
from secure_runtime.dataplane import DataPlane

if TYPE_CHECKING:
    from secure_runtime.inference import InferenceEngine

log = logging.getLogger("secure_runtime")


def looks_like_oci_reference(model: str) -> bool:
    """``registry/repo:tag`` or ``...@sha256:`` that is not an existing local path.

    A reference by digest is always one, even where a local path of that name exists:
    the admission webhook verified the artifact under that digest in the registry, so
    the runtime must load exactly that (a directory baked into the image under the
    same name would be a different model than the one admitted).
    """
    if "@sha256:" in model and not model.startswith((".", "/", "~")):
        return True
    if os.path.exists(model) or model.startswith((".", "/", "~")):
        return False
    return "/" in model and (":" in model.rsplit("/", 1)[-1] or "@" in model)


def check_model_reference(config: RuntimeConfig) -> None:
    """Fail closed on a tag-only OCI reference: a tag can be moved after signing.

    The signature still binds the content, but pinning a digest is what makes the
    deployment reproducible and lets admission policy reason about it; tags need
    ``--allow-tag`` (``SECURE_RUNTIME_ALLOW_TAG=1``).
    """
    if looks_like_oci_reference(config.model) and "@" not in config.model and not config.allow_tag:
        raise ConfigError(
            f"model reference {config.model!r} has no digest: pin it as "
            "REGISTRY/REPO@sha256:<64 hex>, or pass --allow-tag to accept a tag"
        )


def _pull(reference: str, config: RuntimeConfig, workdir: Path) -> Path:
    try:
        from pipeline.oci.registry import RegistryOptions
        from pipeline.sealing.artifact import pull_sealed_model
    except ImportError as exc:
        raise ConfigError(f"cannot pull {reference}: OCI support is not installed ({exc})"
                          ) from None
    options = RegistryOptions(insecure=config.registry_insecure, ca_file=config.registry_ca_file)
    log.info("pulling sealed model %s", reference)
    # The signature is verified when the model is opened (load_sealed_model), not here.
    path: Path = pull_sealed_model(reference, workdir / "model", registry_options=options)
    return path


def _release_copied_buffers(loaded: Any, module: Any) -> None:
    """Zero and drop decrypted host buffers the module did not adopt (it copied them)."""
    import torch

    used: list[tuple[int, int]] = []
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.device.type == "cpu":
            storage = tensor.untyped_storage()
            used.append((storage.data_ptr(), storage.data_ptr() + storage.nbytes()))
    kept: list[torch.Tensor] = []
    for buffer in getattr(loaded, "host_buffers", []) or []:
        start, end = buffer.data_ptr(), buffer.data_ptr() + buffer.numel()
        if any(s < end and start < e for s, e in used):
            kept.append(buffer)
        else:
            buffer.zero_()
    if hasattr(loaded, "host_buffers"):
        loaded.host_buffers = kept
    loaded.tensors = {}


def load_engine(config: RuntimeConfig, plane: DataPlane) -> InferenceEngine:
    """verify -> unwrap -> decrypt -> device -> scrub env -> build -> mlock -> warm up."""
    from pipeline.config import load_settings
    from secure_runtime import loader as loader_module
    from secure_runtime.hardening import lock_tensors, scrub_environment
    from secure_runtime.inference import InferenceEngine

    started = time.perf_counter()
    workdir: Path | None = None
    try:
        source = Path(config.model).expanduser()
        if looks_like_oci_reference(config.model):
            workdir = Path(tempfile.mkdtemp(prefix="secure-runtime-"))
            source = _pull(config.model, config, workdir)
        trust = None
        if config.trust:
            from pipeline.signing.model import Trust

            trust = Trust(public_keys=tuple(config.trust))
        settings = load_settings(config.pipeline_config)
        if config.key_file is not None:
            # A Kubernetes Secret volume exposes files as symlinks into ..data/; the
            # local key provider opens with O_NOFOLLOW, so hand it the real file.
            settings = replace(settings, keyring=Path(os.path.realpath(config.key_file)))
        try:
            loaded = loader_module.load_sealed_model(
                source,
                device=config.device,
                trust=trust,
                allow_unsigned=config.allow_unsigned,
                settings=settings,
            )
        finally:
            removed = scrub_environment()
        if removed:
            log.info("removed key material from the environment: %s", ", ".join(removed))
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    timings = dict(loaded.timings)
    build_started = time.perf_counter()
    code = loader_module.load_project_code(loaded)
    module = loader_module.build_module(loaded, code)
    engine = InferenceEngine(loaded, module, code)
    _release_copied_buffers(loaded, module)
    timings["build"] = time.perf_counter() - build_started
    weights = [*module.parameters(), *module.buffers(), *getattr(loaded, "host_buffers", [])]
    report = lock_tensors(weights)
    metrics = plane.metrics
    metrics.weights_bytes.set(sum(p.numel() * p.element_size() for p in module.parameters()))
    metrics.mlocked_bytes.set(report.locked_bytes)
    metrics.mlock_complete.set(1 if report.complete else 0)
    if report.error:
        log.warning("weights are NOT locked in memory: %s", report.error)
    else:
        log.info("weights locked in memory: %d bytes", report.locked_bytes)
    if config.warmup:
        warm_started = time.perf_counter()
        engine.warm_up()
        timings["warmup"] = time.perf_counter() - warm_started
    timings["total"] = time.perf_counter() - started
    metrics.record_load(timings)
    metrics.signature_verified.set(1 if getattr(loaded, "signature_verified", False) else 0)
    plane.load_report = {
        "model": engine.name,
        "device": engine.device,
        "signature_verified": bool(getattr(loaded, "signature_verified", False)),
        "manifest_sha256": getattr(loaded, "manifest_sha256", ""),
        "timings": timings,
        "mlocked_bytes": report.locked_bytes,
        "mlock_error": report.error,
    }
    return engine


__all__ = ["check_model_reference", "load_engine", "looks_like_oci_reference"]
