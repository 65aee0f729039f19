"""``pipeline deploy --local`` runs the secure-runtime chart as a cluster would run it.

The chart is rendered with values as a user gives them; the Deployment's pods run the
built tiny image pulled by digest from a loopback registry, under bubblewrap, each in its
own network namespace (two replicas both listen on containerPort 8080); the Service is
nginx on 127.0.0.1, the ServiceMonitor a Prometheus job with the operator's labels. The
model comes from a volume (``--volume``), the KEK from ``--secret``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.support.deploy import CHART, DeployImage, DeployInputs, pod_pids, start_deploy

pytestmark = pytest.mark.integration

SERVICE = "demo-secure-runtime"


def _values(tmp_path: Path, image: DeployImage, inputs: DeployInputs) -> Path:
    values = tmp_path / "values.yaml"
    values.write_text(json.dumps({
        "image": {"repository": f"{image.registry}/{image.repository}",
                  "digest": image.digest},
        "model": {"volume": {"enabled": True, "claimName": "models", "subPath": "tiny"}},
        "trust": {"publicKey": inputs.ws.public.read_text()},
        "autoscaling": {"enabled": False},
        "replicaCount": 2,
        "serviceMonitor": {"interval": "1s", "scrapeTimeout": "1s"},
        "probes": {"startup": {"periodSeconds": 1}, "readiness": {"periodSeconds": 1}},
    }))
    return values


def _prometheus_targets(url: str, timeout: float = 60.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = requests.get(url + "/api/v1/query", params={"query": f'up{{service="{SERVICE}"}}'},
                            timeout=5).json()["data"]["result"]
        if len(data) == 2 and all(r["value"][1] == "1" for r in data):
            return data
        time.sleep(0.2)
    raise AssertionError(f"Prometheus did not scrape both pods: {data}")


def test_chart_runs_locally_and_serves_oip_v2(deploy_image: DeployImage,
                                              deploy_inputs: DeployInputs, deploys: list,
                                              tmp_path: Path) -> None:
    values = _values(tmp_path, deploy_image, deploy_inputs)
    run = start_deploy(["--chart", str(CHART), "-f", str(values), "--release-name", "demo",
                        "--set", "runtime.extraArgs={--no-grpc}",
                        "--secret", f"{SERVICE}-kek={deploy_inputs.keys}",
                        "--volume", f"models={deploy_inputs.models}",
                        "--state-dir", str(deploy_inputs.state), "--insecure"], tmp_path)
    deploys.append(run)
    url = run.url(SERVICE)

    meta = requests.get(f"{url}/v2/models/tiny", timeout=10)
    assert meta.status_code == 200, meta.text
    assert meta.json()["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 16]}]
    batch = np.random.default_rng(3).standard_normal((2, 16)).astype(np.float32)
    answer = requests.post(f"{url}/v2/models/tiny/infer", timeout=30, json={"inputs": [
        {"name": "input", "datatype": "FP32", "shape": [2, 16],
         "data": batch.reshape(-1).tolist()}]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["shape"] == [2, 4]

    # Both replicas become ready, each on its own containerPort 8080 (own namespace).
    run.wait_for(r"pod default/demo-secure-runtime-\w+-0: Ready")
    run.wait_for(r"pod default/demo-secure-runtime-\w+-1: Ready")
    upstreams = set()
    for _ in range(20):
        upstreams.add(requests.get(f"{url}/v2/health/ready", timeout=5).headers["X-Upstream"])
    assert len(upstreams) == 2, upstreams

    out = run.output()
    for kind in ("NetworkPolicy", "PodDisruptionBudget", "ServiceAccount"):
        assert f"{kind}/default/demo-secure-runtime: not applied locally" in out, out
    assert "demo-secure-runtime port grpc: not served locally" in out

    # The ServiceMonitor is a scrape job with the operator's target labels.
    prom = run.wait_for(r"Prometheus: scrapes the ServiceMonitors at (http://\S+)").group(1)
    targets = _prometheus_targets(prom)
    labels = [r["metric"] for r in targets]
    assert {lab["namespace"] for lab in labels} == {"default"}
    assert {lab["job"] for lab in labels} == {SERVICE}
    assert sorted(lab["pod"] for lab in labels) == sorted(
        {lab["pod"] for lab in labels}) and len({lab["pod"] for lab in labels}) == 2
    assert all(lab["pod"].startswith(f"{SERVICE}-") for lab in labels)

    assert run.stop() == 0, run.errors()
    assert pod_pids("demo-secure-runtime-") == []
    assert "Traceback" not in run.errors(), run.errors()
    # The run's own files are gone; the image cache stays for the next start.
    assert list((deploy_inputs.state / "run").iterdir()) == []
    assert list((deploy_inputs.state / "images" / "rootfs").iterdir())
