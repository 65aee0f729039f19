"""The source repository the workflow tests run their workflows on, and release secrets.

Shared by the host-mode runner tests and the ``--isolation image`` test, so both run the
release workflow on the same inputs.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.support.helm import render_chart

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "tests" / "fixtures" / "build_project"
REQUIRED = {"image": {"digest": "sha256:" + "a1" * 32}, "model": {"digest": "sha256:" + "b2" * 32}}


def git_repo(root: Path, extra_manifest: str | None = None,
              image_policy: str | None = None, prod_values: str | None = None) -> Path:
    """A git repository: the build project, a model, the runtime chart with values for two
    environments (staging, prod), manifests."""
    repo = root / "source"
    shutil.copytree(PROJECT, repo)
    shutil.copytree(ROOT / "examples" / "tiny", repo / "model",
                    ignore=shutil.ignore_patterns("requirements.lock", "__pycache__"))
    chart = repo / "helm" / "secure-runtime"
    shutil.copytree(ROOT / "helm" / "secure-runtime", chart)
    (chart / "values-staging.yaml").write_text(yaml.safe_dump(REQUIRED))
    (chart / "values-prod.yaml").write_text(prod_values or yaml.safe_dump(
        {**REQUIRED, "replicaCount": 3, "rollout": {"enabled": True}}))
    (repo / "deploy").mkdir()
    (repo / "deploy" / "runtime.yaml").write_text(
        yaml.safe_dump_all(render_chart(ROOT / "helm" / "secure-runtime", REQUIRED)))
    if extra_manifest:
        (repo / "deploy" / "bad.yaml").write_text(extra_manifest)
    if image_policy:
        (repo / "policies").mkdir()
        (repo / "policies" / "image-policy.yaml").write_text(image_policy)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "source"], check=True)
    return repo




def image_policy(registry_host: str) -> str:
    """The release's image policy: the release key, and all three attestations."""
    return (f"version: 1\ndefault: deny\nrequireDigest: true\nrules:\n"
            f"  - name: release\n    images: ['{registry_host}/ml/**']\n"
            "    authorities: [{key: '${PIPELINE_RELEASE_PUBLIC_KEY}'}]\n"
            "    threshold: 1\n"
            "    attestations: [{type: slsaprovenance}, {type: cyclonedx}, {type: vuln}]\n")


def release_secrets(root: Path) -> tuple[Path, Path]:
    """The two secret directories of a release: the signing key pair and the KEK keyring."""
    from pipeline.cli import run
    from pipeline.signing.keypair import create_signing_keypair

    signing, kek = root / "secrets" / "signing", root / "secrets" / "kek"
    signing.mkdir(parents=True)
    kek.mkdir(mode=0o700)
    create_signing_keypair(signing / "release.key", signing / "release.pub")
    import os

    saved = os.environ.get("PIPELINE_KEYRING")
    os.environ["PIPELINE_KEYRING"] = str(kek / "keyring.json")
    try:
        assert run(["keys", "create", "release-kek"]) == 0
    finally:
        if saved is None:
            os.environ.pop("PIPELINE_KEYRING", None)
        else:
            os.environ["PIPELINE_KEYRING"] = saved
    return signing, kek


class GitDaemon:
    """``git://127.0.0.1:PORT/`` over the repositories under ``root``, as a cluster's git
    server would be: each connection is handed to ``git daemon --inetd`` (the listening
    socket is ours, bound to port 0, so there is no race for a free port)."""

    def __init__(self, root: Path) -> None:
        import socket
        import threading

        self.root = root
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(8)
        self.port = self._socket.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}"

    def _serve(self) -> None:
        import threading

        while True:
            try:
                conn, _ = self._socket.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn) -> None:  # type: ignore[no-untyped-def]
        with conn:
            subprocess.run(["git", "daemon", "--inetd", "--export-all", "--enable=receive-pack",
                            f"--base-path={self.root}", str(self.root)],
                           stdin=conn, stdout=conn, stderr=subprocess.DEVNULL, check=False,
                           timeout=120)

    def close(self) -> None:
        self._socket.close()
