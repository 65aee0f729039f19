"""The canary definition: the chart's rendered Rollout steps and AnalysisTemplates.

Why read the rendered objects and nothing else: Argo Rollouts runs exactly these objects
on a cluster; ``pipeline promote --local`` must run the same ones, or a release proven
locally proves nothing about the cluster. :func:`load_definition` takes a chart render
(:mod:`pipeline.charts`, the one render path) and returns the steps as typed values with
each analysis' metrics resolved as Argo Rollouts resolves them (``{{args.NAME}}`` filled
in from the step's args, the template's defaults below). Whatever the local executor
cannot run faithfully is refused here, before the first step, with a clear error
(:class:`~pipeline.errors.ConfigError`, exit 3), never skipped:

* steps other than ``setWeight``, ``pause`` and ``analysis`` (experiments, header
  routes, canary scale...), steps before the first ``setWeight``, weights that do not
  increase;
* metrics whose provider is not Prometheus, range queries, args from ``valueFrom``,
  metrics that run forever (an ``interval`` without ``count``), conditions outside the
  supported expression subset (:mod:`pipeline.release.expr`).

The stages the promotion records (one commit per step) are a pure derivation: each
``setWeight`` opens a stage that holds the pauses and analyses after it. When the steps
end below 100 %, Argo Rollouts goes to 100 % on completion, and so does the final,
implicit stage here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.charts import RenderedChart
from pipeline.errors import ConfigError
from pipeline.release.expr import Condition, parse
from pipeline.release.gitops import Release, pin_values

_ARG = re.compile(r"\{\{\s*args\.([A-Za-z0-9_.-]+)\s*\}\}")
_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
DEFAULT_CONSECUTIVE_ERROR_LIMIT = 4  # Argo Rollouts' default


def duration_seconds(value: Any, what: str) -> float:
    """An Argo/Go duration (``30s``, ``1m30s``, ``250ms``; a bare integer is seconds)."""
    if isinstance(value, bool):
        raise ConfigError(f"{what}: {value!r} is not a duration")
    if isinstance(value, int):
        return float(value)
    text = str(value).strip()
    if text.isdigit():
        return float(text)
    if not text or _GO_DURATION.sub("", text) != "":
        raise ConfigError(f"{what}: {value!r} is not a duration (e.g. 30s, 2m, 1m30s)")
    return sum(float(n) * _UNITS[u] for n, u in _GO_DURATION.findall(text))


def _int(value: Any, what: str, default: int) -> int:
    if value is None:
        return default
    try:
        number = int(str(value))
    except ValueError:
        raise ConfigError(f"{what}: {value!r} is not an integer") from None
    if number < 0:
        raise ConfigError(f"{what}: {number} is negative")
    return number


@dataclass(frozen=True)
class Metric:
    """One AnalysisTemplate metric with its args resolved: what Argo Rollouts measures."""

    template: str
    name: str
    query: str
    address: str
    interval: float
    count: int
    failure_limit: int
    inconclusive_limit: int
    consecutive_error_limit: int
    initial_delay: float
    success: Condition | None
    failure: Condition | None

    def describe(self) -> dict[str, Any]:
        """What ran, for the executor's log and the test that compares it to the render."""
        return {"template": self.template, "metric": self.name, "query": self.query,
                "interval": self.interval, "count": self.count,
                "failureLimit": self.failure_limit,
                "inconclusiveLimit": self.inconclusive_limit,
                "successCondition": self.success.text if self.success else None,
                "failureCondition": self.failure.text if self.failure else None}


@dataclass(frozen=True)
class SetWeight:
    weight: int


@dataclass(frozen=True)
class Pause:
    #: Seconds; None pauses until resumed (``pipeline promote --continue``).
    seconds: float | None


@dataclass(frozen=True)
class Analysis:
    templates: tuple[str, ...]
    args: tuple[tuple[str, str], ...]
    metrics: tuple[Metric, ...]


Step = SetWeight | Pause | Analysis


@dataclass(frozen=True)
class CanaryStage:
    """A ``setWeight`` and the steps after it, up to the next one (one recorded stage)."""

    weight: int
    steps: tuple[Step, ...] = ()
    #: The index in the Rollout's steps of its setWeight (None: Argo's implicit 100 %).
    first_step: int | None = None


@dataclass(frozen=True)
class CanaryDefinition:
    """The rendered canary: the Rollout's steps, grouped into stages."""

    rollout: str
    namespace: str
    canary_service: str
    stable_service: str
    steps: tuple[Step, ...]
    stages: tuple[CanaryStage, ...] = field(default_factory=tuple)

    @property
    def weights(self) -> tuple[int, ...]:
        return tuple(s.weight for s in self.stages)


def _find(chart: RenderedChart, kind: str) -> list[dict[str, Any]]:
    return [o.obj for o in chart.objects if o.obj.get("kind") == kind
            and str(o.obj.get("apiVersion", "")).startswith("argoproj.io/")]


def _args(step_args: Sequence[Mapping[str, Any]], template: Mapping[str, Any],
          where: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for declared in (template.get("spec") or {}).get("args") or []:
        if "valueFrom" in declared:
            raise ConfigError(f"{where}: arg {declared.get('name')!r} uses valueFrom, which "
                              "the local executor cannot resolve")
        if "value" in declared:
            values[str(declared["name"])] = str(declared["value"])
    for given in step_args:
        if "valueFrom" in given:
            raise ConfigError(f"{where}: arg {given.get('name')!r} uses valueFrom, which the "
                              "local executor cannot resolve")
        values[str(given["name"])] = str(given.get("value", ""))
    return values


def _resolve(text: str, args: Mapping[str, str], where: str) -> str:
    def fill(m: re.Match[str]) -> str:
        if m.group(1) not in args:
            raise ConfigError(f"{where}: {{{{args.{m.group(1)}}}}} has no value (give it in the "
                              "analysis step's args or the template's)")
        return args[m.group(1)]
    return _ARG.sub(fill, text)


def _metric(template_name: str, raw: Mapping[str, Any], args: Mapping[str, str]) -> Metric:
    name = str(raw.get("name", ""))
    where = f"AnalysisTemplate {template_name} metric {name!r}"
    provider = raw.get("provider") or {}
    if set(provider) != {"prometheus"}:
        raise ConfigError(f"{where}: provider {sorted(provider)} is not supported locally "
                          "(only prometheus)")
    prom = provider["prometheus"] or {}
    unsupported = sorted(set(prom) - {"address", "query", "timeout"})
    if unsupported:
        raise ConfigError(f"{where}: prometheus {unsupported} not supported locally")
    if not prom.get("query"):
        raise ConfigError(f"{where}: no query")
    known = {"name", "provider", "interval", "count", "failureLimit", "inconclusiveLimit",
             "consecutiveErrorLimit", "initialDelay", "successCondition", "failureCondition"}
    extra = sorted(set(raw) - known)
    if extra:
        raise ConfigError(f"{where}: {extra} not supported locally")
    interval = duration_seconds(raw["interval"], f"{where} interval") \
        if raw.get("interval") else 0.0
    if raw.get("count") is None:
        if raw.get("interval"):
            raise ConfigError(f"{where}: an interval without a count runs until it fails; "
                              "give count for a step analysis")
        count = 1
    else:
        count = _int(raw.get("count"), f"{where} count", 1)
        if count < 1:
            raise ConfigError(f"{where}: count must be at least 1")
    success = parse(_resolve(raw["successCondition"], args, where)) \
        if raw.get("successCondition") else None
    failure = parse(_resolve(raw["failureCondition"], args, where)) \
        if raw.get("failureCondition") else None
    if success is None and failure is None:
        raise ConfigError(f"{where}: neither successCondition nor failureCondition (every "
                          "measurement would pass)")
    return Metric(template_name, name, _resolve(str(prom["query"]), args, where),
                  _resolve(str(prom.get("address", "")), args, where), interval, count,
                  _int(raw.get("failureLimit"), f"{where} failureLimit", 0),
                  _int(raw.get("inconclusiveLimit"), f"{where} inconclusiveLimit", 0),
                  _int(raw.get("consecutiveErrorLimit"), f"{where} consecutiveErrorLimit",
                       DEFAULT_CONSECUTIVE_ERROR_LIMIT),
                  duration_seconds(raw["initialDelay"], f"{where} initialDelay")
                  if raw.get("initialDelay") else 0.0, success, failure)


def _step(index: int, raw: Any, templates: Mapping[str, Mapping[str, Any]]) -> Step:
    where = f"Rollout step {index + 1}"
    if not isinstance(raw, Mapping) or len(raw) != 1:
        raise ConfigError(f"{where}: a step has exactly one action, got {raw!r}")
    (action, body), = raw.items()
    if action == "setWeight":
        weight = _int(body, f"{where} setWeight", 0)
        if not 0 <= weight <= 100:
            raise ConfigError(f"{where}: setWeight {weight} is not within 0..100")
        return SetWeight(weight)
    if action == "pause":
        body = body or {}
        return Pause(duration_seconds(body["duration"], f"{where} pause duration")
                     if body.get("duration") not in (None, "") else None)
    if action == "analysis":
        body = body or {}
        names = []
        for ref in body.get("templates") or []:
            if ref.get("clusterScope"):
                raise ConfigError(f"{where}: ClusterAnalysisTemplate {ref.get('templateName')!r}"
                                  " is not part of the chart; the local executor runs only "
                                  "rendered templates")
            names.append(str(ref.get("templateName")))
        if not names:
            raise ConfigError(f"{where}: analysis without templates")
        unsupported = sorted(set(body) - {"templates", "args"})
        if unsupported:
            raise ConfigError(f"{where}: analysis {unsupported} not supported locally")
        metrics: list[Metric] = []
        for name in names:
            if name not in templates:
                raise ConfigError(f"{where}: AnalysisTemplate {name!r} was not rendered "
                                  f"(rendered: {sorted(templates)})")
            args = _args(body.get("args") or [], templates[name], f"{where} ({name})")
            raw_metrics = (templates[name].get("spec") or {}).get("metrics") or []
            metrics += [_metric(name, m, args) for m in raw_metrics]
        seen = [m.name for m in metrics]
        if len(set(seen)) != len(seen):
            raise ConfigError(f"{where}: metric names repeat across templates: {seen}")
        given = tuple((str(a["name"]), str(a.get("value", ""))) for a in body.get("args") or [])
        return Analysis(tuple(names), given, tuple(metrics))
    raise ConfigError(f"{where}: {action!r} is not supported by the local executor "
                      "(setWeight, pause and analysis are); it would be skipped, so it is "
                      "refused")


def _stages(steps: Sequence[Step]) -> tuple[CanaryStage, ...]:
    stages: list[CanaryStage] = []
    for index, step in enumerate(steps):
        if isinstance(step, SetWeight):
            if stages and step.weight <= stages[-1].weight:
                raise ConfigError(f"Rollout step {index + 1}: setWeight {step.weight} after "
                                  f"{stages[-1].weight}; the local executor needs increasing "
                                  "weights")
            if step.weight == 0:
                raise ConfigError(f"Rollout step {index + 1}: setWeight 0 sends the canary "
                                  "nothing to analyse")
            stages.append(CanaryStage(step.weight, (), index))
        elif not stages:
            raise ConfigError(f"Rollout step {index + 1}: a {type(step).__name__.lower()} "
                              "before the first setWeight is not supported locally")
        else:
            last = stages[-1]
            stages[-1] = CanaryStage(last.weight, (*last.steps, step), last.first_step)
    if not stages:
        raise ConfigError("the Rollout has no setWeight step: nothing to walk")
    if stages[-1].weight != 100:
        stages.append(CanaryStage(100))  # Argo Rollouts: full promotion after the steps
    return tuple(stages)


def load_definition(chart: RenderedChart) -> CanaryDefinition:
    """The canary as rendered; ConfigError for what Argo Rollouts would run differently."""
    rollouts = _find(chart, "Rollout")
    if len(rollouts) != 1:
        raise ConfigError(f"chart {chart.chart}: rendered {len(rollouts)} Rollout objects, "
                          "need exactly one (set rollout.enabled: true in the values)")
    rollout = rollouts[0]
    canary = ((rollout.get("spec") or {}).get("strategy") or {}).get("canary")
    if not isinstance(canary, Mapping):
        raise ConfigError(f"Rollout {rollout['metadata']['name']}: not a canary strategy")
    if canary.get("analysis"):
        raise ConfigError(f"Rollout {rollout['metadata']['name']}: background analysis "
                          "(strategy.canary.analysis) is not supported locally")
    templates = {str(t["metadata"]["name"]): t for t in _find(chart, "AnalysisTemplate")}
    raw_steps = canary.get("steps") or []
    steps = tuple(_step(i, s, templates) for i, s in enumerate(raw_steps))
    name = str(rollout["metadata"]["name"])
    return CanaryDefinition(name, str(rollout["metadata"].get("namespace") or chart.namespace),
                            str(canary.get("canaryService") or f"{name}-canary"),
                            str(canary.get("stableService") or f"{name}-stable"),
                            steps, _stages(steps))


def render_definition(chart: str | Path, values: Mapping[str, Any], release: Release,
                      namespace: str, release_name: str = "secure-runtime"
                      ) -> tuple[RenderedChart, CanaryDefinition]:
    """The chart rendered for an environment with ``release`` pinned (as the gates and
    Argo CD render it), and the canary definition in it."""
    from pipeline.charts import render

    rendered = render(chart, values=pin_values(values, release), release_name=release_name,
                      namespace=namespace)
    return rendered, load_definition(rendered)


def scrape_labels(chart: RenderedChart, definition: CanaryDefinition) -> dict[str, Any]:
    """The ServiceMonitor's view of the two Services: the labels its targets carry.

    prometheus-operator labels each target with ``namespace``, ``service``, ``job`` (the
    Service), ``endpoint`` (the port name), ``pod`` and ``container``; the local
    Prometheus attaches the same, so the templates' queries select the same series.
    Returns ``{"path", "interval", "port", "roles": {"canary": labels, "stable": labels}}``.
    """
    monitors = [o.obj for o in chart.objects if o.obj.get("kind") == "ServiceMonitor"]
    if not monitors:
        raise ConfigError("the chart rendered no ServiceMonitor (serviceMonitor.enabled): "
                          "nothing says how the canary is scraped")
    endpoint = ((monitors[0].get("spec") or {}).get("endpoints") or [{}])[0]
    labels = {}
    for role, service in (("canary", definition.canary_service),
                          ("stable", definition.stable_service)):
        labels[role] = {"namespace": definition.namespace, "service": service,
                        "job": service, "endpoint": str(endpoint.get("port", "http")),
                        "pod": f"{definition.rollout}-{role}-0",
                        "container": "secure-runtime"}
    return {"path": str(endpoint.get("path") or "/metrics"),
            "interval": str(endpoint.get("interval") or "30s"), "roles": labels}


__all__ = ["Analysis", "CanaryDefinition", "CanaryStage", "Metric", "Pause", "SetWeight",
           "Step", "duration_seconds", "load_definition", "render_definition", "scrape_labels"]
