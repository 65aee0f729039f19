"""``pipeline init DIR``: a model repository in the layout the workflows expect.

Why a scaffold: the release and pr-check workflows take paths inside the repository
(``model-dir``, ``chart``, ``image-policy``, ``manifests``, ``charts``), and their
defaults are this layout, so a project made here releases on ``git push`` with no
flags. The model is examples/tiny (a real safetensors model, small enough to build
in seconds); the chart is this repository's helm/secure-runtime. docs/project-layout.md
describes every file.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline._fileio import atomic_directory
from pipeline.errors import ConfigError, ConflictError

_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = _ROOT / "examples" / "tiny"
CHART = _ROOT / "helm" / "secure-runtime"
DEFAULT_REGISTRY = "127.0.0.1:5000"
#: Digest-shaped placeholders the PR check renders the chart with (the release renders
#: it with the digests it pushed; promotion pins them in the GitOps repository).
PLACEHOLDER = "sha256:" + "0" * 64

IMAGE_POLICY = """\
# Which images this project's pods may run (docs/policies.md): signed by the release key
# (the release's policy-check sets PIPELINE_RELEASE_PUBLIC_KEY to the mounted key), with
# SLSA provenance, SBOM and vulnerability-scan attestations, by digest only.
version: 1
default: deny
requireDigest: true
rules:
  - name: {name}-release
    images: ["{registry}/{name}/**"]
    authorities: [{{key: "${{PIPELINE_RELEASE_PUBLIC_KEY}}"}}]
    threshold: 1
    attestations: [{{type: slsaprovenance}}, {{type: cyclonedx}}, {{type: vuln}}]
"""

README = """\
# {name}: a model repository for the Secure Model Pipeline

Made by `pipeline init`. The layout (docs/project-layout.md in the pipeline):

- `pipeline.yaml`: the serving project (model module, runtime), the release
  environments, the workflows' parameters (`workflows:`)
- `model.py`, `config.json`, `requirements.lock`: the serving code the image carries
  (never the weights)
- `model/`: the model the release seals and signs (`model-dir`), weights included
- `helm/secure-runtime/`: the chart the release renders with its digests (`chart`); the
  PR check renders it once per `values-<env>.yaml` (`charts`)
- `policies/image-policy.yaml`: which images may run (`image-policy`)
- `deploy/`: further manifests the PR check verifies (`manifests`)
- `traffic/canary-request.json`: the inference request sent through the canary split
  while dev's canary steps run (`canary-traffic-body`)

## Push to release

    git init -b main && git add -A && git commit -m "first model"
    git init --bare ../{name}.git
    pipeline hooks install --repo ../{name}.git
    git remote add origin ../{name}.git
    git push origin main            # runs `release`; any other branch runs `pr-check`
    pipeline runs list --repo ../{name}.git
    pipeline runs show 1 --repo ../{name}.git

The release pushes to the registry in `pipeline.yaml` (`workflows.parameters`,
`{registry}` here, `registry-insecure` for a loopback registry); start one there, for
example Debian's `docker-registry` (it listens on 127.0.0.1:5000 by default). It ends by
recording the release in the GitOps repository and promoting it to `dev`, the first
environment: with a loopback registry (`promote-local: "true"`) the chart's pods start
on this machine from the pushed image and sealed model, and dev's canary steps run
against them (a first release goes straight to 100 %, as Argo Rollouts' first deploy);
a failed analysis rolls back, in git. `pipeline release status --gitops DIR --env dev` on a
clone of the GitOps repository says what runs. The hook
made a release signing key pair and a KEK keyring beside the bare repository
(`pipeline-runs/secrets/`, 0700); `pipeline hooks install -p signing-key-secret=DIR -p
kek-secret=DIR` uses yours instead.

Without the hook, from this directory:

    pipeline workflow run pr-check
    pipeline workflow run release -p git-revision=$(git rev-parse HEAD) \\
        -p signing-key-secret=DIR -p kek-secret=DIR
"""

#: dev: one pod a release, a short canary (50 % -> 100 %, a 5 s pause, then two
#: analysis measurements 1 s apart over a 10 s window, at least 5 canary requests),
#: probes and scrapes every second: a release is promoted in seconds on one machine.
DEV_VALUES: dict[str, Any] = {
    "replicaCount": 1,
    "autoscaling": {"enabled": False},
    "rollout": {"enabled": True, "weights": [50, 100], "pauseDuration": "5s",
                "analysis": {"interval": "1s", "count": 2, "failureLimit": 0,
                             "window": "10s", "minRequests": 5}},
    "serviceMonitor": {"interval": "1s", "scrapeTimeout": "1s"},
    "probes": {"startup": {"periodSeconds": 1}, "readiness": {"periodSeconds": 1}},
}
#: staging: the chart's own canary (10 % -> 50 % -> 100 %, minutes of analysis).
STAGING_VALUES: dict[str, Any] = {"rollout": {"enabled": True}}
#: The inference request the embedded default's promotion sends during the canary.
CANARY_REQUEST = "traffic/canary-request.json"

DEPLOY_README = """\
Manifests this project deploys besides the chart (NetworkPolicies, ConfigMaps...).
The PR check (`manifests`, default `deploy`) checks every YAML file here against the
admission policies; none is needed.
"""


@dataclass(frozen=True)
class Scaffold:
    """What ``init_project`` wrote."""

    root: Path
    name: str
    registry: str
    files: tuple[str, ...]


def _promotion(name: str, loopback: bool) -> dict[str, str]:
    """The embedded default's hand-off (a loopback registry: this machine): the release's
    ``promote`` step starts the chart's pods here and sends the canary request through
    the split while dev's canary steps run (workflows/release.py). Elsewhere a cluster's
    analysis target goes in ``promote-flags``."""
    if not loopback:
        return {}
    return {"promote-local": "true", "canary-traffic-path": f"/v2/models/{name}/infer",
            "canary-traffic-body": CANARY_REQUEST}


def _pipeline_yaml(name: str, registry: str) -> str:
    loopback = registry.startswith(("127.", "localhost"))
    source = yaml.safe_load((EXAMPLE / "pipeline.yaml").read_text(encoding="utf-8"))
    source["name"] = name
    source["release"] = {
        "chart": {"path": "helm/secure-runtime"},
        "image_policy": "policies/image-policy.yaml",
        "environments": [
            {"name": "dev", "namespace": f"{name}-dev", "values": DEV_VALUES},
            {"name": "staging", "namespace": f"{name}-staging", "values": STAGING_VALUES},
        ],
    }
    source["workflows"] = {
        "parameters": {
            "repository": f"{registry}/{name}/runtime",
            "model-repository": f"{registry}/{name}/model",
            "registry-insecure": "true" if loopback else "false",
        },
        # No vulnerability DB on this machine: "not scanned" is a warning in dev. A
        # release for production sets scan-env: prod and a DB (docs/workflows.md).
        "release": {"scan-env": "dev", **_promotion(name, loopback)},
        "pr-check": {"chart-set": f"image.digest={PLACEHOLDER},model.digest={PLACEHOLDER}"},
    }
    header = ("# The model project (docs/project-layout.md): what the image serves, where it\n"
              "# is released, and the parameters its workflows get on git push.\n")
    return header + yaml.safe_dump(source, sort_keys=False, width=100)


def _canary_request(model: dict[str, Any]) -> str:
    """An OIP v2 request for the model's first declared input (one row, small values)."""
    spec = model["model"]["inputs"][0]
    shape = [1 if d == -1 else int(d) for d in spec["shape"]]
    count = 1
    for d in shape:
        count *= d
    return json.dumps({"inputs": [{"name": spec["name"], "datatype": spec["datatype"],
                                   "shape": shape,
                                   "data": [round(0.1 * (i % 10 + 1), 1)
                                            for i in range(count)]}]})


def init_project(directory: Path, *, name: str | None = None,
                 registry: str = DEFAULT_REGISTRY) -> Scaffold:
    """Write a new model repository at ``directory`` (which must not exist or be empty).

    Built beside the target and renamed into place: a failure leaves nothing behind.
    """
    directory = Path(directory)
    for source in (EXAMPLE, CHART):
        if not source.is_dir():
            raise ConfigError(f"the scaffold needs {source} (the pipeline's source tree)")
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ConflictError(f"{directory} exists and is not empty: pipeline init makes a "
                            "new project; choose a new directory")
    name = name or directory.resolve().name.lower()
    if not re.match(r"^[a-z0-9][a-z0-9._-]{0,62}$", name):
        raise ConfigError(f"project name {name!r}: lowercase letters, digits, '.', '_', '-' "
                          "(pass --name)")
    if not registry or "/" in registry or registry.startswith(("http:", "https:")):
        raise ConfigError(f"--registry {registry!r}: a registry host[:port], like "
                          f"{DEFAULT_REGISTRY}")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    with atomic_directory(directory, mode=0o755, take_empty=True) as tmp:
        shutil.copytree(EXAMPLE, tmp / "model", ignore=shutil.ignore_patterns(
            "__pycache__", "*.pyc", "requirements.lock"))
        model_file = tmp / "model" / "pipeline.yaml"
        model = yaml.safe_load(model_file.read_text(encoding="utf-8"))
        model["name"] = name
        model_file.write_text("# The model the release seals and signs (model-dir).\n"
                              + yaml.safe_dump(model, sort_keys=False), encoding="utf-8")
        for item in EXAMPLE.iterdir():
            if item.is_file() and item.suffix != ".safetensors" and item.name != "pipeline.yaml":
                shutil.copy2(item, tmp / item.name)
        shutil.copytree(CHART, tmp / "helm" / "secure-runtime", ignore=ignore)
        for env, values in (("dev", DEV_VALUES), ("staging", STAGING_VALUES)):
            (tmp / "helm" / "secure-runtime" / f"values-{env}.yaml").write_text(
                f"# {env}: checked by the PR check (with placeholder digests)\n"
                + yaml.safe_dump(values), encoding="utf-8")
        (tmp / "pipeline.yaml").write_text(_pipeline_yaml(name, registry), encoding="utf-8")
        (tmp / "policies").mkdir()
        (tmp / "policies" / "image-policy.yaml").write_text(
            IMAGE_POLICY.format(name=name, registry=registry), encoding="utf-8")
        (tmp / CANARY_REQUEST).parent.mkdir(parents=True)
        (tmp / CANARY_REQUEST).write_text(_canary_request(model) + "\n", encoding="utf-8")
        (tmp / "deploy").mkdir()
        (tmp / "deploy" / "README.md").write_text(DEPLOY_README, encoding="utf-8")
        (tmp / "README.md").write_text(README.format(name=name, registry=registry),
                                       encoding="utf-8")
        (tmp / ".gitignore").write_text("__pycache__/\n*.pyc\n", encoding="utf-8")
        files = tuple(sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file()))
    return Scaffold(directory, name, registry, files)
