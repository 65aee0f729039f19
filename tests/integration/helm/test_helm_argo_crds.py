"""The chart's Rollout and AnalysisTemplates against Argo Rollouts' own CRD schemas.

The schemas are the official ones, unchanged (tests/fixtures/argo-rollouts/README.md:
v1.9.1). Validated strictly: a field the schema does not declare is an error, as with
``kubectl apply --validate=strict`` (the API server would otherwise prune it silently,
and a mistyped step would vanish from the canary).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.support.helm import merged_values, render_chart

CHART = Path(__file__).resolve().parents[3] / "helm" / "secure-runtime"
SCHEMAS = Path(__file__).resolve().parents[2] / "fixtures" / "argo-rollouts"
REQUIRED = {"image": {"digest": "sha256:" + "a1" * 32}, "model": {"digest": "sha256:" + "b2" * 32}}


def _strict(node: Any) -> Any:
    """Every object schema with declared properties refuses undeclared ones."""
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if "properties" in out and "additionalProperties" not in out \
                and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


def _validator(kind: str) -> jsonschema.Draft4Validator:
    schema = json.loads((SCHEMAS / f"{kind}-v1alpha1.schema.json").read_text())
    return jsonschema.Draft4Validator(_strict(schema))


VALIDATORS = {"Rollout": _validator("rollout"), "AnalysisTemplate": _validator("analysistemplate")}
VARIANTS = {
    "default": {"rollout": {"enabled": True}},
    "pause-until-promoted": {"rollout": {"enabled": True, "pauseDuration": ""}},
    "environment-overrides": {"rollout": {"enabled": True, "weights": [5, 25, 100],
                                          "analysis": {"count": 3, "inconclusiveLimit": 1,
                                                       "interval": "30s", "window": "1m"}}},
    "verbatim-steps": {"rollout": {"enabled": True, "steps": [
        {"setWeight": 20}, {"pause": {"duration": "1m"}}, {"setWeight": 100}]}},
    "gpu-traffic-routing": {"rollout": {"enabled": True, "trafficRouting": {
        "nginx": {"stableIngress": "secure-runtime"}}}, "gpu": {"enabled": True}},
}


def _argo(values: dict[str, Any]) -> list[dict[str, Any]]:
    objs = render_chart(CHART, merged_values(REQUIRED, **values))
    return [o for o in objs if o["kind"] in VALIDATORS]


def _errors(obj: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in VALIDATORS[obj["kind"]].iter_errors(obj)]


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_rendered_objects_validate_against_the_official_crds(name: str) -> None:
    objs = _argo(VARIANTS[name])
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == ["AnalysisTemplate", "AnalysisTemplate", "Rollout"], kinds
    for obj in objs:
        assert _errors(obj) == [], obj["metadata"]["name"]


def test_the_strict_schemas_reject_what_argo_would_not_run() -> None:
    """Guard against a validator that passes everything."""
    objs = _argo(VARIANTS["default"])
    rollout = copy.deepcopy(next(o for o in objs if o["kind"] == "Rollout"))
    rollout["spec"]["strategy"]["canary"]["steps"][1]["pause"]["duraton"] = "1m"
    assert any("duraton" in e for e in _errors(rollout))
    template = copy.deepcopy(next(o for o in objs if o["kind"] == "AnalysisTemplate"))
    template["spec"]["metrics"][0]["sucessCondition"] = "true"
    assert any("sucessCondition" in e for e in _errors(template))
    del template["spec"]["metrics"][0]["sucessCondition"]
    template["spec"]["metrics"][0]["provider"]["prometheus"]["query"] = 5
    assert _errors(template)
