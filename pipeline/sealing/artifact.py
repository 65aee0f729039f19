"""A sealed model as an OCI 1.1 artifact: its format and its plain transport (docs/oci.md).

Manifest: an OCI image manifest with ``artifactType``
``application/vnd.secure-model-pipeline.model.v1+json``, the empty config
(``{}``), and one layer per file of the sealed directory, titled with its
relative path. Layers are in sorted path order and carry no timestamps, so the
same sealed directory always gives the same manifest digest.

Only sealed content leaves the machine: ``seal.json`` must be there, and a
file that looks like plaintext weights (``.safetensors``, ``.bin`` ...) is
refused. Pulling verifies every blob digest, refuses unsafe or duplicate
names and unknown layer types, and writes into a temporary sibling directory
that is renamed into place only when everything checked out.

Core, not a capability: the secure runtime pulls with :func:`pull_sealed_model` and
then opens the model with :func:`pipeline.sealing.open.open_sealed`, which verifies
the signature. Whom to trust when pulling, and signatures attached as referrers,
are composed on top of this in :mod:`pipeline.distribution`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from pipeline._fileio import atomic_directory
from pipeline.errors import InputError, IntegrityError
from pipeline.oci import media_types as mt
from pipeline.oci.digest import file_digest
from pipeline.oci.reference import Reference
from pipeline.oci.registry import RegistryOptions, open_client
from pipeline.sealing.manifest import MANIFEST_NAME, SEALED_SUFFIX, WEIGHT_SUFFIXES
from pipeline.signing.model import SIGNATURE_NAME

if TYPE_CHECKING:
    from pipeline.oci.client import RegistryClient

__all__ = [
    "build_manifest",
    "check_manifest",
    "media_type_for",
    "pull_sealed_model",
    "push_sealed_model",
]

_MAX_FILES = 10_000

#: ``check(client, repository, manifest digest, directory)``: runs on the complete,
#: digest-verified pull before it is renamed into place; raising refuses it.
PullCheck = Callable[["RegistryClient", str, str, Path], None]


def media_type_for(relative: str) -> str:
    """The layer media type of one file of a sealed model directory."""
    if relative == MANIFEST_NAME:
        return mt.MODEL_SEAL
    if relative == SIGNATURE_NAME:
        return mt.MODEL_SIGNATURE
    if relative.endswith(SEALED_SUFFIX):
        return mt.MODEL_SEALED_FILE
    return mt.MODEL_FILE


def _collect(sealed_dir: Path) -> list[tuple[str, Path]]:
    if not sealed_dir.is_dir():
        raise InputError(f"{sealed_dir}: not a directory")
    files: list[tuple[str, Path]] = []
    for root, dirs, names in os.walk(sealed_dir, followlinks=False):
        for name in dirs:
            if (Path(root) / name).is_symlink():
                raise InputError(f"{Path(root) / name}: symbolic links are not pushed")
        for name in names:
            path = Path(root) / name
            if path.is_symlink() or not path.is_file():
                raise InputError(f"{path}: only regular files can be pushed (no links)")
            relative = path.relative_to(sealed_dir).as_posix()
            suffix = PurePosixPath(relative).suffix.lower()
            if suffix in WEIGHT_SUFFIXES:
                raise InputError(
                    f"{path}: looks like plaintext weights; seal the model before pushing it"
                )
            files.append((relative, path))
    files.sort()
    if not any(rel == MANIFEST_NAME for rel, _ in files):
        raise InputError(f"{sealed_dir}: not a sealed model (no {MANIFEST_NAME})")
    return files


def build_manifest(
    sealed_dir: str | os.PathLike[str],
) -> tuple[bytes, list[tuple[dict[str, Any], Path]]]:
    """The artifact manifest for a sealed directory and the (descriptor, file) of each layer."""
    layers: list[tuple[dict[str, Any], Path]] = []
    for relative, path in _collect(Path(sealed_dir)):
        digest, size = file_digest(path)
        descriptor = {
            "mediaType": media_type_for(relative),
            "digest": digest,
            "size": size,
            "annotations": {mt.ANNOTATION_TITLE: relative},
        }
        layers.append((descriptor, path))
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "artifactType": mt.MODEL_ARTIFACT,
        "config": {"mediaType": mt.OCI_EMPTY, "digest": mt.EMPTY_DIGEST, "size": 2},
        "layers": [descriptor for descriptor, _ in layers],
    }
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode(), layers


def _as_reference(ref: str | Reference) -> Reference:
    return ref if isinstance(ref, Reference) else Reference.parse(ref)


def push_sealed_model(
    sealed_dir: str | os.PathLike[str],
    ref: str | Reference,
    *,
    client: RegistryClient | None = None,
    registry_options: RegistryOptions | None = None,
) -> str:
    """Push a sealed model directory as an OCI artifact; returns the manifest digest."""
    reference = _as_reference(ref)
    body, layers = build_manifest(sealed_dir)
    with open_client(reference, client, registry_options) as registry:
        repo = reference.repository
        registry.push_blob(repo, mt.EMPTY_JSON, mt.EMPTY_DIGEST)
        for descriptor, path in layers:
            registry.push_blob(repo, path, descriptor["digest"])
        for digest in [mt.EMPTY_DIGEST, *(d["digest"] for d, _ in layers)]:
            if not registry.blob_exists(repo, digest):
                raise IntegrityError(f"{repo}: blob {digest} missing after upload")
        target = reference.tag or reference.digest or "latest"
        digest = registry.put_manifest(repo, target, body, mt.OCI_MANIFEST)
    if reference.digest and reference.digest != digest:
        raise IntegrityError(f"{reference}: pushed manifest has digest {digest}")
    return digest


def _safe_relative(title: Any, seen: set[str]) -> str:
    if not isinstance(title, str) or not title:
        raise InputError("artifact layer without an org.opencontainers.image.title")
    if "\\" in title or "\x00" in title or title.startswith("/") or ":" in title.split("/")[0]:
        raise InputError(f"artifact layer title {title!r} is not a safe relative path")
    parts = PurePosixPath(title).parts
    if not parts or any(p in ("..", ".", "") for p in title.split("/")):
        raise InputError(f"artifact layer title {title!r} is not a safe relative path")
    key = title.casefold()
    if key in seen:
        raise InputError(f"artifact has two layers named {title!r}")
    seen.add(key)
    return title


def check_manifest(manifest: Any, what: str) -> list[tuple[str, dict[str, Any]]]:
    """The ``(title, layer)`` pairs of a sealed-model manifest; InputError when it is not one."""
    if not isinstance(manifest, dict):
        raise InputError(f"{what}: manifest is not a JSON object")
    if manifest.get("artifactType") != mt.MODEL_ARTIFACT:
        raise InputError(
            f"{what}: not a sealed model artifact (artifactType {manifest.get('artifactType')!r})"
        )
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not layers or len(layers) > _MAX_FILES:
        raise InputError(f"{what}: artifact has no (or too many) layers")
    seen: set[str] = set()
    out: list[tuple[str, dict[str, Any]]] = []
    prefixes: set[str] = set()
    for layer in layers:
        if not isinstance(layer, dict):
            raise InputError(f"{what}: layer is not a descriptor")
        if layer.get("mediaType") not in mt.MODEL_LAYER_TYPES:
            raise InputError(f"{what}: unknown layer media type {layer.get('mediaType')!r}")
        title = _safe_relative((layer.get("annotations") or {}).get(mt.ANNOTATION_TITLE), seen)
        if media_type_for(title) != layer["mediaType"]:
            raise InputError(f"{what}: layer {title!r} has media type {layer['mediaType']}")
        parents = PurePosixPath(title).parents
        prefixes.update(p.as_posix().casefold() for p in parents if p.as_posix() != ".")
        out.append((title, layer))
    clash = prefixes & seen
    if clash:
        raise InputError(f"{what}: {sorted(clash)[0]!r} is both a file and a directory")
    if MANIFEST_NAME not in {t for t, _ in out}:
        raise InputError(f"{what}: artifact has no {MANIFEST_NAME}")
    return out


def pull_sealed_model(
    ref: str | Reference,
    dest: str | os.PathLike[str],
    *,
    client: RegistryClient | None = None,
    registry_options: RegistryOptions | None = None,
    check: PullCheck | None = None,
) -> Path:
    """Pull a sealed model artifact into ``dest`` (must not exist or be empty).

    Every blob is digest- and size-checked; ``check`` (if given) then sees the whole
    directory before it is renamed to ``dest``, so a refused model never appears there.
    Nothing here decides whom to trust: the signature is checked when the model is
    opened, or by ``check`` (:func:`pipeline.distribution.pull_model` passes one).
    """
    reference = _as_reference(ref)
    target = Path(dest)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InputError(f"{target}: exists and is not an empty directory")
    with open_client(reference, client, registry_options) as registry:
        repo = reference.repository
        body, media_type, digest = registry.get_manifest(
            repo, reference.identifier, (mt.OCI_MANIFEST,)
        )
        if media_type != mt.OCI_MANIFEST:
            raise InputError(f"{reference}: not an OCI manifest ({media_type})")
        layers = check_manifest(json.loads(body), str(reference))
        with atomic_directory(target, take_empty=True) as tmp:
            for title, layer in layers:
                path = tmp.joinpath(*title.split("/"))
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "xb") as handle:
                    registry.download_blob(repo, layer["digest"], handle)
                    size = handle.tell()
                if size != layer.get("size"):
                    raise IntegrityError(
                        f"{reference}: {title} has size {size}, manifest says {layer.get('size')}"
                    )
            if check is not None:
                check(registry, repo, digest, tmp)
    return target
