"""The image verification policy: loading, strictness, matching, and offline denials.

Decisions that need a registry (signed / unsigned / threshold / attestations) are in
tests/integration/signing/test_attestations.py; these are the ones taken before any request.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import ConfigError
from pipeline.oci import RegistryOptions
from pipeline.policy.image_policy import ImagePolicy, glob_to_regex

REPO_ROOT = Path(__file__).resolve().parents[3]
DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def pubkey(tmp_path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "keys" / "release.pub"
    path.parent.mkdir()
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def _write(tmp_path: Path, document: dict) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def _policy(tmp_path: Path, **extra: object) -> ImagePolicy:
    rule = {"name": "team", "images": ["reg.example/team/*"],
            "authorities": [{"key": "keys/release.pub"}]}
    rule.update(extra)
    return ImagePolicy.load(_write(tmp_path, {"version": 1, "rules": [rule]}))


def test_example_policy_loads(pubkey: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PIPELINE_RELEASE_PUBLIC_KEY", "PIPELINE_PLATFORM_KEY_A",
                 "PIPELINE_PLATFORM_KEY_B"):
        monkeypatch.setenv(name, str(pubkey))
    policy = ImagePolicy.load(REPO_ROOT / "policies" / "image-policy.yaml")
    assert [r.name for r in policy.rules] == ["secure-runtime", "mirrored-bases"]
    runtime = policy.rules_for("registry.example/ml/models/minilm/v2@" + DIGEST)
    assert [r.name for r in runtime] == ["secure-runtime"]
    assert [a.predicate_type for a in runtime[0].attestations] == [
        "https://slsa.dev/provenance/v1",
        "https://cyclonedx.org/bom",
        "https://cosign.sigstore.dev/attestation/vuln/v1",
    ]
    assert policy.rules[1].threshold == 2 and len(policy.rules[1].keyless) == 1


def test_example_policy_without_its_key_variables_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PIPELINE_RELEASE_PUBLIC_KEY", raising=False)
    with pytest.raises(ConfigError, match="environment variable"):
        ImagePolicy.load(REPO_ROOT / "policies" / "image-policy.yaml")


def test_relative_key_paths_resolve_against_the_policy_file(
    tmp_path: Path, pubkey: Path
) -> None:
    policy = _policy(tmp_path)
    assert policy.rules[0].keys[0].source == str(pubkey)


def test_inline_pem_authority(tmp_path: Path, pubkey: Path) -> None:
    policy = _policy(tmp_path, authorities=[{"key": pubkey.read_text()}])
    assert policy.rules[0].keys[0].source == "inline PEM"


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("reg.example/team/*", "reg.example/team/app", True),
        ("reg.example/team/*", "reg.example/team/app/sub", False),
        ("reg.example/team/**", "reg.example/team/app/sub", True),
        ("reg.example/team/*", "reg.example/teamx/app", False),
        ("reg.example/te?m/app", "reg.example/team/app", True),
        ("reg.example/team/app", "reg.example/team/app2", False),
        ("reg.example:5000/a.b/*", "reg.example:5000/a.b/c", True),
        ("reg.example:5000/a.b/*", "reg.example:5000/aXb/c", False),  # '.' is literal
    ],
)
def test_glob_patterns(pattern: str, name: str, expected: bool) -> None:
    assert bool(glob_to_regex(pattern).fullmatch(name)) is expected


@given(st.from_regex(r"[a-z0-9]{1,6}(/[a-z0-9]{1,6}){0,3}", fullmatch=True))
def test_double_star_matches_any_depth_single_star_one_segment(path: str) -> None:
    name = f"reg.example/{path}"
    assert glob_to_regex("reg.example/**").fullmatch(name)
    assert bool(glob_to_regex("reg.example/*").fullmatch(name)) is ("/" not in path)


def test_rules_for_normalises_references(tmp_path: Path, pubkey: Path) -> None:
    policy = _policy(tmp_path, images=["docker.io/library/*"])
    assert len(policy.rules_for("busybox:latest")) == 1
    assert len(policy.rules_for("index.docker.io/library/busybox@" + DIGEST)) == 1
    assert policy.rules_for("quay.io/busybox") == []


@pytest.mark.parametrize(
    "spelling",
    [
        "REG.EXAMPLE/team/app",        # host names are case-insensitive: same registry
        "Reg.Example/team/app",
        "reg.example:443/team/app",    # the HTTPS default port: same registry
        "REG.example:443/team/app",
    ],
)
def test_other_spellings_of_the_registry_match_the_same_rules(
    tmp_path: Path, pubkey: Path, spelling: str
) -> None:
    # Under `default: allow` a spelling that escaped the rule would be allowed unsigned.
    rule = {"name": "team", "images": ["reg.example/team/*"],
            "authorities": [{"key": "keys/release.pub"}]}
    policy = ImagePolicy.load(_write(tmp_path, {"default": "allow", "rules": [rule]}))
    assert [r.name for r in policy.rules_for(f"{spelling}@{DIGEST}")] == ["team"]
    result = policy.evaluate(f"{spelling}:v1")  # tag-only: refused before any request
    assert not result.allowed and result.rules == ["team"]


def test_docker_hub_aliases_match_docker_io_rules(tmp_path: Path, pubkey: Path) -> None:
    # the client talks to registry-1.docker.io for docker.io: the same images
    policy = _policy(tmp_path, images=["docker.io/library/*"])
    assert len(policy.rules_for("registry-1.docker.io/library/busybox@" + DIGEST)) == 1


def test_no_matching_rule_is_denied(tmp_path: Path, pubkey: Path) -> None:
    result = _policy(tmp_path).evaluate("other.example/x@" + DIGEST)
    assert not result.allowed
    assert "no policy rule matches" in result.reasons[0]


def test_default_allow_is_explicit(tmp_path: Path, pubkey: Path) -> None:
    path = _write(tmp_path, {"default": "allow", "rules": []})
    result = ImagePolicy.load(path).evaluate("other.example/x@" + DIGEST)
    assert result.allowed and "default is allow" in result.reasons[0]


def test_tag_only_reference_is_refused_before_any_request(tmp_path: Path, pubkey: Path) -> None:
    # No registry runs at reg.example: a denial here proves nothing was fetched.
    result = _policy(tmp_path).evaluate("reg.example/team/app:v1")
    assert not result.allowed
    assert "pin the image by digest" in result.reasons[0]
    assert result.rules == ["team"]


def test_invalid_reference_is_denied_not_raised(tmp_path: Path, pubkey: Path) -> None:
    result = _policy(tmp_path).evaluate("Not A Reference")
    assert not result.allowed and "invalid image reference" in result.reasons[0]


def test_keyless_only_rule_is_never_satisfied_offline(tmp_path: Path) -> None:
    path = _write(tmp_path, {"rules": [{
        "images": ["reg.example/*"],
        "authorities": [{"keyless": {"issuer": "https://issuer.example", "subject": "^me$"}}],
    }]})
    result = ImagePolicy.load(path).evaluate("reg.example/app@" + DIGEST,
                                             RegistryOptions(insecure=False))
    assert not result.allowed
    assert any("keyless" in r for r in result.reasons)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"version": 2, "rules": []}, "unsupported version"),
        ({"default": "maybe"}, "'default' must be"),
        ({"requireDigest": "yes"}, "requireDigest"),
        ({"rules": {"a": 1}}, "'rules' must be a list"),
        ({"rulez": []}, "unknown field"),
        ({"rules": [{"images": [], "authorities": [{"key": "keys/release.pub"}]}]},
         "'images' must be"),
        ({"rules": [{"images": ["a/*"]}]}, "'authorities' must be"),
        ({"rules": [{"images": ["a/*"], "authorities": [{"key": "keys/release.pub"}],
                     "treshold": 2}]}, "unknown field.*treshold"),
        ({"rules": [{"images": ["a/*"], "authorities": [{"key": "keys/release.pub"}],
                     "threshold": 2}]}, "exceeds"),
        ({"rules": [{"images": ["a/*"], "authorities": [{"key": "keys/release.pub"}],
                     "threshold": 0}]}, "positive integer"),
        ({"rules": [{"images": ["a/*"], "authorities": [{"key": "keys/absent.pub"}]}]},
         "not found"),
        ({"rules": [{"images": ["a/*"], "authorities": [{"cert": "x"}]}]}, "must be"),
        ({"rules": [{"images": ["a/*"], "authorities": [
            {"keyless": {"issuer": "i", "subject": "("}}]}]}, "valid regex"),
        ({"rules": [{"images": ["a/*"], "authorities": [{"key": "keys/release.pub"}],
                     "attestations": [{"type": "spdx-ish"}]}]}, "unknown predicate type"),
        ({"rules": [{"images": ["a/*"], "authorities": [{"key": "keys/release.pub"}],
                     "attestations": [{"type": "vuln", "conditions": [{"path": "x"}]}]}]},
         "exactly one of"),
        ({"rules": [{"images": ["a/*"], "authorities": [{"key": "keys/release.pub"}],
                     "attestations": [{"type": "vuln", "conditions": [
                         {"path": "x", "matches": "["}]}]}]}, "invalid regex"),
    ],
)
def test_malformed_policies_name_the_problem(
    tmp_path: Path, pubkey: Path, document: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        ImagePolicy.load(_write(tmp_path, document))
    assert str(tmp_path / "policy.yaml") in str(info.value)


def test_missing_policy_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        ImagePolicy.load(tmp_path / "absent.yaml")
