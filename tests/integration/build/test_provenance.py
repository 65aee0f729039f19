"""SLSA provenance of a built image: derived from the image, attested, required by policy."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import rfc3986
import rfc3986.exceptions
import rfc3986.validators
from packageurl import PackageURL

from pipeline.build.image import build_image
from pipeline.build.provenance import BUILD_TYPE, PREDICATE_TYPE, image_provenance
from pipeline.cli import run
from pipeline.errors import EXIT_INPUT
from pipeline.oci import RegistryOptions
from pipeline.policy.image_policy import ImagePolicy
from tests.fixtures_registry import write_image
from tests.support.build import Built, copy_project

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


# ------------------------------------------------------------------ resolvedDependencies URIs

_URI = rfc3986.validators.Validator().require_presence_of("scheme").check_validity_of(
    "scheme", "userinfo", "host", "port", "path", "query", "fragment")


#: RFC 3986 section 2: a URI holds only unreserved and reserved characters and %XX escapes.
_URI_CHARS = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:"
                        r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*$")


def test_the_uri_check_can_fail() -> None:
    for bad in ("git+/home/builder/checkout", "io.secure-model-pipeline/debian-base-lock",
                "file:with space", "pkg:pypi/x@1 2", "file:%zz", "http://[::1"):
        with pytest.raises((rfc3986.exceptions.RFC3986Exception, AssertionError)):
            _assert_uri(bad)


def _assert_uri(uri: str) -> rfc3986.URIReference:
    """An RFC 3986 URI (not a relative reference): a scheme and valid components."""
    assert _URI_CHARS.match(uri), uri
    ref = rfc3986.uri_reference(uri)
    _URI.validate(ref)  # raises MissingComponentError / InvalidComponentsError otherwise
    assert ref.scheme and ref.unsplit() == uri, uri
    return ref


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True,
                   env={**os.environ, "GIT_CONFIG_GLOBAL": os.devnull,
                        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"})


def _built_in_git(root: Path, remote: str | None) -> tuple[Path, dict, str]:
    """The test project at models/buildtest of a fresh git repository, built; its predicate."""
    repo = root / "checkout-of-the-builder"
    project = copy_project(repo / "models" / "buildtest")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "model")
    if remote is not None:
        _git(repo, "remote", "add", "origin", remote)
    revision = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()
    build_image(project, root / "layout")
    return repo, image_provenance(str(root / "layout")), revision


@pytest.mark.parametrize("remote, expected", [
    ("https://x-access-token:ghs_secret@github.com/org/model.git",
     "git+https://github.com/org/model.git@{rev}"),
    ("git@github.com:org/model.git", "git+ssh://github.com/org/model.git@{rev}"),
    (None, "file:models/buildtest"),
    ("{local}", "file:models/buildtest"),  # a remote on the builder's disk is no remote
], ids=["https-with-token", "scp-like", "no-remote", "local-path-remote"])
def test_resolved_dependencies_are_rfc3986_uris_that_leak_nothing(
        build_env, tmp_path: Path, remote: str | None, expected: str) -> None:
    if remote == "{local}":
        remote = str(tmp_path / "srv" / "model.git")
    repo, predicate, revision = _built_in_git(tmp_path, remote)
    definition = predicate["buildDefinition"]
    dependencies = definition["resolvedDependencies"]
    for dependency in dependencies:  # in-toto ResourceDescriptor: uri, digest or content
        assert {"uri", "digest", "content"} & set(dependency), dependency
        if "uri" in dependency:
            _assert_uri(dependency["uri"])
    text = json.dumps(predicate)
    assert str(tmp_path) not in text and "checkout-of-the-builder" not in text
    assert "ghs_secret" not in text and "x-access-token" not in text
    source = dependencies[0]
    assert source == {"uri": expected.format(rev=revision), "digest": {"gitCommit": revision}}
    assert definition["externalParameters"]["source"] == source["uri"]
    assert definition["externalParameters"]["path"] == "models/buildtest"


def test_every_locked_package_is_a_purl_with_its_digest(built: Built) -> None:
    from pipeline.build.base_lock import lock_path
    from pipeline.build.debian import load_lock
    from pipeline.build.wheels import parse_python_lock

    dependencies = image_provenance(str(built.layout))["buildDefinition"][
        "resolvedDependencies"]
    purls = {}
    for dependency in dependencies:
        if dependency.get("uri", "").startswith("pkg:"):
            assert _assert_uri(dependency["uri"]).scheme == "pkg"
            purl = PackageURL.from_string(dependency["uri"])
            purls[(purl.type, purl.name, purl.version)] = dependency["digest"]["sha256"]
    debs = {("deb", p.name, p.version): p.sha256 for p in load_lock(lock_path()).packages}
    pins = {("pypi", w.name, w.version): w.sha256 for w in parse_python_lock(
        (built.project / "requirements.lock").read_text())}
    assert purls == {**debs, **pins}
    assert any(k[1] == "libc6" for k in purls) and ("pypi", "idna", "3.20") in purls


def test_locks_must_be_the_ones_the_image_was_built_with(
        built: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.build.base_lock import lock_path

    other = tmp_path / "other.lock"
    text = lock_path().read_text()
    other.write_text(text.replace("# roots:", "# roots: tzdata", 1))
    capsys.readouterr()
    assert run(["provenance", str(built.layout), "--base-lock", str(other)]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "was built with sha256:" in err and "--base-lock" in err
    wrong = tmp_path / "requirements.lock"
    wrong.write_text("# secure-model-pipeline python lock v1\n")
    assert run(["provenance", str(built.layout), "--python-lock", str(wrong)]) == EXIT_INPUT
    assert "is not the one" in capsys.readouterr().err
    right = tmp_path / "right.lock"
    right.write_text(text)
    assert run(["provenance", str(built.layout), "--base-lock", str(right),
                "--python-lock", str(built.project / "requirements.lock")]) == 0
