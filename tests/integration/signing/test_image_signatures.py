"""Image signatures against a real docker-registry on 127.0.0.1 (cosign's storage format)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.cli import run
from pipeline.errors import EXIT_NOT_FOUND, EXIT_VERIFICATION, NotFoundError, VerificationError
from pipeline.oci import RegistryOptions
from pipeline.oci import media_types as mt
from pipeline.oci.digest import sha256_digest
from pipeline.oci.reference import Reference
from pipeline.oci.transfer import push_layout
from pipeline.signing import simple_signing as ss
from pipeline.signing.image import clear_cache, sign_image, verify_image
from tests.fixtures_registry import RegistryServer, write_image

pytestmark = pytest.mark.integration


@pytest.fixture
def push(registry: RegistryServer, tmp_path: Path) -> Callable[..., tuple[Reference, str]]:
    """Factory: push a small image built here; returns (reference with tag, digest)."""
    counter = iter(range(1_000_000))

    def make(repository: str = "team/app", tag: str = "v1", content: bytes | None = None):
        n = next(counter)
        body = content if content is not None else f"image {n} {tmp_path}\n".encode()
        layout, _ = write_image(tmp_path / f"layout{n}", layers=[{"app.txt": body}])
        ref = Reference.parse(f"{registry.host}/{repository}:{tag}")
        with registry.client() as client:
            digest = push_layout(layout, ref, client, tag="v1")
        return ref, digest

    return make


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    clear_cache()


OPTS = RegistryOptions(insecure=True)


def _sig_tag(digest: str) -> str:
    return digest.replace(":", "-") + ".sig"


def _put_sig_manifest(registry: RegistryServer, repository: str, tag: str,
                      layers: list[tuple[bytes, dict[str, str], str]]) -> None:
    """Write a hand-made .sig manifest (blob, annotations, media type per layer)."""
    with registry.client() as client:
        descriptors = []
        for blob, annotations, media_type in layers:
            client.push_blob(repository, blob)
            descriptors.append({"mediaType": media_type, "digest": sha256_digest(blob),
                                "size": len(blob), "annotations": annotations})
        client.push_blob(repository, mt.EMPTY_JSON)
        manifest = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                    "config": {"mediaType": mt.OCI_CONFIG, "digest": mt.EMPTY_DIGEST,
                               "size": 2},
                    "layers": descriptors}
        client.put_manifest(repository, tag, json.dumps(manifest).encode(), mt.OCI_MANIFEST)


def _read_sig(registry: RegistryServer, ref: Reference, digest: str) -> dict:
    with registry.client() as client:
        body, _, _ = client.get_manifest(ref.repository, _sig_tag(digest))
    return json.loads(body)


# -- round trip and storage format --------------------------------------------------------
def test_sign_then_verify_by_tag_and_by_digest(push, keys, registry: RegistryServer) -> None:
    ref, digest = push()
    private, public = keys("alice")
    signed = sign_image(ref, private, registry_options=OPTS)
    assert signed["digest"] == digest and signed["added"] and signed["signatures"] == 1
    by_tag = verify_image(ref, [public], registry_options=OPTS)
    assert by_tag["verified"] and by_tag["digest"] == digest and len(by_tag["signers"]) == 1
    by_digest = verify_image(f"{ref.name}@{digest}", [public], registry_options=OPTS)
    assert by_digest["digest"] == digest


def test_storage_is_cosigns_format(push, keys, registry: RegistryServer) -> None:
    ref, digest = push()
    private, public = keys("alice")
    sign_image(ref, private, registry_options=OPTS, annotations={"commit": "abc123"})
    manifest = _read_sig(registry, ref, digest)
    assert manifest["mediaType"] == mt.OCI_MANIFEST
    assert manifest["config"]["mediaType"] == mt.OCI_CONFIG
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    with registry.client() as client:
        payload = client.get_blob(ref.repository, layer["digest"])
        config = json.loads(client.get_blob(ref.repository, manifest["config"]["digest"]))
    assert config["rootfs"]["diff_ids"] == [layer["digest"]]
    document = json.loads(payload)
    assert document["critical"] == {
        "identity": {"docker-reference": ref.name},
        "image": {"docker-manifest-digest": digest},
        "type": "cosign container image signature",
    }
    assert document["optional"] == {"commit": "abc123"}
    # The annotation is a base64 DER ECDSA signature over the payload bytes (SHA-256).
    signature = base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"])
    public_key = serialization.load_pem_public_key(public.read_bytes())
    public_key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))  # raises if invalid


def test_signing_twice_with_the_same_key_adds_nothing(push, keys) -> None:
    ref, _ = push()
    private, _ = keys("alice")
    first = sign_image(ref, private, registry_options=OPTS)
    again = sign_image(ref, private, registry_options=OPTS)
    assert not again["added"] and again["signature_manifest"] == first["signature_manifest"]


def test_unsigned_image_fails(push, keys) -> None:
    ref, digest = push()
    _, public = keys("alice")
    with pytest.raises(VerificationError, match="no signatures found"):
        verify_image(ref, [public], registry_options=OPTS)


def test_missing_image(keys, registry: RegistryServer) -> None:
    private, _ = keys("alice")
    with pytest.raises(NotFoundError):
        sign_image(f"{registry.host}/team/absent:v1", private, registry_options=OPTS)


# -- attacks ------------------------------------------------------------------------------
def test_wrong_key_fails(push, keys) -> None:
    ref, _ = push()
    private, _ = keys("alice")
    _, mallory_public = keys("mallory")
    sign_image(ref, private, registry_options=OPTS)
    with pytest.raises(VerificationError, match="not signed by a trusted key"):
        verify_image(ref, [mallory_public], registry_options=OPTS)


def test_signature_copied_from_another_image_fails(push, keys, registry) -> None:
    signed_ref, signed_digest = push(tag="good")
    other_ref, other_digest = push(tag="evil")
    private, public = keys("alice")
    sign_image(signed_ref, private, registry_options=OPTS)
    # Copy the valid .sig manifest to the other image's signature tag.
    with registry.client() as client:
        body, media_type, _ = client.get_manifest(signed_ref.repository, _sig_tag(signed_digest))
        client.put_manifest(other_ref.repository, _sig_tag(other_digest), body, media_type)
    with pytest.raises(VerificationError, match=f"signs {signed_digest}, not {other_digest}"):
        verify_image(other_ref, [public], registry_options=OPTS)


def test_tag_moved_after_signing_fails(push, keys) -> None:
    ref, first = push(tag="release")
    private, public = keys("alice")
    sign_image(ref, private, registry_options=OPTS)
    assert verify_image(ref, [public], registry_options=OPTS)["digest"] == first
    _, second = push(tag="release")  # same tag, new image
    assert second != first
    with pytest.raises(VerificationError, match=f"{second} is unsigned"):
        verify_image(ref, [public], registry_options=OPTS)
    # The old digest is still signed: pinning by digest is what admission should do.
    assert verify_image(f"{ref.name}@{first}", [public], registry_options=OPTS)["verified"]


def test_tampered_payload_fails(push, keys, registry) -> None:
    ref, digest = push()
    private, public = keys("alice")
    # cosign's layout only (no attachment manifest): the .sig layer is the one copy.
    sign_image(ref, private, registry_options=OPTS, attachments=False)
    (layer,) = _read_sig(registry, ref, digest)["layers"]
    with registry.client() as client:
        payload = client.get_blob(ref.repository, layer["digest"])
    tampered = payload.replace(b'"optional":null', b'"optional":{"x":"y"}')
    assert tampered != payload
    _put_sig_manifest(registry, ref.repository, _sig_tag(digest),
                      [(tampered, layer["annotations"], ss.MEDIA_TYPE)])
    with pytest.raises(VerificationError, match="payload altered"):
        verify_image(ref, [public], registry_options=OPTS)


@pytest.mark.parametrize(
    ("annotations", "media_type", "reason"),
    [
        ({ss.SIGNATURE_ANNOTATION: "not base64!"}, ss.MEDIA_TYPE, "not valid base64"),
        ({}, ss.MEDIA_TYPE, "no dev.cosignproject.cosign/signature annotation"),
        ({ss.SIGNATURE_ANNOTATION: "AAAA"}, "application/octet-stream", "is not a signature"),
    ],
)
def test_bad_layers_are_rejected_with_reasons(push, keys, registry, annotations, media_type,
                                              reason) -> None:
    ref, digest = push()
    _, public = keys("alice")
    payload = ss.build_payload(ref.name, digest)
    _put_sig_manifest(registry, ref.repository, _sig_tag(digest),
                      [(payload, annotations, media_type)])
    with pytest.raises(VerificationError, match=reason):
        verify_image(ref, [public], registry_options=OPTS)


def test_malformed_payload_signed_by_trusted_key_is_rejected(push, keys, registry) -> None:
    ref, digest = push()
    private, public = keys("alice")
    from pipeline.signing._ecdsa import load_signer

    garbage = b'{"critical":{"type":"cosign container image signature"}}'
    signature = load_signer(private).sign(garbage)
    _put_sig_manifest(registry, ref.repository, _sig_tag(digest), [
        (garbage, {ss.SIGNATURE_ANNOTATION: base64.b64encode(signature).decode()},
         ss.MEDIA_TYPE)])
    with pytest.raises(VerificationError, match="malformed simple signing payload"):
        verify_image(ref, [public], registry_options=OPTS)


def test_index_at_the_signature_tag_is_malformed(push, keys, registry) -> None:
    ref, digest = push()
    _, public = keys("alice")
    index = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}).encode()
    with registry.client() as client:
        client.put_manifest(ref.repository, _sig_tag(digest), index, mt.OCI_INDEX)
    with pytest.raises(VerificationError, match="malformed"):
        verify_image(ref, [public], registry_options=OPTS)


def test_signature_for_another_repository_needs_an_explicit_identity(push, keys,
                                                                     registry) -> None:
    source, digest = push(repository="staging/app", content=b"same image")
    private, public = keys("alice")
    sign_image(source, private, registry_options=OPTS)
    # Promote: same image and signature copied into the production repository.
    target, same = push(repository="prod/app", content=b"same image")
    assert same == digest
    with registry.client() as client:
        body, media_type, _ = client.get_manifest(source.repository, _sig_tag(digest))
        manifest = json.loads(body)
        for blob in [manifest["config"], *manifest["layers"]]:
            client.push_blob(target.repository,
                             client.get_blob(source.repository, blob["digest"]))
        client.put_manifest(target.repository, _sig_tag(digest), body, media_type)
    with pytest.raises(VerificationError, match="signed for"):
        verify_image(target, [public], registry_options=OPTS)
    assert verify_image(target, [public], identity=source.name, registry_options=OPTS)["verified"]
    assert verify_image(target, [public], identity="*", registry_options=OPTS)["verified"]


# -- several signers ----------------------------------------------------------------------
def test_multiple_signatures_and_threshold(push, keys) -> None:
    ref, _ = push()
    alice, alice_pub = keys("alice")
    bob, bob_pub = keys("bob")
    _, carol_pub = keys("carol")
    sign_image(ref, alice, registry_options=OPTS)
    assert sign_image(ref, bob, registry_options=OPTS)["signatures"] == 2
    both = verify_image(ref, [alice_pub, bob_pub, carol_pub], threshold=2, registry_options=OPTS)
    assert len(both["signers"]) == 2
    with pytest.raises(VerificationError, match="1 of 2 required"):
        verify_image(ref, [alice_pub, carol_pub], threshold=2, registry_options=OPTS)
    with pytest.raises(VerificationError, match="cannot be met"):
        verify_image(ref, [alice_pub, alice_pub], threshold=2, registry_options=OPTS)


def test_warm_verification_is_cached_by_digest_and_invalidated_by_new_signatures(
    push, keys
) -> None:
    ref, _ = push()
    alice, alice_pub = keys("alice")
    bob, bob_pub = keys("bob")
    sign_image(ref, alice, registry_options=OPTS)
    assert verify_image(ref, [alice_pub, bob_pub], registry_options=OPTS)["cached"] is False
    assert verify_image(ref, [alice_pub, bob_pub], registry_options=OPTS)["cached"] is True
    sign_image(ref, bob, registry_options=OPTS)  # new .sig manifest digest: cache miss
    result = verify_image(ref, [alice_pub, bob_pub], registry_options=OPTS)
    assert result["cached"] is False and len(result["signers"]) == 2


# -- any manifest: model artifacts too ----------------------------------------------------
def test_model_artifact_manifest_is_signed_the_same_way(keys, registry) -> None:
    repository = "models/minilm"
    config_blob = mt.EMPTY_JSON
    layer = b'{"format":"sealed","files":[]}'
    with registry.client() as client:
        client.push_blob(repository, config_blob)
        client.push_blob(repository, layer)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
            "artifactType": mt.MODEL_ARTIFACT,
            "config": {"mediaType": mt.OCI_EMPTY, "digest": mt.EMPTY_DIGEST, "size": 2},
            "layers": [{"mediaType": mt.MODEL_SEAL, "digest": sha256_digest(layer),
                        "size": len(layer)}],
        }).encode()
        digest = client.put_manifest(repository, "v1", manifest, mt.OCI_MANIFEST)
    private, public = keys("alice")
    ref = f"{registry.host}/{repository}@{digest}"
    sign_image(ref, private, registry_options=OPTS)
    assert verify_image(ref, [public], registry_options=OPTS)["digest"] == digest


# -- CLI and TLS --------------------------------------------------------------------------
def test_cli_sign_and_verify(push, keys, capsys: pytest.CaptureFixture[str]) -> None:
    ref, digest = push()
    private, public = keys("alice")
    _, other = keys("mallory")
    assert run(["sign", str(ref), "--key", str(private), "--insecure", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["digest"] == digest
    assert run(["verify", str(ref), "--key", str(public), "--insecure", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verified"] is True
    assert run(["verify", str(ref), "--key", str(other), "--insecure"]) == EXIT_VERIFICATION
    captured = capsys.readouterr()
    assert "not signed by a trusted key" in captured.err and "Traceback" not in captured.err
    code = run(["verify", str(ref), "--key", str(public), "--key", str(other),
                "--threshold", "2", "--insecure"])
    assert code == EXIT_VERIFICATION
    missing = f"{ref.name}:nope"
    assert run(["verify", missing, "--key", str(public), "--insecure"]) == EXIT_NOT_FOUND


def test_tls_registry_with_auth(tls_registry: RegistryServer, keys, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    layout, digest = write_image(tmp_path / "tls-img")
    ref = Reference.parse(f"{tls_registry.host}/secure/signed-app:v1")
    with tls_registry.client() as client:
        push_layout(layout, ref, client, tag="v1")
    monkeypatch.setenv("PIPELINE_REGISTRY_USERNAME", tls_registry.username or "")
    monkeypatch.setenv("PIPELINE_REGISTRY_PASSWORD", tls_registry.password or "")
    private, public = keys("alice")
    options = RegistryOptions(ca_file=tls_registry.ca_file)
    sign_image(ref, private, registry_options=options)
    assert verify_image(ref, [public], registry_options=options)["digest"] == digest
    assert run(["verify", str(ref), "--key", str(public), "--ca-file",
                str(tls_registry.ca_file)]) == 0
