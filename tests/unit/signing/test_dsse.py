"""DSSE envelopes and in-toto statements: PAE vectors, sign/verify, tampering, round trips."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import InputError, VerificationError
from pipeline.signing import dsse, intoto
from pipeline.signing._ecdsa import PemSigner, VerifyKey

DIGEST = "sha256:" + "ab" * 32


def _pair() -> tuple[PemSigner, VerifyKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    return PemSigner(key, "test"), VerifyKey(key.public_key(), "test")


SIGNER, TRUSTED = _pair()
OTHER_SIGNER, OTHER_TRUSTED = _pair()


# -- PAE ----------------------------------------------------------------------------------
def test_pae_matches_the_spec_vector() -> None:
    # The example of the DSSE protocol specification.
    assert (
        dsse.pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_of_empty_type_and_payload() -> None:
    assert dsse.pae("", b"") == b"DSSEv1 0  0 "


def test_pae_counts_bytes_not_characters() -> None:
    assert dsse.pae("tÿpe", "é".encode()) == b"DSSEv1 5 t\xc3\xbfpe 2 \xc3\xa9"


@given(st.text(max_size=20), st.binary(max_size=40), st.text(max_size=20), st.binary(max_size=40))
def test_pae_is_injective(type_a: str, body_a: bytes, type_b: str, body_b: bytes) -> None:
    # Length prefixes make the encoding unambiguous: distinct inputs, distinct bytes.
    if (type_a, body_a) != (type_b, body_b):
        assert dsse.pae(type_a, body_a) != dsse.pae(type_b, body_b)


# -- sign / verify ------------------------------------------------------------------------
def test_sign_verify_round_trip_through_json() -> None:
    envelope = dsse.sign(b'{"a":1}', dsse.INTOTO_PAYLOAD_TYPE, [SIGNER])
    parsed = dsse.Envelope.from_json(envelope.to_json())
    assert parsed == envelope
    assert dsse.verify(parsed, [OTHER_TRUSTED, TRUSTED]) == [TRUSTED.keyid]


def test_envelope_json_has_the_cosign_shape() -> None:
    document = json.loads(dsse.sign(b"x", dsse.INTOTO_PAYLOAD_TYPE, [SIGNER]).to_json())
    assert set(document) == {"payloadType", "payload", "signatures"}
    assert document["payloadType"] == "application/vnd.in-toto+json"
    assert base64.b64decode(document["payload"]) == b"x"
    assert document["signatures"][0]["keyid"] == ""


def test_signature_is_over_pae_not_the_raw_payload() -> None:
    envelope = dsse.sign(b"payload", dsse.INTOTO_PAYLOAD_TYPE, [SIGNER])
    message = dsse.pae(dsse.INTOTO_PAYLOAD_TYPE, b"payload")
    assert TRUSTED.verify(envelope.signatures[0].sig, message)
    assert not TRUSTED.verify(envelope.signatures[0].sig, b"payload")


def test_wrong_key_fails() -> None:
    envelope = dsse.sign(b"payload", dsse.INTOTO_PAYLOAD_TYPE, [SIGNER])
    with pytest.raises(VerificationError, match="0 of the 1 trusted keys"):
        dsse.verify(envelope, [OTHER_TRUSTED])


def test_tampered_payload_fails() -> None:
    envelope = dsse.sign(b'{"ok":true}', dsse.INTOTO_PAYLOAD_TYPE, [SIGNER])
    document = json.loads(envelope.to_json())
    document["payload"] = base64.b64encode(b'{"ok":false}').decode()
    with pytest.raises(VerificationError):
        dsse.verify(dsse.Envelope.from_json(json.dumps(document).encode()), [TRUSTED])


def test_payload_type_swap_fails_even_when_accepted() -> None:
    envelope = dsse.sign(b"{}", "application/other", [SIGNER])
    swapped = dsse.Envelope(dsse.INTOTO_PAYLOAD_TYPE, envelope.payload, envelope.signatures)
    with pytest.raises(VerificationError):
        dsse.verify(swapped, [TRUSTED])
    with pytest.raises(VerificationError, match="payloadType"):
        dsse.verify(envelope, [TRUSTED])  # wrong type for an in-toto verifier


def test_keyid_is_only_a_hint() -> None:
    envelope = dsse.sign(b"{}", dsse.INTOTO_PAYLOAD_TYPE, [SIGNER])
    relabelled = dsse.Envelope(
        envelope.payload_type,
        envelope.payload,
        (dsse.Signature(envelope.signatures[0].sig, OTHER_TRUSTED.keyid),),
    )
    assert dsse.verify(relabelled, [TRUSTED]) == [TRUSTED.keyid]
    with pytest.raises(VerificationError):
        dsse.verify(relabelled, [OTHER_TRUSTED])


def test_threshold_counts_distinct_keys() -> None:
    both = dsse.sign(b"{}", dsse.INTOTO_PAYLOAD_TYPE, [SIGNER, OTHER_SIGNER])
    assert sorted(dsse.verify(both, [TRUSTED, OTHER_TRUSTED], threshold=2)) == sorted(
        [TRUSTED.keyid, OTHER_TRUSTED.keyid]
    )
    twice = dsse.sign(b"{}", dsse.INTOTO_PAYLOAD_TYPE, [SIGNER, SIGNER])
    with pytest.raises(VerificationError, match="2 required"):
        dsse.verify(twice, [TRUSTED, OTHER_TRUSTED], threshold=2)


def test_urlsafe_base64_is_accepted() -> None:
    payload = b"\xfb\xff\xfe" * 5  # encodes with '+' and '/' in standard base64
    envelope = dsse.sign(payload, dsse.INTOTO_PAYLOAD_TYPE, [SIGNER])
    document = json.loads(envelope.to_json())
    document["payload"] = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    parsed = dsse.Envelope.from_json(json.dumps(document).encode())
    assert parsed.payload == payload
    dsse.verify(parsed, [TRUSTED])


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"payload":"e30=","signatures":[{"sig":"AA=="}]}', "payloadType"),
        (b'{"payloadType":"t","payload":"!!","signatures":[{"sig":"AA=="}]}', "payload is not"),
        (b'{"payloadType":"t","payload":"e30=","signatures":[]}', "no signatures"),
        (b'{"payloadType":"t","payload":"e30=","signatures":[{"sig":"%%"}]}', "sig is not"),
        (b'{"payloadType":"t","payload":"e30=","signatures":["x"]}', "not an object"),
        (b'{"payloadType":"t","payload":"e30=","signatures":[{"sig":"AA==","keyid":3}]}',
         "keyid"),
    ],
)
def test_malformed_envelopes_are_refused(document: bytes, reason: str) -> None:
    with pytest.raises(VerificationError, match=reason):
        dsse.Envelope.from_json(document)


@settings(max_examples=50, deadline=None)
@given(st.text(min_size=1, max_size=30), st.binary(max_size=200))
def test_round_trip_property(payload_type: str, payload: bytes) -> None:
    envelope = dsse.sign(payload, payload_type, [SIGNER])
    parsed = dsse.Envelope.from_json(envelope.to_json())
    assert parsed.payload == payload and parsed.payload_type == payload_type
    assert dsse.verify(parsed, [TRUSTED], payload_type=None) == [TRUSTED.keyid]


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.integers(min_value=0, max_value=10_000))
def test_any_single_bit_flip_in_payload_fails(payload: bytes, position: int) -> None:
    envelope = dsse.sign(payload, dsse.INTOTO_PAYLOAD_TYPE, [SIGNER])
    index = position % len(payload)
    flipped = bytearray(payload)
    flipped[index] ^= 1 << (position % 8)
    tampered = dsse.Envelope(envelope.payload_type, bytes(flipped), envelope.signatures)
    with pytest.raises(VerificationError):
        dsse.verify(tampered, [TRUSTED])


@given(st.binary(max_size=100))
def test_from_json_never_crashes_on_garbage(data: bytes) -> None:
    try:
        dsse.Envelope.from_json(data)
    except VerificationError:
        pass


# -- in-toto statements -------------------------------------------------------------------
def test_statement_build_and_parse() -> None:
    statement = intoto.build_statement("reg.example/app", DIGEST, "cyclonedx", {"bomFormat": "x"})
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://cyclonedx.org/bom"
    assert statement["subject"] == [{"name": "reg.example/app", "digest": {"sha256": "ab" * 32}}]
    parsed = intoto.parse_statement(intoto.serialize_statement(statement))
    assert parsed.names_digest(DIGEST)
    assert not parsed.names_digest("sha256:" + "cd" * 32)


@pytest.mark.parametrize(
    ("name", "uri"),
    [
        ("slsaprovenance", "https://slsa.dev/provenance/v1"),
        ("cyclonedx", "https://cyclonedx.org/bom"),
        ("vuln", "https://cosign.sigstore.dev/attestation/vuln/v1"),
        ("https://example.com/custom/v1", "https://example.com/custom/v1"),
    ],
)
def test_predicate_type_names(name: str, uri: str) -> None:
    assert intoto.resolve_predicate_type(name) == uri


def test_unknown_predicate_type_is_an_input_error() -> None:
    with pytest.raises(InputError, match="unknown predicate type"):
        intoto.resolve_predicate_type("spdx-ish")


@pytest.mark.parametrize(
    "document",
    [
        {"_type": "https://in-toto.io/Statement/v2", "subject": [], "predicateType": "x"},
        {"_type": intoto.STATEMENT_TYPE_V1, "subject": [], "predicateType": "x"},
        {"_type": intoto.STATEMENT_TYPE_V1, "subject": [{"name": "a"}], "predicateType": "x"},
        {"_type": intoto.STATEMENT_TYPE_V1, "subject": [{"digest": {"sha256": 1}}],
         "predicateType": "x"},
        {"_type": intoto.STATEMENT_TYPE_V1, "subject": [{"digest": {"sha256": "a"}}]},
    ],
)
def test_malformed_statements_are_refused(document: dict) -> None:
    with pytest.raises(VerificationError, match="malformed in-toto statement"):
        intoto.parse_statement(json.dumps(document).encode())


def test_cosign_v01_statements_are_read() -> None:
    document = {
        "_type": "https://in-toto.io/Statement/v0.1",
        "subject": [{"name": "x", "digest": {"sha256": "ab" * 32}}],
        "predicateType": "https://cosign.sigstore.dev/attestation/vuln/v1",
        "predicate": {},
    }
    assert intoto.parse_statement(json.dumps(document).encode()).names_digest(DIGEST)


def test_statement_with_duplicate_keys_is_refused() -> None:
    other = "cd" * 32
    text = (
        '{"_type":"https://in-toto.io/Statement/v1","predicateType":"https://x.example/p",'
        f'"predicate":{{}},"subject":[{{"name":"a","digest":{{"sha256":"{DIGEST[7:]}"}}}}],'
        f'"subject":[{{"name":"a","digest":{{"sha256":"{other}"}}}}]}}'
    )
    with pytest.raises(VerificationError, match="duplicate"):
        intoto.parse_statement(text.encode())
