"""The Hera-defined workflows run end to end through the local runner.

``pr-check`` on tests/fixtures/build_project (policy check of the manifests, the chart
rendered for each environment's values, build, scan) and
``release`` against the loopback registry: seal + sign examples/tiny's weights, build,
SBOM, scan, provenance, push image and model, sign, three attestations, verify, and the
policy check of the secure-runtime chart rendered with the pushed digests, then the
hand-off: the release record committed and pushed to a bare GitOps repository, and
``pipeline promote`` through dev's canary stages against two real runtimes behind the
local nginx + Prometheus target. ``rollback`` reverts dev through the same runner.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from pipeline.cli import run
from pipeline.errors import EXIT_CONFIG, EXIT_VIOLATIONS
from tests.support.canary import write_values
from tests.support.runtime import (
    TINY,
    Runtime,
    free_port,
    make_workspace,
    runtime_args,
    seal,
    start_runtime,
    write_broken_project,
)
from tests.support.sarif import validate_sarif
from tests.support.workflows import REQUIRED, git_repo

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INFER = "/v2/models/tiny/infer"
BODY = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16],
                    "data": [0.1 * i for i in range(1, 17)]}]}


@contextmanager
def _runtimes(root: Path, broken: bool = False) -> Iterator[tuple[Runtime, Runtime]]:
    """Two real runtimes (stable, canary) serving a sealed tiny model: the local target
    the promote step splits traffic between (``broken``: the canary answers errors)."""
    ws = make_workspace(root / "ws")
    model = seal(ws, TINY, root / "tiny.sealed")
    canary = seal(ws, write_broken_project(root / "broken"), root / "broken.sealed") \
        if broken else model
    started: list[Runtime] = []
    try:
        for name, sealed in (("stable", model), ("canary", canary)):
            port = free_port()
            started.append(start_runtime(runtime_args(ws, sealed, port, "--allow-root"),
                                         root / f"{name}.log", port))
        for rt in started:
            rt.wait_ready()
        yield started[0], started[1]
    finally:
        for rt in started:
            rt.close()


def _record(workdir: Path) -> dict:
    return json.loads((workdir / "run.json").read_text())


def test_pr_check_runs_end_to_end(build_env, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    repo = git_repo(tmp_path)
    workdir = tmp_path / "run"
    code = run(["workflow", "run", "pr-check", "--param", f"git-repo={repo}",
                "--workdir", str(workdir), "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err + "\n".join(
        p.read_text() for p in (workdir / "logs").glob("*.log"))
    result = json.loads(out.out)
    names = [s["name"] for s in result["steps"]]
    assert names[0] == "checkout" and names[-2:] == ["build", "scan"]
    assert set(names[1:3]) == {"policy-check", "chart-check"}
    record = _record(workdir)
    assert record["status"] == "succeeded" and record["exit_code"] == 0
    assert all(s["status"] == "succeeded" and s["exit_code"] == 0 for s in record["steps"])
    vuln = json.loads((workdir / "workspace" / "vuln.json").read_text())
    assert "scanner" in vuln
    # The chart was rendered once per environment, each rendering checked.
    from pipeline.charts import render

    chart = repo / "helm" / "secure-runtime"
    expected = sum(len(render(chart, [chart / f"values-{env}.yaml"]).objects)
                   for env in ("staging", "prod"))
    charts = validate_sarif(json.loads((workdir / "workspace" / "charts.sarif").read_text()))
    assert charts["runs"][0]["results"] == []
    assert charts["runs"][0]["properties"]["objects"] == expected
    log = (workdir / "logs" / "chart-check.log").read_text()
    assert f"ok: {expected} object(s) checked" in log, log
    assert (workdir / "workspace" / "image" / "index.json").exists()


BAD_POD = """apiVersion: v1
kind: Pod
metadata: {name: bad, namespace: ns}
spec:
  hostNetwork: true
  containers:
  - {name: app, image: "nginx:latest"}
"""


def test_failing_step_stops_the_run_with_its_exit_code(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    repo = git_repo(tmp_path, extra_manifest=BAD_POD)
    workdir = tmp_path / "run"
    code = run(["workflow", "run", "pr-check", "-p", f"git-repo={repo}",
                "--workdir", str(workdir)])
    err = capsys.readouterr().err
    assert code == EXIT_VIOLATIONS  # pipeline policy check found violations
    assert "step 'policy-check' failed with exit code 1" in err
    assert "Traceback" not in err
    steps = {s["name"]: s for s in _record(workdir)["steps"]}
    assert steps["checkout"]["status"] == "succeeded"
    assert steps["policy-check"]["status"] == "failed"
    assert steps["build"]["status"] == "skipped" and steps["build"]["exit_code"] is None
    assert steps["scan"]["status"] == "skipped"
    assert not (workdir / "workspace" / "image").exists()


def test_pr_check_checks_the_chart_with_every_environments_values(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """values-prod.yaml turns on GPUs without a runtime class: only prod is refused."""
    prod = {**REQUIRED, "gpu": {"enabled": True, "runtimeClassName": ""}}
    repo = git_repo(tmp_path, prod_values=yaml.safe_dump(prod))
    workdir = tmp_path / "run"
    code = run(["workflow", "run", "pr-check", "-p", f"git-repo={repo}",
                "--workdir", str(workdir)])
    err = capsys.readouterr().err
    assert code == EXIT_VIOLATIONS, err
    assert "step 'chart-check' failed with exit code 1" in err
    steps = {s["name"]: s for s in _record(workdir)["steps"]}
    assert steps["chart-check"]["status"] == "failed"
    assert steps["build"]["status"] == "skipped"
    log = (workdir / "logs" / "chart-check.log").read_text()
    src = workdir / "workspace" / "src" / "helm" / "secure-runtime"
    assert (f"{src}/templates/deployment.yaml:" in log
            and "(chart " in log and "environment prod): policy gpu-runtime-class" in log), log
    assert "environment staging" not in log
    sarif = validate_sarif(json.loads((workdir / "workspace" / "charts.sarif").read_text()))
    results = sarif["runs"][0]["results"]
    assert {r["ruleId"] for r in results} == {"gpu-runtime-class"}
    assert {r["properties"]["environment"] for r in results} == {"prod"}


def _release(tmp_path: Path, registry, monkeypatch: pytest.MonkeyPatch,
             broken: bool = False) -> tuple[int, Path, Path, Path, str]:
    """Run ``release`` on a fresh source repository, handing off to a bare GitOps
    repository and a local target; returns (exit code, workdir, gitops, signing, revision)."""
    from pipeline.signing.keypair import create_signing_keypair

    signing, kek = tmp_path / "secrets" / "signing", tmp_path / "secrets" / "kek"
    signing.mkdir(parents=True)
    kek.mkdir(mode=0o700)
    create_signing_keypair(signing / "release.key", signing / "release.pub")
    monkeypatch.setenv("PIPELINE_KEYRING", str(kek / "keyring.json"))
    assert run(["keys", "create", "release-kek"]) == 0
    monkeypatch.delenv("PIPELINE_KEYRING")
    policy = (f"version: 1\ndefault: deny\nrequireDigest: true\nrules:\n"
              f"  - name: release\n    images: ['{registry.host}/ml/**']\n"
              "    authorities: [{key: '${PIPELINE_RELEASE_PUBLIC_KEY}'}]\n"
              "    threshold: 1\n"
              "    attestations: [{type: slsaprovenance}, {type: cyclonedx}, {type: vuln}]\n")
    repo = git_repo(tmp_path, image_policy=policy)
    revision = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()
    workdir = tmp_path / "run"
    gitops = tmp_path / "gitops.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(gitops)], check=True)
    body = tmp_path / "body.json"
    body.write_text(json.dumps(BODY))
    with _runtimes(tmp_path / "runtimes", broken) as (stable, canary):
        # The canary is the chart's Rollout: its values shorten the steps (tests/support).
        flags = (f"--local --stable-url {stable.url} --canary-url {canary.url} "
                 f"--traffic-path {INFER} --traffic-body {body} "
                 f"-f {write_values(tmp_path / 'canary-values.yaml')}")
        code = run(["--json", "workflow", "run", "release",
                    "-p", f"git-repo={repo}", "-p", f"git-revision={revision}",
                    "-p", f"repository={registry.host}/ml/runtime",
                    "-p", f"model-repository={registry.host}/ml/models/tiny",
                    "-p", "registry-insecure=true", "-p", "scan-env=dev",
                    "-p", f"signing-key-secret={signing}", "-p", f"kek-secret={kek}",
                    "-p", f"gitops-repo={gitops}", "-p", f"promote-flags={flags}",
                    "--workdir", str(workdir), "--parallel", "3"])
    return code, workdir, gitops, signing, revision


def test_release_runs_end_to_end_against_the_registry(
    build_env, registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    capsys.readouterr()
    code, workdir, gitops, signing, revision = _release(tmp_path, registry, monkeypatch)
    out = capsys.readouterr()
    logs = "\n".join(f"== {p.name}\n{p.read_text()}" for p in (workdir / "logs").glob("*.log"))
    assert code == 0, out.err + logs
    record = _record(workdir)
    steps = {s["name"]: s for s in record["steps"]}
    assert all(s["status"] == "succeeded" for s in steps.values()), steps
    image_digest = steps["push-image"]["outputs"]["digest"]
    model_digest = steps["push-model"]["outputs"]["digest"]
    assert image_digest.startswith("sha256:") and model_digest.startswith("sha256:")
    # Dependencies were honoured: each step started after the ones it needs finished.
    assert steps["sign-image"]["started"] >= steps["push-image"]["finished"]
    assert steps["policy-check"]["started"] >= steps["verify"]["finished"]
    # The image in the registry is signed by the release key; the model is pullable.
    pinned = f"{registry.host}/ml/runtime@{image_digest}"
    assert run(["verify", pinned, "--key", str(signing / "release.pub"), "--insecure"]) == 0
    # The three attest steps ran in parallel on one digest and all three attestations
    # are there: each its own manifest and discovery tag (issue 10: nothing lost).
    for kind in ("slsaprovenance", "cyclonedx", "vuln"):
        assert run(["verify-attestation", pinned, "--type", kind,
                    "--key", str(signing / "release.pub"), "--insecure"]) == 0, kind
    from pipeline.oci import discovery

    with registry.client() as client:
        tags = discovery.list_tags(client, "ml/runtime")
    assert len(discovery.attachment_tags(tags, image_digest, "att")) == 3
    rendered = (workdir / "workspace" / "rendered.yaml").read_text()
    assert pinned in rendered and model_digest in rendered
    # The hand-off: the record, then dev's canary stages, all pushed to the bare remote.
    assert steps["promote"]["started"] >= steps["record-release"]["finished"]
    from pipeline.report import collect

    evidence = collect(gitops, "dev")
    assert evidence["state"]["status"] == "promoted"
    assert evidence["release"]["image"] == pinned
    assert evidence["release"]["model"] == f"{registry.host}/ml/models/tiny@{model_digest}"
    record = evidence["record"]
    assert record["source"]["revision"] == revision
    assert record["run"]["executor"] == "local" and record["run"]["uid"] == _record(workdir)["uid"]
    assert record["run"]["url"] == f"file://{workdir.resolve()}/run.json"
    assert record["image"]["signature"]["verified"] is True
    assert {a["type"] for a in record["image"]["attestations"]} == {
        "slsaprovenance", "cyclonedx", "vuln"}
    assert record["image"]["scan"]["status"].startswith("not scanned")  # scan-env=dev, no DB
    assert record["image"]["provenance"]["builder"]
    assert record["model"]["signature"]["verified"] is True
    assert record["admission"]["decision"] == "admitted"
    analysed = [s["weight"] for s in evidence["steps"] if s["measurements"]]
    assert analysed and set(analysed) <= {50, 100}, evidence["steps"]
    plotted = {m["name"] for s in evidence["steps"] for x in s["measurements"]
               for m in x["metrics"]}
    assert "success-rate" in plotted, plotted
    page = tmp_path / "report.html"
    assert run(["report", "--gitops", str(gitops), "--env", "dev", "--html", str(page)]) == 0
    assert image_digest in page.read_text() and model_digest in page.read_text()
    # No secret material in the run record, the scripts or the logs.
    private = (signing / "release.key").read_text().splitlines()[1]
    for path in [workdir / "run.json", *workdir.glob("scripts/*"), *workdir.glob("logs/*")]:
        assert private not in path.read_text()


def test_rollback_workflow_reverts_an_environment_with_the_reason_as_given(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same ``pipeline rollback``, through the runner, pushed to the bare remote; a
    reason full of shell syntax is recorded byte for byte and runs nothing."""
    from pipeline.release.gitops import GitOpsRepo
    from tests.support.report import V1, release_story

    story = release_story(tmp_path / "story")
    bare = tmp_path / "gitops.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(story.repo.path), str(bare)],
                   check=True)
    subprocess.run(["git", "-C", str(bare), "branch", "-M", "main"], check=True)
    before = GitOpsRepo(bare, create=False).head()
    marker = tmp_path / "pwned"
    reason = f'v1 "was" fine $(touch {marker}) `touch {marker}` ; echo \\'
    workdir = tmp_path / "run"
    assert run(["workflow", "run", "rollback", "-p", f"gitops-repo={bare}",
                "-p", "environment=dev", "-p", f"reason={reason}", "-p", f"to={V1[0]}",
                "--workdir", str(workdir)]) == 16  # dev already runs v1: nothing to do
    assert "nothing to roll back" in (workdir / "logs" / "rollback.log").read_text()
    assert GitOpsRepo(bare, create=False).head() == before
    from tests.support.report import V2

    code = run(["workflow", "run", "rollback", "-p", f"gitops-repo={bare}",
                "-p", f"reason={reason}", "-p", f"to={V2[0]}", "--workdir", str(workdir)])
    assert code == 0, (workdir / "logs" / "rollback.log").read_text()
    repo = GitOpsRepo(bare, create=False)
    state = repo.current("dev")
    assert state is not None and state.image == V2[0] and state.status == "rolled-back"
    assert state.reasons == (reason,)
    assert not marker.exists()
    from pipeline.report import collect

    assert collect(bare, "dev")["rollbacks"][-1]["reasons"] == [reason]


def test_release_hand_off_needs_a_gitops_repository(tmp_path: Path) -> None:
    """An empty gitops-repo stops the rollback (and the release's record-release) with
    exit 3 and a message naming the parameter."""
    workdir = tmp_path / "run"
    assert run(["workflow", "run", "rollback", "--workdir", str(workdir)]) == EXIT_CONFIG
    assert "parameter gitops-repo is empty" in (workdir / "logs" / "rollback.log").read_text()


def test_a_canary_that_fails_its_analysis_fails_the_run_and_is_rolled_back_in_git(
    build_env, registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The hand-off's bad path: the release is recorded, the canary answers errors, the
    analysis fails, the roll-back is committed and pushed, and the run fails at promote
    with exit 11; the report of the environment says why."""
    from pipeline.errors import EXIT_POLICY
    from pipeline.report import collect

    code, workdir, gitops, _signing, _revision = _release(tmp_path, registry, monkeypatch,
                                                          broken=True)
    err = capsys.readouterr().err
    assert code == EXIT_POLICY, err
    assert "step 'promote' failed with exit code 11" in err
    steps = {s["name"]: s for s in _record(workdir)["steps"]}
    assert steps["record-release"]["status"] == "succeeded"
    assert steps["promote"]["status"] == "failed"
    evidence = collect(gitops, "dev")
    assert evidence["state"]["status"] == "rolled-back"
    assert evidence["record"] is not None  # the release itself was recorded before
    (rolled,) = evidence["rollbacks"]
    assert any(r.startswith("success rate 0.000 < 0.990") for r in rolled["reasons"]), rolled
    assert rolled["failed_image"] == evidence["release"]["image"]  # nothing ran before it
    failed = [x for m in rolled["measurements"] if not m["ok"] for x in m["metrics"]]
    rate = next(x for x in failed if x["name"] == "success-rate")
    assert rate["value"] == 0.0 and rate["threshold"] == 0.99 and rate["ok"] is False
    assert rate["comparison"] == ">="
