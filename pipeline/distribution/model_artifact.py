"""Sealed models through registries, with their signatures (format: docs/oci.md).

The artifact itself (manifest, layers, plain push and pull) is
:mod:`pipeline.sealing.artifact`; this module adds who vouches for it.

The model signature (OpenSSF model-signing bundle, ``model.sig``) travels either
inside the artifact as a layer, or attached to it afterwards as an OCI 1.1
referrer (artifactType: the Sigstore bundle media type, ``subject``: the model
manifest), so a model can be signed after it was pushed, by several signers,
without changing its digest. ``pull_model(..., trust=...)`` verifies the model
against the signature inside it or any attached one before it is renamed into
place: an unverifiable model is never left at ``dest``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pipeline.errors import InputError, IntegrityError, NotFoundError, VerificationError
from pipeline.oci import media_types as mt
from pipeline.oci.client import RegistryClient
from pipeline.oci.digest import sha256_digest
from pipeline.oci.manifest import parse_manifest
from pipeline.oci.reference import Reference
from pipeline.oci.registry import RegistryOptions, open_client
from pipeline.sealing.artifact import (
    PullCheck,
    check_manifest,
    pull_sealed_model,
    push_sealed_model,
)
from pipeline.signing.model import BUNDLE_MEDIA_TYPE, SIGNATURE_NAME, Trust, verify_model

#: The model-signing bundle (Sigstore bundle v0.3) attached as a referrer.
SIGNATURE_ARTIFACT_TYPE = BUNDLE_MEDIA_TYPE
_MAX_SIGNATURE_BYTES = 16 << 20
#: Attached signatures tried at most (each is a small download and a verify).
_MAX_ATTACHED = 32

#: Pushing needs no signature policy: what is pushed is exactly the sealed directory.
push_model = push_sealed_model


def _as_reference(ref: str | Reference) -> Reference:
    return ref if isinstance(ref, Reference) else Reference.parse(ref)


def attach_model_signature(
    ref: str | Reference,
    signature: str | os.PathLike[str],
    *,
    client: RegistryClient | None = None,
    registry_options: RegistryOptions | None = None,
) -> str:
    """Attach a model-signing bundle to the model artifact ``ref``; returns its manifest digest.

    The bundle is not checked here (verifiers decide whom to trust), only that it is
    a JSON object of sane size; the model's own manifest and digest stay unchanged.
    """
    reference = _as_reference(ref)
    path = Path(signature)
    try:
        if path.stat().st_size > _MAX_SIGNATURE_BYTES:
            raise InputError(f"{path}: larger than a model signature can be")
        bundle = path.read_bytes()
        if not isinstance(json.loads(bundle), dict):
            raise ValueError("not an object")
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable model signature bundle ({exc})") from None
    with open_client(reference, client, registry_options) as registry:
        repo = reference.repository
        subject = registry.head_manifest(repo, reference.identifier)
        if subject is None:
            raise NotFoundError(f"{reference}: no such model artifact")
        body, _, _ = registry.get_manifest(repo, subject["digest"], (mt.OCI_MANIFEST,))
        check_manifest(json.loads(body), str(reference))
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
    ref: str | Reference,
    *,
    client: RegistryClient | None = None,
    registry_options: RegistryOptions | None = None,
) -> list[bytes]:
    """The model-signing bundles attached to ``ref``'s manifest (digest-verified bytes)."""
    reference = _as_reference(ref)
    with open_client(reference, client, registry_options) as registry:
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


def _verifier(trust: Trust) -> PullCheck:
    def verify_pulled(registry: RegistryClient, repo: str, digest: str, directory: Path) -> None:
        """Verify ``directory`` with its own model.sig or an attached one (which is then kept)."""
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

    return verify_pulled


def pull_model(
    ref: str | Reference,
    dest: str | os.PathLike[str],
    *,
    client: RegistryClient | None = None,
    trust: Trust | None = None,
    registry_options: RegistryOptions | None = None,
) -> Path:
    """Pull a sealed model artifact into ``dest`` (must not exist or be empty).

    With ``trust`` the model must verify against its own ``model.sig`` or an attached
    signature before ``dest`` appears. Without it nothing is verified here (the
    runtime verifies when it opens the model).
    """
    check = _verifier(trust) if trust is not None else None
    return pull_sealed_model(
        ref, dest, client=client, registry_options=registry_options, check=check
    )
