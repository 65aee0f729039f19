"""The chart's canary with short steps, for tests: values, their render, the definition.

Why values and not a hand-written definition: the tests must run what the chart renders
(the one canary definition); they only shorten the pauses and intervals.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from pipeline.charts import RenderedChart
from pipeline.release.canary import CanaryDefinition, render_definition
from pipeline.release.gitops import Release

CHART = Path(__file__).resolve().parents[2] / "helm" / "secure-runtime"
IMAGE = "registry.local/app@sha256:" + "c" * 64
MODEL = "registry.local/model@sha256:" + "d" * 64

#: Two stages (50 %, then 100 %), a 2 s pause, two measurements 1 s apart over 5 s.
FAST: dict[str, Any] = {
    "rollout": {"enabled": True, "weights": [50, 100], "pauseDuration": "2s",
                "analysis": {"interval": "1s", "count": 2, "failureLimit": 0,
                             "window": "5s", "minRequests": 5}},
    "serviceMonitor": {"interval": "1s", "scrapeTimeout": "1s"},
}


def fast_values(**rollout: Any) -> dict[str, Any]:
    """:data:`FAST` with ``rollout`` keys replaced (``analysis`` merged key by key)."""
    values = copy.deepcopy(FAST)
    analysis = rollout.pop("analysis", {})
    values["rollout"].update(rollout)
    values["rollout"]["analysis"].update(analysis)
    return values


def write_values(path: Path, values: dict[str, Any] | None = None) -> Path:
    path.write_text(yaml.safe_dump(values if values is not None else FAST))
    return path


def definition(namespace: str = "prod", values: dict[str, Any] | None = None,
               release: Release | None = None) -> tuple[RenderedChart, CanaryDefinition]:
    """The chart rendered as ``pipeline promote`` renders it for ``namespace``."""
    return render_definition(CHART, values if values is not None else FAST,
                             release or Release(IMAGE, MODEL), namespace)


def rendered_steps(rendered: RenderedChart) -> list[dict[str, Any]]:
    """The Rollout's steps as rendered, each with its analyses' metrics resolved as the
    executor logs them (template, metric, query with args filled in, limits)."""
    (rollout,) = [o.obj for o in rendered.objects if o.obj["kind"] == "Rollout"]
    templates = {o.obj["metadata"]["name"]: o.obj for o in rendered.objects
                 if o.obj["kind"] == "AnalysisTemplate"}
    out: list[dict[str, Any]] = []
    for step in rollout["spec"]["strategy"]["canary"]["steps"]:
        if "setWeight" in step:
            out.append({"setWeight": step["setWeight"]})
        elif "pause" in step:
            duration = (step["pause"] or {}).get("duration")
            out.append({"pause": float(duration.rstrip("s")) if duration else None})
        else:
            args = {a["name"]: a["value"] for a in step["analysis"]["args"]}
            metrics = []
            for ref in step["analysis"]["templates"]:
                for m in templates[ref["templateName"]]["spec"]["metrics"]:
                    query = m["provider"]["prometheus"]["query"]
                    for name, value in args.items():
                        query = query.replace("{{args." + name + "}}", value)
                    metrics.append({"template": ref["templateName"], "metric": m["name"],
                                    "query": query, "count": m["count"],
                                    "failureLimit": m["failureLimit"],
                                    "inconclusiveLimit": m["inconclusiveLimit"],
                                    "successCondition": m["successCondition"]})
            out.append({"analysis": metrics})
    return out
