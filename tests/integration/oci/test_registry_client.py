"""The registry client against the real docker-registry (distribution 2.8) and skopeo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.cli import run
from pipeline.errors import (
    AuthError,
    ConfigError,
    IntegrityError,
    NotFoundError,
    UnreachableError,
)
from pipeline.oci import media_types as mt
from pipeline.oci._auth import parse_challenges, resolve_credentials
from pipeline.oci.client import RegistryClient
from pipeline.oci.digest import sha256_digest
from pipeline.oci.layout import OCILayout
from pipeline.oci.reference import Reference
from pipeline.oci.transfer import pull_to_layout, push_layout
from tests.fixtures_registry import FlakyProxy, RegistryServer

pytestmark = pytest.mark.integration
SKOPEO = shutil.which("skopeo")


def _skopeo(*args: str) -> str:
    assert SKOPEO, "skopeo is not installed (scripts/setup.sh installs it)"
    done = subprocess.run(
        [SKOPEO, "--insecure-policy", *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# -- pure parts ------------------------------------------------------------------------
def test_parse_challenges() -> None:
    header = (
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:a/b:pull,push", Basic realm="x"'
    )
    assert parse_challenges(header) == [
        (
            "bearer",
            {
                "realm": "https://auth.example/token",
                "service": "registry.example",
                "scope": "repository:a/b:pull,push",
            },
        ),
        ("basic", {"realm": "x"}),
    ]
    assert parse_challenges('Basic realm="a \\"q\\""') == [("basic", {"realm": 'a "q"'})]
    assert parse_challenges("") == []


def test_credentials_from_env_and_docker_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PIPELINE_REGISTRY_USERNAME", raising=False)
    monkeypatch.delenv("PIPELINE_REGISTRY_PASSWORD", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert resolve_credentials("r.example") is None
    (tmp_path / "config.json").write_text(
        json.dumps({"auths": {"r.example": {"auth": "dTpzZWNyZXQ="}}})
    )  # u:secret
    creds = resolve_credentials("r.example")
    assert creds is not None and (creds.username, creds.password) == ("u", "secret")
    assert "secret" not in repr(creds)
    monkeypatch.setenv("PIPELINE_REGISTRY_USERNAME", "envuser")
    monkeypatch.setenv("PIPELINE_REGISTRY_PASSWORD", "envpass")
    creds = resolve_credentials("r.example")
    assert creds is not None and creds.username == "envuser"
    monkeypatch.delenv("PIPELINE_REGISTRY_PASSWORD")
    with pytest.raises(ConfigError):
        resolve_credentials("r.example")


def test_insecure_only_for_loopback() -> None:
    with pytest.raises(ConfigError, match="loopback"):
        RegistryClient("registry.example.com", insecure=True)
    assert RegistryClient("localhost:5000", insecure=True).base_url == "http://localhost:5000"
    assert RegistryClient("ghcr.io").base_url == "https://ghcr.io"
    assert RegistryClient("docker.io").base_url == "https://registry-1.docker.io"


# -- blobs -----------------------------------------------------------------------------
def test_monolithic_and_chunked_blob_upload(registry: RegistryServer, tmp_path: Path) -> None:
    client = registry.client()
    small = os.urandom(1000)
    digest = client.push_blob("blobs/mono", small)
    assert digest == sha256_digest(small) and client.blob_exists("blobs/mono", digest)
    assert client.get_blob("blobs/mono", digest) == small
    big = tmp_path / "big"
    data = os.urandom(2_500_000)
    big.write_bytes(data)
    digest = client.push_blob("blobs/chunked", big, chunk_size=1_000_000)
    assert client.get_blob("blobs/chunked", digest) == data
    with pytest.raises(IntegrityError):
        client.push_blob("blobs/mono", b"abc", sha256_digest(b"abd"))
    assert not client.blob_exists("blobs/mono", sha256_digest(b"never pushed"))
    with pytest.raises(NotFoundError):
        client.get_blob("blobs/mono", sha256_digest(b"never pushed"))


def test_progress_hook_counts_every_blob_byte(registry: RegistryServer, tmp_path: Path) -> None:
    """The CLI's transfer bar is fed by ``on_bytes``: uploads (monolithic and chunked)
    and downloads report exactly the bytes of the blob."""
    client = registry.client()
    seen: list[int] = []
    client.on_bytes = seen.append
    for name, chunk in (("mono", None), ("chunked", 700_000)):
        blob = tmp_path / name
        blob.write_bytes(os.urandom(1_800_000))
        seen.clear()
        digest = client.push_blob(f"progress/{name}", blob, sha256_digest(blob.read_bytes()),
                                  chunk_size=chunk)
        assert sum(seen) == 1_800_000, name
        seen.clear()
        assert len(client.get_blob(f"progress/{name}", digest)) == 1_800_000
        assert sum(seen) == 1_800_000


def test_chunked_upload_counts_patches(flaky_proxy: FlakyProxy) -> None:
    client = flaky_proxy.client()
    data = os.urandom(300_000)
    client.push_blob("blobs/patches", data, chunk_size=100_000)
    patches = [entry for entry in flaky_proxy.log if entry[0] == "PATCH"]
    assert [status for _, _, status in patches] == [202, 202, 202]
    assert client.get_blob("blobs/patches", sha256_digest(data)) == data


def test_existing_blob_is_skipped_and_mount_sends_no_bytes(flaky_proxy: FlakyProxy) -> None:
    client = flaky_proxy.client()
    data = os.urandom(5000)
    digest = client.push_blob("mount/source", data)
    flaky_proxy.log.clear()
    client.push_blob("mount/source", data)
    assert [m for m, _, _ in flaky_proxy.log] == ["HEAD"]
    flaky_proxy.log.clear()
    client.push_blob("mount/target", data, mount_from="mount/source")
    assert [(m, s) for m, _, s in flaky_proxy.log] == [("HEAD", 404), ("POST", 201)]
    assert "mount=" in flaky_proxy.log[1][1]
    assert client.get_blob("mount/target", digest) == data


# -- manifests, tags, catalog ------------------------------------------------------------
def test_manifest_put_get_head_tags_catalog(registry: RegistryServer, image_layout) -> None:
    layout, digest = image_layout()
    ref = Reference.parse(registry.ref("apps/hello", "v1"))
    client = registry.client()
    assert push_layout(layout, ref, client) == digest
    body, media_type, got = client.get_manifest("apps/hello", "v1")
    assert (media_type, got, body) == (mt.OCI_MANIFEST, digest, layout.read_blob(digest))
    assert client.get_manifest("apps/hello", digest)[2] == digest
    assert client.head_manifest("apps/hello", "v1") == {
        "mediaType": mt.OCI_MANIFEST,
        "digest": digest,
        "size": len(body),
    }
    assert client.head_manifest("apps/hello", "nope") is None
    client.put_manifest("apps/hello", "v2", body, mt.OCI_MANIFEST)
    assert sorted(client.list_tags("apps/hello")) == ["v1", "v2"]
    assert "apps/hello" in client.catalog()
    with pytest.raises(NotFoundError):
        client.get_manifest("apps/hello", "missing")
    with pytest.raises(NotFoundError):
        client.list_tags("apps/never")
    client.delete_manifest("apps/hello", digest)
    assert client.head_manifest("apps/hello", digest) is None


def test_manifest_with_missing_blob_is_refused(registry: RegistryServer) -> None:
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.OCI_CONFIG, "digest": sha256_digest(b"nothing"), "size": 7},
            "layers": [],
        }
    ).encode()
    with pytest.raises(NotFoundError):
        registry.client().put_manifest("apps/broken", "v1", manifest, mt.OCI_MANIFEST)


def test_pull_to_layout_round_trip_with_index(
    registry: RegistryServer, image_layout, tmp_path: Path
) -> None:
    layout, amd = image_layout("multi", tag=None, layers=[{"a": b"amd64"}])
    _, arm = image_layout("multi", tag=None, layers=[{"a": b"arm64"}, {"b": b"second"}])
    index = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [
            {**layout.resolve(amd), "platform": {"os": "linux", "architecture": "amd64"}},
            {**layout.resolve(arm), "platform": {"os": "linux", "architecture": "arm64"}},
        ],
    }
    index_digest = layout.add_manifest(
        json.dumps(index, sort_keys=True).encode(), mt.OCI_INDEX, tag="multi"
    )
    client = registry.client()
    ref = Reference.parse(registry.ref("apps/multi", "1.0"))
    assert push_layout(layout, ref, client, tag="multi") == index_digest
    out = tmp_path / "pulled"
    assert pull_to_layout(ref, str(out), client) == index_digest
    pulled = OCILayout.open(out)
    assert pulled.resolve("1.0")["digest"] == index_digest
    for child in (amd, arm):
        manifest = json.loads(pulled.read_blob(child))
        for blob in [manifest["config"], *manifest["layers"]]:
            assert pulled.read_blob(blob["digest"]) == layout.read_blob(blob["digest"])


# -- verification ------------------------------------------------------------------------
def test_altered_manifest_is_detected(flaky_proxy: FlakyProxy, image_layout) -> None:
    layout, digest = image_layout()
    client = flaky_proxy.client()
    push_layout(layout, Reference.parse(f"{flaky_proxy.host}/verify/m:v1"), client)
    flaky_proxy.tamper = lambda method, path, body: body.replace(b'"layers"', b'"layers" ')
    with pytest.raises(IntegrityError):
        client.get_manifest("verify/m", digest)
    with pytest.raises(IntegrityError):  # by tag: Docker-Content-Digest header disagrees
        client.get_manifest("verify/m", "v1")


def test_altered_blob_is_detected_and_not_committed(
    flaky_proxy: FlakyProxy, tmp_path: Path
) -> None:
    client = flaky_proxy.client()
    data = b"model weights, sealed" * 100
    digest = client.push_blob("verify/blob", data)
    flaky_proxy.tamper = lambda method, path, body: body[:-1] + b"X" if "/blobs/" in path else body
    with pytest.raises(IntegrityError):
        client.get_blob("verify/blob", digest)
    layout = OCILayout.create(tmp_path / "l")
    with pytest.raises(IntegrityError), layout.blob_writer(digest) as writer:
        client.download_blob("verify/blob", digest, writer)  # type: ignore[arg-type]
    assert not layout.has_blob(digest)


def test_retries_after_503(flaky_proxy: FlakyProxy) -> None:
    flaky_proxy.fail_first = 2
    client = flaky_proxy.client(retries=3)
    digest = client.push_blob("retry/x", b"payload")
    assert [s for _, _, s in flaky_proxy.log[:2]] == [503, 503]
    assert client.get_blob("retry/x", digest) == b"payload"


def test_gives_up_with_unreachable(flaky_proxy: FlakyProxy) -> None:
    flaky_proxy.fail_first = 100
    with pytest.raises(UnreachableError, match="3 attempts"):
        flaky_proxy.client(retries=2).blob_exists("retry/y", sha256_digest(b"x"))
    with pytest.raises(UnreachableError):
        RegistryClient("127.0.0.1:1", insecure=True, retries=1, backoff=0.01).catalog()


def test_dropped_upload_is_restarted(flaky_proxy: FlakyProxy) -> None:
    dropped = []

    def drop(method: str, path: str, count: int) -> bool:
        if method == "PUT" and "/blobs/uploads/" in path and not dropped:
            dropped.append(path)
            return True
        return False

    flaky_proxy.drop = drop
    client = flaky_proxy.client(retries=2)
    digest = client.push_blob("retry/drop", b"survives a dropped connection")
    assert dropped and client.get_blob("retry/drop", digest) == b"survives a dropped connection"


def test_registry_down_mid_push_leaves_no_tag(
    flaky_proxy: FlakyProxy, registry: RegistryServer, image_layout
) -> None:
    layout, _ = image_layout(layers=[{"a": b"1"}, {"b": b"2"}, {"c": b"3"}])
    uploads = []

    def down_after_first_upload(method: str, path: str, count: int) -> bool:
        if method == "PUT" and "/blobs/uploads/" in path:
            uploads.append(path)
        return len(uploads) > 1  # everything after the first blob fails

    flaky_proxy.drop = down_after_first_upload
    ref = Reference.parse(f"{flaky_proxy.host}/down/app:v1")
    with pytest.raises(UnreachableError):
        push_layout(layout, ref, flaky_proxy.client(retries=1))
    direct = registry.client()
    assert direct.head_manifest("down/app", "v1") is None
    assert not any(m == "PUT" and "/manifests/" in p for m, p, _ in flaky_proxy.log)


# -- auth and TLS ------------------------------------------------------------------------
def test_tls_with_ca_and_basic_auth(
    tls_registry: RegistryServer, image_layout, tmp_path: Path
) -> None:
    # The registry is shared by the session: a repository of this test's own keeps
    # tags pushed by other tests (signatures, attestations) out of list_tags.
    repository = f"secure/tls-basic-{os.urandom(4).hex()}"
    layout, digest = image_layout()
    ref = Reference.parse(tls_registry.ref(repository, "v1"))
    client = tls_registry.client()
    assert push_layout(layout, ref, client) == digest
    assert pull_to_layout(ref, str(tmp_path / "out"), client) == digest
    assert client.list_tags(repository) == ["v1"]
    assert repository in client.catalog()


def test_wrong_password_is_auth_error(tls_registry: RegistryServer) -> None:
    with pytest.raises(AuthError):
        tls_registry.client(password="wrong").list_tags("secure/app")
    with pytest.raises(AuthError, match="credentials"):
        RegistryClient(tls_registry.host, ca_file=str(tls_registry.ca_file)).catalog()


def test_tls_without_ca_is_refused(tls_registry: RegistryServer) -> None:
    client = RegistryClient(
        tls_registry.host, username=tls_registry.username, password=tls_registry.password, retries=0
    )
    with pytest.raises(ConfigError, match="TLS"):
        client.catalog()


def test_referrers_fall_back_to_tag_schema(registry: RegistryServer, image_layout) -> None:
    layout, subject = image_layout()
    client = registry.client()
    push_layout(layout, Reference.parse(registry.ref("ref/app", "v1")), client)
    assert client.referrers("ref/app", subject) == []
    client.push_blob("ref/app", mt.EMPTY_JSON)
    note = client.push_blob("ref/app", b"attestation")
    artifact = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "artifactType": "application/vnd.example.note",
            "config": {"mediaType": mt.OCI_EMPTY, "digest": mt.EMPTY_DIGEST, "size": 2},
            "layers": [{"mediaType": "text/plain", "digest": note, "size": 11}],
            "subject": layout.resolve("v1"),
        },
        sort_keys=True,
    ).encode()
    artifact_digest = sha256_digest(artifact)
    client.put_manifest("ref/app", artifact_digest, artifact, mt.OCI_MANIFEST)
    referrers = client.referrers("ref/app", subject)
    assert [(r["digest"], r["artifactType"]) for r in referrers] == [
        (artifact_digest, "application/vnd.example.note")
    ]
    assert client.referrers("ref/app", subject, artifact_type="other/type") == []
    assert "sha256-" + subject[7:] in client.list_tags("ref/app")
    client.put_manifest("ref/app", artifact_digest, artifact, mt.OCI_MANIFEST)  # idempotent
    assert len(client.referrers("ref/app", subject)) == 1


# -- skopeo interop and CLI ----------------------------------------------------------------
def test_skopeo_reads_what_we_push(
    registry: RegistryServer, image_layout, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layout, digest = image_layout()
    target = registry.ref("interop/ours", "v1")
    assert run(["push", str(layout.path), target, "--insecure", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["digest"] == digest
    inspected = json.loads(_skopeo("inspect", "--tls-verify=false", f"docker://{target}"))
    assert inspected["Digest"] == digest
    _skopeo("copy", "--src-tls-verify=false", f"docker://{target}", f"oci:{tmp_path / 'sk'}:v1")
    copied = OCILayout.open(tmp_path / "sk")
    assert copied.resolve("v1")["digest"] == digest


def test_we_read_what_skopeo_pushes(
    registry: RegistryServer, image_layout, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layout, digest = image_layout(layers=[{"x": b"from skopeo"}])
    target = registry.ref("interop/theirs", "v1")
    _skopeo("copy", "--dest-tls-verify=false", f"oci:{layout.path}:v1", f"docker://{target}")
    assert run(["pull", target, str(tmp_path / "mine"), "--insecure"]) == 0
    printed = capsys.readouterr().out.strip()
    pulled = OCILayout.open(tmp_path / "mine")
    assert pulled.resolve("v1")["digest"] == printed
    manifest = json.loads(pulled.read_blob(printed))
    assert len(manifest["layers"]) == 1
    for blob in [manifest["config"], *manifest["layers"]]:
        pulled.verify_blob(blob["digest"])


def test_cli_errors_map_to_exit_codes(
    registry: RegistryServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["push", str(tmp_path), registry.ref("x/y"), "--insecure"]) == 4  # not a layout
    assert run(["pull", registry.ref("x/missing"), str(tmp_path / "o"), "--insecure"]) == 10
    assert run(["pull", "registry.example.com/x:y", str(tmp_path / "o"), "--insecure"]) == 3
    assert run(["pull", "Bad/Ref", str(tmp_path / "o"), "--insecure"]) == 4
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error:" in err


def test_bearer_token_flow(token_registry: RegistryServer, image_layout, tmp_path: Path) -> None:
    layout, digest = image_layout()
    ref = Reference.parse(token_registry.ref("tok/app", "v1"))
    client = token_registry.client()
    assert push_layout(layout, ref, client) == digest
    assert pull_to_layout(ref, str(tmp_path / "out"), client) == digest
    asked = token_registry.token_service.requests  # type: ignore[attr-defined]
    # Pushing asks for pull+push on the repository (the registry's own challenge scope
    # may ride along, in either action order).
    assert any("repository:tok/app:pull,push" in scopes for scopes in asked), asked
    with pytest.raises(AuthError, match="refused the credentials"):
        token_registry.client(password="wrong").list_tags("tok/app")


def test_tampered_layout_blob_is_not_pushed(registry: RegistryServer, image_layout) -> None:
    layout, digest = image_layout(layers=[{"w": b"original content" * 100}])
    manifest = json.loads(layout.read_blob(digest))
    layer = layout.blob_path(manifest["layers"][0]["digest"])
    data = layer.read_bytes()
    layer.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    with pytest.raises(IntegrityError):
        push_layout(layout, Reference.parse(registry.ref("tamper/layout", "v1")), registry.client())
    assert registry.client().head_manifest("tamper/layout", "v1") is None
