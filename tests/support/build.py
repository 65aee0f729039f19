"""Shared fixtures of the build and scan integration tests: one base build per session.

The committed Debian lock is used while apt can still fetch every pinned version (or the
.deb cache holds it); once the mirror has moved on, the session resolves a fresh lock into
its tmp dir and warns, so CI stays green and says what to regenerate.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PROJECT = Path(__file__).resolve().parents[1] / "fixtures" / "build_project"
TINY = Path(__file__).resolve().parents[2] / "examples" / "tiny"
EPOCH = "1700000000"
_ENV_KEYS = ("PIPELINE_LAYER_CACHE", "SOURCE_DATE_EPOCH", "PIPELINE_BASE_LOCK")


class StaleBaseLockWarning(UserWarning):
    """The committed Debian lock pins versions apt no longer offers."""


@dataclass
class Built:
    project: Path
    layout: Path
    digest: str
    layers: tuple


def for_umoci(layout: Path, dest: Path, tag: str = "latest") -> Path:
    """``layout``'s image ``tag`` with gzip layers, in a new layout at ``dest``, for umoci.

    Why: images are built with zstd layers and umoci 0.4.7 (Debian's) reads only gzip.
    skopeo, i.e. containers/image, the library CRI-O pulls with, decodes the zstd layers
    and writes them again as gzip: an independent decoder, so a test that unpacks with
    umoci still trusts nothing of ours to read the image.
    """
    subprocess.run(["skopeo", "copy", "--dest-compress", "--dest-compress-format", "gzip",
                    "--dest-compress-level", "1", f"oci:{layout}:{tag}", f"oci:{dest}:{tag}"],
                   check=True, capture_output=True, timeout=900)
    return dest


def copy_project(dest: Path) -> Path:
    shutil.copytree(PROJECT, dest)
    return dest


def session_base_lock(
    tmp_dir: Path,
    committed: Path | None = None,
    resolve: Callable[[], Any] | None = None,
) -> Path:
    """The committed lock if every pinned package can still be fetched, else a fresh one.

    A fresh lock is resolved from apt's lists into ``tmp_dir`` (what ``pipeline lock base``
    does) and a :class:`StaleBaseLockWarning` names the packages that moved on.
    ``committed`` and ``resolve`` default to the builder's lock and apt resolution.
    """
    from pipeline.build.base_lock import unavailable
    from pipeline.build.debian import DEFAULT_LOCK, load_lock, resolve_closure, write_lock

    committed = committed or DEFAULT_LOCK
    gone = unavailable(load_lock(committed))
    if not gone:
        return committed
    fresh = tmp_dir / "debian-base.lock"
    write_lock((resolve or resolve_closure)(), fresh)
    names = ", ".join(f"{p.name}={p.version}" for p in gone)
    warnings.warn(
        StaleBaseLockWarning(
            f"the committed Debian lock {committed} is stale (apt no longer offers {names}); "
            f"this session builds with a fresh lock at {fresh}. Regenerate the committed one "
            "with 'pipeline lock base' and commit it."
        ),
        stacklevel=1,
    )
    return fresh


@pytest.fixture(scope="session")
def build_env(tmp_path_factory: pytest.TempPathFactory):
    """A session layer cache, a fixed SOURCE_DATE_EPOCH and a buildable Debian lock (the
    .deb cache is shared)."""
    saved = {k: os.environ.get(k) for k in _ENV_KEYS}
    os.environ["PIPELINE_LAYER_CACHE"] = str(tmp_path_factory.mktemp("layer-cache"))
    os.environ["SOURCE_DATE_EPOCH"] = EPOCH
    os.environ["PIPELINE_BASE_LOCK"] = str(session_base_lock(tmp_path_factory.mktemp("base-lock")))
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def built(build_env, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The test project built once into an OCI layout."""
    from pipeline.build.image import build_image

    root = tmp_path_factory.mktemp("built")
    project = copy_project(root / "project")
    result = build_image(project, root / "layout")
    return Built(project, root / "layout", result.digest, result.layers)


@pytest.fixture(scope="session")
def built_tiny(build_env, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """``examples/tiny`` (torch cpu, secure_runtime entrypoint) built once per session.

    Built from a copy: the build writes the project's ``requirements.lock``.
    """
    from pipeline.build.image import build_image

    root = tmp_path_factory.mktemp("built-tiny")
    project = Path(shutil.copytree(TINY, root / "tiny"))
    result = build_image(project, root / "layout")
    return Built(project, root / "layout", result.digest, result.layers)
