"""Model signatures (pipeline.signing.model): real keys, real files, real bundles."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from pathlib import Path

import model_signing
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.cli import run
from pipeline.errors import (
    EXIT_INPUT,
    EXIT_INTEGRITY,
    EXIT_USAGE,
    EXIT_VERIFICATION,
    InputError,
    IntegrityError,
    KeyProviderError,
    UnreachableError,
    VerificationError,
)
from pipeline.signing import _model_verify, _pkcs11
from pipeline.signing.keypair import PASSWORD_ENV, create_signing_keypair
from pipeline.signing.model import (
    SIGNATURE_NAME,
    Trust,
    sign_model,
    verify_model,
    verify_model_signature,
)

FILES = {
    "config.json": b'{"hidden_size": 384}\n',
    "weights/part-0.bin": os.urandom(4096),
    "weights/part-1.bin": b"\x00" * 1000 + b"\x01",
    ".seal.json": b'{"format": 1}\n',
}


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[Path, Path]]:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    pairs = {}
    for name in ("good", "other"):
        pairs[name] = (tmp_path / f"{name}.key", tmp_path / f"{name}.pub")
        create_signing_keypair(*pairs[name])
    return pairs


@pytest.fixture
def model(tmp_path: Path) -> Path:
    root = tmp_path / "sealed"
    for name, data in FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


@pytest.fixture
def signed(model: Path, keys: dict[str, tuple[Path, Path]]) -> Path:
    sign_model(model, private_key=keys["good"][0])
    return model


def trust_of(*public: Path) -> Trust:
    return Trust(public_keys=tuple(public))


# --------------------------------------------------------------------------- keypair


def test_keypair_is_p256_pkcs8_private_0600_and_spki_public(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    private, public = tmp_path / "k.key", tmp_path / "k.pub"
    create_signing_keypair(private, public)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")  # SPKI
    key = serialization.load_pem_private_key(private.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    loaded_public = serialization.load_pem_public_key(public.read_bytes())
    assert loaded_public == key.public_key()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.key", "k.pub"]  # no temp files


def test_keypair_refuses_to_overwrite(tmp_path: Path) -> None:
    private, public = tmp_path / "k.key", tmp_path / "k.pub"
    public.write_text("keep me")
    with pytest.raises(InputError, match="overwrite"):
        create_signing_keypair(private, public)
    assert not private.exists()
    assert public.read_text() == "keep me"


def test_keypair_with_password_encrypts_and_signs(tmp_path, model, monkeypatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "correct horse")
    private, public = tmp_path / "p.key", tmp_path / "p.pub"
    create_signing_keypair(private, public)
    assert b"ENCRYPTED" in private.read_bytes()
    sign_model(model, private_key=private)
    assert verify_model(model, trust_of(public)).keys() == FILES.keys()
    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    with pytest.raises(KeyProviderError):
        sign_model(model, private_key=private)
    monkeypatch.delenv(PASSWORD_ENV)
    with pytest.raises(KeyProviderError):
        sign_model(model, private_key=private)


# ------------------------------------------------------------------------ round trip


def test_round_trip_covers_every_file_hidden_and_nested(signed, keys) -> None:
    manifest = verify_model(signed, trust_of(keys["good"][1]))
    assert set(manifest) == set(FILES)  # .seal.json (hidden) and weights/* included
    assert SIGNATURE_NAME not in manifest
    assert (signed / SIGNATURE_NAME).is_file()
    assert not [p for p in signed.iterdir() if ".tmp-" in p.name]


def test_cheap_path_returns_sha256_of_each_file(signed, keys) -> None:
    manifest = verify_model_signature(signed, trust_of(keys["good"][1]))
    assert manifest == {name: hashlib.sha256(data).hexdigest() for name, data in FILES.items()}


def test_cheap_path_reads_no_model_file(signed, keys) -> None:
    # The runtime relies on this: it hashes ciphertext itself. Changed content is
    # therefore invisible here and caught by the full check (or the loader).
    (signed / "config.json").write_bytes(b"changed")
    manifest = verify_model_signature(signed, trust_of(keys["good"][1]))
    assert manifest["config.json"] == hashlib.sha256(FILES["config.json"]).hexdigest()
    with pytest.raises(IntegrityError, match="config.json"):
        verify_model(signed, trust_of(keys["good"][1]))


def test_model_signing_itself_accepts_our_signature(signed, keys) -> None:
    config = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=keys["good"][1])
    config.verify(signed, signed / SIGNATURE_NAME)  # raises on mismatch


def test_resigning_replaces_signature(signed, keys) -> None:
    (signed / "extra.txt").write_text("new file")
    sign_model(signed, private_key=keys["other"][0])
    manifest = verify_model(signed, trust_of(keys["other"][1]))
    assert "extra.txt" in manifest
    with pytest.raises(VerificationError):
        verify_model(signed, trust_of(keys["good"][1]))


def test_git_directory_is_not_signed(model, keys) -> None:
    (model / ".git").mkdir()
    (model / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    sign_model(model, private_key=keys["good"][0])
    (model / ".git" / "HEAD").write_text("changed\n")
    assert ".git/HEAD" not in verify_model(model, trust_of(keys["good"][1]))


# ------------------------------------------------------------------------- integrity


def test_one_changed_byte_is_an_integrity_error(signed, keys) -> None:
    path = signed / "weights" / "part-1.bin"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"weights/part-1\.bin: content does not match"):
        verify_model(signed, trust_of(keys["good"][1]))


def test_added_file_is_an_integrity_error(signed, keys) -> None:
    (signed / "weights" / "backdoor.bin").write_bytes(b"x")
    with pytest.raises(IntegrityError, match=r"weights/backdoor\.bin: present but not signed"):
        verify_model(signed, trust_of(keys["good"][1]))


def test_hidden_added_file_is_an_integrity_error(signed, keys) -> None:
    (signed / ".hidden").write_bytes(b"x")
    with pytest.raises(IntegrityError, match=r"\.hidden: present but not signed"):
        verify_model(signed, trust_of(keys["good"][1]))


def test_removed_file_is_an_integrity_error(signed, keys) -> None:
    (signed / "weights" / "part-0.bin").unlink()
    with pytest.raises(IntegrityError, match=r"weights/part-0\.bin: signed but missing"):
        verify_model(signed, trust_of(keys["good"][1]))


def test_symlinks_are_refused(model, keys, tmp_path) -> None:
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"outside")
    (model / "link.bin").symlink_to(outside)
    with pytest.raises(InputError, match="symlink"):
        sign_model(model, private_key=keys["good"][0])
    assert not (model / SIGNATURE_NAME).exists()
    (model / "link.bin").unlink()
    sign_model(model, private_key=keys["good"][0])
    (model / "link.bin").symlink_to(outside)
    with pytest.raises(IntegrityError, match="symlink"):
        verify_model(model, trust_of(keys["good"][1]))


# ---------------------------------------------------------------------- verification


def test_missing_signature_is_a_verification_error(model, keys) -> None:
    with pytest.raises(VerificationError, match="not signed"):
        verify_model(model, trust_of(keys["good"][1]))
    with pytest.raises(VerificationError, match="not signed"):
        verify_model_signature(model, trust_of(keys["good"][1]))


def test_untrusted_key_is_a_verification_error(signed, keys) -> None:
    with pytest.raises(VerificationError, match="not valid for any trusted signer"):
        verify_model(signed, trust_of(keys["other"][1]))


def test_any_trusted_key_may_verify(signed, keys) -> None:
    manifest = verify_model(signed, trust_of(keys["other"][1], keys["good"][1]))
    assert set(manifest) == set(FILES)


def test_empty_trust_accepts_nothing(signed) -> None:
    assert Trust().is_empty()
    with pytest.raises(VerificationError, match="no trusted signers"):
        verify_model_signature(signed, Trust())


def test_truncated_bundle_is_a_verification_error(signed, keys) -> None:
    sig = signed / SIGNATURE_NAME
    sig.write_bytes(sig.read_bytes()[:-20])
    with pytest.raises(VerificationError, match="malformed"):
        verify_model(signed, trust_of(keys["good"][1]))


def test_duplicate_json_keys_are_refused(signed, keys) -> None:
    sig = signed / SIGNATURE_NAME
    text = sig.read_text()
    sig.write_text(text.replace('{"mediaType"', '{"mediaType": "x", "mediaType"', 1))
    with pytest.raises(VerificationError, match="duplicate key"):
        verify_model_signature(signed, trust_of(keys["good"][1]))


def test_tampered_manifest_digest_breaks_the_signature(signed, keys) -> None:
    sig = signed / SIGNATURE_NAME
    bundle = json.loads(sig.read_text())
    payload = base64.b64decode(bundle["dsseEnvelope"]["payload"])
    statement = json.loads(payload)
    statement["predicate"]["resources"][0]["digest"] = "0" * 64
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    sig.write_text(json.dumps(bundle))
    with pytest.raises(VerificationError):
        verify_model_signature(signed, trust_of(keys["good"][1]))


def test_shard_or_non_sha256_manifests_are_refused(model, keys) -> None:
    # Validly signed by a trusted key, but digests the loader cannot compare with.
    for hashing in (
        model_signing.hashing.Config().use_shard_serialization(),
        model_signing.hashing.Config().use_file_serialization(hashing_algorithm="blake2"),
    ):
        model_signing.signing.Config().set_hashing_config(hashing).use_elliptic_key_signer(
            private_key=keys["good"][0]
        ).sign(model, model / SIGNATURE_NAME)
        with pytest.raises(VerificationError, match="sha256"):
            verify_model_signature(model, trust_of(keys["good"][1]))


def test_unsafe_names_in_a_signed_manifest_are_refused(model, keys) -> None:
    from model_signing import manifest as ms_manifest
    from model_signing._hashing import hashing as ms_hashing
    from model_signing._signing import sign_ec_key, signing

    serialization_type = ms_manifest._FileSerialization("sha256", False, frozenset())
    digest = ms_hashing.Digest("sha256", hashlib.sha256(b"x").digest())
    item = serialization_type.new_item("../../etc/passwd", digest)
    crafted = ms_manifest.Manifest("evil", [item], serialization_type)
    signer = sign_ec_key.Signer(keys["good"][0])
    signer.sign(signing.Payload(crafted)).write(model / SIGNATURE_NAME)
    with pytest.raises(VerificationError, match="unsafe"):
        verify_model_signature(model, trust_of(keys["good"][1]))


def test_bad_trusted_key_file_is_a_config_error(signed, tmp_path) -> None:
    from pipeline.errors import ConfigError

    bad = tmp_path / "bad.pub"
    bad.write_text("not a key")
    with pytest.raises(ConfigError):
        verify_model_signature(signed, trust_of(bad))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.one_of(
        st.binary(max_size=512),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(
                    st.sampled_from(
                        [
                            "mediaType",
                            "verificationMaterial",
                            "dsseEnvelope",
                            "publicKey",
                            "payload",
                        ]
                    ),
                    inner,
                    max_size=4,
                )
            ),
            max_leaves=12,
        ).map(lambda value: json.dumps(value).encode()),
    )
)
def test_any_garbage_signature_is_only_ever_a_verification_error(signed, keys, data) -> None:
    (signed / SIGNATURE_NAME).write_bytes(data)
    with pytest.raises(VerificationError):
        verify_model_signature(signed, trust_of(keys["good"][1]))


# --------------------------------------------------------------------- sign arguments


def test_exactly_one_signer(model, keys) -> None:
    with pytest.raises(InputError, match="exactly one"):
        sign_model(model)
    with pytest.raises(InputError, match="exactly one"):
        sign_model(model, private_key=keys["good"][0], identity_token="t")


def test_bad_signature_names_and_dirs(model, keys, tmp_path) -> None:
    for name in ("../model.sig", "a/b", "", ".git"):
        with pytest.raises(InputError):
            sign_model(model, private_key=keys["good"][0], signature_name=name)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="nothing to sign"):
        sign_model(empty, private_key=keys["good"][0])
    from pipeline.errors import NotFoundError

    with pytest.raises(NotFoundError):
        sign_model(tmp_path / "absent", private_key=keys["good"][0])


# ------------------------------------------------------------- Sigstore keyless, offline


@pytest.fixture
def offline(monkeypatch, tmp_path) -> None:
    # Deterministically offline even on a machine with internet: a proxy nobody listens
    # on, and an empty TUF cache (so nothing cached can stand in for the trust root).
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))


def test_keyless_signing_without_network_is_unreachable(model, offline) -> None:
    with pytest.raises(UnreachableError, match="Sigstore"):
        sign_model(model, identity_token="eyJhbGciOiJub25lIn0.e30.")
    assert not (model / SIGNATURE_NAME).exists()


def test_keyless_bundle_needs_trusted_identities(signed, keys, offline) -> None:
    sig = signed / SIGNATURE_NAME
    bundle = json.loads(sig.read_text())
    bundle["verificationMaterial"] = {"certificate": {"rawBytes": "AAAA"}, "tlogEntries": []}
    sig.write_text(json.dumps(bundle))
    # Only keys trusted: a keyless bundle has no trusted signer of its kind.
    with pytest.raises(VerificationError, match="Sigstore keyless"):
        verify_model_signature(signed, trust_of(keys["good"][1]))
    # Identities trusted, but the Sigstore trust root is out of reach: refused, clearly.
    identities = Trust(identities=(("ci@example.com", "https://token.example.com"),))
    with pytest.raises(UnreachableError, match="not reachable"):
        verify_model_signature(signed, identities)


def test_key_bundle_is_not_checked_against_identities(signed, offline) -> None:
    identities = Trust(identities=(("ci@example.com", "https://token.example.com"),))
    with pytest.raises(VerificationError, match="public key"):
        verify_model_signature(signed, identities)


# ------------------------------------------------------------------------------- CLI


def test_cli_create_sign_verify_and_exit_codes(model, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    keydir = tmp_path / "keys"
    keydir.mkdir()
    assert run(["keys", "create-signing", "release", "--dir", str(keydir), "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["public_key"] == str(keydir / "release.pub")
    assert stat.S_IMODE((keydir / "release.key").stat().st_mode) == 0o600
    assert run(["keys", "create-signing", "release", "--dir", str(keydir)]) == EXIT_INPUT
    capsys.readouterr()

    assert run(["sign-model", str(model), "--key", str(keydir / "release.key"), "--json"]) == 0
    signed = json.loads(capsys.readouterr().out)
    assert signed["signature"] == str(model / SIGNATURE_NAME)

    trust = ["--trust", str(keydir / "release.pub")]
    assert run(["verify-model", str(model), *trust, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["verified"] is True
    assert result["files"]["config.json"] == hashlib.sha256(FILES["config.json"]).hexdigest()

    (model / "config.json").write_bytes(b"tampered")
    assert run(["verify-model", str(model), *trust]) == EXIT_INTEGRITY
    assert "config.json" in capsys.readouterr().err
    assert run(["verify-model", str(model), *trust, "--signature-only"]) == 0

    other = tmp_path / "other"
    other.mkdir()
    assert run(["keys", "create-signing", "x", "--dir", str(other)]) == 0
    assert run(["verify-model", str(model), "--trust", str(other / "x.pub")]) == EXIT_VERIFICATION
    (model / SIGNATURE_NAME).unlink()
    assert run(["verify-model", str(model), *trust]) == EXIT_VERIFICATION
    assert run(["verify-model", str(model)]) == EXIT_USAGE
    capsys.readouterr()


def test_cli_refuses_pin_on_command_line(model, capsys) -> None:
    code = run(["sign-model", str(model), "--pkcs11-uri", "pkcs11:object=k?pin-value=1234"])
    assert code == EXIT_INPUT
    err = capsys.readouterr().err
    assert "PIN" in err and "1234" not in err
    assert run(["sign-model", str(model)]) == EXIT_USAGE


# ------------------------------------------------------------------ PKCS#11 URI parser


@settings(max_examples=80, deadline=None)
@given(
    label=st.text(min_size=1, max_size=20),
    key_id=st.binary(min_size=1, max_size=8),
    token=st.text(min_size=1, max_size=20),
)
def test_pkcs11_uri_round_trips_percent_encoding(label, key_id, token) -> None:
    from urllib.parse import quote, quote_from_bytes

    uri = (
        f"pkcs11:object={quote(label, safe='')};id={quote_from_bytes(key_id, safe='')};"
        f"token={quote(token, safe='')}?module-path=/x.so"
    )
    path_attrs, query = _pkcs11.parse_pkcs11_uri(uri)
    assert path_attrs["object"].decode() == label
    assert path_attrs["id"] == key_id
    assert path_attrs["token"].decode() == token
    assert query == {"module-path": b"/x.so"}


@pytest.mark.parametrize(
    "uri",
    [
        "object=k",
        "pkcs11:object",
        "pkcs11:object=a;object=b",
        "pkcs11:id=1?pin-value=1&pin-source=/p",
    ],
)
def test_malformed_pkcs11_uris_are_input_errors(uri) -> None:
    with pytest.raises(InputError):
        _pkcs11.parse_pkcs11_uri(uri)


# ------------------------------------------------------------------- known digests


def test_known_digests_sign_the_same_manifest_without_reading(model, keys) -> None:
    """The sealer's shortcut: digests it already has are used, the rest are hashed."""
    real = {name: hashlib.sha256(data).hexdigest() for name, data in FILES.items()}
    # Not read: the file on disk no longer matches the digest handed in, and the
    # signature carries the handed-in digest, not one of the current content.
    (model / "weights/part-0.bin").write_bytes(b"changed after sealing hashed it")
    sign_model(model, private_key=keys["good"][0],
               known_digests={"weights/part-0.bin": real["weights/part-0.bin"]})
    signed = verify_model_signature(model, trust_of(keys["good"][1]))
    assert signed["weights/part-0.bin"] == real["weights/part-0.bin"]
    # Files not listed are hashed as usual.
    assert signed["config.json"] == real["config.json"]
    # With the content the digest describes, it is exactly what a full hash gives, and
    # model-signing itself accepts it.
    (model / "weights/part-0.bin").write_bytes(FILES["weights/part-0.bin"])
    assert verify_model(model, trust_of(keys["good"][1])) == real
    config = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=keys["good"][1])
    config.verify(model, model / SIGNATURE_NAME)


def test_a_wrong_known_digest_is_caught_by_full_verification(model, keys) -> None:
    sign_model(model, private_key=keys["good"][0], known_digests={"weights/part-1.bin": "00" * 32})
    with pytest.raises(IntegrityError, match="part-1.bin"):
        verify_model(model, trust_of(keys["good"][1]))


# ------------------------------------------- key bundles verified without model-signing
#
# Plain key bundles are verified by the native path (_model_native: cryptography only,
# no model-signing import; it dominates the runtime's cold start otherwise). These
# tests hold it to model-signing's decisions: every bundle below is verified once by
# the native path and once by model-signing (native path switched off), and both
# must accept with the same manifest or both must refuse with the same error class.


def _sign_bundle(
    key: Path, statement: bytes, *, payload_type: str = "application/vnd.in-toto+json",
    compat: bool = False, hint: object = "auto",
) -> dict:
    private = serialization.load_pem_private_key(key.read_bytes(), None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    kind = "application/vnd.in-toto+json"  # model-signing's PAE always uses this type
    if compat:
        pae = f"DSSEV1 {len(kind)} {kind} {len(statement)} {statement!r}".encode()
    else:
        pae = b"DSSEv1 %d %s %d %s" % (len(kind), kind.encode(), len(statement), statement)
    hashes = {256: "SHA256", 384: "SHA384", 521: "SHA512"}
    from cryptography.hazmat.primitives import hashes as h

    algorithm = getattr(h, hashes[private.curve.key_size])()
    sig = private.sign(pae, ec.ECDSA(algorithm))
    spki = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public_key = {"hint": hashlib.sha256(spki).hexdigest()} if hint == "auto" else (
        {} if hint is None else {"hint": hint}
    )
    return {
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"publicKey": public_key, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": base64.b64encode(statement).decode(),
            "payloadType": payload_type,
            "signatures": [{"sig": base64.b64encode(sig).decode(), "keyid": ""}],
        },
    }


def _statement(signed_dir: Path) -> dict:
    bundle = json.loads((signed_dir / SIGNATURE_NAME).read_text())
    return json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))


def _root(statement: dict) -> dict:
    """Recompute the subject digest so only the change under test is wrong."""
    digest = hashlib.sha256(
        b"".join(bytes.fromhex(r["digest"]) for r in statement["predicate"]["resources"])
    ).hexdigest()
    statement["subject"][0]["digest"]["sha256"] = digest
    return statement


def _outcome(model_dir: Path, trust: Trust, *, native: bool) -> object:
    """The decision of the native path, or of model-signing (``native=False``)."""
    try:
        return ("accepted", _model_verify.verify_bundle(
            model_dir / SIGNATURE_NAME, trust, native_keys=native))
    except (VerificationError, InputError) as exc:
        return ("refused", type(exc).__name__)
    except Exception as exc:  # noqa: BLE001 - the comparison reports it
        return ("error", type(exc).__name__)


def _same_decision(model_dir: Path, trust: Trust) -> object:
    native = _outcome(model_dir, trust, native=True)
    reference = _outcome(model_dir, trust, native=False)
    assert native == reference
    return native


def _write(model_dir: Path, bundle: dict) -> None:
    (model_dir / SIGNATURE_NAME).write_text(json.dumps(bundle))


def test_verifying_a_key_bundle_does_not_import_model_signing(signed, keys) -> None:
    import subprocess
    import sys

    code = (
        "import sys\nfrom pathlib import Path\n"
        "from pipeline.signing.model import Trust, verify_model_signature\n"
        f"m = verify_model_signature(Path({str(signed)!r}), "
        f"Trust(public_keys=(Path({str(keys['good'][1])!r}),)))\n"
        "assert len(m) == 4, m\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] in "
        "('model_signing', 'sigstore', 'sigstore_models', 'requests')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_native_and_model_signing_agree_on_valid_bundles(model, keys, tmp_path, monkeypatch):
    sign_model(model, private_key=keys["good"][0])
    good = trust_of(keys["good"][1])
    accepted = _same_decision(model, good)
    assert accepted[0] == "accepted" and set(accepted[1]) == set(FILES)
    statement = json.dumps(_statement(model)).encode()
    # Hint-less (older bundles), empty hint, model-signing 0.2's PAE, a P-384 key.
    for variant in (
        _sign_bundle(keys["good"][0], statement, hint=None),
        _sign_bundle(keys["good"][0], statement, hint=""),
        _sign_bundle(keys["good"][0], statement, compat=True),
    ):
        _write(model, variant)
        assert _same_decision(model, good)[0] == "accepted"
    p384 = ec.generate_private_key(ec.SECP384R1())
    (tmp_path / "p384.key").write_bytes(p384.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (tmp_path / "p384.pub").write_bytes(p384.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    _write(model, _sign_bundle(tmp_path / "p384.key", statement))
    assert _same_decision(model, trust_of(tmp_path / "p384.pub"))[0] == "accepted"
    assert _same_decision(model, good)[0] == "refused"
    # Untrusted signer, wrong hint for the right key, right hint for a wrong key.
    _write(model, _sign_bundle(keys["other"][0], statement))
    assert _same_decision(model, good)[0] == "refused"
    _write(model, _sign_bundle(keys["good"][0], statement, hint="ab" * 32))
    assert _same_decision(model, good)[0] == "refused"
    assert _same_decision(model, trust_of(keys["other"][1], keys["good"][1]))[0] == (
        "refused"
    )


def _mutations(statement: dict) -> list[tuple[str, dict]]:
    import copy

    def change(edit) -> dict:  # type: ignore[no-untyped-def]
        value = copy.deepcopy(statement)
        edit(value)
        return value

    def resources(value: dict) -> list:
        return value["predicate"]["resources"]

    return [
        ("statement type", change(lambda v: v.update(_type="https://in-toto.io/Statement/v0.1"))),
        ("compat predicate", change(lambda v: v.update(
            predicateType="https://model_signing/Digests/v0.1"))),
        ("no subject", change(lambda v: v.update(subject=[]))),
        ("two subjects", change(lambda v: v.update(subject=v["subject"] * 2))),
        ("subject without name", change(lambda v: v["subject"][0].pop("name"))),
        ("wrong root digest", change(lambda v: v["subject"][0]["digest"].update(sha256="0" * 64))),
        ("upper-case root digest", change(lambda v: v["subject"][0]["digest"].update(
            sha256=v["subject"][0]["digest"]["sha256"].upper()))),
        ("no allow_symlinks", _root(change(
            lambda v: v["predicate"]["serialization"].pop("allow_symlinks")))),
        ("shards", _root(change(lambda v: v["predicate"]["serialization"].update(
            method="shards", shard_size=1000)))),
        ("blake2 serialization", _root(change(
            lambda v: v["predicate"]["serialization"].update(hash_type="blake2")))),
        ("sha512 resource", _root(change(lambda v: resources(v)[0].update(algorithm="sha512")))),
        ("resource without algorithm", _root(change(lambda v: resources(v)[0].pop("algorithm")))),
        ("upper-case digest", _root(change(lambda v: resources(v)[0].update(
            digest=resources(v)[0]["digest"].upper())))),
        ("short digest", _root(change(lambda v: resources(v)[0].update(digest="ab" * 16)))),
        ("unsafe name", _root(change(lambda v: resources(v)[0].update(name="../x")))),
        ("dot name", _root(change(lambda v: resources(v)[0].update(name="./config.json")))),
        ("duplicate name", _root(change(lambda v: resources(v).append(dict(resources(v)[0]))))),
        ("no resources", _root(change(lambda v: v["predicate"].update(resources=[])))),
        ("resources not a list", change(lambda v: v["predicate"].update(resources={}))),
        ("extra predicate field", _root(change(lambda v: v["predicate"].update(extra=1)))),
    ]


def test_native_and_model_signing_agree_on_signed_but_wrong_statements(
    signed, keys, monkeypatch
) -> None:
    good = trust_of(keys["good"][1])
    original = _statement(signed)
    decisions = {}
    for name, statement in _mutations(original):
        _write(signed, _sign_bundle(keys["good"][0], json.dumps(statement).encode()))
        decisions[name] = _same_decision(signed, good)[0]
    # Unknown predicate fields are ignored (v1.0 says so), and an empty model is a
    # model (the loader then finds its files unsigned); everything else is refused.
    assert decisions.pop("extra predicate field") == "accepted"
    assert decisions.pop("no resources") == "accepted"
    assert {k: v for k, v in decisions.items() if v != "refused"} == {}
    for payload in (b"not json", b"[]", b'{"_type": 1}', "\u00e9".encode("latin-1")):
        _write(signed, _sign_bundle(keys["good"][0], payload))
        assert _same_decision(signed, good)[0] == "refused"
    statement = json.dumps(original).encode()
    _write(signed, _sign_bundle(keys["good"][0], statement, payload_type="text/plain"))
    assert _same_decision(signed, good)[0] == "refused"


def test_native_and_model_signing_agree_on_envelope_changes(signed, keys, monkeypatch) -> None:
    import copy

    good = trust_of(keys["good"][1])
    original = json.loads((signed / SIGNATURE_NAME).read_text())
    envelope = original["dsseEnvelope"]
    sig = base64.b64decode(envelope["signatures"][0]["sig"])
    payload = base64.b64decode(envelope["payload"])
    flipped = bytes([payload[0] ^ 1]) + payload[1:]
    edits = {
        "other payload type": ("refused", lambda b: b["dsseEnvelope"].update(payloadType="x/y")),
        "flipped payload bit": ("refused", lambda b: b["dsseEnvelope"].update(
            payload=base64.b64encode(flipped).decode())),
        "flipped signature bit": ("refused", lambda b: b["dsseEnvelope"]["signatures"][0].update(
            sig=base64.b64encode(sig[:-1] + bytes([sig[-1] ^ 1])).decode())),
        "no keyid": ("accepted", lambda b: b["dsseEnvelope"]["signatures"][0].pop("keyid")),
        "keyid null": ("accepted", lambda b: b["dsseEnvelope"]["signatures"][0].update(keyid=None)),
        "keyid set": ("accepted", lambda b: b["dsseEnvelope"]["signatures"][0].update(keyid="k")),
        "no tlogEntries": ("accepted", lambda b: b["verificationMaterial"].pop("tlogEntries")),
        "no signatures": ("refused", lambda b: b["dsseEnvelope"].update(signatures=[])),
        "bad then good signature": ("refused", lambda b: b["dsseEnvelope"].update(
            signatures=[{"sig": base64.b64encode(b"x" * 70).decode()},
                        *b["dsseEnvelope"]["signatures"]])),
        "good then bad signature": ("accepted", lambda b: b["dsseEnvelope"]["signatures"].append(
            {"sig": base64.b64encode(b"x" * 70).decode()})),
        "unpadded base64 signature": ("?", lambda b: b["dsseEnvelope"]["signatures"][0].update(
            sig=b["dsseEnvelope"]["signatures"][0]["sig"].rstrip("="))),
        "hint with rawBytes": ("accepted", lambda b: b["verificationMaterial"]["publicKey"].update(
            rawBytes="AAAA")),
        "extra envelope field": ("refused", lambda b: b["dsseEnvelope"].update(extra=1)),
        "extra bundle field": ("refused", lambda b: b.update(extra=1)),
        "snake_case envelope": ("accepted", lambda b: b["dsseEnvelope"].update(
            payload_type=b["dsseEnvelope"].pop("payloadType"))),
        "signature not an object": ("refused", lambda b: b["dsseEnvelope"].update(
            signatures=["x"])),
        "hint not a string": ("refused", lambda b: b["verificationMaterial"]["publicKey"].update(
            hint=5)),
        "certificate too": ("refused", lambda b: b["verificationMaterial"].update(
            certificate={"rawBytes": "AAAA"})),
    }
    for name, (expected, edit) in edits.items():
        bundle = copy.deepcopy(original)
        edit(bundle)
        _write(signed, bundle)
        decision = _same_decision(signed, good)[0]
        assert expected in ("?", decision), (name, decision)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.lists(st.sampled_from(["subject", 0, "digest", "sha256", "name", "predicate",
                                   "serialization", "method", "hash_type", "resources",
                                   "algorithm", "_type", "predicateType", "allow_symlinks"]),
                  min_size=1, max_size=4),
    value=st.none() | st.booleans() | st.integers() | st.text(max_size=8)
    | st.lists(st.integers(), max_size=2) | st.dictionaries(st.text(max_size=3), st.integers(),
                                                            max_size=2),
    recompute_root=st.booleans(),
)
def test_native_and_model_signing_agree_on_random_signed_statements(
    signed, keys, monkeypatch, path, value, recompute_root
) -> None:
    statement = _statement(signed)
    target = statement
    for step in path[:-1]:
        try:
            target = target[step]
        except (KeyError, IndexError, TypeError):
            break
    else:
        try:
            target[path[-1]] = value
        except (IndexError, TypeError):
            pass
    if recompute_root:
        try:
            _root(statement)
        except Exception:  # noqa: BLE001 - the statement is broken anyway
            pass
    _write(signed, _sign_bundle(keys["good"][0], json.dumps(statement).encode()))
    _same_decision(signed, trust_of(keys["good"][1]))
