"""``--isolation image``: each step inside the pipeline's own image, under bubblewrap.

Why: on a cluster a step runs in the image its template names (``pipeline-image``, by
digest), with only the volumes the template mounts. Running the same rendered template
that way here tests what a cluster runs, not the host's venv. The image is pulled by the
digest the ``pipeline-image`` parameter pins (a tag is refused), checked against that
digest, and unpacked once per run, as ``pipeline deploy --local`` unpacks a pod's image;
each step then gets:

* the image's root read-only, its ``Env``, ``User`` (65532 in a user namespace, every
  capability dropped, no new privileges) and a fresh ``/tmp`` and ``$HOME`` (tmpfs);
* each ``volumeMount`` at its ``mountPath``: the workspace PVC read-write, a Secret
  volume read-only from the local directory its parameter names;
* the script at ``/argo/staging/script`` (where Argo's executor puts it), run with the
  template's ``command``, and the template's ``env`` (container paths, unchanged);
* its own pid, ipc and uts namespaces; the host's network (the registry is on loopback).

Nothing of the host environment reaches the step (``--clearenv``).

One mount is the executor's, not the template's: the host's build caches (layers and
verified .debs, ``settings.build()``) at the image's default cache paths, read-write,
like a node-local cache. Why: the image has no pip, apt or dpkg-deb, so a ``pipeline
build`` step inside it can make its base and dependency layers only from the cache (the
app layer is always built there). On a cluster the same needs a cache volume; see
docs/workflows.md.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, InputError
from pipeline.oci.registry import RegistryOptions

SCRIPT_PATH = "/argo/staging/script"
ISOLATIONS = ("host", "image")


@dataclass(frozen=True)
class StepImage:
    """An unpacked image: its root and the ``config`` section of its OCI config."""

    reference: str
    digest: str
    rootfs: Path
    config: dict[str, Any]

    @property
    def user(self) -> tuple[int, int]:
        """``User`` as numeric uid and gid (a name or root is refused)."""
        raw = str(self.config.get("User") or "")
        uid, _, gid = raw.partition(":")
        if not uid.isdigit() or not (gid or uid).isdigit() or int(uid) == 0:
            raise ConfigError(f"{self.reference}: the image's User must be a numeric "
                              f"non-root uid[:gid], got {raw!r}")
        return int(uid), int(gid or uid)

    @property
    def env(self) -> dict[str, str]:
        return dict(str(item).partition("=")[::2] for item in self.config.get("Env") or [])


def pull_step_image(reference: str, workdir: Path, registry_options: RegistryOptions, *,
                    keys: Sequence[Path] = ()) -> StepImage:
    """Pull ``reference`` (``REPO@sha256:...``) into ``workdir`` and unpack it.

    With ``keys``, the image's cosign signature must verify against one of them first
    (VerificationError, exit 6, and nothing is pulled): a step image is run only when
    it is the one the release key signed. Pulled and unpacked as local pods' images are
    (``pipeline.deploy.image.ImageCache``: blobs checked against their digests, layers
    applied with whiteouts, nothing written outside the tree, no devices or set-id bits).
    """
    from pipeline.deploy.image import ImageCache
    from pipeline.oci.reference import Reference

    ref = Reference.parse(reference)
    if not ref.digest:
        raise InputError(f"pipeline image {reference!r}: --isolation image needs the image "
                         "by digest (REPOSITORY@sha256:...), not by a tag alone")
    if keys:
        from pipeline.signing.image import verify_image

        verify_image(ref, list(keys), registry_options=registry_options)
    unpacked = ImageCache(workdir, registry_options).get(str(ref))
    image = StepImage(reference, unpacked.digest, unpacked.rootfs, unpacked.config)
    image.user  # noqa: B018 - refuse a root image before any step starts
    return image


def add_mountpoints(image: StepImage, paths: list[str]) -> None:
    """Create the mount points (bubblewrap cannot create them on a read-only root)."""
    for path in [SCRIPT_PATH, "/tmp", image.env.get("HOME", "/home/nonroot"), *paths]:
        target = image.rootfs / path.lstrip("/")
        if path == SCRIPT_PATH:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch(exist_ok=True)
        else:
            target.mkdir(parents=True, exist_ok=True)


def cache_mounts(image: StepImage) -> list[tuple[str, Path, bool]]:
    """The host's layer and .deb caches at the image's default cache paths (when present)."""
    from pipeline.config import load_settings

    build = load_settings().build()
    home = image.env.get("HOME", "/home/nonroot")
    mounts = []
    for local, name in ((build.layer_cache, "layers"), (build.deb_cache, "debs")):
        local = Path(local).expanduser()
        if local.is_dir():
            mounts.append((f"{home}/.cache/secure-model-pipeline/{name}", local.resolve(), False))
    return mounts


def sandbox_argv(
    image: StepImage, *, mounts: list[tuple[str, Path, bool]], script: Path,
    command: list[str], env: dict[str, str], workdir: str,
) -> list[str]:
    """The bubblewrap command line of one step (``mounts``: path, local dir, read-only)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise ConfigError("--isolation image needs bubblewrap (bwrap) on this machine")
    uid, gid = image.user
    home = image.env.get("HOME", "/home/nonroot")
    argv = [bwrap, "--ro-bind", str(image.rootfs), "/", "--proc", "/proc", "--dev", "/dev",
            "--tmpfs", "/tmp", "--tmpfs", home]
    for path, local, read_only in sorted([*mounts, *cache_mounts(image)], key=lambda m: m[0]):
        argv += ["--ro-bind" if read_only else "--bind", str(local), path]
    argv += ["--ro-bind", str(script), SCRIPT_PATH,
             "--unshare-user", "--uid", str(uid), "--gid", str(gid),
             "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent",
             "--new-session", "--cap-drop", "ALL", "--clearenv"]
    for key, value in {**image.env, **env}.items():
        argv += ["--setenv", key, value]
    argv += ["--chdir", workdir, "--", *command, SCRIPT_PATH]
    return argv
