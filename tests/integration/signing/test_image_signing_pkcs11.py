"""Image signatures and attestations made by a key on a real SoftHSM2 token."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from pipeline.cli import run
from pipeline.errors import EXIT_AUTH, EXIT_KEY, EXIT_OK, EXIT_VERIFICATION, AuthError
from pipeline.oci import RegistryOptions
from pipeline.oci.reference import Reference
from pipeline.oci.transfer import push_layout
from pipeline.signing import attestation, image
from tests.fixtures_registry import RegistryServer, write_image
from tests.fixtures_softhsm import SoftHSMToken

pytestmark = pytest.mark.integration


def _token_key(token: SoftHSMToken, label: str, public_path: Path) -> None:
    """Generate a non-extractable P-256 pair ``label`` on the token; write its public PEM."""
    import pkcs11
    from pkcs11 import Attribute, KeyType
    from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

    with pkcs11.lib(token.module).get_token(token_label=token.label).open(
        user_pin=token.pin, rw=True
    ) as session:
        params = session.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
            local=True,
        )
        public, _ = params.generate_keypair(
            store=True, label=label, id=os.urandom(8),
            private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
        )
        der = encode_ec_public_key(public)
    public_path.write_bytes(serialization.load_der_public_key(der).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


@pytest.fixture
def token_key(softhsm_env: SoftHSMToken, tmp_path: Path) -> tuple[str, Path]:
    """(pkcs11 URI, public PEM) of a fresh token key; module/token/PIN from the env."""
    label = f"image-signing-{os.urandom(4).hex()}"
    public = tmp_path / f"{label}.pub"
    _token_key(softhsm_env, label, public)
    return f"pkcs11:object={label}", public


@pytest.fixture
def pushed(registry: RegistryServer, tmp_path: Path) -> tuple[Reference, str]:
    layout, _ = write_image(tmp_path / "img", layers=[{"a": os.urandom(16)}])
    ref = Reference.parse(registry.ref(f"hsm/app-{os.urandom(3).hex()}", "v1"))
    with registry.client() as client:
        digest = push_layout(layout, ref, client)
    image.clear_cache()
    return ref, digest


def test_token_key_signs_images_and_attestations(
    token_key: tuple[str, Path], pushed: tuple[Reference, str], tmp_path: Path
) -> None:
    uri, public = token_key
    ref, digest = pushed
    result = image.sign_image(ref, uri, registry_options=RegistryOptions(insecure=True))
    assert result["added"] and result["digest"] == digest
    verified = image.verify_image(ref, [public], registry_options=RegistryOptions(insecure=True))
    assert verified["verified"]
    attestation.attest(ref, "vuln", {"scanner": {"uri": "x"}}, uri,
                       registry_options=RegistryOptions(insecure=True))
    statements = attestation.verify_attestations(ref, "vuln", [public],
                                                 registry_options=RegistryOptions(insecure=True))
    assert statements[0]["subject"][0]["digest"]["sha256"] == digest.split(":")[1]


def test_cli_sign_with_a_pkcs11_uri(
    token_key: tuple[str, Path], pushed: tuple[Reference, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    uri, public = token_key
    ref, _ = pushed
    assert run(["sign", str(ref), "--key", uri, "--insecure"]) == EXIT_OK
    assert run(["verify", str(ref), "--key", str(public), "--insecure"]) == EXIT_OK
    capsys.readouterr()
    # A key the token does not hold: a key error (7), nothing signed.
    missing = f"pkcs11:object=absent-{os.urandom(3).hex()}"
    assert run(["sign", str(ref), "--key", missing, "--insecure"]) == EXIT_KEY
    assert "no EC key pair" in capsys.readouterr().err


def test_wrong_pin_is_an_auth_error(
    token_key: tuple[str, Path], pushed: tuple[Reference, str], softhsm_env: SoftHSMToken,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    uri, public = token_key
    ref, _ = pushed
    wrong = tmp_path / "wrong.pin"
    wrong.write_text("not-the-pin\n")
    wrong.chmod(0o600)
    monkeypatch.setenv("PIPELINE_PKCS11_PIN_FILE", str(wrong))
    with pytest.raises(AuthError, match="rejected the PIN"):
        image.sign_image(ref, uri, registry_options=RegistryOptions(insecure=True))
    assert run(["sign", str(ref), "--key", uri, "--insecure"]) == EXIT_AUTH
    err = capsys.readouterr().err
    assert "Traceback" not in err and "not-the-pin" not in err
    assert run(["verify", str(ref), "--key", str(public), "--insecure"]) == EXIT_VERIFICATION
