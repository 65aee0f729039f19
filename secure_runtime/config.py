"""Runtime configuration: command line > ``SECURE_RUNTIME_*`` environment > YAML file > default.

A Kubernetes pod gives settings three ways (args, env, a mounted ConfigMap), so the
runtime takes all three, with one table (:data:`OPTIONS`) naming each setting's
flag, variable and file key: a setting cannot be spelled differently in two places.
Everything is validated before the server starts; a mistake is a
:class:`~pipeline.errors.ConfigError` (exit 3) or, on the command line, a usage
error (exit 2), one line each.

This module imports neither torch nor the server: ``--help`` and config errors
answer at once.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from pipeline.errors import EXIT_USAGE, ConfigError, PipelineError

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
ENV_PREFIX = "SECURE_RUNTIME_"
CONFIG_ENV = "SECURE_RUNTIME_CONFIG"
_OFF = {"off", "none", "no", "false", "disabled", ""}
_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


class UsageError(PipelineError):
    """A bad command line (exit 2)."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class RuntimeConfig:
    """Everything the runtime needs to start; see docs/runtime.md for each setting."""

    model: str
    trust: tuple[Path, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8080
    grpc_port: int | None = 8081
    device: str = "auto"
    allow_root: bool = False
    allow_unsigned: bool = False
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    drain_seconds: float = 30.0
    log_level: str = "info"
    pipeline_config: str | None = None
    key_file: Path | None = None
    registry_insecure: bool = False
    registry_ca_file: Path | None = None
    allow_tag: bool = False
    warmup: bool = True


@dataclass(frozen=True)
class Option:
    """One setting: its RuntimeConfig field (= file key), kind, and help text."""

    field: str
    kind: str  # str | path | paths | port | port_or_off | int | float | bool | level
    help: str

    @property
    def env(self) -> str:
        """The environment variable (``SECURE_RUNTIME_<FIELD>``)."""
        return ENV_PREFIX + self.field.upper()

    @property
    def flag(self) -> str:
        """The command-line flag (``--field-name``)."""
        return "--" + self.field.replace("_", "-")


OPTIONS: tuple[Option, ...] = (
    Option("model", "str", "sealed model directory, or OCI reference REGISTRY/REPO@sha256:..."),
    Option("trust", "paths", "trusted signer public key (PEM); repeat for several "
                             "(env: paths separated by ':')"),
    Option("host", "str", "address to listen on (default 127.0.0.1; 0.0.0.0 in a pod)"),
    Option("port", "port", "REST port (default 8080)"),
    Option("grpc_port", "port_or_off", "gRPC port (default 8081; 'off' disables)"),
    Option("device", "str", "auto, cpu, cuda or cuda:N (default auto)"),
    Option("allow_root", "bool", "allow running as uid 0 (development machines only)"),
    Option("allow_unsigned", "bool", "load a model without a trusted signature (development)"),
    Option("key_file", "path", "key-encryption-key file for the local key provider "
                               "(a read-only Secret mount)"),
    Option("pipeline_config", "path", "pipeline.yaml with key provider settings (PKCS#11)"),
    Option("max_request_bytes", "int", "largest request body / gRPC message (default 64 MiB)"),
    Option("drain_seconds", "float", "how long SIGTERM waits for in-flight requests (default 30)"),
    Option("log_level", "level", "critical, error, warning, info or debug (default info)"),
    Option("registry_insecure", "bool", "plain HTTP to a loopback registry (tests)"),
    Option("registry_ca_file", "path", "CA bundle for the model registry"),
    Option("allow_tag", "bool", "accept a model reference by tag (default: digest only)"),
    Option("warmup", "bool", "run one inference before becoming ready (default on)"),
)
_BY_FIELD = {option.field: option for option in OPTIONS}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one UsageError line, not usage text."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m secure_runtime`` (every default is 'not given')."""
    parser = _Parser(
        prog="python -m secure_runtime",
        description="Serve a sealed model over KServe Open Inference Protocol v2 (REST + gRPC).",
        argument_default=argparse.SUPPRESS,
        allow_abbrev=False,
    )
    parser.add_argument("--config", metavar="FILE",
                        help=f"YAML settings file (env: {CONFIG_ENV})")
    for option in OPTIONS:
        help_text = f"{option.help} (env: {option.env})"
        if option.kind == "bool":
            parser.add_argument(option.flag, action=argparse.BooleanOptionalAction,
                                help=help_text)
        elif option.kind == "paths":
            parser.add_argument(option.flag, action="append", metavar="PEM", help=help_text)
        else:
            parser.add_argument(option.flag, metavar=option.field.split("_")[-1].upper(),
                                help=help_text)
    parser.add_argument("--no-grpc", dest="grpc_port", action="store_const", const="off",
                        help="do not start the gRPC listener")
    return parser


# ---------------------------------------------------------------------------- values


def _convert(option: Option, value: Any, where: str) -> Any:
    """Turn a flag string, env string or YAML value into the field's type, or ConfigError."""
    kind = option.kind
    bad = f"{where}: invalid {option.field} {value!r}"
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in {"1", "true", "yes", "on"}:
            return True
        if text in {"0", "false", "no", "off", ""}:
            return False
        raise ConfigError(f"{bad} (use true/false or 1/0)")
    if kind == "paths":
        if isinstance(value, str):
            items = [p for p in value.split(os.pathsep) if p]
        elif isinstance(value, list | tuple) and all(isinstance(p, str) for p in value):
            items = list(value)
        else:
            raise ConfigError(f"{bad} (a path or a list of paths)")
        return tuple(Path(p).expanduser() for p in items)
    if kind in ("port", "port_or_off"):
        if kind == "port_or_off" and (value is None or value is False
                                      or (isinstance(value, str) and value.lower() in _OFF)):
            return None
        try:
            port = int(str(value), 10)
        except ValueError:
            raise ConfigError(f"{bad} (a port number 1-65535)") from None
        if isinstance(value, bool) or not 1 <= port <= 65535:
            raise ConfigError(f"{bad} (a port number 1-65535)")
        return port
    if kind == "int":
        try:
            number = int(str(value), 10)
        except ValueError:
            raise ConfigError(f"{bad} (an integer)") from None
        if isinstance(value, bool) or number <= 0:
            raise ConfigError(f"{bad} (a positive integer)")
        return number
    if kind == "float":
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{bad} (a number of seconds)") from None
        if isinstance(value, bool) or not seconds >= 0:
            raise ConfigError(f"{bad} (a non-negative number of seconds)")
        return seconds
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{bad} (a non-empty string)")
    if kind == "level":
        if value.lower() not in _LOG_LEVELS:
            raise ConfigError(f"{bad} (one of {', '.join(_LOG_LEVELS)})")
        return value.lower()
    if kind == "path":
        return Path(value).expanduser()
    return value


def _read_file(path: Path) -> dict[str, Any]:
    from pipeline.config import read_yaml_mapping

    if not path.is_file():
        raise ConfigError(f"configuration file not found: {path}")
    data = read_yaml_mapping(path)
    unknown = sorted(set(data) - set(_BY_FIELD))
    if unknown:
        raise ConfigError(
            f"{path}: unknown setting {unknown[0]!r} (known: {', '.join(sorted(_BY_FIELD))})"
        )
    return {key: _convert(_BY_FIELD[key], value, str(path)) for key, value in data.items()}


def resolve_config(argv: Sequence[str], env: Mapping[str, str]) -> RuntimeConfig:
    """Merge flags over ``SECURE_RUNTIME_*`` env over the config file over defaults."""
    given = vars(build_parser().parse_args(list(argv)))
    config_path = given.pop("config", None) or env.get(CONFIG_ENV)
    values: dict[str, Any] = _read_file(Path(config_path)) if config_path else {}
    for option in OPTIONS:
        if option.env in env:
            values[option.field] = _convert(option, env[option.env], option.env)
    for field_name, value in given.items():
        option = _BY_FIELD[field_name]
        values[field_name] = _convert(option, value, option.flag)
    if not values.get("model"):
        raise UsageError("--model is required (a sealed model directory or an OCI reference "
                         f"by digest; env {_BY_FIELD['model'].env})")
    if values.get("pipeline_config") is not None:
        values["pipeline_config"] = str(values["pipeline_config"])
    return RuntimeConfig(**values)


__all__ = [
    "CONFIG_ENV",
    "DEFAULT_MAX_REQUEST_BYTES",
    "OPTIONS",
    "Option",
    "RuntimeConfig",
    "UsageError",
    "build_parser",
    "resolve_config",
]
