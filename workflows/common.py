"""What every step template shares: the pipeline image, the workspace, the secret mounts.

Why one place: the local runner maps exactly these mount paths to local directories, so
the paths, volume names and parameter names must agree between all templates.
"""

from __future__ import annotations

from hera.workflows import Parameter, Script, SecretVolume
from hera.workflows import models as m

#: The shared volume every step works in (a PVC per workflow run on a cluster).
WORKSPACE_VOLUME = "workspace"
WORKSPACE = "/workspace"
#: Read-only secret mounts: the release signing key pair and the KEK keyring.
SIGNING_MOUNT = "/var/run/secrets/pipeline/signing"
KEK_MOUNT = "/var/run/secrets/pipeline/kek"
SIGNING_KEY = f"{SIGNING_MOUNT}/release.key"
SIGNING_PUB = f"{SIGNING_MOUNT}/release.pub"
KEYRING = f"{KEK_MOUNT}/keyring.json"

#: The pipeline's own image, pinned by digest (``repo@sha256:...``).
IMAGE = "{{workflow.parameters.pipeline-image}}"
PRELUDE = "set -euo pipefail\n"


def wp(name: str) -> str:
    """An Argo expression for workflow parameter ``name``."""
    return "{{workflow.parameters." + name + "}}"


def workspace_claim(size: str = "5Gi") -> m.PersistentVolumeClaim:
    """The per-run PVC that carries artifacts between steps (one directory locally)."""
    return m.PersistentVolumeClaim(
        metadata=m.ObjectMeta(name=WORKSPACE_VOLUME),
        spec=m.PersistentVolumeClaimSpec(
            access_modes=["ReadWriteOnce"],
            resources=m.VolumeResourceRequirements(requests={"storage": m.Quantity(size)}),
        ),
    )


def signing_volume() -> SecretVolume:
    """The release signing key pair, from the Secret named by ``signing-key-secret``."""
    return SecretVolume(
        name="signing-key", secret_name=wp("signing-key-secret"), mount_path=SIGNING_MOUNT,
        default_mode=0o400, read_only=True,
    )


def kek_volume() -> SecretVolume:
    """The KEK keyring (key provider ``local``), from the Secret named by ``kek-secret``."""
    return SecretVolume(
        name="kek", secret_name=wp("kek-secret"), mount_path=KEK_MOUNT,
        default_mode=0o400, read_only=True,
    )


def step(
    name: str,
    source: str,
    *,
    inputs: tuple[str, ...] = (),
    outputs: dict[str, str] | None = None,
    secrets: tuple[SecretVolume, ...] = (),
    env: dict[str, str] | None = None,
) -> Script:
    """A bash script template running ``pipeline ...`` commands in the pipeline image.

    Secrets reach the step only as mounted files (never in args or env values); env values
    are paths, or user text that must not be spliced into the bash source (a roll-back's
    reason). ``outputs`` maps output parameter names to files under the workspace.
    """
    return Script(
        name=name,
        image=IMAGE,
        command=["bash"],
        source=PRELUDE + source.strip() + "\n",
        inputs=[Parameter(name=n) for n in inputs] or None,
        outputs=[Parameter(name=k, value_from=m.ValueFrom(path=v))
                 for k, v in sorted((outputs or {}).items())] or None,
        volume_mounts=[m.VolumeMount(name=WORKSPACE_VOLUME, mount_path=WORKSPACE)],
        volumes=list(secrets) or None,
        env=[m.EnvVar(name=k, value=v) for k, v in sorted((env or {}).items())] or None,
        security_context=m.SecurityContext(
            allow_privilege_escalation=False, capabilities=m.Capabilities(drop=["ALL"]),
        ),
    )


def registry_flags() -> str:
    """Bash that sets ``flags`` to ``--insecure`` when ``registry-insecure`` is true."""
    value = wp("registry-insecure")
    return f'flags=()\nif [ "{value}" = "true" ]; then flags+=(--insecure); fi\n'


CHECKOUT_SOURCE = f"""
rm -rf {WORKSPACE}/src
git clone --quiet "{wp('git-repo')}" {WORKSPACE}/src
git -C {WORKSPACE}/src checkout --quiet --detach "{wp('git-revision')}"
git -C {WORKSPACE}/src rev-parse HEAD > {WORKSPACE}/revision
"""


#: Where a hand-off step clones the GitOps repository (``gitops-repo``) and how it sets
#: up: every commit is pushed to it (``origin``), and the project's own pipeline.yaml
#: (environments, gates) applies when the source checkout has one.
GITOPS = f"{WORKSPACE}/gitops"


def gitops_checkout(*, config: bool = True) -> str:
    """Bash: clone ``gitops-repo`` into the workspace; refuse an empty parameter (exit 3)."""
    lines = [
        f'gitops="{wp("gitops-repo")}"',
        'if [ -z "$gitops" ]; then',
        '  echo "error: parameter gitops-repo is empty: give the GitOps repository (a git '
        'URL, or a bare repository\'s path) that records and promotes releases" >&2',
        "  exit 3",
        "fi",
        f"rm -rf {GITOPS}",
        f'git clone --quiet "$gitops" {GITOPS}',
        "export PIPELINE_GITOPS_REMOTE=origin",
    ]
    if config:
        lines.append(f"if [ -f {WORKSPACE}/src/pipeline.yaml ]; then "
                     f"export PIPELINE_CONFIG={WORKSPACE}/src/pipeline.yaml; fi")
    return "\n".join(lines) + "\n"


#: Bash: ``env`` is the ``environment`` parameter, else pipeline.yaml's first environment.
ENVIRONMENT = f"""env="{wp('environment')}"
if [ -z "$env" ]; then env="$(pipeline release environments --first)"; fi
"""
