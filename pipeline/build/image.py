"""``pipeline build``: three cached layers, a lint, and an OCI image in a layout.

Why the order of steps: every layer is built (or found in the cache by its inputs) and
the whole image is linted *before* anything is written to the output layout, so a
refused image never appears there. Config and manifest are JSON with sorted keys and
times from ``SOURCE_DATE_EPOCH`` (else the project's last commit, else 0 — never the
clock), so the same inputs give the same manifest digest on any machine.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline._fileio import write_atomic
from pipeline.build import wheels
from pipeline.build._tarlayer import DIR, Entry
from pipeline.build.app import LIB_DIR, MODEL_DIR, app_entries, entries_digest, runtime_requirements
from pipeline.build.base import BASE_FORMAT, NONROOT_UID, base_entries
from pipeline.build.base_lock import lock_path
from pipeline.build.bytecode import BYTECODE_FORMAT, bytecode_entries
from pipeline.build.cache import CachedLayer, LayerCache
from pipeline.build.debian import DebianLock, fetch_debs, load_lock
from pipeline.build.lint import IndexEntry, enforce, lint_image
from pipeline.build.project import ProjectSpec, load_project
from pipeline.build.source import network_remote
from pipeline.errors import BuildError, ConfigError
from pipeline.oci import media_types as mt
from pipeline.oci.layout import OCILayout

#: progress(message, done=None, total=None): the CLI turns it into rich progress bars.
Progress = Callable[..., None]
ANNOTATION_PREFIX = "io.secure-model-pipeline"
PLATFORM = {"architecture": "amd64", "os": "linux"}


@dataclass(frozen=True)
class LayerResult:
    """One layer of a build: what it is, its digests, and whether the cache supplied it."""

    name: str
    digest: str
    diff_id: str
    size: int
    cached: bool

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "digest": self.digest, "diff_id": self.diff_id,
                "size": self.size, "cached": self.cached}


@dataclass(frozen=True)
class BuildResult:
    """The built image: manifest digest, its layers, where and under which tag it is."""

    digest: str
    config_digest: str
    layers: tuple[LayerResult, ...]
    layout: Path
    tag: str

    @property
    def size(self) -> int:
        """Compressed size of all layers (what a pull transfers, config aside)."""
        return sum(layer.size for layer in self.layers)

    def to_dict(self) -> dict[str, Any]:
        return {"digest": self.digest, "config": self.config_digest, "tag": self.tag,
                "layout": str(self.layout), "size": self.size,
                "layers": [layer.to_dict() for layer in self.layers]}


def _quiet(*_args: Any, **_kwargs: Any) -> None:
    return None


# -- python lock ----------------------------------------------------------------------------
def ensure_python_lock(spec: ProjectSpec, *, frozen: bool = False) -> str:
    """The project's python lock text; (re)resolved and written when missing or stale.

    Stale means its recorded requirements or target differ from what pipeline.yaml asks
    for now, or its torch is not the build ``runtime.torch`` asks for (a CPU lock for a
    CUDA runtime: the target line records requirements, not the torch mode). With
    ``frozen`` (CI), a missing or stale lock is a BuildError instead; so is a resolution
    that cannot give the torch build asked for (nothing is written then).
    """
    requirements = runtime_requirements(spec)
    wanted = wheels.target_line(requirements)
    try:
        text = spec.lock_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = None
    mismatch = ""
    if text is not None and wheels.recorded_target(text) == wanted:
        try:
            wheels.check_torch(wheels.parse_python_lock(text), spec.torch, str(spec.lock_path))
            return text
        except BuildError as exc:
            mismatch = str(exc)
    if frozen:
        if mismatch:
            raise BuildError(f"{mismatch}; the lock is stale")
        state = "missing" if text is None else "stale (pipeline.yaml changed)"
        raise BuildError(f"{spec.lock_path}: python lock is {state}; run 'pipeline lock deps'")
    text = wheels.format_python_lock(wheels.resolve(requirements, spec.torch), requirements)
    write_atomic(spec.lock_path, text)
    return text


# -- time and provenance ------------------------------------------------------------------
def _git(root: Path, *args: str) -> str:
    try:
        proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""


def _in_git(root: Path) -> bool:
    return _git(root, "rev-parse", "--is-inside-work-tree") == "true"


def created_epoch(root: Path) -> int:
    """``SOURCE_DATE_EPOCH``, else the project's last commit time, else 0."""
    from pipeline.config import load_settings

    env = load_settings().build().source_date_epoch
    if env:
        if not env.isdigit():
            raise ConfigError(f"SOURCE_DATE_EPOCH must be an integer, got {env!r}")
        return int(env)
    if _in_git(root):
        stamp = _git(root, "log", "-1", "--format=%ct", "--", ".")
        if stamp.isdigit():
            return int(stamp)
    return 0


def _rfc3339(epoch: int) -> str:
    return _dt.datetime.fromtimestamp(epoch, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def annotations(spec: ProjectSpec, created: str, base_lock: str, python_lock: str) -> dict:
    """OCI annotations for labels and manifest: time, title, git revision/source/path, locks."""
    out = {
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.title": spec.name,
        f"{ANNOTATION_PREFIX}.base-lock": base_lock,
        f"{ANNOTATION_PREFIX}.python-lock": python_lock,
        # All three layers carry their modules' bytecode (base: the standard library).
        mt.LABEL_BYTECODE: BYTECODE_FORMAT,
    }
    if _in_git(spec.root):
        revision = _git(spec.root, "rev-parse", "HEAD")
        # Only a remote others can reach, without credentials: a local path would name
        # the builder's disk (see pipeline.build.source).
        source = network_remote(_git(spec.root, "config", "--get", "remote.origin.url"))
        if revision:
            out["org.opencontainers.image.revision"] = revision
            out[f"{ANNOTATION_PREFIX}.source-path"] = (
                _git(spec.root, "rev-parse", "--show-prefix").rstrip("/") or ".")
        if source:
            out["org.opencontainers.image.source"] = source
    return out


# -- config -----------------------------------------------------------------------------------
def _entrypoint(spec: ProjectSpec) -> list[str]:
    argv = list(spec.entrypoint)
    if argv[0] in ("python3", "python"):
        argv[0] = "/usr/bin/python3"
    return argv


def image_env(spec: ProjectSpec) -> list[str]:
    """Runtime environment: fixed defaults (read-only root, UTC, CA bundle), project's last."""
    env = {
        "PATH": "/usr/bin",
        "HOME": "/home/nonroot",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": f"/{MODEL_DIR}:/{LIB_DIR}",
        "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
        "TZ": "UTC",
    }
    if spec.torch == "cuda":
        env["NVIDIA_VISIBLE_DEVICES"] = "all"
        env["NVIDIA_DRIVER_CAPABILITIES"] = "compute,utility"
    env.update(dict(spec.env))
    return [f"{k}={v}" for k, v in env.items()]


def image_config(
    spec: ProjectSpec, created: str, labels: dict, layers: list[tuple[str, CachedLayer, str]]
) -> dict[str, Any]:
    """The OCI image config: nonroot user, entrypoint, env, labels, diff_ids, history."""
    return {
        **PLATFORM,
        "created": created,
        "config": {
            "User": f"{NONROOT_UID}:{NONROOT_UID}",
            "Entrypoint": _entrypoint(spec),
            "Env": image_env(spec),
            "WorkingDir": f"/{MODEL_DIR}",
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for _, layer, _ in layers]},
        "history": [
            {"created": created, "created_by": f"pipeline build: {name}", "comment": comment}
            for name, _, comment in layers
        ],
    }


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


# -- layers ---------------------------------------------------------------------------------
def _byte_progress(say: Progress, message: str, total: int) -> Callable[[int], None]:
    step = max(total // 100, 1 << 20)
    state = {"next": 0}

    def report(done: int) -> None:
        if done >= state["next"]:
            state["next"] = done + step
            say(message, min(done, total), total)

    return report


def _total(entries: list[Entry]) -> int:
    return sum(e.size() + 512 for e in entries)


def _cached(cache: LayerCache, key: str, no_cache: bool) -> CachedLayer | None:
    return None if no_cache else cache.get(key)


def _base_layer(
    cache: LayerCache, lock: DebianLock, no_cache: bool, say: Progress
) -> tuple[CachedLayer, bool]:
    key = _key(BASE_FORMAT, BYTECODE_FORMAT, lock.digest())
    hit = _cached(cache, key, no_cache)
    if hit:
        return hit, True
    debs = fetch_debs(lock, say)
    entries = base_entries(lock, debs, say)
    with tempfile.TemporaryDirectory(prefix="pipeline-base-") as tmp:
        # The standard library's bytecode too: the deps and app layers have theirs, and
        # with all three the deploy need not compile anything (see BYTECODE_LABEL).
        say(f"compiling bytecode for {sum(e.path.endswith('.py') for e in entries)} modules")
        entries += bytecode_entries(entries, Path(tmp))
        progress = _byte_progress(say, "compressing base", _total(entries))
        return cache.build(key, entries, progress), False


def _deps_layer(
    cache: LayerCache, pinned: tuple[wheels.PinnedWheel, ...], no_cache: bool, say: Progress
) -> tuple[CachedLayer, bool]:
    key = wheels.lock_key(pinned)
    hit = _cached(cache, key, no_cache)
    if hit:
        return hit, True
    say(f"installing {len(pinned)} python packages")
    with tempfile.TemporaryDirectory(prefix="pipeline-deps-") as tmp:
        target = Path(tmp) / "site"
        wheels.install(pinned, target)
        entries = [Entry(wheels.SITE_DIR, DIR, 0o755), *wheels.site_entries(target)]
        say(f"compiling bytecode for {sum(e.path.endswith('.py') for e in entries)} modules")
        entries += bytecode_entries(entries, Path(tmp) / "bytecode")
        progress = _byte_progress(say, "compressing python packages", _total(entries))
        return cache.build(key, entries, progress), False


def _app_layer(cache: LayerCache, spec: ProjectSpec, no_cache: bool) -> tuple[CachedLayer, bool]:
    entries = app_entries(spec)
    key = _key("app-v2", BYTECODE_FORMAT, entries_digest(entries))
    hit = _cached(cache, key, no_cache)
    if hit:
        return hit, True
    with tempfile.TemporaryDirectory(prefix="pipeline-app-") as tmp:
        entries += bytecode_entries(entries, Path(tmp))
        return cache.build(key, entries), False


def _key(*parts: str) -> str:
    return "sha256:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()


# -- the build ------------------------------------------------------------------------------
def build_image(
    project_dir: Path,
    out: Path,
    *,
    tag: str = "latest",
    no_cache: bool = False,
    frozen: bool = False,
    base_lock: Path | None = None,
    progress: Progress | None = None,
) -> BuildResult:
    """Build ``project_dir``'s image into the OCI layout ``out``; returns its manifest digest.

    ``base_lock`` overrides the Debian lock (else ``$PIPELINE_BASE_LOCK``, else the
    committed one): see :mod:`pipeline.build.base_lock` for why.
    """
    say = progress or _quiet
    spec = load_project(Path(project_dir))
    debian_lock = load_lock(lock_path(base_lock))
    say("checking the python lock")
    lock_text = ensure_python_lock(spec, frozen=frozen)
    pinned = wheels.parse_python_lock(lock_text)
    wheels.check_torch(pinned, spec.torch, str(spec.lock_path))
    cache = LayerCache()

    say("base layer")
    base, base_hit = _base_layer(cache, debian_lock, no_cache, say)
    say("python dependencies layer")
    deps, deps_hit = _deps_layer(cache, pinned, no_cache, say)
    say("app layer")
    app, app_hit = _app_layer(cache, spec, no_cache)

    created = _rfc3339(created_epoch(spec.root))
    python_lock = "sha256:" + hashlib.sha256(lock_text.encode()).hexdigest()
    labels = annotations(spec, created, debian_lock.digest(), python_lock)
    layers = [
        ("base", base,
         f"{len(debian_lock.packages)} Debian packages, lock {debian_lock.digest()}"),
        ("python dependencies", deps, f"{len(pinned)} wheels, lock {python_lock}"),
        ("app", app, f"project {spec.name} at /{MODEL_DIR}"
                     + (f", secure_runtime at /{LIB_DIR}" if spec.uses_secure_runtime else "")),
    ]
    config = image_config(spec, created, labels, layers)

    say("linting the image")
    enforce(lint_image([[IndexEntry(*i) for i in layer.index] for _, layer, _ in layers], config))

    say("writing the OCI layout")
    layout = OCILayout.create(out)
    for _, layer, _ in layers:
        if not layout.has_blob(layer.digest):
            layout.write_blob_file(layer.blob, expected=layer.digest)
    config_blob = _dumps(config)
    config_descriptor = layout.write_blob(config_blob, mt.OCI_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": config_descriptor,
        "layers": [
            {"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}
            for _, layer, _ in layers
        ],
        "annotations": labels,
    }
    digest = layout.add_manifest(_dumps(manifest), mt.OCI_MANIFEST, tag=tag, platform=PLATFORM)
    hits = (base_hit, deps_hit, app_hit)
    return BuildResult(
        digest=digest,
        config_digest=config_descriptor["digest"],
        layers=tuple(
            LayerResult(name, layer.digest, layer.diff_id, layer.size, hit)
            for (name, layer, _), hit in zip(layers, hits, strict=True)
        ),
        layout=Path(out),
        tag=tag,
    )
