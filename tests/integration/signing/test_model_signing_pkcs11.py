"""Model signatures made by a key that lives on a real SoftHSM2 token.

The private key is generated on the token (sensitive, non-extractable) by
``pipeline keys create-signing --provider pkcs11``; only its public PEM reaches disk,
and what the token signs verifies with that PEM like any file-key signature.
"""

from __future__ import annotations

import json
from pathlib import Path

import pkcs11
import pytest
from pkcs11 import Attribute, ObjectClass

from pipeline.cli import run
from pipeline.errors import EXIT_INPUT, EXIT_KEY, EXIT_VERIFICATION
from tests.fixtures_softhsm import SoftHSMToken

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
TINY = ROOT / "examples" / "tiny"


@pytest.fixture
def sealed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PIPELINE_KEYRING", str(tmp_path / "keys" / "keyring.json"))
    assert run(["keys", "create", "kek", "--provider", "local"]) == 0
    out = tmp_path / "tiny.sealed"
    assert run(["seal", str(TINY), "--key", "kek", "--out", str(out)]) == 0
    return out


def test_token_key_is_generated_on_the_token_and_signs_models(
    softhsm_env: SoftHSMToken, sealed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["keys", "create-signing", "release-hsm", "--provider", "pkcs11",
                "--dir", str(tmp_path), "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["pkcs11_uri"] == "pkcs11:object=release-hsm"
    assert not (tmp_path / "release-hsm.key").exists()  # nothing private on disk
    public = tmp_path / "release-hsm.pub"
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")

    token = pkcs11.lib(softhsm_env.module).get_token(token_label=softhsm_env.label)
    with token.open(user_pin=softhsm_env.pin) as session:
        (private,) = session.get_objects(
            {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: "release-hsm"}
        )
        assert private[Attribute.SENSITIVE] is True
        assert private[Attribute.EXTRACTABLE] is False

    assert run(["sign-model", str(sealed), "--pkcs11-uri", created["pkcs11_uri"]]) == 0
    assert run(["verify-model", str(sealed), "--trust", str(public)]) == 0
    assert run(["unseal", str(sealed), "--verify-only", "--trust", str(public)]) == 0

    # Another key on the same token is not trusted by this PEM.
    assert run(["keys", "create-signing", "other-hsm", "--provider", "pkcs11",
                "--dir", str(tmp_path)]) == 0
    assert run(["sign-model", str(sealed), "--pkcs11-uri", "pkcs11:object=other-hsm"]) == 0
    capsys.readouterr()
    assert run(["verify-model", str(sealed), "--trust", str(public)]) == EXIT_VERIFICATION
    assert "error:" in capsys.readouterr().err


def test_token_key_errors_are_clear(
    softhsm_env: SoftHSMToken, sealed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["keys", "create-signing", "dup-hsm", "--provider", "pkcs11",
                "--dir", str(tmp_path)]) == 0
    # The same label again: refused, and the existing public file is not replaced.
    before = (tmp_path / "dup-hsm.pub").read_bytes()
    (tmp_path / "elsewhere").mkdir()
    assert run(["keys", "create-signing", "dup-hsm", "--provider", "pkcs11",
                "--dir", str(tmp_path / "elsewhere")]) == EXIT_INPUT
    assert "already has a key 'dup-hsm'" in capsys.readouterr().err
    assert not (tmp_path / "elsewhere" / "dup-hsm.pub").exists()
    assert run(["keys", "create-signing", "dup-hsm", "--provider", "pkcs11",
                "--dir", str(tmp_path)]) == EXIT_INPUT
    assert (tmp_path / "dup-hsm.pub").read_bytes() == before
    capsys.readouterr()
    assert run(["sign-model", str(sealed), "--pkcs11-uri", "pkcs11:object=no-such-key"]) == EXIT_KEY
    err = capsys.readouterr().err
    assert "no EC key pair" in err and "Traceback" not in err


def test_signing_reads_the_pin_file_as_strictly_as_sealing(
    softhsm_env: SoftHSMToken, sealed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One PIN reader for the key provider and the token signers: a PIN file others can
    read is refused for signing too (exit 8), and its content never reaches the output."""
    from pipeline.errors import EXIT_INSECURE

    assert run(["keys", "create-signing", "pin-hsm", "--provider", "pkcs11",
                "--dir", str(tmp_path)]) == 0
    loose = tmp_path / "loose.pin"
    loose.write_text(softhsm_env.pin + "\n")
    loose.chmod(0o644)
    monkeypatch.setenv("PIPELINE_PKCS11_PIN_FILE", str(loose))
    capsys.readouterr()
    assert run(["sign-model", str(sealed), "--pkcs11-uri", "pkcs11:object=pin-hsm"]) == (
        EXIT_INSECURE)
    err = capsys.readouterr().err
    assert "chmod 600" in err and softhsm_env.pin not in err
