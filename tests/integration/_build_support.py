"""Shared fixtures of the build and scan integration tests: one base build per session."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT = Path(__file__).parent / "build_project"
EPOCH = "1700000000"


@dataclass
class Built:
    project: Path
    layout: Path
    digest: str
    layers: tuple


def copy_project(dest: Path) -> Path:
    shutil.copytree(PROJECT, dest)
    return dest


@pytest.fixture(scope="session")
def build_env(tmp_path_factory: pytest.TempPathFactory):
    """A session layer cache and a fixed SOURCE_DATE_EPOCH (the .deb cache is shared)."""
    saved = {k: os.environ.get(k) for k in ("PIPELINE_LAYER_CACHE", "SOURCE_DATE_EPOCH")}
    os.environ["PIPELINE_LAYER_CACHE"] = str(tmp_path_factory.mktemp("layer-cache"))
    os.environ["SOURCE_DATE_EPOCH"] = EPOCH
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
