"""Simple-signing payloads (cosign's exact bytes, strict parsing) and ECDSA key handling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import InputError, KeyProviderError, VerificationError
from pipeline.signing import simple_signing as ss
from pipeline.signing._ecdsa import (
    PASSWORD_ENV,
    key_fingerprint,
    load_signer,
    load_verify_key,
    load_verify_keys,
)

DIGEST = "sha256:" + "0123456789abcdef" * 4


def test_payload_bytes_match_cosign() -> None:
    # cosign (Go encoding/json) writes exactly this for an unannotated signature.
    expected = (
        '{"critical":{"identity":{"docker-reference":"reg.example/team/app"},'
        f'"image":{{"docker-manifest-digest":"{DIGEST}"}},'
        '"type":"cosign container image signature"},"optional":null}'
    ).encode()
    assert ss.build_payload("reg.example/team/app", DIGEST) == expected


def test_optional_annotations_are_sorted_and_go_escaped() -> None:
    payload = ss.build_payload("r.example/a", DIGEST, {"z": "1", "a": "<&>"})
    assert payload.endswith(b'"optional":{"a":"\\u003c\\u0026\\u003e","z":"1"}}')
    assert ss.parse_payload(payload).optional == {"a": "<&>", "z": "1"}


def test_parse_reads_what_build_writes() -> None:
    parsed = ss.parse_payload(ss.build_payload("r.example/a", DIGEST))
    assert parsed.docker_reference == "r.example/a"
    assert parsed.manifest_digest == DIGEST
    assert parsed.optional == {}


def test_build_refuses_a_bad_digest() -> None:
    with pytest.raises(InputError):
        ss.build_payload("r.example/a", "sha256:short")


def _doc(**critical: object) -> bytes:
    base: dict = {
        "identity": {"docker-reference": "r.example/a"},
        "image": {"docker-manifest-digest": DIGEST},
        "type": ss.PAYLOAD_TYPE,
    }
    base.update(critical)
    return json.dumps({"critical": base, "optional": None}).encode()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe", "not valid JSON"),
        (b"[1]", "'payload' is not an object"),
        (b'{"optional":{}}', "'critical' is not an object"),
        (_doc(type="something else"), "type is"),
        (_doc(identity="x"), "critical.identity"),
        (_doc(identity={}), "no docker-reference"),
        (_doc(image={}), "no docker-manifest-digest"),
        (_doc(image={"docker-manifest-digest": "md5:abc"}), "unsupported algorithm"),
        (json.dumps({"critical": json.loads(_doc())["critical"], "optional": 3}).encode(),
         "'optional' is not an object"),
    ],
)
def test_malformed_payloads_are_refused(payload: bytes, reason: str) -> None:
    with pytest.raises(VerificationError, match=reason):
        ss.parse_payload(payload)


OTHER = "sha256:" + "cd" * 32


@pytest.mark.parametrize(
    "payload",
    [
        # the same key twice: Python keeps the last, other parsers the first
        ('{"critical":{"identity":{"docker-reference":"r.example/a"},'
         f'"image":{{"docker-manifest-digest":"{DIGEST}","docker-manifest-digest":"{OTHER}"}},'
         '"type":"cosign container image signature"},"optional":null}'),
        # Go's encoding/json (cosign) matches field names case-insensitively
        ('{"critical":{"identity":{"docker-reference":"r.example/a"},'
         f'"image":{{"docker-manifest-digest":"{DIGEST}"}},"Image":{{"docker-manifest-digest":'
         f'"{OTHER}"}},"type":"cosign container image signature"}},"optional":null}}'),
        (f'{{"Critical":{{"image":{{"docker-manifest-digest":"{OTHER}"}}}},'
         + _doc().decode()[1:]),
    ],
)
def test_ambiguous_payloads_with_duplicate_keys_are_refused(payload: str) -> None:
    # A signed payload that two parsers read as two different digests is refused.
    with pytest.raises(VerificationError, match="duplicate"):
        ss.parse_payload(payload.encode())


def test_oversized_payload_is_refused() -> None:
    with pytest.raises(VerificationError, match="larger than"):
        ss.parse_payload(b" " * (ss.MAX_PAYLOAD_BYTES + 1))


_repo = st.from_regex(r"[a-z0-9]{1,8}\.example/[a-z0-9]{1,8}(/[a-z0-9]{1,8})?", fullmatch=True)
_annotations = st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=20), max_size=4)


@given(_repo, st.binary(min_size=32, max_size=32), _annotations)
def test_round_trip_property(repo: str, raw: bytes, annotations: dict[str, str]) -> None:
    digest = "sha256:" + raw.hex()
    payload = ss.build_payload(repo, digest, annotations)
    parsed = ss.parse_payload(payload)
    assert (parsed.docker_reference, parsed.manifest_digest) == (repo, digest)
    assert parsed.optional == annotations
    assert ss.build_payload(repo, digest, annotations) == payload  # deterministic


@given(st.binary(max_size=200))
def test_parse_never_crashes_on_garbage(data: bytes) -> None:
    try:
        ss.parse_payload(data)
    except VerificationError:
        pass


# -- keys ---------------------------------------------------------------------------------
def _write(path: Path, key: object, *, password: bytes | None = None) -> Path:
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    path.write_bytes(
        key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
    )
    return path


def _public(path: Path, key: object) -> Path:
    path.write_bytes(
        key.public_key().public_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def test_sign_with_pem_verify_with_public_pem(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    signer = load_signer(_write(tmp_path / "k.pem", key))
    trusted = load_verify_key(_public(tmp_path / "k.pub", key))
    signature = signer.sign(b"data")
    assert trusted.verify(signature, b"data")
    assert not trusted.verify(signature, b"datA")
    assert not trusted.verify(b"\x30\x00", b"data")  # malformed DER is just invalid
    assert trusted.keyid == key_fingerprint(key.public_key())
    assert "BEGIN" not in repr(signer)


def test_inline_pem_public_key(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    text = _public(tmp_path / "k.pub", key).read_text()
    assert load_verify_key(text).keyid == key_fingerprint(key.public_key())


def test_encrypted_private_key_needs_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path = _write(tmp_path / "k.pem", key, password=b"correct horse")
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    with pytest.raises(KeyProviderError, match=PASSWORD_ENV):
        load_signer(path)
    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    with pytest.raises(KeyProviderError, match="password is wrong") as info:
        load_signer(path)
    assert "wrong" not in str(info.value).replace("password is wrong", "")
    monkeypatch.setenv(PASSWORD_ENV, "correct horse")
    assert load_signer(path).public_key.public_numbers() == key.public_key().public_numbers()


def test_other_curves_and_rsa_are_refused(tmp_path: Path) -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(KeyProviderError, match="P-256"):
        load_signer(_write(tmp_path / "p384.pem", p384))
    with pytest.raises(KeyProviderError, match="P-256"):
        load_verify_key(_public(tmp_path / "p384.pub", p384))
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(KeyProviderError, match="not an ECDSA"):
        load_signer(_write(tmp_path / "rsa.pem", rsa_key))
    with pytest.raises(KeyProviderError, match="not an ECDSA"):
        load_verify_key(_public(tmp_path / "rsa.pub", rsa_key))


def test_private_key_where_public_expected_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "k.pem", ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(KeyProviderError, match="give the public one"):
        load_verify_key(path)


def test_missing_and_garbage_key_files(tmp_path: Path) -> None:
    with pytest.raises(KeyProviderError, match="not found"):
        load_signer(tmp_path / "absent.pem")
    (tmp_path / "junk.pem").write_text("hello")
    with pytest.raises(KeyProviderError, match="not a PEM"):
        load_signer(tmp_path / "junk.pem")
    with pytest.raises(KeyProviderError, match="not a PEM public key"):
        load_verify_key(tmp_path / "junk.pem")


def test_duplicate_keys_count_once(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path = _public(tmp_path / "k.pub", key)
    assert len(load_verify_keys([path, str(path), path.read_text()])) == 1
    with pytest.raises(KeyProviderError, match="at least one"):
        load_verify_keys([])
