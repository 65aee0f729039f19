"""Environments and the GitOps repository Argo CD syncs: real git (a bare remote on
disk), the real Helm engine for the chart, the Argo CD CRD schema, and a recorded Argo
CD REST exchange served on 127.0.0.1 (tests/support/argocd.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from pipeline.cli import run
from pipeline.config import load_settings
from pipeline.errors import AuthError, ConflictError, PolicyError
from pipeline.release.analysis import AnalysisResult
from pipeline.release.argocd import ArgoCD
from pipeline.release.environments import Publisher, environment_values
from pipeline.release.executor import MetricMeasurement
from pipeline.release.gitops import GitOpsRepo
from pipeline.release.promote import promote
from tests.support.argocd import recording, serve_recorded, validate_application
from tests.support.helm import ChartRenderError, find, render_chart, validate_manifests

CHART = Path(__file__).resolve().parents[3] / "helm" / "secure-runtime"
IMG = "registry.local/ml/secure-runtime@sha256:" + "a" * 64
IMG2 = "registry.local/ml/secure-runtime@sha256:" + "b" * 64
MODEL = "registry.local/ml/models/minilm@sha256:" + "1" * 64
GOOD = AnalysisResult(True, (MetricMeasurement("t", "success-rate", "q", [1.0], "Successful",
                                               "success rate 1.000 >= 0.990"),))
CONFIG = """
release:
  chart: {repo_url: "https://git.example/ml/secure-model-pipeline.git", path: helm/secure-runtime}
  gitops: {repo_url: "https://git.example/ml/gitops.git", branch: main}
  environments:
    - name: dev
      namespace: models-dev
      values: {replicaCount: 1, autoscaling: {enabled: false}}
    - name: staging
      namespace: models-staging
      values: {rollout: {enabled: true}}
    - name: prod
      namespace: models-prod
      approval: manual
      values: {rollout: {enabled: true}, gpu: {enabled: true}}
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(CONFIG)
    monkeypatch.setenv("PIPELINE_CONFIG", str(path))
    return path


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          check=True).stdout


def test_gitops_init_writes_applications_argo_cd_accepts(tmp_path: Path, config: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    gitops = tmp_path / "gitops"
    assert run(["gitops", "init", "--gitops", str(gitops)]) == 0
    apps = {p.stem: yaml.safe_load(p.read_text()) for p in (gitops / "argocd").glob("*.yaml")}
    assert sorted(apps) == ["dev", "prod", "staging"]
    for env, app in apps.items():
        validate_application(app)
        chart, values = app["spec"]["sources"]
        assert chart["helm"]["valueFiles"] == [f"$values/environments/{env}/values.yaml"]
        assert values == {"repoURL": "https://git.example/ml/gitops.git",
                          "targetRevision": "main", "ref": "values"}
        assert app["spec"]["destination"]["namespace"] == f"models-{env}"
    # The validation is real: a misspelt field or a missing destination is refused.
    broken = yaml.safe_load((gitops / "argocd/dev.yaml").read_text())
    broken["spec"]["sources"][0]["helm"]["valueFile"] = ["x.yaml"]
    with pytest.raises(jsonschema.ValidationError, match="valueFile"):
        validate_application(broken)
    del broken["spec"]["destination"]
    with pytest.raises(jsonschema.ValidationError):
        validate_application(broken)
    # Idempotent: a second init commits nothing.
    capsys.readouterr()
    assert run(["gitops", "init", "--gitops", str(gitops)]) == 0
    assert "already up to date" in capsys.readouterr().out
    assert _git("rev-list", "--count", "HEAD", cwd=gitops).strip() == "1"


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_environment_values_are_chart_values_the_schema_accepts(tmp_path: Path, config: Path,
                                                               env: str) -> None:
    settings = load_settings().release()
    repo = GitOpsRepo(tmp_path / "gitops")
    spec = settings.environment(env)
    promote(repo, env, IMG, MODEL, analyse=lambda w: GOOD, stages=[100],
            values=environment_values(repo, spec))
    values = yaml.safe_load((repo.path / f"environments/{env}/values.yaml").read_text())
    objects = render_chart(CHART, values, release="secure-runtime", namespace=spec.namespace)
    validate_manifests(objects)
    workload = find(objects, "Rollout" if env != "dev" else "Deployment")
    container = workload["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == IMG
    assert any(MODEL in arg for arg in container["args"]), container["args"]
    # The release record is not chart values (that was the bug): the schema refuses it.
    record = yaml.safe_load((repo.path / f"environments/{env}/release.yaml").read_text())
    with pytest.raises(ChartRenderError):
        render_chart(CHART, record)


def test_unknown_and_skipped_environments_are_refused(tmp_path: Path, config: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    base = ["promote", "--gitops", str(tmp_path / "g"), "--image", IMG, "--model", MODEL,
            "--prometheus", "http://127.0.0.1:9"]
    assert run([*base, "--env", "qa"]) == 3
    assert "unknown environment 'qa' (release.environments: dev, staging, prod)" in \
        capsys.readouterr().err
    assert run([*base, "--env", "staging"]) == 11
    assert "was not promoted in 'dev'" in capsys.readouterr().err
    assert run([*base, "--env", "staging", "--force"]) == 4
    assert "--force needs --reason" in capsys.readouterr().err
    out = subprocess.run(["git", "-C", str(tmp_path / "g"), "rev-list", "--all"],
                         capture_output=True, text=True)
    assert out.stdout == ""  # nothing committed


def test_push_to_remote_and_rejected_push(tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    repo = GitOpsRepo(tmp_path / "gitops")
    _git("remote", "add", "origin", str(remote), cwd=repo.path)
    events: list[str] = []
    publish = Publisher(repo, "origin", "main", "dev", on_event=events.append)
    result = promote(repo, "dev", IMG, MODEL, analyse=lambda w: GOOD, stages=[50, 100],
                     publish=publish)
    # Every step was pushed as it was committed: the remote holds the same history.
    assert _git("rev-list", "main", cwd=remote).split()[::-1] == result.commits
    assert len(events) == len(result.commits) and events[0].startswith("pushed ")
    # Someone else pushes first: our next push is rejected, never forced.
    other = tmp_path / "other"
    subprocess.run(["git", "clone", "-q", str(remote), str(other)], check=True)
    (other / "notes.txt").write_text("hand edit\n")
    _git("add", "notes.txt", cwd=other)
    _git("-c", "user.name=o", "-c", "user.email=o@x", "commit", "-q", "-m", "edit", cwd=other)
    _git("push", "-q", "origin", "main", cwd=other)
    theirs = _git("rev-parse", "main", cwd=remote).strip()
    with pytest.raises(ConflictError, match="rejected \\(non-fast-forward"):
        promote(repo, "dev", IMG2, MODEL, analyse=lambda w: GOOD, stages=[100],
                publish=publish)
    assert _git("rev-parse", "main", cwd=remote).strip() == theirs
    # Fetching first (what the CLI does) fast-forwards when nothing diverged.
    fresh = GitOpsRepo(tmp_path / "fresh")
    fresh.fetch(str(remote), "main")
    assert fresh.head() == theirs


def test_argo_cd_wait_follows_the_recorded_exchange(tmp_path: Path) -> None:
    revision = "f" * 40
    with serve_recorded(recording("healthy"), revision, "tok") as (url, recorded):
        status = ArgoCD(url, "tok").wait("secure-runtime-staging", revision, poll=0)
        assert status["health"]["status"] == "Healthy"
        assert [q.get("refresh") for _p, q, _a in recorded.requests] == [
            ["normal"], None, None, None]
        assert all(q["appNamespace"] == ["argocd"] for _p, q, _a in recorded.requests)
        with pytest.raises(AuthError, match="refused the token"):
            ArgoCD(url, "wrong").wait("secure-runtime-staging", revision, poll=0)
    with serve_recorded(recording("degraded"), revision, "tok") as (url, _recorded):
        with pytest.raises(PolicyError, match="Degraded at ffffffffffff: Rollout is aborted"):
            ArgoCD(url, "tok").wait("secure-runtime-staging", revision, poll=0)


def test_promotion_waits_for_argo_cd_after_each_push(tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    repo = GitOpsRepo(tmp_path / "gitops")
    _git("remote", "add", "origin", str(remote), cwd=repo.path)

    class Waiting(Publisher):
        def __call__(self, sha: str) -> None:
            # The recording answers for the revision being waited for.
            with serve_recorded(recording("healthy"), sha, "tok") as (url, _r):
                self.argocd = ArgoCD(url, "tok")
                super().__call__(sha)

    events: list[str] = []
    result = promote(repo, "staging", IMG, MODEL, analyse=lambda w: GOOD, stages=[100],
                     publish=Waiting(repo, "origin", "main", "staging", poll=0,
                                     on_event=events.append))
    assert result.status == "promoted"
    synced = [e for e in events if e.startswith("Argo CD secure-runtime-staging: Synced/Healthy")]
    assert len(synced) == len(result.commits) == 2


def test_in_cluster_abort_is_recorded_as_a_revert(tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    repo = GitOpsRepo(tmp_path / "gitops")
    _git("remote", "add", "origin", str(remote), cwd=repo.path)
    promote(repo, "staging", IMG, MODEL, analyse=lambda w: GOOD, stages=[100])
    answers = iter(["degraded", "healthy"])  # the canary's sync aborts; the revert syncs

    class Waiting(Publisher):
        def __call__(self, sha: str) -> None:
            with serve_recorded(recording(next(answers)), sha, "tok") as (url, _r):
                self.argocd = ArgoCD(url, "tok")
                super().__call__(sha)

    with pytest.raises(PolicyError, match="Degraded.*recorded the roll-back of staging"):
        promote(repo, "staging", IMG2, MODEL, analyse=lambda w: pytest.fail("analysed"),
                publish=Waiting(repo, "origin", "main", "staging", poll=0))
    state = repo.current("staging")
    assert state is not None and (state.status, state.image) == ("rolled-back", IMG)
    assert state.reasons[0].startswith("aborted in the cluster: Argo CD reports")
    # Git (pushed) says what runs: the stable release's digests.
    assert _git("rev-parse", "main", cwd=remote).strip() == repo.head()
    assert repo.values("staging")["image"]["digest"] == "sha256:" + "a" * 64


def test_cli_rollback_pushes_to_the_configured_remote(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    repo = GitOpsRepo(tmp_path / "gitops")
    _git("remote", "add", "origin", str(remote), cwd=repo.path)
    publish = Publisher(repo, "origin", "main", "dev")
    promote(repo, "dev", IMG, MODEL, analyse=lambda w: GOOD, stages=[100], publish=publish)
    promote(repo, "dev", IMG2, MODEL, analyse=lambda w: GOOD, stages=[100], publish=publish)
    config = tmp_path / "pipeline.yaml"
    config.write_text("release:\n  gitops: {remote: origin, branch: main}\n")
    monkeypatch.setenv("PIPELINE_CONFIG", str(config))
    assert run(["rollback", "--gitops", str(repo.path), "--env", "dev", "--reason", "p99"]) == 0
    assert _git("rev-parse", "main", cwd=remote).strip() == repo.head()
    assert _git("log", "-1", "--format=%s", cwd=remote).startswith(
        "dev: roll back to secure-runtime@sha256:aaaaaaaaaaaa + minilm@sha256:111111111111")
