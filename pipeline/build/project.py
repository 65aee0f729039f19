"""What a model project declares for its image: ``pipeline.yaml``, section ``runtime``.

Why a strict reader: every value here ends up in a signed image (argv, environment,
which files ship), so a typo must stop the build with a ConfigError that names the key,
never produce a subtly different image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import read_yaml_mapping
from pipeline.errors import ConfigError

PROJECT_FILE = "pipeline.yaml"
TORCH_MODES = ("none", "cpu", "cuda")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class ProjectSpec:
    """A validated project: where it is and what its image must contain."""

    root: Path
    name: str
    entrypoint: tuple[str, ...]
    python_packages: tuple[str, ...]
    torch: str
    env: tuple[tuple[str, str], ...]
    lock_path: Path
    exclude: tuple[str, ...]
    weights: tuple[str, ...]

    @property
    def uses_secure_runtime(self) -> bool:
        """An entrypoint naming ``secure_runtime`` gets the runtime's code and requirements."""
        return any("secure_runtime" in arg for arg in self.entrypoint)


def _strings(value: Any, key: str, source: Path) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{source}: {key} must be a list of non-empty strings")
    return tuple(value)


def _env(value: Any, source: Path) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: runtime.env must be a mapping")
    out = []
    for key, raw in value.items():
        if not isinstance(key, str) or not _ENV_NAME.match(key):
            raise ConfigError(f"{source}: runtime.env: invalid variable name {key!r}")
        if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
            raise ConfigError(f"{source}: runtime.env.{key} must be a string or a number")
        out.append((key, str(raw)))
    return tuple(sorted(out))


def _lock_path(root: Path, value: Any, source: Path) -> Path:
    if value is None:
        return root / "requirements.lock"
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{source}: runtime.lock must be a relative path")
    path = (root / value).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ConfigError(f"{source}: runtime.lock must stay inside the project: {value}")
    return path


def load_project(project_dir: Path) -> ProjectSpec:
    """Read and validate ``PROJECT_DIR/pipeline.yaml``; ConfigError on anything wrong."""
    root = Path(project_dir)
    source = root / PROJECT_FILE
    if not source.is_file():
        raise ConfigError(f"{root}: not a model project (no {PROJECT_FILE})")
    raw = read_yaml_mapping(source)
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{source}: name must be lowercase letters, digits, '.', '_', '-'")
    runtime = raw.get("runtime")
    if not isinstance(runtime, dict):
        raise ConfigError(f"{source}: a 'runtime' mapping is needed to build an image")
    entrypoint = _strings(runtime.get("entrypoint"), "runtime.entrypoint", source)
    if not entrypoint:
        raise ConfigError(f"{source}: runtime.entrypoint must be a non-empty argv list")
    torch = runtime.get("torch", "none")
    if torch not in TORCH_MODES:
        raise ConfigError(f"{source}: runtime.torch must be one of {', '.join(TORCH_MODES)}")
    model = raw.get("model") or {}
    if not isinstance(model, dict):
        raise ConfigError(f"{source}: model must be a mapping")
    return ProjectSpec(
        root=root,
        name=name,
        entrypoint=entrypoint,
        python_packages=_strings(runtime.get("python_packages"), "runtime.python_packages",
                                 source),
        torch=torch,
        env=_env(runtime.get("env"), source),
        lock_path=_lock_path(root, runtime.get("lock"), source),
        exclude=_strings(runtime.get("exclude"), "runtime.exclude", source),
        weights=_strings(model.get("weights"), "model.weights", source),
    )
