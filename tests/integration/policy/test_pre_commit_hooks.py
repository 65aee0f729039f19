"""The repository's .pre-commit-hooks.yaml, run by pre-commit itself on a real git repository.

pre-commit validates the manifest and runs the hook through ``pre-commit try-repo`` on
this checkout (a local clone: no network). The ``language: python`` hook would have
pre-commit build a virtual environment and install this project from an index, which
cannot happen offline here; its ``language: system`` twin, with the same entry, runs the
installed ``pipeline`` and is what these tests execute.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.charts import POD_LINE, write_chart

ROOT = Path(__file__).resolve().parents[3]
HOOKS = ROOT / ".pre-commit-hooks.yaml"
BIN = Path(sys.executable).parent
BAD_POD = """apiVersion: v1
kind: Pod
metadata: {name: bad, namespace: ns}
spec:
  hostNetwork: true
  securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: app
    image: "registry.example/app@sha256:%s"
    securityContext:
      readOnlyRootFilesystem: true
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL]}
""" % ("d4" * 32)


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"), "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.invalid", "PRE_COMMIT_COLOR": "never"}


def _pre_commit(args: list[str], cwd: Path,
                env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "pre-commit"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def _git(repo: Path, env: dict[str, str], *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True,
                   timeout=60)


def test_pre_commit_accepts_the_hooks_manifest(tmp_path: Path) -> None:
    done = _pre_commit(["validate-manifest", str(HOOKS)], ROOT, _env(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    hooks = {h["id"]: h for h in yaml.safe_load(HOOKS.read_text())}
    assert set(hooks) == {"pipeline-policy-check", "pipeline-policy-check-system"}
    assert hooks["pipeline-policy-check"]["entry"] == hooks["pipeline-policy-check-system"][
        "entry"]
    assert hooks["pipeline-policy-check"]["language"] == "python"


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    env = _env(tmp_path)
    repo = tmp_path / "project"
    (repo / "deploy").mkdir(parents=True)
    (repo / "deploy" / "pod.yaml").write_text(BAD_POD.replace("hostNetwork: true",
                                                              "hostNetwork: false"))
    (repo / ".github" / "workflows").mkdir(parents=True)
    (repo / ".github" / "workflows" / "ci.yml").write_text("on: [push]\njobs: {}\n")
    write_chart(repo / "helm")
    _git(repo, env, "init", "-q")
    _git(repo, env, "add", "-A")
    _git(repo, env, "commit", "-qm", "init")
    return repo, env


def _try(repo: Path, env: dict[str, str], *more: str) -> subprocess.CompletedProcess[str]:
    return _pre_commit(["try-repo", str(ROOT), "pipeline-policy-check-system", "--all-files",
                        *more], repo, env)


def test_the_hook_passes_a_clean_repository(project: tuple[Path, dict[str, str]]) -> None:
    repo, env = project
    done = _try(repo, env, "--verbose")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Passed" in done.stdout
    # pre-commit passed every YAML file: the CI config is skipped, said, not refused.
    assert ".github/workflows/ci.yml: no Kubernetes object, skipped" in done.stdout
    assert "ok: 3 object(s) checked" in done.stdout  # the Pod, and the chart's two


def test_the_hook_fails_on_a_manifest_and_on_a_chart_value(
        project: tuple[Path, dict[str, str]]) -> None:
    repo, env = project
    (repo / "deploy" / "pod.yaml").write_text(BAD_POD)
    done = _try(repo, env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Failed" in done.stdout
    assert "deploy/pod.yaml:1: document 0: Pod/bad: policy pod-host-isolation" in done.stdout
    (repo / "deploy" / "pod.yaml").write_text(BAD_POD.replace("hostNetwork: true",
                                                              "hostNetwork: false"))
    values = repo / "helm" / "demo" / "values.yaml"
    values.write_text(values.read_text().replace("hostNetwork: false", "hostNetwork: true"))
    done = _try(repo, env)
    assert done.returncode == 1, done.stdout + done.stderr
    # A changed values file checks its chart; the finding names the template and line.
    assert (f"helm/demo/templates/pods.yaml:{POD_LINE}: document 1: Pod/release-pod "
            "(chart helm/demo): policy pod-host-isolation") in done.stdout
