"""A sealed model as an OCI 1.1 artifact (format: docs/oci.md).

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

The model signature (OpenSSF model-signing bundle, ``model.sig``) travels either
inside the artifact as a layer, or attached to it afterwards as an OCI 1.1
referrer (artifactType: the Sigstore bundle media type, ``subject``: the model
manifest), so a model can be signed after it was pushed, by several signers,
without changing its digest. ``pull_model(..., trust=...)`` verifies the model
against the signature inside it or any attached one before it is renamed into
place: an unverifiable model is never left at ``dest``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.errors import InputError, IntegrityError, NotFoundError, VerificationError
from pipeline.oci import media_types as mt
from pipeline.oci.client import RegistryClient
from pipeline.oci.digest import sha256_digest
from pipeline.oci.manifest import parse_manifest
from pipeline.oci.reference import Reference

SEAL_NAME = "seal.json"
SIGNATURE_NAME = "model.sig"
SEALED_SUFFIX = ".sealed"
#: Plaintext weight files: never pushed (they must be sealed first).
PLAINTEXT_WEIGHT_SUFFIXES = frozenset(
    {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".onnx", ".npz", ".h5", ".msgpack"}
)
_MAX_FILES = 10_000
#: The model-signing bundle (Sigstore bundle v0.3) attached as a referrer.
SIGNATURE_ARTIFACT_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
_MAX_SIGNATURE_BYTES = 16 << 20
#: Attached signatures tried at most (each is a small download and a verify).
_MAX_ATTACHED = 32


def media_type_for(relative: str) -> str:
    """The layer media type of one file of a sealed model directory."""
    if relative == SEAL_NAME:
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
            if suffix in PLAINTEXT_WEIGHT_SUFFIXES:
                raise InputError(
                    f"{path}: looks like plaintext weights; seal the model before pushing it"
                )
            files.append((relative, path))
    files.sort()
    if not any(rel == SEAL_NAME for rel, _ in files):
        raise InputError(f"{sealed_dir}: not a sealed model (no {SEAL_NAME})")
    return files


def build_manifest(sealed_dir: str | os.PathLike[str]) -> tuple[bytes, list[tuple[dict, Path]]]:
    """The artifact manifest for a sealed directory and the (descriptor, file) of each layer."""
    from pipeline.oci.client import _hash_file

    layers: list[tuple[dict[str, Any], Path]] = []
    for relative, path in _collect(Path(sealed_dir)):
        digest, size = _hash_file(path)
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


def _client(ref: Reference, client: RegistryClient | None, opts: dict[str, Any]) -> RegistryClient:
    return client if client is not None else RegistryClient.for_reference(ref, **opts)


def push_model(
    sealed_dir: str | os.PathLike[str],
    ref: str | Reference,
    client: RegistryClient | None = None,
    **opts: Any,
) -> str:
    """Push a sealed model directory as an OCI artifact; returns the manifest digest."""
    reference = ref if isinstance(ref, Reference) else Reference.parse(ref)
    body, layers = build_manifest(sealed_dir)
    registry = _client(reference, client, opts)
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


def _check_manifest(manifest: Any, what: str) -> list[tuple[str, dict[str, Any]]]:
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
    if SEAL_NAME not in {t for t, _ in out}:
        raise InputError(f"{what}: artifact has no {SEAL_NAME}")
    return out


def attach_model_signature(
    ref: str | Reference,
    signature: str | os.PathLike[str],
    client: RegistryClient | None = None,
    **opts: Any,
) -> str:
    """Attach a model-signing bundle to the model artifact ``ref``; returns its manifest digest.

    The bundle is not checked here (verifiers decide whom to trust), only that it is
    a JSON object of sane size; the model's own manifest and digest stay unchanged.
    """
    reference = ref if isinstance(ref, Reference) else Reference.parse(ref)
    path = Path(signature)
    try:
        if path.stat().st_size > _MAX_SIGNATURE_BYTES:
            raise InputError(f"{path}: larger than a model signature can be")
        bundle = path.read_bytes()
        if not isinstance(json.loads(bundle), dict):
            raise ValueError("not an object")
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable model signature bundle ({exc})") from None
    registry = _client(reference, client, opts)
    repo = reference.repository
    subject = registry.head_manifest(repo, reference.identifier)
    if subject is None:
        raise NotFoundError(f"{reference}: no such model artifact")
    body, _, _ = registry.get_manifest(repo, subject["digest"], (mt.OCI_MANIFEST,))
    _check_manifest(json.loads(body), str(reference))
    blob_digest = registry.push_blob(repo, bundle)
    registry.push_blob(repo, mt.EMPTY_JSON, mt.EMPTY_DIGEST)
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "artifactType": SIGNATURE_ARTIFACT_TYPE,
        "config": {"mediaType": mt.OCI_EMPTY, "digest": mt.EMPTY_DIGEST, "size": 2},
        "layers": [
            {"mediaType": SIGNATURE_ARTIFACT_TYPE, "digest": blob_digest, "size": len(bundle)}
        ],
        "subject": {
            "mediaType": mt.OCI_MANIFEST,
            "digest": subject["digest"],
            "size": subject["size"],
        },
    }
    data = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    # put_manifest keeps the referrers fallback tag when the registry has no API.
    return registry.put_manifest(repo, sha256_digest(data), data, mt.OCI_MANIFEST)


def attached_model_signatures(
    ref: str | Reference, client: RegistryClient | None = None, **opts: Any
) -> list[bytes]:
    """The model-signing bundles attached to ``ref``'s manifest (digest-verified bytes)."""
    reference = ref if isinstance(ref, Reference) else Reference.parse(ref)
    registry = _client(reference, client, opts)
    repo = reference.repository
    digest = reference.digest
    if digest is None:
        head = registry.head_manifest(repo, reference.identifier)
        if head is None:
            raise NotFoundError(f"{reference}: no such model artifact")
        digest = str(head["digest"])
    return _attached_bundles(registry, repo, digest)


def _attached_bundles(registry: RegistryClient, repo: str, digest: str) -> list[bytes]:
    bundles: list[bytes] = []
    found = registry.referrers(repo, digest, artifact_type=SIGNATURE_ARTIFACT_TYPE)
    for descriptor in found[:_MAX_ATTACHED]:
        body, media_type, _ = registry.get_manifest(repo, str(descriptor.get("digest")))
        manifest = parse_manifest(body, media_type, where=f"signature of {repo}@{digest}")
        if (manifest.subject or {}).get("digest") != digest:
            continue  # the fallback index is writable by anyone who can push: re-check
        for layer in manifest.blobs[1:]:
            if layer["mediaType"] == SIGNATURE_ARTIFACT_TYPE and layer["size"] <= (
                _MAX_SIGNATURE_BYTES
            ):
                bundles.append(registry.get_blob(repo, layer["digest"]))
    return bundles


def _verify_pulled(
    registry: RegistryClient, repo: str, digest: str, directory: Path, trust: Any
) -> None:
    """Verify ``directory`` with its own model.sig or an attached one (which is then kept)."""
    from pipeline.signing.model import verify_model

    reasons: list[str] = []
    if (directory / SIGNATURE_NAME).exists():
        verify_model(directory, trust)
        return
    for bundle in _attached_bundles(registry, repo, digest):
        (directory / SIGNATURE_NAME).write_bytes(bundle)
        try:
            verify_model(directory, trust)
            return
        except (VerificationError, IntegrityError) as exc:
            reasons.append(str(exc))
    (directory / SIGNATURE_NAME).unlink(missing_ok=True)
    detail = "; ".join(reasons) if reasons else "none inside the artifact or attached to it"
    raise VerificationError(f"{repo}@{digest}: no trusted model signature ({detail})")


def pull_model(
    ref: str | Reference,
    dest: str | os.PathLike[str],
    *,
    client: RegistryClient | None = None,
    trust: Any = None,
    **opts: Any,
) -> Path:
    """Pull a sealed model artifact into ``dest`` (must not exist or be empty).

    With ``trust`` (a :class:`pipeline.signing.model.Trust`) the model must verify
    against its own ``model.sig`` or an attached signature before ``dest`` appears.
    """
    reference = ref if isinstance(ref, Reference) else Reference.parse(ref)
    target = Path(dest)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InputError(f"{target}: exists and is not an empty directory")
    registry = _client(reference, client, opts)
    repo = reference.repository
    body, media_type, digest = registry.get_manifest(repo, reference.identifier, (mt.OCI_MANIFEST,))
    if media_type != mt.OCI_MANIFEST:
        raise InputError(f"{reference}: not an OCI manifest ({media_type})")
    layers = _check_manifest(json.loads(body), str(reference))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
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
        if trust is not None:
            _verify_pulled(registry, repo, digest, tmp, trust)
        with contextlib.suppress(FileNotFoundError, OSError):
            target.rmdir()  # an empty placeholder directory
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


__all__ = [
    "SIGNATURE_ARTIFACT_TYPE",
    "attach_model_signature",
    "attached_model_signatures",
    "build_manifest",
    "media_type_for",
    "pull_model",
    "push_model",
]
