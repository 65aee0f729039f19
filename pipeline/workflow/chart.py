"""Render a Helm chart offline with the real Helm engine (``helm-python-sdk``).

Why here: the release's policy check must check the manifests that will be deployed (the
chart with the just-pushed digests), not hand-written stand-ins.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pipeline._fileio import write_atomic
from pipeline.errors import ConfigError, InputError


def _nested(sets: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, value in sets.items():
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return values


def render_chart(chart: Path, sets: Mapping[str, str], output: Path, release: str = "release",
                 namespace: str = "default") -> int:
    """Render ``chart`` with ``sets`` to one multi-document YAML file; return the count."""
    try:
        import helm_python
    except ImportError:
        raise ConfigError("rendering a chart needs helm-python-sdk (the 'charts' extra)") \
            from None
    try:
        with helm_python.Chart.load(chart) as loaded:
            rendered = loaded.render(values=_nested(sets), name=release, namespace=namespace,
                                     is_install=True)
    except helm_python.HelmError as exc:
        raise InputError(f"chart {chart}: {exc}") from None
    docs = [doc for path, text in sorted(rendered.items()) if not path.endswith("NOTES.txt")
            for doc in yaml.safe_load_all(text) if doc]
    write_atomic(output, yaml.safe_dump_all(docs, sort_keys=False))
    return len(docs)
