"""Render one chart directory with the Helm engine; keep where each object came from.

Why the template and line are kept: a policy finding on ``Deployment/r-secure-runtime``
is useless to a reviewer until it says ``templates/deployment.yaml`` line 2, the file and
place they edit. Helm's engine returns the output per template (the ``# Source:`` of
``helm template``); the line is where that object's ``kind:`` sits in the template source
(the n-th top-level ``kind:`` for the n-th object a template renders), or 1 when a
template builds its objects in a way that cannot be located.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.charts.values import ValueOptions, helm, load_values
from pipeline.errors import ChartRenderError, InputError

CHART_FILE = "Chart.yaml"
_KIND_LINE = re.compile(r"^kind:", re.MULTILINE)


@dataclass(frozen=True)
class RenderedObject:
    """One object a chart rendered, and the template (and line) that produced it."""

    #: Helm's name for the template: ``<chart>/templates/<file>`` (the ``# Source:`` line).
    source: str
    #: The template file on disk (``<chart dir>/templates/<file>``).
    template_path: str
    #: Position of the object among the documents that template rendered (from 0).
    index: int
    #: 1-based line of the template source where the object starts (best effort).
    line: int
    obj: dict[str, Any]


@dataclass(frozen=True)
class RenderedChart:
    """Everything one render produced, in template order."""

    chart: str
    release_name: str
    namespace: str
    values: dict[str, Any]
    objects: tuple[RenderedObject, ...]
    notes: str = ""

    def to_yaml(self) -> str:
        """A multi-document stream like ``helm template``'s, with its ``# Source:`` lines."""
        parts = [f"---\n# Source: {o.source}\n"
                 + yaml.safe_dump(o.obj, sort_keys=False, default_flow_style=False)
                 for o in self.objects]
        return "".join(parts)


def is_chart(path: str | os.PathLike[str]) -> bool:
    """True for a directory holding ``Chart.yaml`` (what ``policy check`` renders)."""
    return (Path(path) / CHART_FILE).is_file()


def _template_path(chart_dir: Path, chart_name: str, source: str) -> str:
    """``helm/secure-runtime`` + ``secure-runtime/templates/x.yaml`` → the file on disk."""
    _, _, inner = source.partition("/")
    return str(chart_dir / inner) if inner and source.startswith(chart_name + "/") \
        else str(chart_dir / source)


def _kind_lines(path: str) -> list[int]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    return [text.count("\n", 0, m.start()) + 1 for m in _KIND_LINE.finditer(text)]


def _objects(chart_dir: Path, chart_name: str, rendered: Mapping[str, str]
             ) -> tuple[list[RenderedObject], str]:
    objects: list[RenderedObject] = []
    # Helm prints the chart's own NOTES.txt only, never a subchart's.
    notes = rendered.get(f"{chart_name}/templates/NOTES.txt", "")
    for source, text in sorted(rendered.items()):
        if source.endswith("NOTES.txt"):
            continue
        path = _template_path(chart_dir, chart_name, source)
        try:
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as exc:
            raise ChartRenderError(f"chart {chart_dir}: {source} rendered text that is not "
                                   f"YAML: {getattr(exc, 'problem', None) or exc}") from None
        lines = _kind_lines(path) if docs else []
        for index, doc in enumerate(docs):
            if not isinstance(doc, dict) or not isinstance(doc.get("kind"), str) \
                    or not isinstance(doc.get("apiVersion"), str):
                raise ChartRenderError(f"chart {chart_dir}: {source} document {index} is not "
                                       "a Kubernetes object (apiVersion and kind required)")
            line = lines[index] if index < len(lines) else 1
            objects.append(RenderedObject(source, path, index, line, doc))
    return objects, notes


def render(
    chart_dir: str | os.PathLike[str],
    values_files: Sequence[str | os.PathLike[str]] = (),
    set_values: Sequence[str] = (),
    set_string: Sequence[str] = (),
    set_file: Sequence[str] = (),
    release_name: str = "release",
    namespace: str = "default",
    *,
    values: Mapping[str, Any] | None = None,
) -> RenderedChart:
    """Render ``chart_dir`` offline with its defaults, ``values`` and the flags' layers.

    ``values`` (a mapping, for callers that compose values themselves) sits below the
    values files and ``--set`` flags. Raises :class:`~pipeline.errors.ChartRenderError`
    (exit 14) when Helm refuses: values that fail ``values.schema.json``, a template
    ``fail`` or syntax error, a document that is not an object; InputError (exit 4) for
    bad values input; ConfigError (3) without the 'charts' extra.
    """
    chart = Path(chart_dir)
    if not is_chart(chart):
        raise InputError(f"{chart}: not a chart (no {CHART_FILE})")
    engine = helm()
    try:
        engine.validate_release_name(release_name)
    except engine.HelmError as exc:
        raise InputError(f"--release-name {release_name!r}: {exc}") from None
    merged = load_values(ValueOptions([Path(p) for p in values_files], list(set_values),
                                      list(set_string), list(set_file)), values)
    try:
        with engine.Chart.load(chart) as loaded:
            name = loaded.name
            output = loaded.render(values=merged, name=release_name, namespace=namespace,
                                   is_install=True)
    except engine.HelmError as exc:
        raise ChartRenderError(f"chart {chart} failed to render: {str(exc).strip()}") from None
    objects, notes = _objects(chart, name, output)
    return RenderedChart(str(chart), release_name, namespace, merged, tuple(objects), notes)


__all__ = ["CHART_FILE", "RenderedChart", "RenderedObject", "is_chart", "render"]
