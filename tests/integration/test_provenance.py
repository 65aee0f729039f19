"""SLSA provenance of a built image: derived from the image, attested, required by policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.build.provenance import BUILD_TYPE, PREDICATE_TYPE, image_provenance
from pipeline.cli import run
from pipeline.errors import EXIT_INPUT
from pipeline.oci import RegistryOptions
from pipeline.policy.image_policy import ImagePolicy
from tests.fixtures_registry import write_image
from tests.integration._build_support import Built

pytestmark = pytest.mark.integration


def test_provenance_describes_the_image_and_is_reproducible(
    built: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "provenance.json"
    assert run(["provenance", str(built.layout), "-o", str(out)]) == 0
    predicate = json.loads(out.read_text())
    definition, details = predicate["buildDefinition"], predicate["runDetails"]
    assert definition["buildType"] == BUILD_TYPE
    assert details["metadata"]["invocationId"] == built.digest
    assert details["metadata"]["startedOn"] == "2023-11-14T22:13:20Z"  # SOURCE_DATE_EPOCH
    locks = {d["name"]: d["digest"]["sha256"] for d in definition["resolvedDependencies"]
             if "name" in d and d["name"].endswith(".lock")}
    assert set(locks) == {"debian-base.lock", "requirements.lock"}
    assert [b["digest"]["sha256"] for b in details["byproducts"]] == [
        layer.digest.split(":", 1)[1] for layer in built.layers
    ]
    assert [b["name"].split(":")[1].strip() for b in details["byproducts"]] == [
        "base", "python dependencies", "app"]
    assert image_provenance(str(built.layout)) == predicate  # same image, same predicate


def test_provenance_of_a_foreign_image_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_image(tmp_path / "foreign")  # a valid image, but not one of our builds
    assert run(["provenance", str(tmp_path / "foreign")]) == EXIT_INPUT
    assert "only made for images this builder built" in capsys.readouterr().err


def test_policy_requires_our_build_type(
    built: Built, registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["keys", "create-signing", "release", "--dir", str(tmp_path)]) == 0
    key, pub = tmp_path / "release.key", tmp_path / "release.pub"
    ref = registry.ref("models/provenanced", "v1")
    assert run(["push", str(built.layout), ref, "--insecure"]) == 0
    pinned = f"{registry.host}/models/provenanced@{built.digest}"
    assert run(["sign", pinned, "--key", str(key), "--insecure"]) == 0
    predicate = tmp_path / "provenance.json"
    assert run(["provenance", str(built.layout), "-o", str(predicate)]) == 0

    def policy(build_type: str) -> ImagePolicy:
        return ImagePolicy.from_mapping({
            "rules": [{
                "name": "ours",
                "images": [f"{registry.host}/models/*"],
                "authorities": [{"key": str(pub)}],
                "attestations": [{"type": "slsaprovenance", "conditions": [
                    {"path": "predicate.buildDefinition.buildType", "equals": build_type}]}],
            }],
        })

    before = policy(BUILD_TYPE).evaluate(pinned, RegistryOptions(insecure=True))
    assert not before.allowed  # signed, but no provenance yet
    assert run(["attest", pinned, "--type", "slsaprovenance", "--predicate", str(predicate),
                "--key", str(key), "--insecure"]) == 0
    assert run(["verify-attestation", pinned, "--type", "slsaprovenance", "--key", str(pub),
                "--insecure"]) == 0
    allowed = policy(BUILD_TYPE).evaluate(pinned, RegistryOptions(insecure=True))
    assert allowed.allowed, allowed.reasons
    other = policy("https://example.com/another-builder").evaluate(
        pinned, RegistryOptions(insecure=True))
    assert not other.allowed
    verified = json.loads(_attestations_json(pinned, pub, capsys))
    (statement,) = verified["statements"]
    assert statement["predicateType"] == PREDICATE_TYPE
    assert statement["subject"][0]["digest"]["sha256"] == built.digest.split(":", 1)[1]


def _attestations_json(ref: str, pub: Path, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert run(["verify-attestation", ref, "--type", "slsaprovenance", "--key", str(pub),
                "--insecure", "--json"]) == 0
    return capsys.readouterr().out
