"""Attestations (DSSE in-toto, cosign .att + OCI referrers) and policy decisions, against a
real docker-registry on 127.0.0.1."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from pipeline.cli import run
from pipeline.errors import EXIT_VERIFICATION, VerificationError
from pipeline.oci import RegistryOptions
from pipeline.oci import media_types as mt
from pipeline.oci.digest import sha256_digest
from pipeline.oci.reference import Reference
from pipeline.oci.transfer import push_layout
from pipeline.policy.image_policy import ImagePolicy
from pipeline.signing import attestation, dsse
from pipeline.signing.attestation import attest, verify_attestations
from pipeline.signing.image import clear_cache, sign_image
from tests.fixtures_registry import RegistryServer, write_image

pytestmark = pytest.mark.integration
OPTS = RegistryOptions(insecure=True)
DSSE = "application/vnd.dsse.envelope.v1+json"

PREDICATES = {
    "slsaprovenance": {
        "buildDefinition": {"buildType": "https://secure-model-pipeline.dev/build/v1",
                            "externalParameters": {"source": "git+https://example/repo"}},
        "runDetails": {"builder": {"id": "https://secure-model-pipeline.dev/local-runner"}},
    },
    "cyclonedx": {"bomFormat": "CycloneDX", "specVersion": "1.6", "components": []},
    "vuln": {"scanner": {"uri": "pkg:github/aquasecurity/trivy@0.59.0",
                         "result": {"vulnerabilities": "not scanned (no DB)"}},
             "metadata": {"scanStartedOn": "2025-01-01T00:00:00Z"}},
}
URIS = {
    "slsaprovenance": "https://slsa.dev/provenance/v1",
    "cyclonedx": "https://cyclonedx.org/bom",
    "vuln": "https://cosign.sigstore.dev/attestation/vuln/v1",
}


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    clear_cache()
    attestation.clear_cache()


@pytest.fixture
def push(registry: RegistryServer, tmp_path: Path) -> Callable[..., tuple[Reference, str]]:
    counter = iter(range(1_000_000))

    def make(repository: str = "team/app", tag: str = "v1") -> tuple[Reference, str]:
        n = next(counter)
        layout, _ = write_image(tmp_path / f"layout{n}",
                                layers=[{"app.txt": f"att image {n} {tmp_path}".encode()}])
        ref = Reference.parse(f"{registry.host}/{repository}:{tag}")
        with registry.client() as client:
            return ref, push_layout(layout, ref, client, tag="v1")

    return make


def _att_tag(digest: str) -> str:
    return digest.replace(":", "-") + ".att"


# -- round trips --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["slsaprovenance", "cyclonedx", "vuln"])
def test_attestation_round_trip(kind: str, push, keys, registry: RegistryServer) -> None:
    ref, digest = push()
    private, public = keys("alice")
    result = attest(ref, kind, PREDICATES[kind], private, registry_options=OPTS)
    assert result["predicate_type"] == URIS[kind] and result["added"]
    (statement,) = verify_attestations(ref, kind, [public], registry_options=OPTS)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == URIS[kind]
    assert statement["subject"] == [{"name": ref.name, "digest": {"sha256": digest[7:]}}]
    assert statement["predicate"] == PREDICATES[kind]
    # cosign's storage: a DSSE layer annotated with the predicate type in the .att manifest.
    with registry.client() as client:
        manifest = json.loads(client.get_manifest(ref.repository, _att_tag(digest))[0])
        (layer,) = manifest["layers"]
        envelope = json.loads(client.get_blob(ref.repository, layer["digest"]))
    assert layer["mediaType"] == DSSE
    assert layer["annotations"]["predicateType"] == URIS[kind]
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    assert json.loads(base64.b64decode(envelope["payload"])) == statement


def test_three_attestations_on_one_image_each_verify_by_type(push, keys) -> None:
    ref, _ = push()
    private, public = keys("alice")
    for kind in PREDICATES:
        attest(ref, kind, PREDICATES[kind], private, registry_options=OPTS)
    assert attest(ref, "vuln", PREDICATES["vuln"], private, registry_options=OPTS)["added"] is False
    for kind in PREDICATES:
        (statement,) = verify_attestations(ref, kind, [public], registry_options=OPTS)
        assert statement["predicate"] == PREDICATES[kind]


def test_referrers_fallback_index_lists_the_attestation(push, keys, registry) -> None:
    ref, digest = push()
    private, _ = keys("alice")
    result = attest(ref, "cyclonedx", PREDICATES["cyclonedx"], private, registry_options=OPTS)
    with registry.client() as client:
        # distribution 2.8 has no referrers API: the sha256-<hex> tag holds the index.
        body, media_type, _ = client.get_manifest(ref.repository, digest.replace(":", "-"),
                                                  accept=(mt.OCI_INDEX,))
        index = json.loads(body)
        (entry,) = [m for m in index["manifests"] if m["digest"] == result["referrer_manifest"]]
        assert media_type == mt.OCI_INDEX and entry["artifactType"] == DSSE
        artifact = json.loads(client.get_manifest(ref.repository, entry["digest"])[0])
        listed = client.referrers(ref.repository, digest, DSSE)
    assert artifact["subject"]["digest"] == digest
    assert artifact["artifactType"] == DSSE
    assert artifact["layers"][0]["annotations"]["predicateType"] == URIS["cyclonedx"]
    assert [m["digest"] for m in listed] == [result["referrer_manifest"]]


def test_referrers_are_used_when_the_att_tag_is_gone(push, keys, registry) -> None:
    ref, digest = push()
    private, public = keys("alice")
    result = attest(ref, "slsaprovenance", PREDICATES["slsaprovenance"], private,
                    registry_options=OPTS)
    with registry.client() as client:
        client.delete_manifest(ref.repository, result["attestation_manifest"])
        assert client.head_manifest(ref.repository, _att_tag(digest)) is None
    (statement,) = verify_attestations(ref, "slsaprovenance", [public], registry_options=OPTS)
    assert statement["predicate"] == PREDICATES["slsaprovenance"]


# -- failures -----------------------------------------------------------------------------
def test_wrong_key_and_missing_type_fail(push, keys) -> None:
    ref, _ = push()
    private, public = keys("alice")
    _, other = keys("mallory")
    attest(ref, "cyclonedx", PREDICATES["cyclonedx"], private, registry_options=OPTS)
    with pytest.raises(VerificationError, match="0 of the 1 trusted keys"):
        verify_attestations(ref, "cyclonedx", [other], registry_options=OPTS)
    with pytest.raises(VerificationError, match="no verified https://slsa.dev/provenance/v1"):
        verify_attestations(ref, "slsaprovenance", [public], registry_options=OPTS)


def _replace_att_layer(registry: RegistryServer, ref: Reference, digest: str,
                       mutate: Callable[[dict], dict]) -> None:
    with registry.client() as client:
        manifest = json.loads(client.get_manifest(ref.repository, _att_tag(digest))[0])
        layer = manifest["layers"][0]
        envelope = mutate(json.loads(client.get_blob(ref.repository, layer["digest"])))
        blob = json.dumps(envelope).encode()
        client.push_blob(ref.repository, blob)
        layer.update(digest=sha256_digest(blob), size=len(blob))
        client.put_manifest(ref.repository, _att_tag(digest), json.dumps(manifest).encode(),
                            mt.OCI_MANIFEST)


def test_tampered_envelope_fails(push, keys, registry) -> None:
    ref, digest = push()
    private, public = keys("alice")
    # cosign's layout only (no attachment manifest): the .att layer is the one copy.
    attest(ref, "vuln", PREDICATES["vuln"], private, registry_options=OPTS, referrer=False)

    def tamper(envelope: dict) -> dict:
        statement = json.loads(base64.b64decode(envelope["payload"]))
        statement["predicate"]["scanner"]["result"] = {"vulnerabilities": []}  # "clean"
        envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
        return envelope

    _replace_att_layer(registry, ref, digest, tamper)
    with pytest.raises(VerificationError, match="trusted keys signed"):
        verify_attestations(ref, "vuln", [public], registry_options=OPTS)


def test_bad_base64_in_envelope_fails(push, keys, registry) -> None:
    ref, digest = push()
    private, public = keys("alice")
    attest(ref, "vuln", PREDICATES["vuln"], private, registry_options=OPTS, referrer=False)
    _replace_att_layer(registry, ref, digest, lambda e: {**e, "payload": "@@not-b64@@"})
    with pytest.raises(VerificationError, match="payload is not base64"):
        verify_attestations(ref, "vuln", [public], registry_options=OPTS)


def test_attestation_copied_from_another_image_fails(push, keys, registry) -> None:
    good, good_digest = push(tag="good")
    evil, evil_digest = push(tag="evil")
    private, public = keys("alice")
    attest(good, "slsaprovenance", PREDICATES["slsaprovenance"], private, registry_options=OPTS,
           referrer=False)
    with registry.client() as client:
        body, media_type, _ = client.get_manifest(good.repository, _att_tag(good_digest))
        client.put_manifest(evil.repository, _att_tag(evil_digest), body, media_type)
    with pytest.raises(VerificationError, match="about another artifact"):
        verify_attestations(evil, "slsaprovenance", [public], registry_options=OPTS)


def test_signed_statement_type_wins_over_the_annotation(push, keys, registry) -> None:
    ref, digest = push()
    private, public = keys("alice")
    attest(ref, "cyclonedx", PREDICATES["cyclonedx"], private, registry_options=OPTS,
           referrer=False)
    with registry.client() as client:  # relabel the layer as provenance (unsigned field)
        manifest = json.loads(client.get_manifest(ref.repository, _att_tag(digest))[0])
        manifest["layers"][0]["annotations"]["predicateType"] = URIS["slsaprovenance"]
        client.put_manifest(ref.repository, _att_tag(digest), json.dumps(manifest).encode(),
                            mt.OCI_MANIFEST)
    with pytest.raises(VerificationError, match="annotation says"):
        verify_attestations(ref, "slsaprovenance", [public], registry_options=OPTS)


def test_conditions_filter_statements(push, keys) -> None:
    ref, _ = push()
    private, public = keys("alice")
    attest(ref, "slsaprovenance", PREDICATES["slsaprovenance"], private, registry_options=OPTS)
    build_type = "predicate.buildDefinition.buildType"
    ok = [{"path": build_type, "equals": "https://secure-model-pipeline.dev/build/v1"}]
    assert verify_attestations(ref, "slsaprovenance", [public], conditions=ok,
                               registry_options=OPTS)
    bad = [{"path": build_type, "matches": "https://evil.example/.*"}]
    with pytest.raises(VerificationError, match="does not meet the conditions"):
        verify_attestations(ref, "slsaprovenance", [public], conditions=bad,
                            registry_options=OPTS)


def test_attestation_threshold_counts_distinct_signers(push, keys) -> None:
    ref, _ = push()
    alice, alice_pub = keys("alice")
    bob, bob_pub = keys("bob")
    attest(ref, "vuln", PREDICATES["vuln"], alice, registry_options=OPTS)
    with pytest.raises(VerificationError, match="2 required"):
        verify_attestations(ref, "vuln", [alice_pub, bob_pub], threshold=2, registry_options=OPTS)
    attest(ref, "vuln", PREDICATES["vuln"], bob, registry_options=OPTS)
    statements = verify_attestations(ref, "vuln", [alice_pub, bob_pub], threshold=2,
                                     registry_options=OPTS)
    assert len(statements) == 1  # the same statement, signed twice


def test_threshold_counts_only_signers_of_statements_meeting_the_conditions(push, keys) -> None:
    # Two keys required, conditions on the builder: bob attested a build by another
    # builder; only alice vouches for a statement that passes, so 1 of 2: refused.
    ref, _ = push()
    alice, alice_pub = keys("alice")
    bob, bob_pub = keys("bob")
    attest(ref, "slsaprovenance", PREDICATES["slsaprovenance"], alice, registry_options=OPTS)
    other = json.loads(json.dumps(PREDICATES["slsaprovenance"]))
    other["runDetails"]["builder"]["id"] = "https://evil.example/builder"
    attest(ref, "slsaprovenance", other, bob, registry_options=OPTS)
    builder = [{"path": "predicate.runDetails.builder.id",
                "equals": "https://secure-model-pipeline.dev/local-runner"}]
    with pytest.raises(VerificationError, match="2 required"):
        verify_attestations(ref, "slsaprovenance", [alice_pub, bob_pub], threshold=2,
                            conditions=builder, registry_options=OPTS)
    # once bob attests the passing statement too, two keys vouch for it
    attest(ref, "slsaprovenance", PREDICATES["slsaprovenance"], bob, registry_options=OPTS)
    (statement,) = verify_attestations(ref, "slsaprovenance", [alice_pub, bob_pub], threshold=2,
                                       conditions=builder, registry_options=OPTS)
    assert statement["predicate"]["runDetails"]["builder"]["id"].endswith("/local-runner")


def test_cli_attest_and_verify_attestation(push, keys, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    ref, _ = push()
    private, public = keys("alice")
    predicate = tmp_path / "sbom.json"
    predicate.write_text(json.dumps(PREDICATES["cyclonedx"]))
    assert run(["attest", str(ref), "--type", "cyclonedx", "--predicate", str(predicate),
                "--key", str(private), "--insecure"]) == 0
    capsys.readouterr()
    assert run(["verify-attestation", str(ref), "--type", "cyclonedx", "--key", str(public),
                "--insecure", "--json"]) == 0
    output = json.loads(capsys.readouterr().out)
    assert output["statements"][0]["predicate"] == PREDICATES["cyclonedx"]
    assert run(["verify-attestation", str(ref), "--type", "vuln", "--key", str(public),
                "--insecure"]) == EXIT_VERIFICATION
    (tmp_path / "bad.json").write_text("[1, 2]")
    assert run(["attest", str(ref), "--type", "vuln", "--predicate", str(tmp_path / "bad.json"),
                "--key", str(private), "--insecure"]) == 4
    assert run(["attest", str(ref), "--type", "nope", "--predicate", str(predicate),
                "--key", str(private), "--insecure"]) == 4


# -- the verification policy against the registry ------------------------------------------
def _policy(tmp_path: Path, registry: RegistryServer, keys_: list[Path], threshold: int = 1,
            attestations: list | None = None) -> ImagePolicy:
    document = {"version": 1, "rules": [{
        "name": "team", "images": [f"{registry.host}/team/*"],
        "authorities": [{"key": str(k)} for k in keys_], "threshold": threshold,
        "attestations": attestations or [],
    }]}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(document))
    return ImagePolicy.load(path)


def test_policy_allows_a_signed_and_attested_image(push, keys, tmp_path, registry) -> None:
    ref, digest = push()
    private, public = keys("alice")
    sign_image(ref, private, registry_options=OPTS)
    attest(ref, "slsaprovenance", PREDICATES["slsaprovenance"], private, registry_options=OPTS)
    policy = _policy(tmp_path, registry, [public], attestations=[{
        "type": "slsaprovenance",
        "conditions": [{"path": "predicate.buildDefinition.buildType",
                        "equals": "https://secure-model-pipeline.dev/build/v1"}]}])
    result = policy.evaluate(f"{ref.name}@{digest}", OPTS)
    assert result.allowed, result.reasons
    assert result.digest == digest and result.rules == ["team"]


def test_policy_denies_missing_attestation_and_unsigned(push, keys, tmp_path, registry) -> None:
    ref, digest = push()
    private, public = keys("alice")
    policy = _policy(tmp_path, registry, [public], attestations=[{"type": "cyclonedx"}])
    unsigned = policy.evaluate(f"{ref.name}@{digest}", OPTS)
    assert not unsigned.allowed and any("no signatures found" in r for r in unsigned.reasons)
    sign_image(ref, private, registry_options=OPTS)
    no_sbom = policy.evaluate(f"{ref.name}@{digest}", OPTS)
    assert not no_sbom.allowed
    assert any("no verified https://cyclonedx.org/bom" in r for r in no_sbom.reasons)


def test_policy_threshold(push, keys, tmp_path, registry) -> None:
    ref, digest = push()
    alice, alice_pub = keys("alice")
    bob, bob_pub = keys("bob")
    policy = _policy(tmp_path, registry, [alice_pub, bob_pub], threshold=2)
    sign_image(ref, alice, registry_options=OPTS)
    assert not policy.evaluate(f"{ref.name}@{digest}", OPTS).allowed
    sign_image(ref, bob, registry_options=OPTS)
    assert policy.evaluate(f"{ref.name}@{digest}", OPTS).allowed


def test_policy_tags_need_resolve_and_no_match_is_denied(push, keys, tmp_path,
                                                         registry) -> None:
    ref, digest = push()
    private, public = keys("alice")
    sign_image(ref, private, registry_options=OPTS)
    policy = _policy(tmp_path, registry, [public])
    refused = policy.evaluate(str(ref), OPTS)
    assert not refused.allowed and "pin the image by digest" in refused.reasons[0]
    resolved = policy.evaluate(str(ref), OPTS, resolve=True)
    assert resolved.allowed and resolved.digest == digest
    other, other_digest = push(repository="elsewhere/app")
    assert not policy.evaluate(f"{other.name}@{other_digest}", OPTS).allowed


def test_policy_denies_when_the_registry_is_unreachable(keys, tmp_path, registry) -> None:
    _, public = keys("alice")
    document = {"rules": [{"images": ["127.0.0.1:1/**"], "authorities": [{"key": str(public)}]}]}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(document))
    policy = ImagePolicy.load(tmp_path / "p.yaml")
    result = policy.evaluate("127.0.0.1:1/team/app@sha256:" + "ab" * 32,
                             RegistryOptions(insecure=True, retries=0))
    assert not result.allowed and result.reasons


def test_dsse_media_type_constant_matches_cosign() -> None:
    assert dsse.MEDIA_TYPE == DSSE
