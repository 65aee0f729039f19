"""Canary promotion on the local target: real runtimes, real nginx, real Prometheus.

Three ``python -m secure_runtime`` processes serve sealed models: the stable tiny
model, a second copy of it as a healthy canary, and a canary whose forward raises on
real inputs (warm-up with zeros passes, so it becomes ready and then fails requests).
``pipeline promote --local`` puts nginx and Prometheus in front of them; the verdicts
come from PromQL over what Prometheus scraped. The release promoted is a real one in a
real registry (signed, attested image; signed sealed model), since the gates cannot be
skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pipeline.cli import run
from pipeline.release.gitops import GitOpsRepo, Release
from pipeline.release.local import TrafficLoop, free_port
from pipeline.release.traffic import Nginx
from tests.fixtures_registry import RegistryServer
from tests.support.canary import (
    CHART,
    definition,
    rendered_steps,
    write_values,
)
from tests.support.runtime import (
    TINY,
    Runtime,
    make_workspace,
    runtime_args,
    seal,
    start_runtime,
    write_broken_project,
)
from tests.support.signed_release import SignedRelease, make_signed_release

pytestmark = pytest.mark.timeout(120)

OLD_IMAGE = f"registry.local/tiny@sha256:{'a' * 64}"
OLD_MODEL = f"registry.local/tiny-model@sha256:{'1' * 64}"
INFER = "/v2/models/tiny/infer"
BODY = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16],
                    "data": [0.1 * i for i in range(1, 17)]}]}


@pytest.fixture(scope="module")
def built(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[Path, Path, Path, SignedRelease, object]:
    root = tmp_path_factory.mktemp("release")
    ws = make_workspace(root / "ws")
    good = seal(ws, TINY, root / "tiny.sealed")
    bad = seal(ws, write_broken_project(root / "broken"), root / "broken.sealed")
    unsigned = seal(ws, TINY, root / "unsigned.sealed", sign=False)
    signed = make_signed_release(registry, root / "pushed", good, unsigned, ws.private, ws.public)
    return root, good, bad, signed, ws


@pytest.fixture(scope="module")
def signed(built: tuple[Path, Path, Path, SignedRelease, object]) -> SignedRelease:
    return built[3]


@pytest.fixture(scope="module")
def runtimes(built: tuple[Path, Path, Path, SignedRelease, object]
             ) -> Iterator[dict[str, Runtime]]:
    root, good, bad, _signed, ws = built
    started: dict[str, Runtime] = {}
    try:
        for name, model in (("stable", good), ("canary", good), ("broken", bad)):
            port = free_port()
            started[name] = start_runtime(runtime_args(ws, model, port, "--allow-root"),
                                          root / f"{name}.log", port)
        for rt in started.values():
            rt.wait_ready()
        yield started
    finally:
        for rt in started.values():
            rt.close()


def _split(nginx: Nginx, rts: dict[str, Runtime], requests_: int) -> dict[str, int]:
    with TrafficLoop(nginx.url, INFER, BODY, max_requests=requests_, pause=0) as loop:
        loop._thread.join(60)
    assert dict(loop.by_status) == {200: requests_}
    ports = {f"127.0.0.1:{rt.port}": name for name, rt in rts.items()}
    return {ports[addr]: n for addr, n in loop.by_upstream.items()}


def test_nginx_weights_split_real_traffic(runtimes: dict[str, Runtime]) -> None:
    rts = {"stable": runtimes["stable"], "canary": runtimes["canary"]}
    with Nginx(rts["stable"].url, rts["canary"].url, free_port(), weight=20) as nginx:
        counts = _split(nginx, rts, 100)
        assert abs(counts.get("canary", 0) - 20) <= 3, counts
        nginx.set_weight(50)
        counts = _split(nginx, rts, 100)
        assert abs(counts.get("canary", 0) - 50) <= 3, counts
        nginx.set_weight(0)
        assert _split(nginx, rts, 20) == {"stable": 20}
        nginx.set_weight(100)
        assert _split(nginx, rts, 20) == {"canary": 20}


def _promote(gitops: Path, release: SignedRelease, canary: Runtime, stable: Runtime,
             body: Path, *extra: str) -> int:
    """The issue's interface: the chart and the environment's values are the canary."""
    values = write_values(gitops.parent / "prod-values.yaml")
    return run(["--json", "promote", "--gitops", str(gitops), "--env", "prod",
                "--image", release.image, "--model", release.model,
                "--local", "--chart", str(CHART), "-f", str(values),
                "--image-policy", str(release.image_policy), "--trust", str(release.trust),
                "--insecure",
                "--stable-url", stable.url, "--canary-url", canary.url,
                "--traffic-path", INFER, "--traffic-body", str(body), *extra])


def _seed(gitops: Path) -> GitOpsRepo:
    """A repository whose prod runs OLD (promoted), as after an earlier release."""
    from pipeline.release.gitops import ReleaseState

    repo = GitOpsRepo(gitops)
    old = Release(OLD_IMAGE, OLD_MODEL)
    repo.commit(ReleaseState("prod", OLD_IMAGE, OLD_MODEL, 100, "1/1", "promoted", old),
                "prod: promote old")
    return repo


def test_healthy_canary_is_promoted(runtimes: dict[str, Runtime], signed: SignedRelease,
                                    tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = _seed(tmp_path / "gitops")
    body = tmp_path / "body.json"
    body.write_text(json.dumps(BODY))
    label = Release(signed.image, signed.model).label
    assert _promote(tmp_path / "gitops", signed, runtimes["canary"], runtimes["stable"],
                    body) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "promoted"
    assert [s["passed"] for s in out["stages"]] == [True, True]
    (first, last) = out["stages"]
    assert last["measurements"] == []  # the rendered steps end with setWeight 100
    values = {m["metric"]: m["value"][0] for m in first["measurements"]}
    assert values["success-rate"] == 1.0 and values["canary-requests"] >= 5
    assert values["success-rate-vs-stable"] == 0.0
    # The local executor ran exactly the rendered steps: order, weights, pauses, and each
    # analysis' metrics with their queries (args filled in) and limits.
    rendered, _definition = definition("prod", release=Release(signed.image, signed.model))
    keys = ("template", "metric", "query", "count", "failureLimit", "inconclusiveLimit",
            "successCondition")
    ran = [{"analysis": [{k: m[k] for k in keys} for m in step["analysis"]]}
           if "analysis" in step else step for step in out["executed"]]
    assert ran == rendered_steps(rendered)
    history = repo.history("prod")
    assert [c.message for c in history][:4] == [
        f"prod: promote {label} (100%, analysis passed)",
        f"prod: canary {label} at 100% (stage 2/2)",
        f"prod: analysis passed at 50% (stage 1/2) for {label}",
        f"prod: canary {label} at 50% (stage 1/2)",
    ]
    state = yaml.safe_load((tmp_path / "gitops/environments/prod/release.yaml").read_text())
    assert state["status"] == "promoted" and state["weight"] == 100
    assert state["image"] == signed.image and state["stable"]["model"] == signed.model


def test_failing_canary_rolls_back_with_exit_11(
    runtimes: dict[str, Runtime], signed: SignedRelease, tmp_path: Path,
    capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _seed(tmp_path / "gitops")
    body = tmp_path / "body.json"
    body.write_text(json.dumps(BODY))
    label = Release(signed.image, signed.model).label
    assert _promote(tmp_path / "gitops", signed, runtimes["broken"], runtimes["stable"],
                    body) == 11
    err = capsys.readouterr().err
    # Every request of the canary failed: a rate of zero, not NaN.
    assert "analysis failed at 50%" in err and "success rate 0.000 < 0.990" in err
    assert "nan" not in err.lower()
    current = repo.current("prod")
    assert current is not None
    assert (current.status, current.weight, current.image) == ("rolled-back", 0, OLD_IMAGE)
    assert current.failed is not None and current.failed.image == signed.image
    assert any("success rate 0.000 < 0.990" in r for r in current.reasons)
    assert repo.history("prod")[0].message.startswith(
        f"prod: roll back {label} at 50% (stage 1/2)")
    assert len(repo.history("prod")) == 3  # seed, stage 1/2, roll-back: no result commit
