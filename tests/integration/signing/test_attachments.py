"""Attachments stay discoverable: deleted discovery tags, a registry refusing tags, repair,
the CLI (exit 15), and concurrent CLI writers, against the real loopback docker-registry."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.cli import run
from pipeline.errors import EXIT_ATTACHMENT, AttachmentError
from pipeline.oci import RegistryOptions
from pipeline.oci import discovery as disc
from pipeline.oci.reference import Reference
from pipeline.oci.transfer import push_layout
from pipeline.signing import _cosign_store as store
from pipeline.signing import attestation
from pipeline.signing.attachments import repair_attachments
from pipeline.signing.attestation import attest, verify_attestations
from pipeline.signing.image import clear_cache, sign_image, verify_image
from tests.fixtures_registry import FlakyProxy, RegistryServer, write_image

pytestmark = pytest.mark.integration
OPTS = RegistryOptions(insecure=True)
PROVENANCE = {"buildDefinition": {"buildType": "https://example/build/v1"}}


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    clear_cache()
    attestation.clear_cache()


@pytest.fixture
def push(registry: RegistryServer, tmp_path: Path) -> Callable[..., Reference]:
    counter = iter(range(1_000_000))

    def make(repository: str = "attach/app", host: str | None = None) -> Reference:
        n = next(counter)
        layout, _ = write_image(tmp_path / f"layout{n}",
                                layers=[{"a.txt": f"attach {n} {tmp_path}".encode()}])
        ref = Reference.parse(f"{registry.host}/{repository}:v1")
        with registry.client() as client:
            digest = push_layout(layout, ref, client, tag="v1")
        return Reference.parse(f"{host or registry.host}/{repository}@{digest}")

    return make


def _tags(registry: RegistryServer, ref: Reference) -> list[str]:
    """The tags of ``ref``'s digest (the repository is shared by several tests)."""
    assert ref.digest is not None
    with registry.client() as client:
        return [t for t in disc.list_tags(client, ref.repository)
                if t.startswith(ref.digest.replace(":", "-"))]


def _delete_tag(registry: RegistryServer, ref: Reference, tag: str) -> None:
    registry.drop_tag(ref.repository, tag)


def _cosign_layers(registry: RegistryServer, ref: Reference, kind: str) -> list[dict]:
    assert ref.digest is not None
    with registry.client() as client:
        found = store.fetch_attached(client, ref.repository, store.attached_tag(ref.digest, kind))
    return found.layers if found else []


def test_attachment_is_its_own_manifest_with_subject_and_unique_tag(push, keys, registry) -> None:
    ref = push()
    private, public = keys("alice")
    result = sign_image(ref, private, registry_options=OPTS)
    tag = result["discovery_tag"].rsplit(":", 1)[1]
    assert len(tag) <= 128 and tag == disc.discovery_tag(ref.digest, "sig",
                                                          result["signature_manifest"])
    with registry.client() as client:
        manifest = json.loads(client.get_manifest(ref.repository, result["signature_manifest"])[0])
    assert manifest["subject"]["digest"] == ref.digest
    assert manifest["artifactType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    # cosign's .sig tag holds the same layer (same blob, same signature annotation).
    assert _cosign_layers(registry, ref, "sig") == manifest["layers"]
    assert verify_image(ref, [public], registry_options=OPTS)["verified"]


def test_deleted_discovery_tag_still_verifies_and_repair_restores_it(push, keys, registry) -> None:
    ref = push()
    private, public = keys("alice")
    signed = sign_image(ref, private, registry_options=OPTS)
    attested = attest(ref, "slsaprovenance", PROVENANCE, private, registry_options=OPTS)
    sig_tag = signed["discovery_tag"].rsplit(":", 1)[1]
    att_tag = attested["discovery_tag"].rsplit(":", 1)[1]
    _delete_tag(registry, ref, sig_tag)
    _delete_tag(registry, ref, att_tag)
    assert sig_tag not in _tags(registry, ref)
    # The cosign tags still hold both: verification does not depend on one index.
    assert verify_image(ref, [public], registry_options=OPTS, use_cache=False)["verified"]
    assert verify_attestations(ref, "slsaprovenance", [public], registry_options=OPTS,
                               use_cache=False)
    # Lose the .att copy too: the referrers fallback index still lists the manifest.
    with registry.client() as client:
        store.put_cosign_manifest(client, ref.repository, store.attached_tag(ref.digest, "att"),
                                  [])
    assert verify_attestations(ref, "slsaprovenance", [public], registry_options=OPTS,
                               use_cache=False)
    report = repair_attachments(ref, registry_options=OPTS)
    assert report["problems"] == []
    assert report["kinds"]["sig"]["tags_added"] == 1 and report["kinds"]["att"]["tags_added"] == 1
    assert {sig_tag, att_tag} <= set(_tags(registry, ref))
    assert len(_cosign_layers(registry, ref, "att")) == 1
    # Repair is idempotent.
    again = repair_attachments(ref, registry_options=OPTS)
    assert again["kinds"]["sig"]["tags_added"] == 0 and again["kinds"]["att"]["tags_added"] == 0


def test_every_index_lost_is_unsigned(push, keys, registry) -> None:
    ref = push()
    private, public = keys("alice")
    signed = sign_image(ref, private, registry_options=OPTS)
    _delete_tag(registry, ref, signed["discovery_tag"].rsplit(":", 1)[1])
    _delete_tag(registry, ref, store.attached_tag(ref.digest, "sig"))
    _delete_tag(registry, ref, disc.fallback_tag(ref.digest))
    from pipeline.errors import VerificationError

    with pytest.raises(VerificationError, match="no signatures found"):
        verify_image(ref, [public], registry_options=OPTS, use_cache=False)


def test_registry_rejecting_the_discovery_tag_is_exit_15(push, keys, registry,
                                                        flaky_proxy: FlakyProxy) -> None:
    flaky_proxy.reject = lambda method, path: method == "PUT" and ".sig." in path
    ref = push(repository="attach/refused", host=flaky_proxy.host)
    private, public = keys("alice")
    options = RegistryOptions(insecure=True, retries=0)
    with pytest.raises(AttachmentError, match="not durably discoverable") as caught:
        sign_image(ref, private, registry_options=options)
    assert "rejected discovery tag" in str(caught.value)
    assert "pipeline attach repair" in str(caught.value)
    # The CLI says the same, exit 15, no traceback.
    code, out, err = _cli(["sign", str(ref), "--key", str(private), "--insecure"])
    assert code == EXIT_ATTACHMENT, (out, err)
    assert "not durably discoverable" in err and "Traceback" not in err
    # What was written is not lost: the .sig copy verifies, and a repair through a
    # registry that accepts the tag makes it durable.
    direct = Reference.parse(str(ref).replace(flaky_proxy.host, registry.host))
    assert verify_image(direct, [public], identity="*", registry_options=OPTS)["verified"]
    report = repair_attachments(direct, registry_options=OPTS)
    assert report["problems"] == [] and report["kinds"]["sig"]["tags_added"] >= 1
    # Repair through the refusing registry reports what is still refused: exit 15.
    ref2 = push(repository="attach/refused2", host=flaky_proxy.host)
    sign_image(Reference.parse(str(ref2).replace(flaky_proxy.host, registry.host)), private,
               registry_options=OPTS, attachments=False)
    code, out, err = _cli(["attach", "repair", str(ref2), "--insecure"])
    assert code == EXIT_ATTACHMENT and "rejected discovery tag" in err, (out, err)


def test_repair_upgrades_cosign_only_attachments(push, keys, registry) -> None:
    ref = push()
    private, public = keys("alice")
    sign_image(ref, private, registry_options=OPTS, attachments=False)
    attest(ref, "vuln", {"scanner": {"uri": "pkg:x"}}, private, registry_options=OPTS,
           referrer=False)
    assert not [t for t in _tags(registry, ref) if ".sig." in t or ".att." in t]
    code, out, err = _cli(["attach", "repair", str(ref), "--insecure", "--json"])
    assert code == 0, err
    report = json.loads(out)
    assert report["kinds"]["sig"]["tags_added"] == 1 and report["kinds"]["att"]["tags_added"] == 1
    assert len([t for t in _tags(registry, ref) if ".sig." in t or ".att." in t]) == 2
    # Signing again with the same key adds nothing: it finds the repaired attachment.
    assert sign_image(ref, private, registry_options=OPTS)["added"] is False


def test_concurrent_cli_writers_all_verify(push, keys, registry, tmp_path: Path) -> None:
    """The interface: sign and attest commands at once on one digest, then verify each."""
    ref = push(repository="attach/cli")
    private, public = keys("alice")
    predicates = {}
    for kind, body in (("slsaprovenance", PROVENANCE),
                       ("cyclonedx", {"bomFormat": "CycloneDX", "specVersion": "1.6"}),
                       ("vuln", {"scanner": {"uri": "pkg:github/aquasecurity/trivy"}})):
        predicates[kind] = tmp_path / f"{kind}.json"
        predicates[kind].write_text(json.dumps(body))
    commands = [["attest", str(ref), "--type", kind, "--predicate", str(path),
                 "--key", str(private), "--insecure"] for kind, path in predicates.items()]
    commands.append(["sign", str(ref), "--key", str(private), "--insecure"])
    procs = [subprocess.Popen([sys.executable, "-m", "pipeline", *c], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for c in commands]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    for kind in predicates:
        code, out, err = _cli(["verify-attestation", str(ref), "--type", kind,
                               "--key", str(public), "--insecure"])
        assert code == 0, err
    code, _, err = _cli(["verify", str(ref), "--key", str(public), "--insecure"])
    assert code == 0, err


def _cli(args: list[str]) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True,
                          text=True, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


_ = run  # the in-process runner is not used: exit codes come from real processes


def test_verify_finds_attachments_on_later_pages(push, keys, registry,
                                                 flaky_proxy: FlakyProxy) -> None:
    """A paginating registry (proxy mode): discovery tags on pages 2 and 3 still count."""
    flaky_proxy.paginate = 2
    ref = push(repository="attach/paged", host=flaky_proxy.host)
    pairs = [keys(f"k{i}") for i in range(3)]
    for private, _ in pairs:
        sign_image(ref, private, registry_options=OPTS)
    result = verify_image(ref, [public for _, public in pairs], threshold=3,
                          registry_options=OPTS)
    assert len(result["signers"]) == 3
    assert len([p for _, p, _ in flaky_proxy.log if "/tags/list" in p and "last=" in p]) > 0


def test_a_registry_with_the_referrers_api_indexes_attachments_itself(
        push, keys, registry, flaky_proxy: FlakyProxy) -> None:
    """Referrers-API mode of the proxy (distribution 2.8 has no such API): the registry
    answers OCI-Subject, so no fallback index is written, and the API alone makes an
    attachment durable when the discovery tag is refused."""
    flaky_proxy.referrers_api = True
    ref = push(repository="attach/refapi", host=flaky_proxy.host)
    private, public = keys("alice")
    options = RegistryOptions(insecure=True, retries=0)
    attest(ref, "slsaprovenance", PROVENANCE, private, registry_options=options)
    assert disc.fallback_tag(ref.digest) not in _tags(registry, ref)
    # The discovery tag refused: still exit 0, the referrers API lists the attachment.
    flaky_proxy.reject = lambda method, path: method == "PUT" and ".sig." in path
    signed = sign_image(ref, private, registry_options=options)
    assert signed["problems"] and "rejected discovery tag" in signed["problems"][0]
    # Verification finds it through the referrers API when the .sig copy is gone too.
    direct = Reference.parse(str(ref).replace(flaky_proxy.host, registry.host))
    registry.drop_tag(ref.repository, store.attached_tag(ref.digest, "sig"))
    assert verify_image(ref, [public], identity="*", registry_options=options,
                        use_cache=False)["verified"]
    assert any("/referrers/sha256:" in path for _, path, _ in flaky_proxy.log)
    assert direct.digest == ref.digest
