"""Load Kubernetes manifests (YAML or JSON, multi-document) as plain JSON-like objects.

Why a loader of our own: the API server sees JSON, not YAML. ``kubectl`` converts YAML
to JSON first (sigs.k8s.io/yaml), so a timestamp-looking scalar stays a string, mapping
keys become strings and binary scalars become base64 text. The policies must see what
the API server would see, so this loader does the same conversion, and refuses what the
API server would refuse (a document that is not an object, no ``apiVersion``/``kind``)
with an :class:`~pipeline.errors.InputError` naming the file and document index.

A directory holding ``Chart.yaml`` is a Helm chart: it is rendered (``pipeline.charts``,
the one render path) and each object is located in the template that produced it, so
reports name ``templates/deployment.yaml`` line 2, not a rendered file nobody edits.
"""

from __future__ import annotations

import base64
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from pipeline.charts import ValueOptions, is_chart, render
from pipeline.errors import ChartRenderError, InputError

#: File suffixes read when a directory is given.
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
#: Largest manifest file read (Helm output of a big chart is well under this).
MAX_MANIFEST_BYTES = 32 << 20
#: Deepest nesting accepted: deeper objects are refused, not evaluated.
MAX_DEPTH = 100


@dataclass(frozen=True)
class Manifest:
    """One Kubernetes object and where it came from (for reports)."""

    source: str
    index: int
    obj: dict[str, Any]
    #: 1-based line where the object starts in ``source`` (0 when unknown, as for stdin
    #: of a List item); for a chart, the line in the template source.
    line: int = 0
    #: The chart directory the object was rendered from ("" for a plain manifest file).
    chart: str = ""
    #: The environment whose values rendered it (``values-<env>.yaml``; "" otherwise).
    environment: str = ""

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    @property
    def name(self) -> str:
        meta = self.obj.get("metadata")
        if isinstance(meta, dict):
            return str(meta.get("name") or meta.get("generateName") or "")
        return ""

    @property
    def namespace(self) -> str:
        meta = self.obj.get("metadata")
        return str(meta.get("namespace") or "") if isinstance(meta, dict) else ""


class _JsonLikeLoader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1 timestamps: like sigs.k8s.io/yaml, they stay strings."""


_JsonLikeLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _where(source: str, index: int) -> str:
    return f"{source}: document {index}"


def to_json_like(value: Any, where: str, depth: int = 0) -> Any:
    """Convert a parsed YAML value to what its JSON form holds; InputError if impossible."""
    if depth > MAX_DEPTH:
        raise InputError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise InputError(f"{where}: {value!r} is not a JSON number")
        return value
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, (dict, list, tuple, set)):
                raise InputError(f"{where}: a mapping key is itself a collection")
            text = _scalar_key(key)
            out[text] = to_json_like(item, where, depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [to_json_like(item, where, depth + 1) for item in value]
    if isinstance(value, set):  # !!set: a mapping of keys to null in JSON
        return {_scalar_key(k): None for k in value}
    # Anything else (a date from an explicit !!timestamp tag): its text form.
    return str(value)


def _scalar_key(key: Any) -> str:
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, bytes):
        return base64.b64encode(key).decode("ascii")
    return str(key)


def _check_object(obj: Any, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise InputError(f"{where}: not a Kubernetes object (a {type(obj).__name__}, "
                         "expected a mapping with apiVersion and kind)")
    for field in ("apiVersion", "kind"):
        if not isinstance(obj.get(field), str) or not obj[field]:
            raise InputError(f"{where}: missing or non-string {field!r}")
    meta = obj.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise InputError(f"{where}: metadata is not a mapping")
    return obj


def parse_manifests(text: str, source: str) -> list[Manifest]:
    """Every object in a YAML/JSON stream; empty documents are skipped, ``List`` expanded.

    Document indexes count from 0 over every document in the stream, empty ones
    included, so a report's index is the position a reader finds in the file; ``line``
    is the document's first line of content.
    """
    out: list[Manifest] = []
    index = -1
    loader: _JsonLikeLoader | None = None
    try:
        loader = _JsonLikeLoader(text)  # the reader refuses unprintable text already here
        while loader.check_node():
            node = loader.get_node()
            index += 1
            doc = loader.construct_document(node) if node is not None else None
            if doc is None:
                continue
            line = node.start_mark.line + 1
            where = _where(source, index)
            obj = _check_object(to_json_like(doc, where), where)
            if obj["kind"].endswith("List") and isinstance(obj.get("items"), list):
                for item in obj["items"]:
                    out.append(Manifest(source, index, _check_object(item, where + " (List item)"),
                                        line))
            else:
                out.append(Manifest(source, index, obj, line))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line_text = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or exc.__class__.__name__
        raise InputError(f"{_where(source, index + 1)}:{line_text} malformed YAML: "
                         f"{problem}") from None
    except RecursionError:
        raise InputError(f"{_where(source, index + 1)}: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()
    return out


@dataclass(frozen=True)
class ChartInput:
    """How charts among the inputs are rendered: Helm's value flags, release, namespace.

    ``per_environment``: render each chart once per ``values-<env>.yaml`` beside its
    ``Chart.yaml`` (that file after the ``-f`` files, before ``--set``), or once as
    ``default`` when it has none: the way a PR check sees what every environment runs.
    """

    values: ValueOptions = ValueOptions()
    release_name: str = "release"
    namespace: str = "default"
    per_environment: bool = False


#: The environment values files beside a chart's Chart.yaml: ``values-<env>.yaml``.
ENVIRONMENT_VALUES = "values-*.yaml"


def chart_environments(chart_dir: str | Path) -> list[tuple[str, Path | None]]:
    """``(environment, values file)`` of every ``values-<env>.yaml`` of a chart, sorted;
    ``[("default", None)]`` when it has none."""
    found = sorted(Path(chart_dir).glob(ENVIRONMENT_VALUES))
    envs = [(p.name[len("values-"):-len(".yaml")], p) for p in found if p.is_file()]
    return [(env, path) for env, path in envs if env] or [("default", None)]


def chart_manifests(chart_dir: str | Path, options: ChartInput = ChartInput()) -> list[Manifest]:
    """Render ``chart_dir`` (once per environment with ``per_environment``) and return its
    objects, each located in its template."""
    runs: list[tuple[str, Path | None]] = (chart_environments(chart_dir)
                                           if options.per_environment else [("", None)])
    out = []
    for environment, env_values in runs:
        files = [*options.values.values_files, *([env_values] if env_values else [])]
        try:
            rendered = render(chart_dir, files, options.values.set_values,
                              options.values.set_string, options.values.set_file,
                              options.release_name, options.namespace)
        except ChartRenderError as exc:
            if not environment:
                raise
            raise ChartRenderError(f"environment {environment} ({env_values or 'defaults'}): "
                                   f"{exc}") from None
        for item in rendered.objects:
            where = _where(item.template_path, item.index)
            obj = _check_object(to_json_like(item.obj, where), where)
            out.append(Manifest(item.template_path, item.index, obj, item.line,
                                str(chart_dir), environment))
    return out


def chart_of(path: Path) -> Path | None:
    """The outermost chart directory holding ``path`` (a template, values file, subchart).

    Why outermost: a subchart renders as part of its parent, with the parent's values.
    """
    found = None
    for parent in path.resolve().parents:
        if is_chart(parent):
            found = parent
    if found is None:
        return None
    # Keep the spelling the user gave (relative stays relative) for reports.
    for candidate in [path, *path.parents]:
        if candidate.resolve() == found:
            return candidate
    return found


def _files(path: Path) -> Iterator[Path]:
    """Manifest files and chart directories (a chart is rendered, never read file by file).

    A file inside a chart (what pre-commit passes: ``templates/deployment.yaml``,
    ``values.yaml``) stands for its chart.
    """
    if path.is_dir():
        chart = path if is_chart(path) else chart_of(path)
        if chart is not None:
            yield chart
            return
        for child in sorted(path.iterdir()):
            if child.is_dir():
                yield from _files(child)
            elif child.is_file() and child.suffix in MANIFEST_SUFFIXES:
                yield child
    elif path.is_file():
        yield chart_of(path) or path
    else:
        raise InputError(f"{path}: no such file or directory")


def _read(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise InputError(f"{path}: larger than {MAX_MANIFEST_BYTES} bytes")
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None


def is_kubernetes_yaml(text: str) -> bool:
    """True unless ``text`` is well-formed YAML none of whose documents is an object with
    ``apiVersion`` and ``kind`` (a CI config, pipeline.yaml): what
    ``--ignore-non-manifests`` skips. Malformed YAML is not skipped: it is reported."""
    try:
        docs = list(yaml.load_all(text, Loader=_JsonLikeLoader))  # noqa: S506
    except (yaml.YAMLError, RecursionError):
        return True
    return any(isinstance(d, dict) and isinstance(d.get("apiVersion"), str)
               and isinstance(d.get("kind"), str) for d in docs)


def load_manifests(paths: Sequence[str | Path], stdin: IO[str] | None = None,
                   charts: ChartInput = ChartInput(), *, ignore_non_manifests: bool = False,
                   skipped: list[str] | None = None) -> list[Manifest]:
    """Objects of every input: files, directories (recursively), charts, or ``-`` for stdin.

    A directory holding ``Chart.yaml`` (given, met while walking a directory, or holding
    a file given) is rendered with ``charts``; ChartRenderError (exit 14) when it does not
    render. With ``ignore_non_manifests`` a file that holds no Kubernetes object at all is
    skipped (its path appended to ``skipped``) instead of refused: what a pre-commit hook
    given every changed YAML file needs.
    """
    out: list[Manifest] = []
    charts_seen: set[Path] = set()
    for raw in paths:
        if str(raw) == "-":
            stream = stdin if stdin is not None else sys.stdin
            text = stream.read(MAX_MANIFEST_BYTES + 1)
            if len(text) > MAX_MANIFEST_BYTES:
                raise InputError(f"<stdin>: larger than {MAX_MANIFEST_BYTES} bytes")
            out.extend(parse_manifests(text, "<stdin>"))
            continue
        for path in _files(Path(raw)):
            if path.is_dir():
                if path.resolve() in charts_seen:
                    continue  # several files of one chart: rendered once
                charts_seen.add(path.resolve())
                out.extend(chart_manifests(path, charts))
            else:
                text = _read(path)
                if ignore_non_manifests and not is_kubernetes_yaml(text):
                    if skipped is not None:
                        skipped.append(str(path))
                    continue
                out.extend(parse_manifests(text, str(path)))
    return out
