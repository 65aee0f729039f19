"""Sealed models as OCI artifacts: push-model / pull-model against the real registry."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipeline.cli import run
from pipeline.distribution import build_manifest, pull_model, push_model
from pipeline.errors import InputError, IntegrityError
from pipeline.oci import RegistryOptions
from pipeline.oci import media_types as mt
from pipeline.oci.digest import sha256_digest
from pipeline.oci.reference import Reference
from tests.fixtures_registry import FlakyProxy, RegistryServer

INSECURE = RegistryOptions(insecure=True)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


def _sealed_dir(root: Path) -> Path:
    """The shape ``pipeline seal`` produces (content is opaque to the OCI layer)."""
    sealed = root / "sealed"
    (sealed / "tokenizer").mkdir(parents=True)
    (sealed / "seal.json").write_text(json.dumps({"format": 1, "files": []}))
    (sealed / "model.sig").write_text(json.dumps({"mediaType": "bundle"}))
    (sealed / "model.safetensors.sealed").write_bytes(os.urandom(300_000))
    (sealed / "config.json").write_text('{"hidden": 8}')
    (sealed / "tokenizer" / "vocab.txt").write_text("a\nb\n")
    return sealed


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_manifest_format_and_determinism(tmp_path: Path) -> None:
    sealed = _sealed_dir(tmp_path)
    body, layers = build_manifest(sealed)
    assert build_manifest(sealed)[0] == body  # same directory, same digest
    manifest = json.loads(body)
    assert manifest["artifactType"] == mt.MODEL_ARTIFACT
    assert manifest["mediaType"] == mt.OCI_MANIFEST
    assert manifest["config"] == {"mediaType": mt.OCI_EMPTY, "digest": mt.EMPTY_DIGEST, "size": 2}
    kinds = {
        layer["annotations"][mt.ANNOTATION_TITLE]: layer["mediaType"]
        for layer in manifest["layers"]
    }
    assert kinds == {
        "config.json": mt.MODEL_FILE,
        "model.safetensors.sealed": mt.MODEL_SEALED_FILE,
        "model.sig": mt.MODEL_SIGNATURE,
        "seal.json": mt.MODEL_SEAL,
        "tokenizer/vocab.txt": mt.MODEL_FILE,
    }
    assert [layer["annotations"][mt.ANNOTATION_TITLE] for layer in manifest["layers"]] == sorted(
        kinds
    )


def test_push_pull_round_trip(registry: RegistryServer, tmp_path: Path) -> None:
    sealed = _sealed_dir(tmp_path)
    ref = registry.ref("models/tiny", "v1")
    digest = push_model(sealed, ref, registry_options=INSECURE)
    assert digest == Reference.parse(ref).with_digest(digest).digest
    client = registry.client()
    assert client.get_manifest("models/tiny", "v1")[2] == digest
    out = pull_model(Reference.parse(ref).with_digest(digest), tmp_path / "pulled", client=client)
    assert _tree(out) == _tree(sealed)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_refuses_plaintext_weights_and_non_sealed_dirs(
    registry: RegistryServer, tmp_path: Path
) -> None:
    sealed = _sealed_dir(tmp_path)
    (sealed / "model.safetensors").write_bytes(b"plaintext!")
    with pytest.raises(InputError, match="plaintext"):
        push_model(sealed, registry.ref("models/leak"), registry_options=INSECURE)
    (sealed / "model.safetensors").unlink()
    (sealed / "seal.json").unlink()
    with pytest.raises(InputError, match="seal.json"):
        push_model(sealed, registry.ref("models/leak"), registry_options=INSECURE)
    assert registry.client().head_manifest("models/leak", "latest") is None


def test_tampered_blob_is_detected_and_nothing_written(
    flaky_proxy: FlakyProxy, tmp_path: Path
) -> None:
    sealed = _sealed_dir(tmp_path)
    ref = f"{flaky_proxy.host}/models/tamper:v1"
    client = flaky_proxy.client()
    push_model(sealed, ref, client=client)
    target = sealed / "model.safetensors.sealed"
    bad_digest = sha256_digest(target.read_bytes())

    def flip(method: str, path: str, body: bytes) -> bytes:
        return body[:100] + bytes([body[100] ^ 1]) + body[101:] if bad_digest in path else body

    flaky_proxy.tamper = flip
    with pytest.raises(IntegrityError):
        pull_model(ref, tmp_path / "out", client=client)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def _push_raw(
    client, repo: str, layers: list[tuple[str, str, bytes]], artifact_type: str = mt.MODEL_ARTIFACT
) -> str:
    client.push_blob(repo, mt.EMPTY_JSON)
    descriptors = []
    for title, media_type, data in layers:
        descriptors.append(
            {
                "mediaType": media_type,
                "digest": client.push_blob(repo, data),
                "size": len(data),
                "annotations": {mt.ANNOTATION_TITLE: title},
            }
        )
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": mt.OCI_EMPTY, "digest": mt.EMPTY_DIGEST, "size": 2},
            "layers": descriptors,
        }
    ).encode()
    return client.put_manifest(repo, "evil", manifest, mt.OCI_MANIFEST)


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ([("seal.json", mt.MODEL_SEAL, b"{}"), ("../escape", mt.MODEL_FILE, b"x")], "safe"),
        ([("seal.json", mt.MODEL_SEAL, b"{}"), ("/etc/passwd", mt.MODEL_FILE, b"x")], "safe"),
        ([("seal.json", mt.MODEL_SEAL, b"{}"), ("a/./b", mt.MODEL_FILE, b"x")], "safe"),
        (
            [
                ("seal.json", mt.MODEL_SEAL, b"{}"),
                ("x", mt.MODEL_FILE, b"1"),
                ("x", mt.MODEL_FILE, b"2"),
            ],
            "two layers",
        ),
        (
            [
                ("seal.json", mt.MODEL_SEAL, b"{}"),
                ("d", mt.MODEL_FILE, b"1"),
                ("d/e", mt.MODEL_FILE, b"2"),
            ],
            "both a file",
        ),
        (
            [("seal.json", mt.MODEL_SEAL, b"{}"), ("w", "application/octet-stream", b"1")],
            "unknown layer",
        ),
        ([("seal.json", mt.MODEL_FILE, b"{}")], "media type"),
        ([("config.json", mt.MODEL_FILE, b"{}")], "no seal.json"),
    ],
)
def test_pull_refuses_unsafe_artifacts(
    registry: RegistryServer, tmp_path: Path, layers: list, message: str
) -> None:
    client = registry.client()
    repo = f"models/evil{abs(hash(str(layers))) % 10**8}"
    _push_raw(client, repo, layers)
    with pytest.raises(InputError, match=message):
        pull_model(f"{registry.host}/{repo}:evil", tmp_path / "out", client=client)
    assert not (tmp_path / "out").exists()


def test_pull_refuses_other_artifacts_and_non_empty_dest(
    registry: RegistryServer, tmp_path: Path
) -> None:
    client = registry.client()
    _push_raw(client, "models/other", [("seal.json", mt.MODEL_SEAL, b"{}")], "application/x-other")
    with pytest.raises(InputError, match="not a sealed model"):
        pull_model(f"{registry.host}/models/other:evil", tmp_path / "o", client=client)
    sealed = _sealed_dir(tmp_path)
    push_model(sealed, registry.ref("models/ok"), client=client)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not an empty directory"):
        pull_model(registry.ref("models/ok"), tmp_path / "busy", client=client)
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    assert _tree(pull_model(registry.ref("models/ok"), tmp_path / "empty", client=client)) == _tree(
        sealed
    )


def test_cli_round_trip_with_real_seal(
    registry: RegistryServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PIPELINE_KEYRING", str(tmp_path / "keys" / "keyring.json"))
    monkeypatch.chdir(tmp_path)
    assert run(["keys", "create", "kek"]) == 0
    sealed = tmp_path / "sealed"
    assert run(["seal", str(ROOT / "examples" / "tiny"), "--key", "kek", "--out", str(sealed)]) == 0
    capsys.readouterr()
    ref = registry.ref("models/real", "v1")
    assert run(["push-model", str(sealed), ref, "--insecure", "--json"]) == 0
    digest = json.loads(capsys.readouterr().out)["digest"]
    assert run(["pull-model", f"{ref}@{digest}", str(tmp_path / "back"), "--insecure"]) == 0
    assert _tree(tmp_path / "back") == _tree(sealed)
    assert not any(name.endswith(".safetensors") for name in _tree(tmp_path / "back"))
    assert (
        run(["pull-model", f"{registry.host}/models/real:nope", str(tmp_path / "x"), "--insecure"])
        == 10
    )


def test_model_signature_attached_as_referrer_is_verified_on_pull(
    registry: RegistryServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pipeline.distribution import SIGNATURE_ARTIFACT_TYPE, attached_model_signatures

    monkeypatch.setenv("PIPELINE_KEYRING", str(tmp_path / "keys" / "keyring.json"))
    monkeypatch.delenv("PIPELINE_SIGNING_KEY_PASSWORD", raising=False)
    assert run(["keys", "create", "kek"]) == 0
    assert run(["keys", "create-signing", "rel", "--dir", str(tmp_path / "keys")]) == 0
    assert run(["keys", "create-signing", "other", "--dir", str(tmp_path / "keys")]) == 0
    private, public = tmp_path / "keys" / "rel.key", tmp_path / "keys" / "rel.pub"
    sealed = tmp_path / "sealed"
    assert run(["seal", str(ROOT / "examples" / "tiny"), "--key", "kek", "--out", str(sealed)]) == 0
    assert not (sealed / "model.sig").exists()
    ref = registry.ref(f"models/attached-{os.urandom(3).hex()}", "v1")
    capsys.readouterr()
    assert run(["push-model", str(sealed), ref, "--insecure", "--json"]) == 0
    digest = json.loads(capsys.readouterr().out)["digest"]
    # Unsigned: a pull that asks for verification fails closed and leaves nothing.
    assert run(["pull-model", ref, str(tmp_path / "none"), "--insecure",
                "--trust", str(public)]) == 6
    assert not (tmp_path / "none").exists()
    # Signed after the push: the bundle is attached, the model's digest is unchanged.
    assert run(["sign-model", str(sealed), "--key", str(private)]) == 0
    assert run(["attach-model-signature", ref, str(sealed / "model.sig"), "--insecure"]) == 0
    client = registry.client()
    repository = Reference.parse(ref).repository
    assert client.head_manifest(repository, "v1")["digest"] == digest
    [referrer] = client.referrers(repository, digest)
    assert referrer["artifactType"] == SIGNATURE_ARTIFACT_TYPE
    assert attached_model_signatures(ref, client=client) == [(sealed / "model.sig").read_bytes()]
    assert run(["pull-model", f"{ref}@{digest}", str(tmp_path / "back"), "--insecure",
                "--trust", str(public)]) == 0
    assert _tree(tmp_path / "back") == _tree(sealed)
    # Another key's trust: verification error (6), nothing written.
    capsys.readouterr()
    assert run(["pull-model", ref, str(tmp_path / "x"), "--insecure",
                "--trust", str(tmp_path / "keys" / "other.pub")]) == 6
    err = capsys.readouterr().err
    assert "no trusted model signature" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_attached_signature_must_name_the_model_as_subject(
    registry: RegistryServer, tmp_path: Path
) -> None:
    from pipeline.distribution import attach_model_signature, attached_model_signatures

    client = registry.client()
    repository = f"models/subject-{os.urandom(3).hex()}"
    first = push_model(_sealed_dir(tmp_path / "a"), registry.ref(repository, "a"), client=client)
    second_dir = _sealed_dir(tmp_path / "b")
    (second_dir / "config.json").write_text('{"hidden": 9}')
    second = push_model(second_dir, registry.ref(repository, "b"), client=client)
    bundle = tmp_path / "bundle.json"
    bundle.write_text('{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}')
    attach_model_signature(registry.ref(repository, "a"), bundle, client=client)
    # Copy the referrer entry into the other model's fallback index: it is ignored there.
    index_a, _, _ = client.get_manifest(repository, first.replace(":", "-"))
    client.put_manifest(repository, second.replace(":", "-"), index_a, mt.OCI_INDEX)
    assert attached_model_signatures(f"{registry.host}/{repository}@{first}", client=client)
    assert attached_model_signatures(f"{registry.host}/{repository}@{second}", client=client) == []
    not_json = tmp_path / "bad.sig"
    not_json.write_bytes(b"\x00garbage")
    with pytest.raises(InputError, match="not a readable model signature"):
        attach_model_signature(registry.ref(repository, "a"), not_json, client=client)
