"""Sorting rendered objects: what runs, what is applied, what is listed, what is refused."""

from __future__ import annotations

import pytest

from pipeline.deploy.objects import plan, selects
from pipeline.errors import InputError


def _obj(kind: str, name: str = "x", **extra: object) -> dict:
    return {"apiVersion": "v1", "kind": kind, "metadata": {"name": name}, **extra}


def test_kinds_are_sorted_and_the_ones_not_run_are_listed() -> None:
    result = plan([
        _obj("Deployment", "web", spec={"template": {"spec": {}}}),
        _obj("Service", "web"), _obj("ServiceMonitor", "web"),
        _obj("ConfigMap", "cm", data={"a": "1"}),
        _obj("Secret", "s", data={"k": "aGk="}, stringData={"t": "x"}),
        _obj("HorizontalPodAutoscaler", "web"), _obj("NetworkPolicy", "web"),
    ])
    assert [w["metadata"]["name"] for w in result.workloads] == ["web"]
    assert result.config_maps == {"cm": {"a": b"1"}}
    assert result.secrets == {"s": {"k": b"hi", "t": b"x"}}
    assert result.not_applied == ["HorizontalPodAutoscaler/default/web",
                                  "NetworkPolicy/default/web"]


def test_an_unknown_kind_is_an_error_naming_it() -> None:
    with pytest.raises(InputError, match=r"Widget/default/w: kind 'Widget' \(v1\) is not known"):
        plan([_obj("Widget", "w")])


def test_a_rollout_with_workload_ref_is_refused() -> None:
    with pytest.raises(InputError, match="workloadRef"):
        plan([_obj("Rollout", "r", spec={"workloadRef": {"name": "d"}})])


def test_an_empty_selector_selects_nothing() -> None:
    assert not selects({}, {"app": "a"})
    assert selects({"app": "a"}, {"app": "a", "x": "y"})
    assert not selects({"app": "a"}, {"app": "b"})
