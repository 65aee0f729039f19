"""Image reference parsing: docker-compatible normalisation, refusals, round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import InputError
from pipeline.oci.reference import Reference

D64 = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("ubuntu", "docker.io", "library/ubuntu", "latest", None),
        ("ubuntu:22.04", "docker.io", "library/ubuntu", "22.04", None),
        ("docker.io/ubuntu", "docker.io", "library/ubuntu", "latest", None),
        ("index.docker.io/foo/bar:1", "docker.io", "foo/bar", "1", None),
        ("foo/bar", "docker.io", "foo/bar", "latest", None),
        ("localhost/x", "localhost", "x", "latest", None),
        ("localhost:5000/x", "localhost:5000", "x", "latest", None),
        ("127.0.0.1:5000/team/model:v1", "127.0.0.1:5000", "team/model", "v1", None),
        ("ghcr.io/o/r@" + D64, "ghcr.io", "o/r", None, D64),
        ("ghcr.io/o/r:t@" + D64, "ghcr.io", "o/r", "t", D64),
        ("[::1]:5000/x:y", "[::1]:5000", "x", "y", None),
        ("Registry/x", "Registry", "x", "latest", None),
        ("a.b/c_d/e__f/g-h/i.j:T_1.x-y", "a.b", "c_d/e__f/g-h/i.j", "T_1.x-y", None),
    ],
)
def test_parse_table(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        registry,
        repository,
        tag,
        digest,
    )
    assert Reference.parse(str(ref)) == ref


@pytest.mark.parametrize(
    "text",
    [
        "",
        "UPPER",
        "x:",
        "x@sha256:abc",
        "x@md5:" + "a" * 32,
        "a//b",
        "-a",
        "a-",
        "a:b/c",
        "x:-tag",
        "x:" + "t" * 129,
        "ex ample",
        "a/b/",
        "/a",
        "x@" + D64.upper(),
        "host:port/x",
        "a" * 256,
        "a..b/c",
    ],
)
def test_invalid_references_are_refused(text: str) -> None:
    with pytest.raises(InputError):
        Reference.parse(text)


def test_identifier_prefers_digest_and_helpers_keep_repository() -> None:
    ref = Reference.parse("127.0.0.1:5000/m:v1")
    assert ref.identifier == "v1"
    pinned = ref.with_digest(D64)
    assert pinned.identifier == D64 and str(pinned) == f"127.0.0.1:5000/m:v1@{D64}"
    assert ref.with_tag("v2").tag == "v2" and pinned.with_tag("v2").digest is None
    with pytest.raises(InputError):
        ref.with_digest("sha256:nothex")
    with pytest.raises(InputError):
        ref.with_tag("bad tag")


_component = st.from_regex(r"[a-z0-9]{1,6}(?:[._-][a-z0-9]{1,6}){0,2}", fullmatch=True)
_domain = st.one_of(
    st.just("docker.io"),
    st.just("localhost"),
    st.from_regex(r"[a-z][a-z0-9]{0,8}\.[a-z]{2,5}", fullmatch=True),
    st.builds(lambda p: f"127.0.0.1:{p}", st.integers(1, 65535)),
)
_tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
_digest = st.from_regex(r"[0-9a-f]{64}", fullmatch=True).map(lambda h: f"sha256:{h}")


@given(_domain, st.lists(_component, min_size=1, max_size=3), st.none() | _tag, st.none() | _digest)
def test_round_trip(domain: str, path: list[str], tag: str | None, digest: str | None) -> None:
    text = (
        f"{domain}/{'/'.join(path)}" + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    )
    ref = Reference.parse(text)
    assert Reference.parse(str(ref)) == ref
    assert ref.digest == digest
    assert ref.tag == (tag or (None if digest else "latest"))


@given(st.text(max_size=60))
def test_parse_never_crashes(text: str) -> None:
    try:
        ref = Reference.parse(text)
    except InputError:
        return
    assert Reference.parse(str(ref)) == ref
