"""Chart values as Helm composes them: `-f` files, then --set, --set-string, --set-file.

Why Helm's own parser: ``--set replicas=2`` is an integer, ``--set rollout.enabled=true`` a
boolean, ``--set ports={80,443}`` a list, ``a\\.b=1`` a key with a dot, ``big=1234...`` (past
int64) a string. Re-implementing ``strvals`` would drift from Helm, so the expressions go
to the Helm engine (``helm-python-sdk``); this module only merges the layers in Helm's
order (values files left to right, then ``--set``, ``--set-string``, ``--set-file``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ConfigError, InputError

#: Largest values file read (a values file is configuration, not data).
MAX_VALUES_BYTES = 4 << 20


@dataclass(frozen=True)
class ValueOptions:
    """Helm's value flags, as given on a command line (each list in flag order)."""

    values_files: Sequence[str | Path] = ()
    set_values: Sequence[str] = ()
    set_string: Sequence[str] = ()
    set_file: Sequence[str] = ()


def helm() -> Any:
    """The Helm engine module; ConfigError when the 'charts' extra is not installed."""
    try:
        import helm_python
    except ImportError:
        raise ConfigError("rendering a chart needs helm-python-sdk (the 'charts' extra: "
                          "pip install 'secure-model-pipeline[charts]')") from None
    return helm_python


def merge(base: dict[str, Any], layer: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``layer`` into ``base`` in place as Helm merges value layers; returns ``base``.

    Maps merge key by key, anything else replaces. A list from ``--set`` replaces the
    list below it except where it holds no element (``a[2]=x`` parses as
    ``[null, null, x]``): those positions keep the value below, as Helm's in-place
    ``a[2]=x`` does. Helm would also keep elements past the end of the ``--set`` list;
    this merge does not (documented in docs/helm.md).
    """
    for key, value in layer.items():
        below = base.get(key)
        if isinstance(value, Mapping) and isinstance(below, dict):
            merge(below, value)
        elif isinstance(value, list) and isinstance(below, list):
            base[key] = [below[i] if item is None and i < len(below) else copy.deepcopy(item)
                         for i, item in enumerate(value)]
        else:
            base[key] = copy.deepcopy(value)
    return base


def _read_values_file(path: Path) -> dict[str, Any]:
    engine = helm()
    try:
        if path.stat().st_size > MAX_VALUES_BYTES:
            raise InputError(f"values file {path}: larger than {MAX_VALUES_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"values file {path}: not UTF-8 text") from None
    except OSError as exc:
        raise InputError(f"values file {path}: cannot read: {exc.strerror}") from None
    try:
        top = yaml.safe_load(text)
    except yaml.YAMLError:  # Helm's parser below says where
        top = {}
    if top is not None and not isinstance(top, dict):
        raise InputError(f"values file {path}: the top level is a {type(top).__name__}, "
                         "expected a mapping of value names (key: value)")
    try:
        values: dict[str, Any] = engine.values_from_yaml(text)
    except engine.HelmError as exc:
        raise InputError(f"values file {path}: {exc}") from None
    return values


def _parse(kind: str, flag: str, expressions: Sequence[str]) -> dict[str, Any]:
    engine = helm()
    parser = {"set": engine.parse_set_string, "string": engine.parse_set_string_values,
              "file": engine.parse_set_file}[kind]
    out: dict[str, Any] = {}
    for expression in expressions:
        try:
            # One expression at a time, as Helm applies each flag in order; within one
            # expression, commas separate assignments (escape a literal one as \,).
            merge(out, parser(expression))
        except engine.HelmError as exc:
            raise InputError(f"{flag} {expression!r}: {exc}") from None
    return out


def load_values(options: ValueOptions,
                base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The user-supplied values (``base`` below everything), merged in Helm's order.

    Raises InputError naming the file or flag: an unreadable or non-mapping values file,
    malformed YAML, a ``--set`` without ``=``, a ``--set-file`` whose file is missing.
    The chart's own defaults and its ``values.schema.json`` apply at render time.
    """
    values: dict[str, Any] = copy.deepcopy(dict(base or {}))
    for raw in options.values_files:
        merge(values, _read_values_file(Path(raw)))
    merge(values, _parse("set", "--set", options.set_values))
    merge(values, _parse("string", "--set-string", options.set_string))
    merge(values, _parse("file", "--set-file", options.set_file))
    return values


__all__ = ["MAX_VALUES_BYTES", "ValueOptions", "load_values", "merge"]
