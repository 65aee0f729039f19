"""Keyless (certificate-based) image signatures verified offline against a local trust root.

Fulcio and Rekor cannot be reached here, so this test plays both: a CA (root +
intermediate) issues a short-lived code-signing certificate with Fulcio's issuer
extension and an e-mail SAN, and a Rekor key signs the transparency-log entry
(hashedrekord, signed entry timestamp) exactly as cosign stores it in the
``dev.sigstore.cosign/bundle`` annotation. Everything else is the real registry
and the real verification path.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pipeline.cli import run
from pipeline.errors import KeyProviderError, VerificationError
from pipeline.oci import RegistryOptions
from pipeline.oci import media_types as mt
from pipeline.oci.reference import Reference
from pipeline.oci.transfer import push_layout
from pipeline.policy.image_policy import ImagePolicy
from pipeline.signing import image, keyless
from pipeline.signing.keyless import Identity, TrustRoot
from tests.fixtures_registry import RegistryServer, write_image

pytestmark = pytest.mark.integration
ISSUER = "https://token.actions.githubusercontent.com"
SUBJECT = "https://github.com/org/repo/.github/workflows/release.yml@refs/heads/main"


def _now() -> datetime.datetime:
    """The time when a certificate is made or a log entry is dated: at the call, not at
    import, since a slow suite can reach these tests after a 10-minute leaf has expired."""
    return datetime.datetime.now(datetime.UTC)


OPTS = RegistryOptions(insecure=True)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


CA = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def _ca(name: str, signer: CA | None = None) -> CA:
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_cert, issuer_key = signer if signer else (None, key)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(days=1))
        .not_valid_after(_now() + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA384())
    )
    return cert, key


def _issuer_extension(issuer: str) -> x509.UnrecognizedExtension:
    raw = issuer.encode()
    return x509.UnrecognizedExtension(keyless.OID_ISSUER_V2, b"\x0c" + bytes([len(raw)]) + raw)


def _leaf(ca: CA, key: ec.EllipticCurvePrivateKey, *, uri: str = SUBJECT,
          issuer: str = ISSUER, code_signing: bool = True,
          valid: tuple[datetime.datetime, datetime.datetime] | None = None) -> x509.Certificate:
    ca_cert, ca_key = ca
    minute = datetime.timedelta(minutes=1)
    start, end = valid or (_now() - minute, _now() + 10 * minute)
    usage = ExtendedKeyUsageOID.CODE_SIGNING if code_signing else ExtendedKeyUsageOID.SERVER_AUTH
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]),
                       critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(_issuer_extension(issuer), critical=False)
        .sign(ca_key, hashes.SHA384())
    )


def _rekor_bundle(rekor_key: ec.EllipticCurvePrivateKey, payload: bytes, signature: bytes,
                  cert: x509.Certificate, when: datetime.datetime) -> str:
    body = {
        "apiVersion": "0.0.1", "kind": "hashedrekord",
        "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()}},
            "signature": {"content": base64.b64encode(signature).decode(),
                          "publicKey": {"content": base64.b64encode(_pem(cert)).decode()}},
        },
    }
    entry = {"body": base64.b64encode(json.dumps(body).encode()).decode(),
             "integratedTime": int(when.timestamp()), "logID": "ab" * 32, "logIndex": 7}
    canonical = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()
    timestamp = rekor_key.sign(canonical, ec.ECDSA(hashes.SHA256()))
    return json.dumps({"SignedEntryTimestamp": base64.b64encode(timestamp).decode(),
                       "Payload": entry})


class Sigstore:
    """A local Fulcio (root + intermediate CA) and Rekor key, with their trust-root files."""

    def __init__(self, directory: Path) -> None:
        self.root = _ca("test fulcio root")
        self.intermediate = _ca("test fulcio intermediate", self.root)
        self.rekor_key = ec.generate_private_key(ec.SECP256R1())
        self.root_file = directory / "fulcio-root.pem"
        self.root_file.write_bytes(_pem(self.root[0]))
        self.rekor_file = directory / "rekor.pub"
        self.rekor_file.write_bytes(self.rekor_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        self.chain_file = directory / "chain.pem"
        self.chain_file.write_bytes(_pem(self.intermediate[0]) + _pem(self.root[0]))

    def trust_root(self, require_tlog: bool = True) -> TrustRoot:
        return TrustRoot.load([self.root_file], [self.rekor_file], require_tlog=require_tlog)


@pytest.fixture
def sigstore(tmp_path: Path) -> Sigstore:
    return Sigstore(tmp_path)


@pytest.fixture
def signed(registry: RegistryServer, sigstore: Sigstore, tmp_path: Path):
    """An image signed by an ephemeral key with a certificate from the local Fulcio."""
    image.clear_cache()
    layout, _ = write_image(tmp_path / "img", layers=[{"f": tmp_path.name.encode()}])
    ref = Reference.parse(registry.ref(f"keyless/app-{os.urandom(4).hex()}", "v1"))
    with registry.client() as client:
        digest = push_layout(layout, ref, client)
    key = ec.generate_private_key(ec.SECP256R1())
    key_file = tmp_path / "ephemeral.key"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert = _leaf(sigstore.intermediate, key)
    cert_file = tmp_path / "leaf.pem"
    cert_file.write_bytes(_pem(cert))
    image.sign_image(ref, key_file, registry_options=OPTS, certificate=cert_file,
                     certificate_chain=sigstore.chain_file)
    return ref, digest, cert, registry


def _set_layer_annotation(registry: RegistryServer, ref: Reference, digest: str,
                          name: str, value: str) -> tuple[bytes, bytes]:
    """Add an annotation to the signature layer; returns (payload, signature)."""
    tag = digest.replace(":", "-") + ".sig"
    with registry.client() as client:
        body, _, _ = client.get_manifest(ref.repository, tag)
        manifest = json.loads(body)
        layer = manifest["layers"][0]
        payload = client.get_blob(ref.repository, layer["digest"])
        signature = base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"])
        if value:
            layer["annotations"][name] = value
            client.put_manifest(ref.repository, tag, json.dumps(manifest).encode(),
                                mt.OCI_MANIFEST)
    image.clear_cache()
    return payload, signature


def _add_bundle(signed, sigstore: Sigstore, **changes) -> None:
    ref, digest, cert, registry = signed
    payload, signature = _set_layer_annotation(registry, ref, digest, "", "")
    bundle = _rekor_bundle(changes.get("rekor_key", sigstore.rekor_key),
                           changes.get("payload", payload), changes.get("signature", signature),
                           changes.get("cert", cert), changes.get("when", _now()))
    _set_layer_annotation(registry, ref, digest, keyless.BUNDLE_ANNOTATION, bundle)


DEFAULT_IDENTITY = Identity(ISSUER, SUBJECT)


def _verify(signed, root: TrustRoot, identity: Identity = DEFAULT_IDENTITY) -> dict:
    ref = signed[0]
    return image.verify_image(ref, [], keyless=[identity], trust_root=root, registry_options=OPTS)


def test_certificate_and_chain_are_stored_as_cosign_does(signed, sigstore) -> None:
    ref, digest, cert, registry = signed
    with registry.client() as client:
        body, _, _ = client.get_manifest(ref.repository, digest.replace(":", "-") + ".sig")
    annotations = json.loads(body)["layers"][0]["annotations"]
    assert annotations[keyless.CERTIFICATE_ANNOTATION].encode() == _pem(cert)
    assert annotations[keyless.CHAIN_ANNOTATION].encode() == sigstore.chain_file.read_bytes()


def test_keyless_signature_with_a_rekor_entry_verifies(signed, sigstore) -> None:
    with pytest.raises(VerificationError, match="no transparency-log entry"):
        _verify(signed, sigstore.trust_root())
    _add_bundle(signed, sigstore)
    result = _verify(signed, sigstore.trust_root())
    assert result["signers"] == [f"keyless:{ISSUER}:{SUBJECT}"]
    regex = Identity(ISSUER, r"https://github\.com/org/.*")
    assert _verify(signed, sigstore.trust_root(), regex)["verified"]


@pytest.mark.parametrize(
    ("identity", "reason"),
    [
        (Identity(ISSUER, "https://github.com/other/.*"), "is not trusted"),
        (Identity("https://accounts.google.com", ".*"), "is not trusted"),
        (Identity(ISSUER, "https://github.com/org"), "is not trusted"),  # full match only
    ],
)
def test_other_identities_are_refused(signed, sigstore, identity: Identity, reason: str) -> None:
    with pytest.raises(VerificationError, match=reason):
        _verify(signed, sigstore.trust_root(require_tlog=False), identity)


def test_insecure_ignore_tlog_is_explicit(signed, sigstore) -> None:
    assert _verify(signed, sigstore.trust_root(require_tlog=False))["verified"]
    with pytest.raises(KeyProviderError, match="Rekor public key"):
        TrustRoot.load([sigstore.root_file], [])


def test_another_fulcio_root_is_refused(signed, sigstore, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    other = Sigstore(tmp_path / "other")
    with pytest.raises(VerificationError, match="does not chain to a trusted Fulcio CA"):
        _verify(signed, other.trust_root(require_tlog=False))


@pytest.mark.parametrize("change", ["rekor_key", "signature", "payload", "cert", "when"])
def test_bad_rekor_entries_are_refused(signed, sigstore, change: str) -> None:
    ref, digest, cert, registry = signed
    other_key = ec.generate_private_key(ec.SECP256R1())
    values = {
        "rekor_key": (other_key, "not signed by a trusted transparency log"),
        "signature": (other_key.sign(b"x", ec.ECDSA(hashes.SHA256())), "another signature"),
        "payload": (b"another payload", "another payload"),
        "cert": (_leaf(sigstore.intermediate, other_key), "another certificate"),
        "when": (_now() + datetime.timedelta(hours=2), "was not valid at"),
    }
    value, reason = values[change]
    _add_bundle(signed, sigstore, **{change: value})
    with pytest.raises(VerificationError, match=reason):
        _verify(signed, sigstore.trust_root())


def test_certificate_must_be_for_code_signing(registry, sigstore, tmp_path: Path) -> None:
    layout, _ = write_image(tmp_path / "img")
    ref = Reference.parse(registry.ref("keyless/serverauth", "v1"))
    with registry.client() as client:
        push_layout(layout, ref, client)
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "k.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (tmp_path / "c.pem").write_bytes(_pem(_leaf(sigstore.intermediate, key, code_signing=False)))
    image.sign_image(ref, tmp_path / "k.pem", registry_options=OPTS, certificate=tmp_path / "c.pem",
                     certificate_chain=sigstore.chain_file)
    image.clear_cache()
    with pytest.raises(VerificationError, match="not for code signing"):
        image.verify_image(ref, [], keyless=[Identity(ISSUER, SUBJECT)],
                           trust_root=sigstore.trust_root(require_tlog=False),
                           registry_options=OPTS)


def test_policy_keyless_authority_with_a_trust_root(signed, sigstore, tmp_path: Path) -> None:
    ref, digest, _, _ = signed
    _add_bundle(signed, sigstore)
    rules = [{"name": "ci", "images": [f"{ref.registry}/keyless/**"],
              "authorities": [{"keyless": {"issuer": ISSUER,
                                           "subject": "https://github.com/org/.*"}}]}]
    with_root = ImagePolicy.from_mapping(
        {"rules": rules, "trustRoot": {"fulcio": [str(sigstore.root_file)],
                                       "rekor": [str(sigstore.rekor_file)]}}, tmp_path)
    pinned = ref.with_digest(digest)
    result = with_root.evaluate(pinned, OPTS)
    assert result.allowed, result.reasons
    without = ImagePolicy.from_mapping({"rules": rules}, tmp_path).evaluate(pinned, OPTS)
    assert not without.allowed and any("trustRoot" in r for r in without.reasons)


def test_cli_verify_keyless(signed, sigstore, capsys: pytest.CaptureFixture[str]) -> None:
    ref = str(signed[0])
    _add_bundle(signed, sigstore)
    args = ["verify", ref, "--certificate-oidc-issuer", ISSUER,
            "--certificate-identity-regexp", "https://github.com/org/.*",
            "--fulcio-root", str(sigstore.root_file), "--rekor-key", str(sigstore.rekor_file),
            "--insecure"]
    assert run(args) == 0
    capsys.readouterr()
    assert run([*args[:3], "https://accounts.google.com", *args[4:]]) == 6
    assert "is not trusted" in capsys.readouterr().err
    assert run(["verify", ref, "--insecure"]) == 2  # neither --key nor an identity
