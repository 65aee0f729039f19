"""``pipeline workflow run release --isolation image``: every step inside the pipeline's
own image, under bubblewrap, end to end against the loopback registry.

The step image is built by ``pipeline build --pipeline-image``, pushed, signed and
attested (SBOM, provenance) like any release, then pinned by digest. The source comes
from a git server on loopback (``git://``), as it would on a cluster; the secrets are the
local directories the secret parameters name, mounted where the templates mount them.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.cli import run
from pipeline.errors import EXIT_INPUT
from tests.support.workflows import GitDaemon, git_repo, image_policy, release_secrets

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]


@dataclass(frozen=True)
class StepImage:
    ref: str
    layout: Path
    digest: str
    signing: Path


@pytest.fixture(scope="module")
def step_image(build_env, registry, tmp_path_factory: pytest.TempPathFactory) -> StepImage:
    """The step image: built, pushed, signed and attested by the release key."""
    root = tmp_path_factory.mktemp("step-image")
    signing, _ = release_secrets(root)
    layout = root / "layout"
    assert run(["build", "--pipeline-image", "--out", str(layout)]) == 0
    index = json.loads((layout / "index.json").read_text())
    (digest,) = {m["digest"] for m in index["manifests"]}
    ref = f"{registry.host}/ml/pipeline@{digest}"
    assert run(["push", str(layout), f"{registry.host}/ml/pipeline:v1", "--insecure"]) == 0
    key = str(signing / "release.key")
    assert run(["sign", ref, "--key", key, "--insecure"]) == 0
    assert run(["sbom", str(layout), "-o", str(root / "sbom.json")]) == 0
    assert run(["provenance", str(layout), "-o", str(root / "provenance.json")]) == 0
    for kind, predicate in (("cyclonedx", "sbom.json"), ("slsaprovenance", "provenance.json")):
        assert run(["attest", ref, "--type", kind, "--predicate", str(root / predicate),
                    "--key", key, "--insecure"]) == 0
    pub = str(signing / "release.pub")
    assert run(["verify", ref, "--key", pub, "--insecure"]) == 0
    for kind in ("cyclonedx", "slsaprovenance"):
        assert run(["verify-attestation", ref, "--type", kind, "--key", pub, "--insecure"]) == 0
    return StepImage(ref, layout, digest, signing)


@pytest.fixture()
def git_server(tmp_path: Path) -> Iterator[GitDaemon]:
    server = GitDaemon(tmp_path)
    try:
        yield server
    finally:
        server.close()


def test_the_step_image_is_pinned_by_digest_in_the_rendered_templates(
        step_image: StepImage, tmp_path: Path) -> None:
    assert run(["workflow", "render", "--out", str(tmp_path),
                "--pipeline-image", step_image.ref]) == 0
    import yaml

    for name in ("release", "pr-check"):
        template = yaml.safe_load((tmp_path / f"{name}.yaml").read_text())
        params = {p["name"]: p["value"] for p in template["spec"]["arguments"]["parameters"]}
        assert params["pipeline-image"] == step_image.ref


def test_release_runs_end_to_end_inside_the_pipeline_image(
    built, step_image: StepImage, registry, git_server: GitDaemon, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # ``built`` put the source project's base and dependency layers in the layer cache
    # the runner shares with the build step (the image has no pip, apt or dpkg-deb).
    signing, kek = release_secrets(tmp_path)
    repo = git_repo(tmp_path, image_policy=image_policy(registry.host))
    revision = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()
    gitops = tmp_path / "gitops.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(gitops)], check=True)
    workdir = tmp_path / "run"
    capsys.readouterr()
    code = run(["--json", "workflow", "run", "release", "--isolation", "image",
                "-p", f"gitops-repo={git_server.url(gitops.name)}",
                "--pipeline-image", step_image.ref, "--insecure",
                "--image-key", str(step_image.signing / "release.pub"),
                "-p", f"git-repo={git_server.url(repo.name)}", "-p", f"git-revision={revision}",
                "-p", f"repository={registry.host}/ml/runtime-iso",
                "-p", f"model-repository={registry.host}/ml/models/tiny-iso",
                "-p", "registry-insecure=true", "-p", "scan-env=dev",
                "-p", f"signing-key-secret={signing}", "-p", f"kek-secret={kek}",
                "--workdir", str(workdir), "--parallel", "2"])
    out = capsys.readouterr()
    logs = "\n".join(f"== {p.name}\n{p.read_text()}" for p in (workdir / "logs").glob("*.log"))
    assert code == 0, out.err + logs
    record = json.loads((workdir / "run.json").read_text())
    steps = {s["name"]: s for s in record["steps"]}
    assert all(s["status"] == "succeeded" for s in steps.values()), steps
    assert record["parameters"]["pipeline-image"] == step_image.ref
    image_digest = steps["push-image"]["outputs"]["digest"]
    model_digest = steps["push-model"]["outputs"]["digest"]
    pinned = f"{registry.host}/ml/runtime-iso@{image_digest}"
    assert run(["verify", pinned, "--key", str(signing / "release.pub"), "--insecure"]) == 0
    rendered = (workdir / "workspace" / "rendered.yaml").read_text()
    assert pinned in rendered and model_digest in rendered
    # The steps ran the image's CLI, not this venv's: the scripts name container paths
    # and the checkout came from the image's git over git://.
    script = (workdir / "scripts" / "seal-model.sh").read_text()
    assert "/var/run/secrets/pipeline/kek/keyring.json" in script and str(kek) not in script
    assert (workdir / "workspace" / "revision").read_text().strip() == revision
    private = (signing / "release.key").read_text().splitlines()[1]
    for path in [workdir / "run.json", *workdir.glob("scripts/*"), *workdir.glob("logs/*")]:
        assert private not in path.read_text()


def test_a_step_image_the_key_did_not_sign_runs_no_step(
        step_image: StepImage, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.errors import EXIT_VERIFICATION
    from pipeline.signing.keypair import create_signing_keypair

    create_signing_keypair(tmp_path / "other.key", tmp_path / "other.pub")
    code = run(["workflow", "run", "release", "--isolation", "image",
                "--pipeline-image", step_image.ref, "--insecure",
                "--image-key", str(tmp_path / "other.pub"), "--workdir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == EXIT_VERIFICATION, err
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "image" / "rootfs").exists()
    assert not (tmp_path / "run" / "run.json").exists()


def test_isolation_refuses_a_pipeline_image_without_a_digest(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run(["workflow", "run", "release", "--isolation", "image",
                "--pipeline-image", "127.0.0.1:5000/ml/pipeline:v1",
                "--workdir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT
    assert "by digest" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
