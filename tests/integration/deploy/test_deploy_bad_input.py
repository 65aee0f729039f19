"""Bad input to ``pipeline deploy --local``: each bad object gets a clear error naming it,
and the good pods keep running and serving beside it.

One deploy runs the test chart (tests/fixtures/deploy/pods) with a good Deployment and
one bad Deployment per case: an image without a digest, an image the image policy
refuses (unsigned), a Secret not given with --secret, a readiness probe that never
passes, a container that crashes (restarted with backoff), and a Service whose port is
taken. Beside them a pod that fetches from the registry on the host's loopback (the
egress relay into its namespace) before it serves. The pods run the built image's own
python3 (``http.server`` over their downward API volume), so the cases cost a second
each, not a model load.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
import requests

from pipeline.errors import EXIT_CONFLICT
from tests.support.build import Built
from tests.support.deploy import (
    PODS_CHART,
    DeployImage,
    DeployInputs,
    pod_pids,
    push_image,
    start_deploy,
)

pytestmark = pytest.mark.integration


def test_bad_objects_are_named_and_the_good_pods_keep_serving(
        deploy_image: DeployImage, deploy_inputs: DeployInputs, built_tiny: Built,
        registry: object, deploys: list, tmp_path: Path) -> None:
    unsigned = push_image(built_tiny, registry, "deploy/unsigned")
    policy = tmp_path / "image-policy.yaml"
    policy.write_text(json.dumps({"version": 1, "default": "allow", "rules": [
        {"name": "signed-only", "images": [f"{unsigned.registry}/{unsigned.repository}"],
         "authorities": [{"key": str(deploy_inputs.ws.public)}]}]}))
    tagged = f"{deploy_image.registry}/{deploy_image.repository}:latest"
    values = tmp_path / "values.yaml"
    values.write_text(json.dumps({"image": deploy_image.ref, "pods": {
        "good": {"replicas": 2},
        "notag": {"image": tagged},
        "unsigned": {"image": unsigned.ref},
        "nosecret": {"secret": "db-credentials"},
        "neverready": {"probePath": "/missing"},
        "crash": {"crash": True},
        "taken": {},
        # Not bad: reaches the registry on the host's loopback from its own namespace.
        "egress": {"fetch": f"http://{deploy_image.registry}/v2/"},
    }}))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        taken = holder.getsockname()[1]
        run = start_deploy(["--chart", str(PODS_CHART), "-f", str(values),
                            "--image-policy", str(policy), "--service-port",
                            f"taken={taken}", "--restart-backoff", "0.5",
                            "--state-dir", str(deploy_inputs.state), "--insecure"], tmp_path)
        deploys.append(run)
        url = run.url("good")
        err = "stderr"
        run.wait_for(rf"error: Deployment/default/notag: image '{re.escape(tagged)}' has no "
                     "digest", stream=err)
        run.wait_for(r"error: Deployment/default/unsigned: image \S+unsigned@sha256:\w+ refused "
                     r"by \S+image-policy.yaml: .*signed-only", stream=err)
        run.wait_for(r"error: Deployment/default/nosecret: pod default/nosecret-\w+-0 container "
                     r"main: secret 'db-credentials' is not given: pass --secret "
                     r"db-credentials=DIR", stream=err)
        never = run.wait_for(r"error: pod default/neverready-\w+-0: Running \(restarts 0\): not "
                             r"ready: readiness probe failed 3 times \(HTTP probe failed with "
                             r"statuscode: 404\); last log lines:\n(.*)", stream=err)
        assert "Serving HTTP on 127.0.0.1 port 8080" in never.group(1)
        assert '"GET /missing HTTP/1.0" 404' in run.errors()
        run.wait_for(r"error: pod default/crash-\w+-0: CrashLoopBackOff \(restarts 2\): "
                     r"container exited with code 3; restart 2 in 1s; last log lines:\n"
                     r"boom: no model here", stream=err)
        run.wait_for(rf"error: Service/default/taken: port http: "
                     rf"127.0.0.1:{taken} is taken", stream=err)

        # The good pods serve all along: their downward API labels, through nginx.
        for _ in range(6):
            answer = requests.get(f"{url}/labels", timeout=10)
            assert answer.status_code == 200
            assert 'app="good"' in answer.text
        assert requests.get(f"{url}/annotations", timeout=10).text == 'note="good"\n'
        # The pod that named 127.0.0.1:PORT of the registry reached it and serves.
        assert 'app="egress"' in requests.get(f"{run.url('egress')}/labels", timeout=10).text
        code = run.stop()
    # The first error's code: the taken port, reported before any pod starts (exit 16).
    assert code == EXIT_CONFLICT, run.errors()
    assert "Traceback" not in run.errors(), run.errors()
    assert pod_pids("good-") == [] and pod_pids("crash-") == []
