"""Bad input through the CLI: each case exits with its documented code, one error line.

One test per row of the table in docs/image-signatures.md ("Bad input and exit
codes"), against the real docker-registry (directly, or through the misbehaving
proxy of tests/fixtures_registry.py). Every case also checks that no traceback
reached the user and that nothing half-written is left behind.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.cli import run
from pipeline.errors import (
    EXIT_AUTH,
    EXIT_INPUT,
    EXIT_INTEGRITY,
    EXIT_UNREACHABLE,
    EXIT_VERIFICATION,
)
from pipeline.oci import media_types as mt
from pipeline.oci.digest import sha256_digest
from pipeline.oci.layout import OCILayout
from pipeline.oci.reference import Reference
from pipeline.oci.transfer import push_layout
from pipeline.signing import attestation, image
from tests.fixtures_registry import FlakyProxy, RegistryServer, write_image

pytestmark = pytest.mark.integration


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str], code: int, text: str) -> None:
    capsys.readouterr()
    assert run(argv) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert text in err, err


@pytest.fixture
def push(registry: RegistryServer, tmp_path: Path) -> Callable[..., tuple[str, str]]:
    """push(repository, tag) -> (reference text, digest) of a fresh small image."""
    image.clear_cache()
    attestation.clear_cache()

    def make(repository: str, tag: str = "v1") -> tuple[str, str]:
        layout, _ = write_image(tmp_path / os.urandom(4).hex(), layers=[{"f": os.urandom(8)}])
        ref = Reference.parse(registry.ref(repository, tag))
        with registry.client() as client:
            return str(ref), push_layout(layout, ref, client)

    return make


def _repo(prefix: str) -> str:
    return f"bad/{prefix}-{os.urandom(3).hex()}"


def _rewrite_sig_layer(registry: RegistryServer, repository: str, tag: str,
                       change: Callable[[bytes, dict], tuple[bytes, dict]]) -> None:
    """Replace layer 0 of the attached manifest ``tag`` with ``change(blob, annotations)``."""
    with registry.client() as client:
        body, _, _ = client.get_manifest(repository, tag)
        manifest = json.loads(body)
        layer = manifest["layers"][0]
        blob, annotations = change(client.get_blob(repository, layer["digest"]),
                                   dict(layer.get("annotations", {})))
        client.push_blob(repository, blob)
        layer.update(digest=sha256_digest(blob), size=len(blob), annotations=annotations)
        client.put_manifest(repository, tag, json.dumps(manifest).encode(), mt.OCI_MANIFEST)


def test_signature_by_another_key(push, keys, capsys) -> None:
    ref, _ = push(_repo("otherkey"))
    alice, _ = keys("alice")
    _, mallory_pub = keys("mallory")
    assert run(["sign", ref, "--key", str(alice), "--insecure"]) == 0
    _fails(capsys, ["verify", ref, "--key", str(mallory_pub), "--insecure"],
           EXIT_VERIFICATION, "not signed by a trusted key")


def test_signature_copied_from_another_image(push, keys, registry, capsys) -> None:
    repository = _repo("copied")
    signed, signed_digest = push(repository, "signed")
    other, other_digest = push(repository, "other")
    private, public = keys("alice")
    assert run(["sign", signed, "--key", str(private), "--insecure"]) == 0
    with registry.client() as client:
        signature_tag = signed_digest.replace(":", "-") + ".sig"
        body, media_type, _ = client.get_manifest(repository, signature_tag)
        client.put_manifest(repository, other_digest.replace(":", "-") + ".sig", body, media_type)
    _fails(capsys, ["verify", other, "--key", str(public), "--insecure"],
           EXIT_VERIFICATION, "copied from another image")


def test_tampered_signature_payload(push, keys, registry, capsys) -> None:
    repository = _repo("payload")
    ref, digest = push(repository)
    private, public = keys("alice")
    assert run(["sign", ref, "--key", str(private), "--insecure"]) == 0

    def change(blob: bytes, annotations: dict) -> tuple[bytes, dict]:
        return blob.replace(b'"docker-reference":"', b'"docker-reference":"x'), annotations

    registry.cosign_layout_only(repository, digest)  # tamper with the one copy left
    _rewrite_sig_layer(registry, repository, digest.replace(":", "-") + ".sig", change)
    _fails(capsys, ["verify", ref, "--key", str(public), "--insecure"],
           EXIT_VERIFICATION, "payload altered")


def test_tampered_dsse_envelope(push, keys, registry, capsys, tmp_path) -> None:
    repository = _repo("dsse")
    ref, digest = push(repository)
    private, public = keys("alice")
    predicate = tmp_path / "vuln.json"
    predicate.write_text(json.dumps({"scanner": {"uri": "x", "result": {"critical": 3}}}))
    assert run(["attest", ref, "--type", "vuln", "--predicate", str(predicate),
                "--key", str(private), "--insecure"]) == 0

    def change(blob: bytes, annotations: dict) -> tuple[bytes, dict]:
        envelope = json.loads(blob)
        statement = json.loads(base64.b64decode(envelope["payload"]))
        statement["predicate"]["scanner"]["result"] = {}  # "clean"
        envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
        return json.dumps(envelope).encode(), annotations

    registry.cosign_layout_only(repository, digest)  # tamper with the one copy left
    _rewrite_sig_layer(registry, repository, digest.replace(":", "-") + ".att", change)
    _fails(capsys, ["verify-attestation", ref, "--type", "vuln", "--key", str(public),
                    "--insecure"], EXIT_VERIFICATION, "attestation")


def test_tag_moved_after_signing(push, keys, capsys) -> None:
    repository = _repo("moved")
    ref, _ = push(repository)
    private, public = keys("alice")
    assert run(["sign", ref, "--key", str(private), "--insecure"]) == 0
    push(repository)  # same tag, new image
    _fails(capsys, ["verify", ref, "--key", str(public), "--insecure"],
           EXIT_VERIFICATION, "unsigned")


def test_registry_down_mid_push(flaky_proxy: FlakyProxy, registry: RegistryServer,
                                tmp_path: Path, capsys) -> None:
    layout, _ = write_image(tmp_path / "l", layers=[{"a": b"1"}, {"b": b"2"}, {"c": b"3"}])
    uploads: list[str] = []

    def down_after_first_blob(method: str, path: str, count: int) -> bool:
        if method == "PUT" and "/blobs/uploads/" in path:
            uploads.append(path)
        return len(uploads) > 1

    flaky_proxy.drop = down_after_first_blob
    repository = _repo("down")
    _fails(capsys, ["push", str(layout.path), f"{flaky_proxy.host}/{repository}:v1",
                    "--insecure"], EXIT_UNREACHABLE, "failed after")
    with registry.client() as client:
        assert client.head_manifest(repository, "v1") is None
    assert not any(m == "PUT" and "/manifests/" in p for m, p, _ in flaky_proxy.log)


def test_registry_answers_with_a_wrong_digest(flaky_proxy: FlakyProxy, registry, tmp_path,
                                              capsys) -> None:
    layout, digest = write_image(tmp_path / "l")
    repository = _repo("wrongdigest")
    with registry.client() as client:
        push_layout(layout, Reference.parse(registry.ref(repository, "v1")), client)
    flaky_proxy.tamper = lambda method, path, body: (
        body.replace(b'"layers"', b'"layers" ') if "/manifests/" in path else body
    )
    target = tmp_path / "pulled"
    _fails(capsys, ["pull", f"{flaky_proxy.host}/{repository}@{digest}", str(target),
                    "--insecure"], EXIT_INTEGRITY, "digest")
    _fails(capsys, ["pull", f"{flaky_proxy.host}/{repository}:v1", str(target), "--insecure"],
           EXIT_INTEGRITY, "digest")
    flaky_proxy.tamper = lambda method, path, body: (
        body[:-1] + bytes([body[-1] ^ 1]) if "/blobs/" in path else body
    )
    _fails(capsys, ["pull", f"{flaky_proxy.host}/{repository}:v1", str(target), "--insecure"],
           EXIT_INTEGRITY, "digest")
    pulled = OCILayout.open(target)
    assert pulled.manifests() == []  # nothing listed that is not wholly on disk


@pytest.mark.parametrize(
    ("malformed", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"schemaVersion": 2, "mediaType": "%s", "config": {}, "layers": []}'
         % mt.OCI_MANIFEST.encode(), "config"),
        (b'{"schemaVersion": 2, "mediaType": "%s", "manifests": [{"digest": "sha256:00"}]}'
         % mt.OCI_INDEX.encode(), "manifests"),
        (b'{"schemaVersion": 2, "mediaType": "%s", "config": {"mediaType": "a", "digest": '
         b'"sha256:%s", "size": -5}, "layers": []}' % (mt.OCI_MANIFEST.encode(), b"0" * 64),
         "size"),
    ],
)
def test_malformed_manifest(flaky_proxy: FlakyProxy, registry, tmp_path, capsys,
                            malformed: bytes, reason: str) -> None:
    layout, _ = write_image(tmp_path / "l")
    repository = _repo("malformed")
    with registry.client() as client:
        push_layout(layout, Reference.parse(registry.ref(repository, "v1")), client)
    flaky_proxy.rewrite_digest = True  # served consistently: only its shape is wrong
    flaky_proxy.tamper = lambda method, path, body: malformed if "/manifests/" in path else body
    _fails(capsys, ["pull", f"{flaky_proxy.host}/{repository}:v1", str(tmp_path / "o"),
                    "--insecure"], EXIT_INPUT, reason)
    assert OCILayout.open(tmp_path / "o").manifests() == []


def test_auth_failure(tls_registry: RegistryServer, tmp_path: Path, capsys,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_REGISTRY_PASSWORD", "wrong-password")
    _fails(capsys, ["pull", f"{tls_registry.host}/bad/auth:v1", str(tmp_path / "o"),
                    "--username", tls_registry.username or "", "--ca-file",
                    str(tls_registry.ca_file)], EXIT_AUTH, "access denied")
    layout, _ = write_image(tmp_path / "l")
    _fails(capsys, ["push", str(layout.path), f"{tls_registry.host}/bad/auth:v1",
                    "--username", tls_registry.username or "", "--ca-file",
                    str(tls_registry.ca_file)], EXIT_AUTH, "access denied")
