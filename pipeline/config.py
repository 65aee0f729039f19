"""Where settings come from: flags, then environment, then ``pipeline.yaml``.

The same resolution serves the CLI and ``secure_runtime.load_sealed`` so that a
model sealed with ``pipeline seal`` opens in the runtime with no extra wiring.

Lookup of the configuration file: ``$PIPELINE_CONFIG``, else ``./pipeline.yaml``,
else ``~/.config/pipeline/pipeline.yaml``. Secrets (PINs, keys) are never read
from this file's values directly, only paths to files that hold them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ConfigError

DEFAULT_KEYRING = Path("~/.config/pipeline/keyring.json")


@dataclass(frozen=True)
class Settings:
    """Resolved settings; ``raw`` keeps the whole file for capabilities with own sections."""

    keyring: Path = field(default_factory=lambda: DEFAULT_KEYRING.expanduser())
    pkcs11: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None

    def section(self, name: str) -> dict[str, Any]:
        """One top-level section of pipeline.yaml (empty when absent)."""
        value = self.raw.get(name) or {}
        if not isinstance(value, dict):
            raise ConfigError(f"{self.source}: section '{name}' must be a mapping")
        return value


def _config_path(explicit: str | os.PathLike[str] | None) -> Path | None:
    candidates = [explicit, os.environ.get("PIPELINE_CONFIG")]
    for candidate in candidates:
        if candidate:
            path = Path(candidate).expanduser()
            if not path.is_file():
                raise ConfigError(f"configuration file not found: {path}")
            return path
    for path in (Path("pipeline.yaml"), Path("~/.config/pipeline/pipeline.yaml").expanduser()):
        if path.is_file():
            return path
    return None


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Parse a YAML file that must hold a mapping; ConfigError otherwise."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load_settings(config: str | os.PathLike[str] | None = None) -> Settings:
    """Resolve settings from ``config`` (or the default lookup) and the environment."""
    path = _config_path(config)
    raw = read_yaml_mapping(path) if path else {}
    keys = raw.get("keys") or {}
    if not isinstance(keys, dict):
        raise ConfigError(f"{path}: section 'keys' must be a mapping")
    keyring = os.environ.get("PIPELINE_KEYRING") or keys.get("keyring")
    keyring_path = Path(keyring).expanduser() if keyring else DEFAULT_KEYRING.expanduser()
    from_file = path and keyring and not os.environ.get("PIPELINE_KEYRING")
    if from_file and not keyring_path.is_absolute():
        keyring_path = (path.parent / keyring_path).resolve()
    pkcs11 = keys.get("pkcs11") or {}
    if not isinstance(pkcs11, dict):
        raise ConfigError(f"{path}: section 'keys.pkcs11' must be a mapping")
    return Settings(keyring=keyring_path, pkcs11=dict(pkcs11), raw=raw, source=path)
